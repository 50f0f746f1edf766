"""cowlab: a research framework for the Linux kernel's copy-on-write reuse decision.

Public imports for plugin authors::

    from cowlab import hookimpl, Decision

Importing cowlab registers the Gymnasium environment ``cowlab/CowFault-v0``
(:mod:`cowlab.env`, loaded when first made).
"""

from __future__ import annotations

import copyreg as _copyreg

from gymnasium.envs.registration import register as _register_env
from gymnasium.envs.registration import registry as _env_registry

from cowlab.kernel.clock import Sleep as _Sleep
from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FEATURE_NAMES, FaultView
from cowlab.plugins import HOOK_API_VERSION, hookimpl, hookspec

__version__ = "0.1.0"

def _reduce_sleep(exc: _Sleep) -> tuple[type[_Sleep], tuple[int, str]]:
    return type(exc), (exc.until_ns, exc.reason)


# Every cowlab exception pickles (a process pool ships errors back to the parent); the
# kernel's Sleep takes two arguments, so it gets a reducer (cowlab.kernel imports nothing
# above itself, so it is registered here).
_copyreg.pickle(_Sleep, _reduce_sleep)

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
