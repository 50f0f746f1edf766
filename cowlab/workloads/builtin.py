"""Registers the workloads shipped with cowlab (through the ``cowlab`` entry points)."""

from __future__ import annotations

from cowlab.plugins import RegisterFn, hookimpl
from cowlab.workloads.forceswap import Forceswap, ForceswapParams
from cowlab.workloads.fork_snapshot import ForkSnapshot, ForkSnapshotParams
from cowlab.workloads.ksm_vms import KsmVms, KsmVmsParams
from cowlab.workloads.memcached import MemcachedPressure, MemcachedPressureParams
from cowlab.workloads.mix import Mix, MixParams
from cowlab.workloads.pinned_io import PinnedIo, PinnedIoParams
from cowlab.workloads.softdirty import SoftdirtyTracking, SoftdirtyTrackingParams
from cowlab.workloads.vmsplice import VmsplicePipe, VmsplicePipeParams


@hookimpl
def cowlab_register_workloads(register: RegisterFn) -> None:
    """Register the shipped workloads."""
    register(
        "forceswap-v1",
        Forceswap,
        params=ForceswapParams,
        description="Nadav Amit's forceswap: MADV_PAGEOUT, read, timed write, helpers spinning",
    )
    register(
        "fork-snapshot-v1",
        ForkSnapshot,
        params=ForkSnapshotParams,
        description="Redis BGSAVE / AOF rewrite: skewed writes while a forked child "
        "snapshots the dataset and exits",
    )
    register(
        "pinned-io-v1",
        PinnedIo,
        params=PinnedIoParams,
        description="RDMA / io_uring fixed buffers pinned long-term, with fork, soft-dirty "
        "clears and device DMA",
    )
    register(
        "memcached-pressure-v1",
        MemcachedPressure,
        params=MemcachedPressureParams,
        description="multi-threaded cache under memory pressure with swap, kswapd and "
        "threads migrating between CPUs",
    )
    register(
        "softdirty-tracking-v1",
        SoftdirtyTracking,
        params=SoftdirtyTrackingParams,
        description="CRIU soft-dirty pre-dumps and QEMU uffd-wp background snapshots of "
        "exclusive pages",
    )
    register(
        "ksm-vms-v1",
        KsmVms,
        params=KsmVmsParams,
        description="VM guests with mergeable memory under ksmd, then writing",
    )
    register(
        "vmsplice-pipe-v1",
        VmsplicePipe,
        params=VmsplicePipeParams,
        description="forked workers vmsplice() shared pages into pipes and exit "
        "(CVE-2020-29374's pattern)",
    )
    register(
        "mix-v1",
        Mix,
        params=MixParams,
        description="a weighted mixture: each run picks one shipped workload from its seed",
    )
