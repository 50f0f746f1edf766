"""Kernel presets by name: the shipped ones and those registered by plugins.

``cowlab_register_kernels`` lets a plugin add presets (a ``KernelConfig`` factory, often a
shipped preset with some facilities overridden under a new name). Every command that
takes a kernel name resolves it here, so plugin presets work everywhere.
"""

from __future__ import annotations

from cowlab.kernel.presets import PRESETS, KernelConfig, PresetError, get_preset
from cowlab.plugins import PluginError, get_registry


def kernel_names() -> list[str]:
    """Shipped presets (oldest first), then plugin presets (sorted)."""
    extra = [n for n in get_registry().names("kernel") if n not in PRESETS]
    return [*PRESETS, *extra]


def resolve_kernel(name: str, *, where: str = "kernel") -> KernelConfig:
    """The preset called ``name`` (``v5.19``, ``5.19``, or a plugin's name)."""
    try:
        return get_preset(name, where=where)
    except PresetError as exc:
        registry = get_registry()
        if name not in registry.names("kernel"):
            extra = [n for n in registry.names("kernel") if n not in PRESETS]
            more = f"; from plugins: {', '.join(extra)}" if extra else ""
            raise PresetError(f"{exc}{more}") from None
        try:
            config = registry.make("kernel", name, where=where)
        except PluginError as err:
            raise PresetError(str(err)) from None
        if not isinstance(config, KernelConfig):
            raise PresetError(
                f"{where}: plugin kernel {name!r} ({registry.origin('kernel', name)}) made "
                f"{type(config).__name__}, not a KernelConfig"
            ) from None
        return config
