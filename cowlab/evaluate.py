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
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from cowlab.config import WorkloadEntry
from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.kernel import Machine
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.metrics import summarize
from cowlab.plugins import PluginRegistry, call_lifecycle, get_registry
from cowlab.workloads.base import Budget, Workload, WorkloadResult, run_workload

__all__ = [
    "Evaluation",
    "Progress",
    "SweepResult",
    "evaluate_policy",
    "parse_seeds",
    "run_once",
    "run_sweep",
]


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


# ------------------------------------------------------------------------------ sweeps


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"3"``, ``"0,2,5-7"`` -> a sorted list of distinct seeds.

        >>> parse_seeds("0-3,7,2")
        [0, 1, 2, 3, 7]

    Raises:
        ValueError: Not a seed list.
    """
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                seeds.update(range(a, b + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: expected e.g. 0-9 or 0,2,5-7") from None
    return sorted(seeds)


class Progress:
    """Progress of a sweep on stderr: done / total, rate and an estimate of the time left."""

    def __init__(self, total: int, *, workers: int = 1, stream: TextIO | None = None,
                 every_s: float = 1.0) -> None:
        self.total = total
        self.workers = workers
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.start = time.perf_counter()
        self._last = 0.0

    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first record)."""
        if not self.done:
            return None
        elapsed = time.perf_counter() - self.start
        return elapsed / self.done * (self.total - self.done)

    def line(self) -> str:
        """The current progress line."""
        elapsed = time.perf_counter() - self.start
        eta = self.eta_s()
        rate = self.done / elapsed * 60 if elapsed > 0 else 0.0
        left = "?" if eta is None else _hms(eta)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"sweep: {self.done}/{self.total} records ({pct:.0f}%), "
                f"{rate:.0f} records/min on {self.workers} worker(s), "
                f"elapsed {_hms(elapsed)}, ETA {left}")

    def update(self, n: int = 1) -> None:
        """Count ``n`` finished records; print at most every ``every_s`` seconds."""
        self.done += n
        now = time.perf_counter()
        if self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            print(self.line(), file=self.stream, flush=True)


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@dataclass
class SweepResult:
    """What a sweep produced: every record of its specs (old and new), in spec order."""

    records: list[dict[str, Any]]
    #: Records run by this call (the others were found in the file).
    ran: int
    #: Records reused from the file (same config, same code).
    skipped: int
    wall_s: float
    #: Records found in the file but run again, by reason (``"cowlab build changed"``).
    stale: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: how many records were reused, run and rerun, and why."""
        new = self.ran - sum(self.stale.values())
        text = f"{self.skipped} reused, {new} new"
        if self.stale:
            why = "; ".join(f"{n} {reason}" for reason, n in sorted(self.stale.items()))
            text += f", {sum(self.stale.values())} rerun because the code changed ({why})"
        return text


def run_sweep(
    specs: Sequence[Any],
    out: str | Path,
    *,
    executor: Any = None,
    resume: bool = True,
    progress: bool = True,
    registry: PluginRegistry | None = None,
    stream: TextIO | None = None,
) -> SweepResult:
    """Run every spec not yet in ``out`` and append its record there.

    Records already in the file with the same config *and* the same code (cowlab's
    version and build, the policy's and workload's plugin code, a learned agent's model
    file: :func:`cowlab.records.staleness`) are reused, so an interrupted sweep resumes
    where it stopped; a stale record is dropped and run again, and the reason is counted
    in :attr:`SweepResult.stale` and printed to ``stream``. A torn last line is dropped
    with a warning first. When anything ran, the file is rewritten in canonical order
    (:func:`cowlab.records.sort_records`), so it does not depend on the order in which
    the executor finished the runs. Calls the lifecycle hooks ``cowlab_run_started``,
    ``cowlab_episode_finished`` (per record) and ``cowlab_run_finished``.

    Args:
        specs: :class:`cowlab.records.RunSpec` objects (duplicates are run once).
        out: The JSON Lines records file.
        executor: A :class:`cowlab.executors.Executor` (default: the process pool).
        resume: Keep existing records and skip their specs; False starts a new file.
        progress: Print progress with an estimate of the time left to ``stream``.
        registry: Plugin registry for the lifecycle hooks.
        stream: Where progress and the reuse report go (default stderr).
    """
    from cowlab.executors import make_executor
    from cowlab.records import (
        RecordWriter,
        record_key,
        repair,
        rewrite,
        staleness,
        timing_path,
    )

    reg = registry or get_registry()
    err = stream or sys.stderr
    start = time.perf_counter()
    path = Path(out)
    if not resume:
        path.unlink(missing_ok=True)
        timing_path(path).unlink(missing_ok=True)
    stored = [r for r in repair(path) if "config" in r]
    wanted: dict[str, dict[str, Any]] = {}
    for spec in specs:
        wanted.setdefault(spec.key, spec.to_dict())
    stale: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []  # what stays in the file
    current: list[dict[str, Any]] = []  # what this sweep may reuse
    for r in stored:
        wanted_here = record_key(r["config"]) in wanted
        reason = staleness(r, reg) if wanted_here else None
        if reason is None:
            kept.append(r)
            if wanted_here:
                current.append(r)
        else:
            stale[reason] += 1
        # records of runs this sweep does not ask for stay as they are (not ours to judge)
    if len(kept) < len(stored):
        rewrite(path, kept)
    if stale:
        why = "; ".join(f"{n} because {reason}" for reason, n in sorted(stale.items()))
        print(f"cowlab: {sum(stale.values())} record(s) in {path} are stale and run again "
              f"({why})", file=err)
    existing = {record_key(r["config"]): r for r in current}
    todo_keys = [k for k in wanted if k not in existing]
    reused = len(wanted) - len(todo_keys)
    if existing and reused:
        print(f"cowlab: reusing {reused} record(s) from {path} (same config and code)",
              file=err)
    own = executor is None
    ex = make_executor("process") if own else executor
    run_info = {"kind": "sweep", "out": str(path), "executor": ex.name,
                "total": len(wanted), "todo": len(todo_keys)}
    call_lifecycle(reg, "cowlab_run_started", run=run_info)
    bar = Progress(len(todo_keys), workers=ex.workers, stream=stream) if progress else None
    new: dict[str, dict[str, Any]] = {}
    try:
        if todo_keys:
            with RecordWriter(path) as writer:
                todo = [wanted[k] for k in todo_keys]
                for i, rec in ex.map_unordered(todo):
                    writer.write(rec)
                    new[todo_keys[i]] = rec
                    call_lifecycle(reg, "cowlab_episode_finished", run=run_info, episode=rec)
                    if bar is not None:
                        bar.update()
    finally:
        if own:
            ex.close()
        if new:
            # canonical order, whatever order the executor finished in
            rewrite(path, [*kept, *new.values()])
    records = [existing.get(k) or new[k] for k in wanted]
    call_lifecycle(reg, "cowlab_run_finished", run=run_info,
                   results={"records": len(records), "ran": len(new), "skipped": reused})
    return SweepResult(records, len(new), reused, time.perf_counter() - start, dict(stale))
