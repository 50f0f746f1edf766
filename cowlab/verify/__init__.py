"""``cowlab verify``: bounded exhaustive safety search with minimal counterexamples.

    >>> from cowlab.verify import Bounds, verify
    >>> result = verify("always-reuse", "v5.19", Bounds(depth=2))
    >>> result.status, len(result.counterexample or [])
    ('counterexample', 2)

:func:`verify` explores every sequence of scenario ops up to ``bounds.depth`` over a
small universe (:class:`Bounds`, cowlab/verify/universe.py) breadth-first with a
visited set of canonical state hashes (cowlab/verify/state.py), checks the ground truth
at every write, and returns a :class:`VerifyResult`: safe up to the bound, or a
shortest counterexample shrunk by delta debugging, which :func:`to_scenario` writes as
a scenario file that ``cowlab scenario run`` replays. See docs/verify.md.
"""

from __future__ import annotations

from typing import Any

from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.verify.scenario_out import to_scenario, write_scenario
from cowlab.verify.search import VerifyResult, make_setup, search
from cowlab.verify.universe import (
    DEFAULT_OPS,
    FAMILIES,
    Bounds,
    UniverseError,
    thp_unavailable_reason,
)

__all__ = ["DEFAULT_OPS", "FAMILIES", "Bounds", "UniverseError", "VerifyResult",
           "resolve", "to_scenario", "verify", "write_scenario"]


def resolve(policy: str | Policy, kernel: str | KernelConfig, bounds: Bounds,
            geometry: Geometry = DEFAULT_GEOMETRY) -> tuple[Any, str | None, str,
                                                            KernelConfig]:
    """Resolve a policy name through the plugin registry (as the CLI does) and a kernel
    preset name; check the bounds. Raises :class:`UniverseError` on bad input."""
    from cowlab.kernel.presets import PresetError
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import PluginError, get_registry

    bounds.check()
    if isinstance(kernel, str):
        try:
            config = resolve_kernel(kernel, where="--kernel")
        except PresetError as exc:
            raise UniverseError(str(exc)) from None
    else:
        config = kernel
    if isinstance(policy, str):
        try:
            obj = get_registry().make_policy(policy, where="--policy")
        except PluginError as exc:
            raise UniverseError(str(exc)) from None
        name: str | None = policy
        label = policy
    else:
        obj, name = policy, None
        label = str(getattr(policy, "name", type(policy).__name__))
    if bounds.explicit_ops:
        why = thp_unavailable_reason(bounds, config.mthp, geometry)
        if why is not None:
            raise UniverseError(f"--ops thp: {why}")
    return obj, name, label, config


def verify(policy: str | Policy, kernel: str | KernelConfig, bounds: Bounds | None = None,
           *, executor: Any = None, progress: Any = None,
           geometry: Geometry = DEFAULT_GEOMETRY) -> VerifyResult:
    """Search every op sequence up to ``bounds`` for a violation by ``policy`` on
    ``kernel``.

    Args:
        policy: A registered policy name (any executor) or a policy object (in process
            only: workers cannot rebuild it).
        kernel: A preset name (or a plugin kernel's) or a KernelConfig.
        bounds: The universe and depth (default :class:`Bounds`).
        executor: A :mod:`cowlab.executors` executor (default: in process).
        progress: Called with a dict of figures after every frontier chunk.
        geometry: Page geometry (mTHP orders for the ``thp`` family).

    Raises:
        UniverseError: Unknown policy, preset or op family, or bounds out of range.
    """
    bounds = bounds or Bounds()
    obj, name, label, config = resolve(policy, kernel, bounds, geometry)
    if name is None and executor is not None and getattr(executor, "name", "") != "inprocess":
        raise UniverseError("a policy object can only be verified in process; "
                            "pass a registered policy name to use other executors")
    setup = make_setup(obj, name, config, bounds, geometry)
    return search(setup, policy_label=label, executor=executor, progress=progress)
