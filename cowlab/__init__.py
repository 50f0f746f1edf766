"""cowlab: a research framework for the Linux kernel's copy-on-write reuse decision.

Public imports for plugin authors::

    from cowlab import hookimpl, Decision

Importing cowlab registers the Gymnasium environment ``cowlab/CowFault-v0``
(:mod:`cowlab.env`, loaded when first made).
"""

from __future__ import annotations

from gymnasium.envs.registration import register as _register_env
from gymnasium.envs.registration import registry as _env_registry

# First of cowlab's own imports: it picks the compiled or the pure kernel build before
# any kernel module is imported (cowlab/_build.py).
from cowlab._build import BUILD as _BUILD  # noqa: F401
from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FEATURE_NAMES, FaultView
from cowlab.plugins import HOOK_API_VERSION, hookimpl, hookspec

__version__ = "0.1.0"


if "cowlab/CowFault-v0" not in _env_registry:
    _register_env(id="cowlab/CowFault-v0", entry_point="cowlab.env:CowFaultEnv")

__all__ = [
    "FEATURE_NAMES",
    "HOOK_API_VERSION",
    "Decision",
    "FaultView",
    "__version__",
    "hookimpl",
    "hookspec",
]
