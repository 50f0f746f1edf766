"""Stochastic workload generators, each with a versioned id (``forceswap-v1``)."""

from __future__ import annotations

from cowlab.workloads.base import (
    Budget,
    Run,
    Workload,
    WorkloadResult,
    machine_for,
    resolve_workload,
    run_workload,
)

__all__ = [
    "Budget",
    "Run",
    "Workload",
    "WorkloadResult",
    "machine_for",
    "resolve_workload",
    "run_workload",
]
