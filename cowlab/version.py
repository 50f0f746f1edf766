"""Which cowlab produced a result: its version and its build.

:func:`build_id` is a content hash of cowlab's own source files, so it changes with any
edit of an editable install even when the version string does not. Records carry it
(``code.cowlab_build``) and a sweep reruns a record whose build differs instead of
reusing it (docs/leaderboard.md, "Records"). A compiled build (a wheel with generated
or native parts) can replace the source hash here: every caller goes through this one
function.

:func:`code_hash` is the same kind of hash for the code of a plugin's factory (a
policy's or a workload's): the source files of the module that defines it and of every
module of its top-level package.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import sys
from pathlib import Path

__all__ = ["build_id", "code_hash", "source_files_hash"]

_ROOT = Path(__file__).resolve().parent


def source_files_hash(files: list[Path], root: Path) -> str:
    """sha256 over the relative paths and bytes of ``files`` (in sorted path order)."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """``src-`` + the first 16 hex digits of the sha256 of cowlab's ``.py`` sources."""
    files = [p for p in _ROOT.rglob("*.py") if "__pycache__" not in p.parts]
    return "src-" + source_files_hash(files, _ROOT)[:16]


def _module_files(module_name: str) -> tuple[list[Path], Path] | None:
    """The source files of ``module_name``'s top-level package (or of the lone module)."""
    top = module_name.partition(".")[0]
    try:
        mod = sys.modules.get(top) or importlib.import_module(top)
    except ImportError:
        return None
    file = getattr(mod, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    if path.name == "__init__.py":  # a package: every module in it
        root = path.parent
        files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
        return files, root
    if path.suffix != ".py":
        return None
    return [path], path.parent


@functools.lru_cache(maxsize=256)
def code_hash(module_name: str) -> str | None:
    """Content hash of the package that defines ``module_name`` (None: no source found).

    Cached per process: a sweep hashes each plugin package once. cowlab's own modules
    hash to :func:`build_id` (their code is already covered by it).
    """
    if module_name.partition(".")[0] == "cowlab":
        return build_id()
    found = _module_files(module_name)
    if found is None:
        return None
    files, root = found
    return "src-" + source_files_hash(files, root)[:16]
