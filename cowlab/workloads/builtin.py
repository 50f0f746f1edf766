"""Registers the workloads shipped with cowlab (through the ``cowlab`` entry points)."""

from __future__ import annotations

from cowlab.plugins import RegisterFn, hookimpl
from cowlab.workloads.forceswap import Forceswap, ForceswapParams


@hookimpl
def cowlab_register_workloads(register: RegisterFn) -> None:
    """Register the shipped workloads."""
    register(
        "forceswap-v1",
        Forceswap,
        params=ForceswapParams,
        description="Nadav Amit's forceswap: MADV_PAGEOUT, read, timed write, helpers spinning",
    )
