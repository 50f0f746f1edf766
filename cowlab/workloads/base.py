"""Stochastic workloads: what they are, and how one is run.

A workload is an object with an ``id`` (versioned: ``forceswap-v1``; a change of
behaviour gets a new version instead of changing the old one) and a
``setup(run)`` method that creates address spaces and spawns threads on the
:class:`~cowlab.kernel.engine.Engine`. Its parameters are a dataclass registered with
it through the ``cowlab_register_workloads`` hook, so they are validated (with
"did you mean" help) like a policy's. A workload may also ask for machine settings it
needs (``machine_overrides()``: e.g. enough CPUs for its threads, or its swap device).

Randomness comes only from ``run.rng`` (seeded from the run's seed), so a run is a
deterministic function of (workload, parameters, kernel, policy, seed).

A run stops when the policy has been asked ``max_decisions`` times, when simulated time
reaches ``max_time_ns``, or when every thread has finished, whichever comes first.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.costs import CostModel
from cowlab.kernel.engine import Engine, Thread, ThreadBody
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.kernel import Kernel, Machine
from cowlab.kernel.mm import MM
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.metrics import summarize


class Workload(Protocol):
    """A workload generator (see the module docstring)."""

    id: str

    def setup(self, run: Run) -> None:
        """Create mms and spawn the threads that make up the workload."""

    def machine_overrides(self) -> Mapping[str, object]:
        """Machine settings this workload needs (may be empty)."""


@dataclass(frozen=True)
class Budget:
    """When a run stops: after ``max_decisions`` policy decisions or ``max_time_ns``."""

    max_decisions: int | None = 2_000
    max_time_ns: int | None = None

    def __post_init__(self) -> None:
        if self.max_decisions is None and self.max_time_ns is None:
            raise ValueError("a budget needs max_decisions or max_time_ns")
        if self.max_decisions is not None and self.max_decisions < 1:
            raise ValueError(f"max_decisions must be at least 1, got {self.max_decisions}")
        if self.max_time_ns is not None and self.max_time_ns < 1:
            raise ValueError(f"max_time_ns must be positive, got {self.max_time_ns}")


@dataclass
class Run:
    """One run of a workload: kernel, engine, seeded RNG and stop condition."""

    workload: Workload
    kernel: Kernel
    seed: int
    budget: Budget
    engine: Engine = field(init=False)
    rng: random.Random = field(init=False)
    mms: dict[str, MM] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = Engine(self.kernel)
        # One generator for the workload, derived from the seed (the policy has its own).
        self.rng = random.Random(f"{self.workload.id}:{self.seed}")

    def mm(self, name: str) -> MM:
        """The mm called ``name``, created on first use."""
        mm = self.mms.get(name)
        if mm is None:
            mm = self.mms[name] = self.kernel.create_mm(name)
        return mm

    def spawn(self, name: str, body: ThreadBody, *, cpu: int = 0, mm: MM | None = None,
              start_ns: int | None = None, daemon: bool = False) -> Thread:
        """Spawn a thread on the engine (a daemon does not keep the run going)."""
        return self.engine.spawn(name, body, cpu=cpu, mm=mm, start_ns=start_ns, daemon=daemon)

    @property
    def done(self) -> bool:
        """The budget is spent."""
        b = self.budget
        k = self.kernel
        if b.max_decisions is not None and k.nr_decisions >= b.max_decisions:
            return True
        return b.max_time_ns is not None and k.clock.now >= b.max_time_ns

    def close(self) -> None:
        """Release a run that is over or abandoned: its threads are finished and its
        reference cycles broken (:meth:`Engine.close`, :meth:`Kernel.close`), so its
        memory goes back at once instead of at the next cyclic garbage collection. The
        kernel's counters, records and state can still be read afterwards."""
        self.engine.close()
        self.kernel.close()

    def execute(self) -> None:
        """Set the workload up and run it until the budget is spent or it finishes."""
        self.workload.setup(self)
        # The decision budget is checked by the engine itself after every step (no call
        # into Python per step); only a time budget needs the stop callback. Either way
        # the run stops exactly when :attr:`done` becomes true.
        b = self.budget
        clock = self.kernel.clock
        max_time = b.max_time_ns
        stop: Callable[[], bool] | None = (
            None if max_time is None else (lambda: clock.now >= max_time))
        self.engine.run(until_ns=max_time, stop=stop, max_decisions=b.max_decisions)


