"""Repository-wide pytest configuration: doctests of the compiled kernel modules.

``pytest`` collects doctests from ``cowlab/`` (``--doctest-modules``). In the compiled
build the kernel modules are extension modules, which pytest refuses to collect
doctests from (their ``__file__`` is not the ``.py`` file); those few doctests run in
CI's pure-build pass instead (``COWLAB_PURE=1``, see .ci/run).
"""

from __future__ import annotations

from pathlib import Path

from cowlab import _build

_COMPILED_SOURCES = (
    {_build._source_of(m).resolve() for m in _build.BUILD.modules}
    if _build.BUILD.compiled else set()
)


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Skip the ``.py`` source of a module that runs compiled (None: no opinion)."""
    if collection_path.resolve() in _COMPILED_SOURCES:
        return True
    return None
