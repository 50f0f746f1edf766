"""Which build of the simulated kernel runs: compiled (mypyc) or pure Python.

setup.py compiles cowlab/kernel/*.py (but ``__init__``, ``errors`` and ``policy``), the
shipped workloads (cowlab/workloads/*.py but ``__init__`` and ``builtin``),
cowlab/geometry.py and cowlab/envcore.py with mypyc into extension modules that
sit next to the sources, and records a hash of every compiled source in
``cowlab/_compiled.json``. Python prefers an extension module over a ``.py`` file of
the same name, so the compiled build is the default wherever it was built. The pure
build (the ``.py`` files themselves) runs when

* ``COWLAB_PURE=1`` is set (debugging, profiling, the pure half of CI's comparison);
* nothing was compiled (no C compiler at install time; the manifest says why);
* a compiled source changed since the build (an edited kernel is never shadowed by a
  stale extension module): a :class:`RuntimeWarning` says to rebuild.

It is all or nothing: compiled code expects the compiled classes of its neighbours, so
the pure build imports every listed module from source. :func:`install` runs when this
module is imported, which ``cowlab/__init__.py`` does before any kernel module;
``cowlab --version`` prints :func:`describe`. Both builds give bit-identical results
(CI compares them).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["BUILD", "Build", "describe", "install"]

_ROOT = Path(__file__).resolve().parent
MANIFEST = _ROOT / "_compiled.json"
#: The environment variable that forces the pure build.
PURE_ENV = "COWLAB_PURE"


class Build:
    """The build in use: ``kind`` is ``compiled`` or ``pure``; ``reason`` says why pure."""

    __slots__ = ("kind", "modules", "profile_guided", "reason")

    def __init__(self, kind: str, reason: str, modules: tuple[str, ...],
                 profile_guided: bool = False) -> None:
        self.kind = kind
        self.reason = reason
        #: The modules the compiled build replaces (empty when none was built).
        self.modules = modules
        #: The C compiler laid the compiled code out from a profiling run (setup.py).
        self.profile_guided = profile_guided

    @property
    def compiled(self) -> bool:
        """True when the kernel runs as mypyc-compiled code."""
        return self.kind == "compiled"


def _extension_exists(module: str) -> bool:
    parent, _, leaf = module.rpartition(".")
    folder = _ROOT.parent.joinpath(*parent.split("."))
    return any((folder / (leaf + suffix)).exists()
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _modules_with_extensions() -> set[str]:
    """Compiled-package modules with an extension module next to their source,
    whatever the manifest says (a stale build left behind must not be imported either)."""
    found = set()
    for folder, prefix in ((_ROOT / "kernel", "cowlab.kernel."),
                           (_ROOT / "workloads", "cowlab.workloads."), (_ROOT, "cowlab.")):
        for source in folder.glob("*.py"):
            if _extension_exists(prefix + source.stem):
                found.add(prefix + source.stem)
    return found


def _source_of(module: str) -> Path:
    return _ROOT.parent.joinpath(*module.split(".")).with_suffix(".py")


def _select() -> Build:
    """Decide the build from the environment and the manifest (no imports happen)."""
    try:
        manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except FileNotFoundError:
        manifest = {"compiled": False, "reason": "no compiled modules were built"}
    except (OSError, ValueError) as exc:
        manifest = {"compiled": False, "reason": f"unreadable {MANIFEST.name} ({exc})"}
    hashes: dict[str, str] = manifest.get("modules", {}) if manifest.get("compiled") else {}
    # What the pure build must import from source: the compiled modules, and any other
    # module an extension module would shadow.
    modules = tuple(sorted(set(hashes) | _modules_with_extensions()))
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return Build("pure", f"{PURE_ENV}={os.environ[PURE_ENV]} is set", modules)
    if not manifest.get("compiled"):
        return Build("pure", str(manifest.get("reason", "not compiled")), modules)
    missing = [m for m in hashes if not _extension_exists(m)]
    if missing:
        return Build("pure", f"compiled module missing: {missing[0]} (reinstall cowlab)",
                     modules)
    for module in sorted(hashes):
        source = _source_of(module)
        try:
            digest = hashlib.sha256(source.read_bytes()).hexdigest()
        except OSError:
            continue  # an installed wheel may ship the extension without the source
        if digest != hashes[module]:
            reason = (f"{source.relative_to(_ROOT.parent)} changed since it was compiled; "
                      "rebuild with: pip install -c constraints.txt -e '.[test]'")
            warnings.warn(f"cowlab runs the pure-Python kernel: {reason}", RuntimeWarning,
                          stacklevel=3)
            return Build("pure", reason, modules)
    stray = sorted(set(modules) - set(hashes))
    if stray:
        return Build("pure", f"{stray[0]} has an extension module the build did not record "
                     "(reinstall cowlab)", modules)
    return Build("compiled", "", modules, bool(manifest.get("profile_guided")))


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports the listed modules from their ``.py`` files, skipping extension modules."""

    def __init__(self, modules: tuple[str, ...]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        source = _source_of(fullname)
        if not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


BUILD = _select()


def install() -> None:
    """Put the source finder in front when the pure build must run over compiled
    modules. Idempotent; must run before the first kernel module is imported."""
    if BUILD.compiled or not BUILD.modules:
        return
    if any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        return
    already = [m for m in BUILD.modules if m in sys.modules]
    if already:
        raise ImportError(f"cowlab: {already[0]} was imported before cowlab chose its build")
    sys.meta_path.insert(0, _SourceFinder(BUILD.modules))


def describe() -> str:
    """``compiled kernel (mypyc, N modules[, profile-guided])`` or ``pure-Python kernel
    (<why>)``, for ``cowlab --version``."""
    if BUILD.compiled:
        guided = ", profile-guided" if BUILD.profile_guided else ""
        return f"compiled kernel (mypyc, {len(BUILD.modules)} modules{guided})"
    return f"pure-Python kernel ({BUILD.reason})"


install()
