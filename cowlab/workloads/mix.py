"""``mix-v1``: a weighted mixture of the shipped workloads, for training.

Each run picks one component workload, with probability proportional to its weight,
from an RNG seeded by the run's seed (``random.Random("mix-v1:<seed>")``), and runs it
with its default parameters and the same seed: a ``mix-v1`` run with seed *s* that
picked ``fork-snapshot-v1`` is the very run ``fork-snapshot-v1`` makes with seed *s*.
A weight of 0 leaves a component out.

The component decides the machine (CPUs, RAM, swap device), so the choice must be made
before the machine is: :func:`cowlab.workloads.resolve_workload` (which
:func:`~cowlab.workloads.run_workload` calls) returns the chosen component. A ``Run``
built around the unresolved mixture checks at ``setup()`` that the machine fits the
component it picks and explains the fix if it does not.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from mypy_extensions import mypyc_attr

from cowlab.kernel.errors import KernelError
from cowlab.workloads.base import Run, Workload
from cowlab.workloads.forceswap import Forceswap
from cowlab.workloads.fork_snapshot import ForkSnapshot
from cowlab.workloads.ksm_vms import KsmVms
from cowlab.workloads.memcached import MemcachedPressure
from cowlab.workloads.pinned_io import PinnedIo
from cowlab.workloads.softdirty import SoftdirtyTracking
from cowlab.workloads.vmsplice import VmsplicePipe

#: Mixture parameter name -> (workload id, factory with default parameters).
COMPONENTS: dict[str, tuple[str, Callable[[], Workload]]] = {
    "forceswap": ("forceswap-v1", Forceswap),
    "fork_snapshot": ("fork-snapshot-v1", ForkSnapshot),
    "pinned_io": ("pinned-io-v1", PinnedIo),
    "memcached_pressure": ("memcached-pressure-v1", MemcachedPressure),
    "softdirty_tracking": ("softdirty-tracking-v1", SoftdirtyTracking),
    "ksm_vms": ("ksm-vms-v1", KsmVms),
    "vmsplice_pipe": ("vmsplice-pipe-v1", VmsplicePipe),
}


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class MixParams:
    """Parameters of ``mix-v1``: one non-negative weight per component."""

    #: Weight of ``forceswap-v1``.
    forceswap: float = 1.0
    #: Weight of ``fork-snapshot-v1``.
    fork_snapshot: float = 1.0
    #: Weight of ``pinned-io-v1``.
    pinned_io: float = 1.0
    #: Weight of ``memcached-pressure-v1``.
    memcached_pressure: float = 1.0
    #: Weight of ``softdirty-tracking-v1``.
    softdirty_tracking: float = 1.0
    #: Weight of ``ksm-vms-v1``.
    ksm_vms: float = 1.0
    #: Weight of ``vmsplice-pipe-v1``.
    vmsplice_pipe: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"weight {f.name} must be finite and >= 0, got {value!r}")
        if not sum(self.weights().values()) > 0:
            raise ValueError("mix-v1 needs at least one positive weight")

    def weights(self) -> dict[str, float]:
        """Component workload id -> weight."""
        return {COMPONENTS[f.name][0]: getattr(self, f.name) for f in fields(self)}


@mypyc_attr(allow_interpreted_subclasses=True)
class Mix:
    """A seeded choice of one component per run (see the module docstring)."""

    id = "mix-v1"

    def __init__(self, **params: Any) -> None:
        self.p = MixParams(**params)

    def component_for(self, seed: int) -> str:
        """The id of the component a run with ``seed`` executes."""
        rng = random.Random(f"{self.id}:{seed}")
        names = [f.name for f in fields(self.p)]
        weights = [getattr(self.p, name) for name in names]
        [name] = rng.choices(names, weights=weights)
        return COMPONENTS[name][0]

    def for_seed(self, seed: int) -> Workload:
        """The component workload a run with ``seed`` executes (default parameters)."""
        wanted = self.component_for(seed)
        for workload_id, factory in COMPONENTS.values():
            if workload_id == wanted:
                return factory()
        raise AssertionError(wanted)  # pragma: no cover

    def machine_overrides(self) -> Mapping[str, object]:
        """Nothing by itself: the machine is the chosen component's (resolve first)."""
        return {}

    def setup(self, run: Run) -> None:
        """Set up the component for ``run.seed``, if the machine fits it."""
        component = self.for_seed(run.seed)
        machine = run.kernel.machine
        for key, value in component.machine_overrides().items():
            have = getattr(machine, key)
            if (have < value) if key == "cpus" else (have != value):
                raise KernelError(
                    f"mix-v1 picked {component.id} for seed {run.seed}, which needs "
                    f"machine.{key}={value!r} (the machine has {have!r}); build the run "
                    "with cowlab.workloads.resolve_workload(workload, seed) before making "
                    "the machine"
                )
        component.setup(run)
