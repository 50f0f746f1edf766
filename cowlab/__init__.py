"""cowlab: a research framework for the Linux kernel's copy-on-write reuse decision.

Public imports for plugin authors::

    from cowlab import hookimpl, Decision
"""

from __future__ import annotations

from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FEATURE_NAMES, FaultView
from cowlab.plugins import HOOK_API_VERSION, hookimpl, hookspec

__version__ = "0.1.0"

__all__ = [
    "FEATURE_NAMES",
    "HOOK_API_VERSION",
    "Decision",
    "FaultView",
    "__version__",
    "hookimpl",
    "hookspec",
]