@dataclass
class WorkloadResult:
    """What a workload run produced."""

    workload: str
    params: dict[str, Any]
    kernel: str
    policy: str
    seed: int
    metrics: dict[str, Any]
    counters: dict[str, int]
    decisions: int
    sim_time_ns: int
    #: sha256 of the write-attempt sequence (fault, page, mm, outcome, reason, violation).
    decision_hash: str = ""
    #: The write-attempt records (not part of :meth:`to_dict`; empty without keep_records).
    records: list[FaultRecord] = field(default_factory=list, repr=False, compare=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (``cowlab workload run --json``)."""
        return {
            "workload": self.workload,
            "params": self.params,
            "kernel": self.kernel,
            "policy": self.policy,
            "seed": self.seed,
            "decisions": self.decisions,
            "sim_time_ns": self.sim_time_ns,
            "decision_hash": self.decision_hash,
            "metrics": self.metrics,
            "counters": self.counters,
        }


def decision_hash(records: list[FaultRecord]) -> str:
    """A sha256 over every write attempt in order: fault kind, mm, page, outcome, reason,
    violation and latency. Two runs with the same hash made the same decisions."""
    digest = hashlib.sha256()
    for r in records:
        digest.update(
            f"{r.fault}|{r.mm}|{r.page}|{r.outcome}|{r.reason}|{r.violation}|{r.latency_ns}\n"
            .encode()
        )
    return digest.hexdigest()


def machine_for(workload: Workload, machine: Machine | None) -> Machine:
    """The machine a run uses: the given one (default ``Machine()``) with the workload's
    own requirements applied."""
    base = machine or Machine()
    overrides: dict[str, Any] = dict(workload.machine_overrides())
    if "cpus" in overrides:
        overrides["cpus"] = max(int(overrides["cpus"]), base.cpus)
    return replace(base, **overrides) if overrides else base


def resolve_workload(workload: Workload, seed: int) -> Workload:
    """The workload a run of ``workload`` with ``seed`` really executes.

    A workload that is a seeded choice among others (``mix-v1``) has a
    ``for_seed(seed)`` method returning the chosen one; the machine must be built for
    that one (its ``machine_overrides()``), so call this before :func:`machine_for`
    and give the result to :class:`Run`. Any other workload is returned as it is.
    """
    for_seed = getattr(workload, "for_seed", None)
    if for_seed is None:
        return workload
    chosen: Workload = for_seed(seed)
    return chosen


def run_workload(
    workload: Workload,
    config: KernelConfig,
    policy: Policy,
    *,
    seed: int = 0,
    budget: Budget | None = None,
    machine: Machine | None = None,
    params: Mapping[str, Any] | None = None,
    keep_records: bool = True,
    geometry: Geometry = DEFAULT_GEOMETRY,
    costs: CostModel | None = None,
) -> WorkloadResult:
    """Run ``workload`` once and summarize it (the one way every caller runs a workload:
    the CLI, the evaluator, the env's equivalence checks and the leaderboard)."""
    concrete = resolve_workload(workload, seed)
    kernel = Kernel(config, policy, machine=machine_for(concrete, machine), seed=seed,
                    keep_records=keep_records, geometry=geometry, costs=costs)
    run = Run(concrete, kernel, seed, budget or Budget())
    run.execute()
    return WorkloadResult(
        workload=workload.id,
        params=dict(params or {}),
        kernel=config.name,
        policy=getattr(policy, "name", type(policy).__name__),
        seed=seed,
        metrics=summarize(kernel.records, kernel.counters.as_dict()),
        counters=kernel.counters.as_dict(),
        decisions=kernel.nr_decisions,
        sim_time_ns=kernel.clock.now,
        decision_hash=decision_hash(kernel.records),
        records=kernel.records,
    )
