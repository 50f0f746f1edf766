"""Simulated costs of kernel work, in nanoseconds.

Calibrated (KERNEL_MODEL.md section 6) so that Nadav Amit's forceswap
measurement holds on a 3 GHz machine: a write fault after swap-in costs about
1606 cycles when the page is reused (v5.8) and about 10534 cycles when it is
copied (mainline, Nov 2021). The difference is the allocation, a cache-cold
4 KiB copy, rmap/memcg accounting and one remote TLB shootdown (the helper
threads of forceswap keep the mm live on another CPU). Reuse needs no TLB
flush: it only upgrades a permission.

    >>> c = CostModel()
    >>> round(c.cycles(c.fault_ns + c.decide_ns + c.lock_ns))  # v5.8: lock, reuse
    1605
    >>> copy = c.alloc_ns + c.copy_4k_ns + c.rmap_ns + c.tlb_remote_ns
    >>> round(c.cycles(c.fault_ns + c.decide_ns + copy))  # v5.9: early copy
    10533
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class CostModel:
    """Costs charged to the faulting thread (all in nanoseconds)."""

    #: CPU clock used to convert to cycles for reports.
    cpu_ghz: float = 3.0
    #: Fault entry, PTE lock, PTE update and return: with the policy's flag reads and
    #: the page lock, a reused write fault after swap-in is ~1606 cycles.
    fault_ns: int = 505
    #: Allocating a new page (and zeroing is not needed for a copy target).
    alloc_ns: int = 450
    #: Copying 4 KiB cache-cold (0.2-0.5 us).
    copy_4k_ns: int = 400
    #: rmap, memcg charge and LRU insertion of the new page.
    rmap_ns: int = 600
    #: One remote TLB shootdown IPI round (1-3 us per target).
    tlb_remote_ns: int = 1546
    #: Zeroing a new anonymous page on first touch.
    zero_4k_ns: int = 300
    #: ``lru_add_drain()`` on the local CPU (~0.5 us).
    lru_drain_ns: int = 500
    #: ``lru_add_drain_all()``: a global mutex and work queued on every CPU (tens of us).
    lru_drain_all_ns: int = 30_000
    #: An uncontended ``folio_trylock()`` / ``folio_lock()``.
    lock_ns: int = 20
    #: ``try_to_free_swap()``: swap map update and swapcache removal.
    free_swap_ns: int = 300
    #: Refcount/mapcount/flag reads of a policy (per decision).
    decide_ns: int = 10
    #: Fork: per PTE copied.
    fork_pte_ns: int = 60
    #: Entering and leaving a system call that changes mappings (mmap, madvise, ...).
    syscall_ns: int = 300

    def cycles(self, ns: float) -> float:
        """Convert nanoseconds to cycles at :attr:`cpu_ghz`."""
        return ns * self.cpu_ghz

    def copy_ns(self, nr_pages: int) -> int:
        """Cost of copying ``nr_pages`` base pages (a 2 MiB THP is ~200 us)."""
        return self.copy_4k_ns * nr_pages

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the configurable costs."""
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class DeviceSpec:
    """A swap device: latency per 4 KiB read and write, and whether I/O is synchronous.

    Synchronous devices (zram, pmem, brd: ``SWP_SYNCHRONOUS_IO``) complete I/O
    inline and allow the swapcache bypass on swap-in; asynchronous ones
    (SSD, NVMe) complete after the latency, with pages locked (reads) or under
    writeback meanwhile.
    """

    kind: str
    synchronous: bool
    read_ns: int
    write_ns: int
    stable_writes: bool = False


#: Defaults per device kind (KERNEL_MODEL.md section 6: zram 4 KiB read 2-40 us
#: by compressor, NVMe swap-in 80-200 us; pmem is a memory copy).
DEVICES: dict[str, DeviceSpec] = {
    "zram": DeviceSpec("zram", synchronous=True, read_ns=4_000, write_ns=6_000),
    "pmem": DeviceSpec("pmem", synchronous=True, read_ns=1_500, write_ns=2_000),
    "ssd": DeviceSpec("ssd", synchronous=False, read_ns=150_000, write_ns=200_000),
    "nvme": DeviceSpec("nvme", synchronous=False, read_ns=90_000, write_ns=60_000),
}
