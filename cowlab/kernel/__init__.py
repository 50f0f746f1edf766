"""The simulated kernel: folios, address spaces, swap, LRU, locks, GUP, KSM and the
do_wp_page() decision point. It imports nothing above itself (no Gymnasium, pluggy,
OmegaConf or SB3)."""

from __future__ import annotations

import copyreg
import dataclasses
from typing import Any

from cowlab.geometry import Geometry
from cowlab.kernel.actors import (
    ActorsConfig,
    KcompactdConfig,
    KsmdConfig,
    KswapdConfig,
    LruDrainAllConfig,
)
from cowlab.kernel.costs import CostModel, DeviceSpec
from cowlab.kernel.decision import Decision
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FEATURE_NAMES, FaultRecord, FaultView, PolicyError
from cowlab.kernel.kernel import Kernel, Machine
from cowlab.kernel.presets import PRESETS, KernelConfig, PresetError, get_preset


def _rebuild_from_fields(obj: Any) -> tuple[Any, tuple[Any, ...]]:
    """Pickle (and deep-copy) a frozen dataclass by calling its class with its fields.

    In the compiled build these classes are native: the default way of restoring an
    instance, assigning its attributes one by one, is refused by a frozen dataclass (a
    process pool ships a KernelConfig to its workers). Rebuilding runs ``__init__``
    again, with values it accepted before.
    """
    return type(obj), tuple(getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init)


def _record_from(args: tuple[Any, ...], step: int) -> FaultRecord:
    """A FaultRecord rebuilt by :func:`_record_reduce`."""
    rec = FaultRecord(*args)
    rec.step = step
    return rec


def _record_reduce(rec: FaultRecord) -> tuple[Any, tuple[Any, ...]]:
    """Pickle a FaultRecord through its constructor (a compiled class is not created
    without its arguments), then restore ``step``."""
    args = (rec.mm, rec.page, rec.cpu, rec.fault, rec.outcome, rec.reason, rec.violation,
            rec.exclusive, rec.blockers, rec.latency_ns, rec.time_ns)
    return _record_from, (args, rec.step)


copyreg.pickle(FaultRecord, _record_reduce)

for _frozen in (KernelConfig, Machine, Geometry, CostModel, DeviceSpec, ActorsConfig,
                KswapdConfig, KcompactdConfig, KsmdConfig, LruDrainAllConfig):
    copyreg.pickle(_frozen, _rebuild_from_fields)

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
