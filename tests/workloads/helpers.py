"""Helpers for the workload tests: build a run by name, trace it, tear it down."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cowlab.kernel import Kernel, get_preset
from cowlab.plugins import get_registry
from cowlab.workloads import Budget, Run, Workload, machine_for, resolve_workload

#: Small parameters per workload, so that a test run takes a fraction of a second.
SMALL: dict[str, dict[str, Any]] = {
    "forceswap-v1": {"nops": 200, "nthreads": 2},
    "fork-snapshot-v1": {"pages": 256, "snapshot_period_ms": 0.3, "duration_ms": 3.0},
    "pinned-io-v1": {"duration_ms": 3.0, "fork_period_ms": 0.4, "softdirty_period_ms": 0.3,
                     "reregister_period_ms": 1.0},
    "memcached-pressure-v1": {"pages": 600, "ram_pages": 400, "duration_ms": 3.0},
    "softdirty-tracking-v1": {"pages": 256, "duration_ms": 3.0, "criu_period_ms": 0.3,
                              "qemu_period_ms": 0.5},
    "ksm-vms-v1": {"vms": 3, "pages": 64, "idle_ms": 0.3, "duration_ms": 3.0,
                   "ksm_sleep_ms": 0.05},
    "vmsplice-pipe-v1": {"pages": 128, "duration_ms": 3.0, "splice_period_ms": 0.2},
    "mix-v1": {},
}

#: Background actors switched on in addition (for the workloads that take them).
WITH_ACTORS: dict[str, Any] = {"kswapd": True, "compaction_rate": 20_000.0,
                               "drain_all_period_ms": 0.2}


def build(name: str, params: dict[str, Any] | None = None, *, preset: str = "v5.19",
          policy: str | None = None, seed: int = 0, decisions: int = 300,
          time_ms: float | None = 20.0) -> Run:
    """A run of workload ``name`` (resolved for ``seed``), not yet started."""
    reg = get_registry()
    workload: Workload = resolve_workload(
        reg.make("workload", name, params or {}), seed  # type: ignore[arg-type]
    )
    config = get_preset(preset)
    made = reg.make_policy(policy or config.default_policy)
    kernel = Kernel(config, made, machine=machine_for(workload, None), seed=seed)
    budget = Budget(max_decisions=decisions,
                    max_time_ns=None if time_ms is None else int(time_ms * 1e6))
    return Run(workload, kernel, seed, budget)


def trace(k: Kernel) -> list[tuple[object, ...]]:
    """Every write attempt, in order, with what was decided and when."""
    return [(r.mm, r.page, r.cpu, r.fault, r.outcome, r.reason, r.violation, r.time_ns,
             r.latency_ns) for r in k.records]


def fingerprint(k: Kernel) -> str:
    """A hash of the decision sequence, the counters and the simulated time."""
    text = json.dumps([repr(trace(k)), sorted(k.counters.items()), k.clock.now])
    return hashlib.sha256(text.encode()).hexdigest()


def teardown(k: Kernel) -> list[str]:
    """Exit every mm, drop every GUP reference, finish I/O and drain the batches, as the
    end of every process would; returns the frames and swap slots left over."""
    for mm in list(k.mms.values()):
        if mm.alive:
            k.exit_mm(mm)
    for name in list(k.gup_names):
        k.put(name)
    k.io_complete()
    k.lru_add_drain_all()
    k.reclaim_unmapped_swapcache()
    left = [f.describe() for f in {id(f): f for f in k.frames.values()}.values()]
    if k.swap.swap_map or k.swap.cache:
        left.append(f"swap slots {sorted(k.swap.swap_map)} cache {sorted(k.swap.cache)}")
    return left
