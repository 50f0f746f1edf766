"""The simulated kernel: folios, address spaces, swap, LRU, locks, GUP, KSM and the
do_wp_page() decision point. It imports nothing above itself (no Gymnasium, pluggy,
OmegaConf or SB3)."""

from __future__ import annotations

from cowlab.kernel.decision import Decision
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FEATURE_NAMES, FaultRecord, FaultView, PolicyError
from cowlab.kernel.kernel import Kernel, Machine
from cowlab.kernel.presets import PRESETS, KernelConfig, PresetError, get_preset

__all__ = [
    "FEATURE_NAMES",
    "PRESETS",
    "Decision",
    "FaultRecord",
    "FaultView",
    "Kernel",
    "KernelConfig",
    "KernelError",
    "Machine",
    "PolicyError",
    "PresetError",
    "get_preset",
]
