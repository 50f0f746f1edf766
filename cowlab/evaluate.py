"""Evaluate one policy: run it on workloads x seeds and pool the metrics.

``evaluate_policy`` is the single evaluation contract used by training (periodic
validation and the final table). Each run is a workload run exactly as
:func:`cowlab.workloads.run_workload` does it (same kernel, machine and budget), with the
write-attempt records kept so that the metrics of all runs can be pooled: the reuse rate
is over every truly reusable fault of every run, the p99 latency over every fault.

    >>> from cowlab.config import WorkloadEntry
    >>> from cowlab.kernel import get_preset
    >>> from cowlab.plugins import get_registry
    >>> ev = evaluate_policy(get_registry().make_policy("exclusive"), kernel=get_preset("v5.19"),
    ...                      workloads=[WorkloadEntry("forceswap-v1", {"swap": "pmem"})],
    ...                      seeds=[0, 1], max_decisions=50)
    >>> ev.metrics["decisions"], ev.metrics["violations_total"], ev.metrics["reuse_rate"]
    (100, 0, 1.0)
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from cowlab.config import WorkloadEntry
from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.kernel import Machine
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.metrics import summarize
from cowlab.plugins import PluginRegistry, get_registry
from cowlab.workloads.base import Budget, Workload, WorkloadResult, run_workload

__all__ = ["Evaluation", "evaluate_policy", "run_once"]


@dataclass
class Evaluation:
    """A policy's pooled metrics over workloads x seeds, and each run's result."""

    policy: str
    metrics: dict[str, Any]
    runs: list[WorkloadResult] = field(default_factory=list)
    #: sha256 over every run's (workload, seed, fault, outcome) sequence.
    decisions_sha256: str = ""
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "policy": self.policy,
            "metrics": self.metrics,
            "decisions_sha256": self.decisions_sha256,
            "wall_s": self.wall_s,
            "runs": [r.to_dict() for r in self.runs],
        }


def run_once(
    workload: Workload,
    config: KernelConfig,
    policy: Policy,
    *,
    seed: int,
    budget: Budget,
    machine: Machine | None = None,
    geometry: Geometry = DEFAULT_GEOMETRY,
    params: dict[str, Any] | None = None,
) -> tuple[WorkloadResult, list[FaultRecord]]:
    """One run through :func:`cowlab.workloads.run_workload`, with its records."""
    result = run_workload(workload, config, policy, seed=seed, budget=budget, machine=machine,
                          params=params, geometry=geometry)
    return result, result.records


def evaluate_policy(
    policy: Policy,
    *,
    kernel: KernelConfig,
    workloads: Sequence[WorkloadEntry],
    seeds: Sequence[int],
    max_decisions: int,
    machine: Machine | None = None,
    geometry: Geometry = DEFAULT_GEOMETRY,
    registry: PluginRegistry | None = None,
) -> Evaluation:
    """Run ``policy`` on every workload with every seed and pool the metrics."""
    reg = registry or get_registry()
    start = time.perf_counter()
    pooled: list[FaultRecord] = []
    counters: Counter[str] = Counter()
    runs: list[WorkloadResult] = []
    digest = hashlib.sha256()
    for entry in workloads:
        for seed in seeds:
            workload = cast(Workload, reg.make("workload", entry.name, entry.params))
            result, records = run_once(
                workload, kernel, policy, seed=seed, budget=Budget(max_decisions=max_decisions),
                machine=machine, geometry=geometry, params=entry.params,
            )
            runs.append(result)
            pooled += records
            counters.update(result.counters)
            digest.update(f"{entry.name}:{seed}:".encode())
            digest.update("".join(r.outcome[0] for r in records).encode())
    name = getattr(policy, "name", type(policy).__name__)
    return Evaluation(
        policy=name,
        metrics=summarize(pooled, counters),
        runs=runs,
        decisions_sha256=digest.hexdigest(),
        wall_s=time.perf_counter() - start,
    )
