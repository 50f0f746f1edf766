"""The simulated kernel: address spaces, faults, fork, GUP, swap, LRU, KSM.

:class:`Kernel` owns every piece of simulated state and implements the
operations a scenario or workload performs. It asks the reuse policy at the
one decision point (:meth:`Kernel.decide_and_apply`) on every anonymous write
fault that needs a decision, builds the ground truth for it, and records one
:class:`~cowlab.kernel.fault.FaultRecord` per write or unshare attempt.

Upstream references (mm/memory.c unless noted) are given per method; the era
differences come from :class:`~cowlab.kernel.presets.KernelConfig`.

Time. Every operation charges its simulated cost to :attr:`Kernel.busy_ns`, the busy
time of the thread doing it; a fault's latency is what it charged. Used directly (the
scripted mode), each public operation then lets the clock run to its end, and a thread
that must sleep (a page lock held by an in-flight read) runs the clock until it wakes.
Under the :class:`~cowlab.kernel.engine.Engine` (``defer_sleeps``) the engine owns the
clock: operations never move it, and a sleep raises :class:`~cowlab.kernel.clock.Sleep`
so the engine can park the thread and retry its operation later.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from cowlab.geometry import (
    _PAGE_ACCESSED,
    _PAGE_PSE,
    DEFAULT_GEOMETRY,
    Geometry,
    GeometryError,
    make_pte,
    pte_dirty,
    pte_mkdirty,
    pte_mkwrite,
    pte_mkyoung,
    pte_pfn,
    pte_present,
    pte_soft_dirty,
    pte_uffd_wp,
    pte_write,
    swp_offset,
)
from cowlab.kernel.clock import Clock, Sleep
from cowlab.kernel.costs import DEVICES, CostModel, DeviceSpec
from cowlab.kernel.counters import new_counters
from cowlab.kernel.decision import COPY_REASONS, Decision
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord, FaultView, OracleFaultView, PolicyError
from cowlab.kernel.folio import PMD, ZERO_PFN, Folio, LockHolder
from cowlab.kernel.fork import fork_mm
from cowlab.kernel.gup import (
    GupHandle,
    drop_speculative,
    get_user_pages,
    gup_read,
    gup_write,
    put_user_pages,
    take_speculative,
    zero_page_pinned_by,
)
from cowlab.kernel.ksm import merge_pages, unmerge_range
from cowlab.kernel.lru import Lru
from cowlab.kernel.migrate import (
    finish_migration,
    is_migration_entry,
    migration_pfn,
    start_migration,
)
from cowlab.kernel.mlock import check_not_locked, mlock_range, munlock_range
from cowlab.kernel.mm import MM, PROTS, VMA
from cowlab.kernel.mremap import move_range
from cowlab.kernel.pagetable import FrameTable
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.kernel.protect import (
    change_protection,
    clear_soft_dirty,
    uffd_unprotect_pte,
    userfaultfd_wp,
)
from cowlab.kernel.reclaim import (
    madvise_cold,
    madvise_free,
    madvise_pageout,
    reclaim_unmapped_swapcache,
    shrink_lru,
)
from cowlab.kernel.safety import Truth, judge, page_truth
from cowlab.kernel.swap import SwapDevice
from cowlab.kernel.swapin import do_swap_page, finish_swap_path
from cowlab.kernel.thp import (
    HUGETLB_ORDERS,
    collapse,
    copy_huge,
    fault_order,
    hugetlb_wp,
    map_new_large,
    note_partially_mapped,
    parse_thp,
    reuse_pmd,
    split_pmd,
    split_pmds_in,
)


def watermarks(ram_pages: int | None) -> tuple[int, int, int]:
    """(min, low, high) free-page watermarks for ``ram_pages`` of RAM.

    min is ~sqrt(16 x RAM in KiB) as min_free_kbytes is sized (at least 128 KiB); low and
    high add watermark_scale_factor's default 0.1% of RAM (at least min/4) each step.
    """
    if ram_pages is None:
        return (0, 0, 0)
    min_kb = max(128, int((ram_pages * 4 * 16) ** 0.5))
    wmin = max(8, min_kb // 4)
    step = max(wmin // 4, ram_pages // 1000)
    return (wmin, wmin + step, wmin + 2 * step)


ADVICES: Final = (
    "pageout",
    "cold",
    "dontneed",
    "free",
    "dontfork",
    "dofork",
    "collapse",
    "mergeable",
    "unmergeable",
)
#: Advice refused with EINVAL on a VM_LOCKED range (can_madv_lru_vma(),
#: madvise_dontneed_free_valid_vma()).
_LOCKED_EINVAL: Final = ("pageout", "cold", "dontneed", "free")

#: What a store that does not fault returns when the kernel keeps no record of such
#: stores (``record_hits=False``): one shared record (do not modify it).
NO_FAULT: Final = FaultRecord("", -1, -1, "none", "none")

#: The contents of a page written without ``data`` is ``WRITE_TOKEN_BASE + n`` for the
#: n-th such write: one integer per page (a scenario's data is a 64-bit word or a
#: string, so never equal to one of these).
WRITE_TOKEN_BASE: Final = 1 << 64

_F = TypeVar("_F", bound=Callable[..., Any])

#: LockHolder values without a release time, by reason (Kernel.lock_folio()).
_UNTIMED_HOLDERS: Final[dict[str, LockHolder]] = {}


def operation(fn: _F) -> _F:
    """Mark a public kernel operation: it starts a new busy-time account and, in the
    scripted mode, lets the clock run to its end. Nested operations join the outer one."""

    @functools.wraps(fn)
    def run(self: Kernel, *args: Any, **kwargs: Any) -> Any:
        if self._in_op:
            return fn(self, *args, **kwargs)
        start = self._begin_op()
        try:
            return fn(self, *args, **kwargs)
        finally:
            self._end_op(start)

    return run  # type: ignore[return-value]


@dataclass(frozen=True)
class Machine:
    """The simulated machine: CPUs and the swap device."""

    cpus: int = 2
    swap: str = "zram"
    stable_writes: bool = False
    swap_slots: int = 1 << 20
    #: RAM in 4 KiB pages; None for unlimited (no memory pressure).
    ram_pages: int | None = None
    #: /sys/kernel/mm/transparent_hugepage/enabled: "madvise" (only mappings that ask,
    #: ``thp:`` in mmap), "always" (the same here: every mapping states its wish), "never".
    thp: str = "madvise"

    def device(self) -> DeviceSpec:
        """The :class:`DeviceSpec` for :attr:`swap` with :attr:`stable_writes` applied."""
        base = DEVICES[self.swap]
        return DeviceSpec(
            base.kind, base.synchronous, base.read_ns, base.write_ns, self.stable_writes
        )

    def __post_init__(self) -> None:
        if (
            not isinstance(self.cpus, int)
            or isinstance(self.cpus, bool)
            or not (1 <= self.cpus <= 1024)
        ):
            raise KernelError(f"machine.cpus: expected an integer 1..1024, got {self.cpus!r}")
        if not isinstance(self.swap, str) or self.swap not in DEVICES:
            raise KernelError(
                f"machine.swap: unknown swap device {self.swap!r}; known: {', '.join(DEVICES)}"
            )
        if self.thp not in ("always", "madvise", "never"):
            raise KernelError(
                f"machine.thp: expected always, madvise or never, got {self.thp!r}"
            )
        if self.ram_pages is not None and (
            not isinstance(self.ram_pages, int)
            or isinstance(self.ram_pages, bool)
            or self.ram_pages < 256
        ):
            raise KernelError(
                f"machine.ram_pages: expected an integer of at least 256 pages (1 MiB), "
                f"got {self.ram_pages!r}"
            )
        if (
            not isinstance(self.swap_slots, int)
            or isinstance(self.swap_slots, bool)
            or not 2 <= self.swap_slots <= 1 << 50
        ):
            raise KernelError(
                "machine.swap_slots: expected an integer 2..2^50 (slot 0 is the swap header), "
                f"got {self.swap_slots!r}"
            )


class Kernel:
    """All simulated state and the operations on it."""

    def __init__(
        self,
        config: KernelConfig,
        policy: Policy,
        *,
        geometry: Geometry = DEFAULT_GEOMETRY,
        machine: Machine | None = None,
        costs: CostModel | None = None,
        seed: int | None = 0,
        keep_records: bool = True,
        record_hits: bool = True,
    ) -> None:
        self.config = config
        self.geometry = geometry
        self.machine = machine or Machine()
        self.costs = costs or CostModel()
        self.clock = Clock()
        self.counters = new_counters()
        self.frames = FrameTable()
        self._next_pfn = 1  # pfn 0 is the zero page
        self.mms: dict[int, MM] = {}
        self._next_mm = 1
        self.swap = SwapDevice(self.machine.device(), self.machine.swap_slots)
        self.lru = Lru(
            self.machine.cpus, config.lru_batch_size, self.release_folio, config.new_anon_active
        )
        self.gups: dict[int, GupHandle] = {}
        self.gup_names: dict[str, list[int]] = {}
        self.next_gup_id = 1
        #: Set by the first mlock(): until then no folio can be mlocked (mlock.py).
        self.mlock_used = False
        #: Transient GUP-fast / PFN-walker references: (folio, token) (gup.py).
        self.speculative: list[tuple[Folio, int]] = []
        self.write_seq = 0
        self.keep_records = keep_records
        #: False: a store that does not fault makes no record (and returns the shared
        #: :data:`NO_FAULT`): for callers that read only the faults, like the env.
        self.record_hits = record_hits
        self.records: list[FaultRecord] = []
        self.violations: list[FaultRecord] = []
        #: Large folios left partly mapped, waiting for deferred_split_scan() (thp.py).
        self.deferred_split: dict[int, Folio] = {}
        #: Migration entries by the PFN of the folio being migrated (migrate.py).
        self.migration_entries: dict[int, list[tuple[MM, int]]] = {}
        self.watermarks = watermarks(self.machine.ram_pages)
        #: How many times the policy has been asked.
        self.nr_decisions = 0
        #: Simulated ns the operation in progress has cost its thread so far.
        self.busy_ns = 0
        #: Engine mode: sleeps raise :class:`Sleep` instead of running the clock.
        self.defer_sleeps = False
        self._in_op = False
        self.policy = policy
        self._oracle = bool(getattr(policy, "oracle", False))
        # Typed as returning anything: a plugin may return a non-Decision, which
        # decide_and_apply() reports (the compiled build would otherwise refuse it with a
        # bare TypeError at the call).
        self._decide: Callable[[FaultView], object] = policy.decide
        policy.reset(seed)

    def close(self) -> None:
        """Break this kernel's reference cycles once its run is over (:meth:`Run.close
        <cowlab.workloads.base.Run.close>`), so that its memory is freed when the last
        reference to it goes, not when Python's cyclic garbage collector next scans
        every object of every past run. The cycles are the LRU's (the links between
        folios, its release callback) and the pending clock events' callbacks, which are
        dropped. Counters, records and state can still be read; operations can no
        longer run."""
        self.lru.close()
        self.clock.cancel_all()

    # ==================================================================================
    # operations: busy-time accounts and the clock (@operation)
    # ==================================================================================
    def _begin_op(self) -> int:
        """Start an outermost operation: a new busy-time account; returns the start time."""
        self._in_op = True
        self.busy_ns = 0
        return self.clock.now

    def _end_op(self, start: int) -> None:
        """End the outermost operation begun at ``start``: in the scripted mode the clock
        runs to the end of the work it charged."""
        self._in_op = False
        if not self.defer_sleeps:
            self.clock.run_until(max(self.clock.now, start + self.busy_ns))

    # ==================================================================================
    # physical memory
    # ==================================================================================
    def alloc_folio(self, order: int = 0) -> Folio:
        nr = 1 << order
        pfn = (self._next_pfn + nr - 1) & ~(nr - 1)
        self._next_pfn = pfn + nr
        folio = Folio(pfn, order)
        frames = self.frames
        for i in range(nr):
            frames[pfn + i] = folio
        self.counters.pages_allocated += nr
        return folio

    @property
    def nr_free_pages(self) -> int | None:
        """Free RAM in pages (None when RAM is unlimited)."""
        ram = self.machine.ram_pages
        return None if ram is None else ram - len(self.frames)

    def direct_reclaim(self, cpu: int) -> None:
        """__alloc_pages_direct_reclaim(): below the min watermark, the allocating thread
        reclaims until it is above it again; out of memory if nothing can be reclaimed.

        It runs when a fault or fork starts, before any folio of that operation is held
        (the kernel allocates, then rechecks the PTE; starting clean avoids the recheck).
        """
        free = self.nr_free_pages
        if free is None or free > self.watermarks[0]:
            return
        target = self.watermarks[0] - free + 32
        reclaimed = shrink_lru(self, target, cpu, "direct_reclaim")
        self.counters.allocstall += 1
        free = self.nr_free_pages
        if not reclaimed and free is not None and free <= 0:
            due = self.clock.next_event_time()
            if due is not None:
                # reclaim_throttle(): pages are under writeback; wait for the next
                # completion and retry rather than declare out-of-memory.
                if self.defer_sleeps:
                    raise Sleep(due, "reclaim throttled on writeback")
                start = self.clock.now
                self.clock.run_until(due)
                self.busy_ns += self.clock.now - start
                return self.direct_reclaim(cpu)
            raise KernelError(
                f"out of memory: {self.machine.ram_pages} pages of RAM are in use and none "
                "could be reclaimed (raise machine.ram_pages or add swap)"
            )

    def release_folio(self, folio: Folio) -> None:
        """__folio_put(): the last reference went away; free the frames."""
        if folio.freed:
            return
        if folio.refcount:
            raise AssertionError(f"freeing {folio.describe()} with references")
        self.lru.del_from_list(folio)
        for i in range(folio.nr_pages):
            del self.frames[folio.pfn + i]
        folio.freed = True

    def put_ref(
        self, folio: Folio, kind: str, owner: object = None, n: int = 1, sub: int = 0
    ) -> None:
        folio.put(kind, owner, n, sub)
        if folio.refcount == 0:
            self.release_folio(folio)

    def folio_of(self, pfn: int) -> Folio:
        """The folio containing ``pfn``."""
        return self.frames[pfn]

    # ==================================================================================
    # locks, LRU drains, swap freeing (also the policy primitives)
    # ==================================================================================
    def lock_folio(self, folio: Folio, reason: str, release_at: int | None = None) -> None:
        """Take the page lock (the caller checked it is free)."""
        if release_at is not None:
            folio.lock = LockHolder(reason, release_at)
            return
        # Holders are immutable values: one per reason serves every untimed lock (the
        # policy's trylock() on every decision would otherwise build a tuple each time).
        holder = _UNTIMED_HOLDERS.get(reason)
        if holder is None:
            holder = _UNTIMED_HOLDERS[reason] = LockHolder(reason, None)
        folio.lock = holder

    def unlock_folio(self, folio: Folio) -> None:
        """folio_unlock()."""
        folio.lock = None

    def charge(self, ns: int) -> None:
        """Charge ``ns`` of simulated time to the operation in progress."""
        self.busy_ns += ns

    def wait_for_unlock(self, folio: Folio) -> None:
        """Sleep until ``folio`` is unlocked (folio_lock() / folio_lock_or_retry()).

        Scripted mode: run the clock until the holder lets go, charging the wait. Engine
        mode: raise :class:`Sleep` so the thread retries when the holder is due to let go.
        """
        holder = folio.lock
        if holder is None:
            return
        if self.defer_sleeps:
            until = holder.release_at
            if until is None or until <= self.clock.now:
                # No known release time (or it passed): wake at the next event.
                until = self.clock.next_event_time()
            if until is None:
                # Nothing pending releases it: the engine parks the thread as blocked
                # (and refuses the run once every thread is blocked this way).
                raise Sleep(None, f"folio pfn {folio.pfn:#x} locked by {holder.reason}, "
                            "no release pending")
            raise Sleep(max(until, self.clock.now), f"folio lock held by {holder.reason}")
        start = self.clock.now
        if not self.clock.run_while(lambda: folio.lock is not None):
            raise KernelError(self._deadlock(folio))
        self.busy_ns += self.clock.now - start

    def _deadlock(self, folio: Folio) -> str:
        reason = folio.lock.reason if folio.lock else "?"
        return (f"deadlock: folio pfn {folio.pfn:#x} is locked ({reason}) and nothing will "
                "ever release it")

    @operation
    def lru_add_drain(self, cpu: int) -> None:
        """lru_add_drain() on ``cpu`` (~0.5 us)."""
        self.lru.drain_cpu(cpu)
        self.counters.lru_add_drain += 1
        self.busy_ns += self.costs.lru_drain_ns

    @operation
    def lru_add_drain_all(self) -> None:
        """lru_add_drain_all(): every CPU's batches (tens of us)."""
        self.lru.drain_all()
        self.counters.lru_add_drain_all += 1
        self.busy_ns += self.costs.lru_drain_all_ns

    def try_to_free_swap(self, folio: Folio) -> bool:
        """try_to_free_swap() (mm/swapfile.c); the caller holds the lock.

        Fails while the folio is under writeback or any swap PTE still refers to it.
        """
        if folio.swap_entry is None:
            return False
        if folio.writeback or self.swap.swapped(folio):
            return False
        self.swap.delete_from_cache(folio)
        folio.dirty = True
        self.busy_ns += self.costs.free_swap_ns
        return True

    def swapcount_of(self, folio: Folio, index: int) -> int:
        """Swap PTEs referring to page ``index`` of ``folio`` (0 outside the swapcache)."""
        if folio.swap_entry is None:
            return 0
        return self.swap.count(folio.swap_entry[1] + index)

    def maybe_mapped_shared(self, folio: Folio) -> bool | None:
        """folio_maybe_mapped_shared() where the era has it (v6.15), else None."""
        if not self.config.folio_mm_ids:
            return None
        return folio.maybe_mapped_shared()

    # ==================================================================================
    # address spaces
    # ==================================================================================
    def create_mm(self, name: str) -> MM:
        """A new, empty address space."""
        mm = MM(self._next_mm, name)
        self._next_mm += 1
        self.mms[mm.id] = mm
        return mm

    def check_cpu(self, cpu: int) -> None:
        """Raise KernelError unless ``cpu`` exists."""
        if not 0 <= cpu < self.machine.cpus:
            raise KernelError(f"cpu {cpu} does not exist (machine has {self.machine.cpus} CPUs)")

    def check_range(self, page: int, pages: int) -> None:
        try:
            self.geometry.check_range(page, pages)
        except GeometryError as exc:
            raise KernelError(str(exc)) from None

    @operation
    def mmap(
        self,
        mm: MM,
        page: int,
        pages: int,
        *,
        prot: str = "rw",
        thp: str = "none",
        populate: bool = False,
        cpu: int = 0,
        hugetlb: str = "none",
    ) -> VMA:
        """mmap(MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE) of ``pages`` at ``page``.

        ``thp`` asks for transparent huge pages (``pmd``: 2 MiB THP, ``mthp-<order>``:
        multi-size THP, from v6.8) as MADV_HUGEPAGE would; ``hugetlb`` (``2m``, ``1g``)
        maps hugetlbfs pages instead (MAP_HUGETLB), which needs aligned ranges.
        """
        self.check_range(page, pages)
        self.check_cpu(cpu)
        if prot not in PROTS:
            raise KernelError(f"unknown protection {prot!r} (expected one of {', '.join(PROTS)})")
        order = parse_thp(thp)
        if 2 <= order < 9 and not self.config.mthp:
            raise KernelError(
                f"thp: {thp} needs multi-size THP, which kernel {self.config.name} does not "
                "have (v6.8+, 19eaf44954df); use thp: pmd or a v6.9+ preset"
            )
        if 2 <= order < 9 and order not in self.geometry.mthp_orders:
            raise KernelError(
                f"thp: {thp}: order {order} is not enabled (geometry.mthp_orders = "
                f"{list(self.geometry.mthp_orders)})"
            )
        huge_order = 0
        if hugetlb != "none":
            if hugetlb not in HUGETLB_ORDERS:
                raise KernelError(f"hugetlb: expected none, 2m or 1g, got {hugetlb!r}")
            if thp != "none":
                raise KernelError("a mapping is either hugetlb or THP, not both")
            huge_order = HUGETLB_ORDERS[hugetlb]
            nr = 1 << huge_order
            if page % nr or pages % nr:
                raise KernelError(
                    f"hugetlb {hugetlb}: page {page} and pages {pages} must be multiples of "
                    f"{nr} (EINVAL)"
                )
        if mm.overlaps(page, page + pages):
            raise KernelError(f"mm {mm.name}: pages {page}..{page + pages - 1} overlap a mapping")
        vma = VMA(page, page + pages, prot, thp, hugetlb=huge_order)
        mm.insert_vma(vma)
        self.busy_ns += self.costs.syscall_ns
        if populate and prot != "none":
            # populate_vma_page_range(): FOLL_WRITE for a writable private mapping.
            for p in range(page, page + pages):
                self.handle_fault(mm, vma, p, cpu, write=prot == "rw", record=False)
        return vma

    @operation
    def munmap(self, mm: MM, page: int, pages: int) -> None:
        """munmap(): zap and remove ``[page, page+pages)`` (holes are fine, as in Linux)."""
        self.check_range(page, pages)
        self.busy_ns += self.costs.syscall_ns
        end = page + pages
        for vma in mm.split_range(page, end):
            self.zap_range(mm, vma.start, vma.end)
            mm.vmas.remove(vma)

    @operation
    def exit_mm(self, mm: MM) -> None:
        """exit_mmap(): zap every mapping. GUP references taken by the mm stay until put."""
        for vma in list(mm.vmas):
            self.zap_range(mm, vma.start, vma.end)
        mm.vmas.clear()
        mm.alive = False
        mm.cpus.clear()

    def zap_range(self, mm: MM, start: int, end: int) -> None:
        """zap_pte_range(): drop present PTEs (freeing the swapcache of unmapped folios) and
        swap PTEs (free_swap_and_cache)."""
        pt = mm.pt
        flush = False
        huge = [v for v in mm.vmas if v.hugetlb and v.start < end and start < v.end]
        for v in huge:
            nr = 1 << v.hugetlb
            if max(start, v.start) % nr or min(end, v.end) % nr:
                raise KernelError(
                    f"mm {mm.name}: pages {start}..{end - 1} cut a hugetlb page in part (EINVAL)"
                )
        split_pmds_in(self, mm, start, end)
        huge_heads: list[tuple[int, Folio]] = []
        for p in pt.range_keys(start, end):
            pte = pt.pop(p)
            if pte & 1:
                pfn = pte_pfn(pte)
                if pfn == ZERO_PFN:
                    continue
                folio = self.frames[pfn]
                sub = pfn - folio.pfn
                if pte_dirty(pte):
                    folio.dirty = True
                flush = True
                if pte & _PAGE_PSE:
                    # zap_huge_pmd() (any PMD the range covers in part was split above);
                    # dropped once all its entries are gone.
                    if sub == 0:
                        huge_heads.append((p, folio))
                    continue
                folio.unmap_pte(mm.id, p, sub)
                if folio.order and folio.refcount:
                    note_partially_mapped(self, folio)
                # free_pages_and_swap_cache() -> free_swap_cache(): an unmapped folio
                # leaves the swapcache if it can be locked and freed.
                if (
                    folio.swap_entry is not None
                    and folio.lock is None
                    and folio.large_mapcount == 0
                ):
                    self.try_to_free_swap(folio)
                if folio.refcount == 0:
                    self.release_folio(folio)
            elif is_migration_entry(pte):
                entries = self.migration_entries.get(migration_pfn(pte))
                if entries is not None:
                    entries.remove((mm, p))
            else:
                self.free_swap_and_cache(swp_offset(pte), mm.id)
        for p, folio in huge_heads:
            folio.unmap_pmd((mm.id, p))
            if folio.refcount == 0:
                self.release_folio(folio)
        if flush:
            self.flush_tlb(mm, None)

    def free_swap_and_cache(self, offset: int, mm_id: int) -> None:
        """free_swap_and_cache() (mm/swapfile.c): drop one swap PTE's reference; when none
        is left, try to reclaim the swapcache folio (trylock, not under writeback)."""
        if self.swap.free_entry(offset, mm_id) == 0:
            folio = self.swap.cache.get(offset)
            if folio is not None and folio.lock is None and folio.large_mapcount == 0:
                self.try_to_free_swap(folio)
                if folio.refcount == 0:
                    self.release_folio(folio)

    def flush_tlb(self, mm: MM, cpu: int | None) -> None:
        """Flush ``mm``'s TLB; a flush that must reach other CPUs is a remote shootdown.

        ``cpu`` is the CPU doing the flush; None for operations that name no CPU
        (munmap, mprotect, ...), which count as remote only when the mm has run on more
        than one CPU.
        """
        others = len(mm.cpus) - (1 if cpu in mm.cpus or (cpu is None and mm.cpus) else 0)
        if others > 0:
            self.counters.nr_tlb_remote_flush += 1
            self.busy_ns += self.costs.tlb_remote_ns

    def vma_or_error(self, mm: MM, page: int) -> VMA:
        vma = mm.find_vma(page)
        if vma is None:
            self.check_range(page, 1)
            raise KernelError(f"mm {mm.name}: page {page} is not inside any mapping")
        return vma

    # ==================================================================================
    # faults
    # ==================================================================================
    def read(self, mm: MM, page: int, cpu: int = 0) -> object:
        """A load from ``page``; returns the page's content token (0 for the zero page)."""
        # An operation (see @operation), spelled out: the hottest calls skip the wrapper.
        if self._in_op:
            return self._read(mm, page, cpu)
        start = self._begin_op()
        try:
            return self._read(mm, page, cpu)
        finally:
            self._end_op(start)

    def _read(self, mm: MM, page: int, cpu: int) -> object:
        vma = self.vma_or_error(mm, page)
        if not vma.readable:
            raise KernelError(f"mm {mm.name}: read of page {page} in a PROT_NONE mapping (SIGSEGV)")
        self.check_cpu(cpu)
        mm.cpus.add(cpu)
        pte = mm.pt.get(page, 0)
        if not pte & 1:
            self.handle_fault(mm, vma, page, cpu, write=False, record=False)
            pte = mm.pt[page]
        elif not pte & 0x20:
            mm.pt[page] = pte_mkyoung(pte)
        pfn = pte_pfn(pte)
        if pfn == ZERO_PFN:
            return 0
        folio = self.frames[pfn]
        return folio.data_of(pfn - folio.pfn)

    def write(self, mm: MM, page: int, cpu: int = 0, data: object = None) -> FaultRecord:
        """A store to ``page``; returns the write attempt's record.

        The page's content becomes ``data`` (a 64-bit word or a string), or a fresh
        unique token when None (so two pages hold equal content only when written with
        the same ``data``, or copied). The fresh tokens are the integers from
        :data:`WRITE_TOKEN_BASE` up, which no 64-bit word equals.
        """
        # An operation (see @operation), spelled out: the hottest calls skip the wrapper.
        if self._in_op:
            return self._write(mm, page, cpu, data)
        start = self._begin_op()
        try:
            return self._write(mm, page, cpu, data)
        finally:
            self._end_op(start)

    def _write(self, mm: MM, page: int, cpu: int, data: object) -> FaultRecord:
        vma = self.vma_or_error(mm, page)
        if not vma.writable:
            raise KernelError(
                f"mm {mm.name}: write to page {page} in a PROT_{vma.prot.upper()} mapping (SIGSEGV)"
            )
        self.check_cpu(cpu)
        mm.cpus.add(cpu)
        pte = mm.pt.get(page, 0)
        if (pte & 3) == 3:  # present and writable: no fault
            if not pte & 0x40:
                mm.pt[page] = pte_mkdirty(pte)
            if not self.record_hits:
                self._store_pfn(pte_pfn(pte), data)
                return NO_FAULT
            hit = FaultRecord(mm.name, page, cpu, "none", "none", time_ns=self.clock.now)
            self._store_pfn(pte_pfn(pte), data)
            if self.keep_records:
                self.records.append(hit)
            return hit
        rec = self.handle_fault(mm, vma, page, cpu, write=True, record=True)
        assert rec is not None
        self._store(mm, page, data)
        return rec

    def _store(self, mm: MM, page: int, data: object) -> None:
        """The write lands in whatever page the PTE now maps."""
        self._store_pfn(pte_pfn(mm.pt[page]), data)

    def _store_pfn(self, pfn: int, data: object) -> None:
        """Store ``data`` (None: a fresh token) in the page ``pfn``."""
        if data is None:
            self.write_seq += 1
            data = WRITE_TOKEN_BASE + self.write_seq
        folio = self.frames[pfn]
        folio.set_data(pfn - folio.pfn, data)

    def handle_fault(
        self,
        mm: MM,
        vma: VMA,
        page: int,
        cpu: int,
        *,
        write: bool,
        record: bool,
        unshare: bool = False,
    ) -> FaultRecord | None:
        """handle_pte_fault(): dispatch on the PTE and account the fault.

        The record's latency is the simulated time the fault charged.
        """
        self.counters.pgfault += 1
        start = self.clock.now
        busy = self.busy_ns
        self.busy_ns += self.costs.fault_ns
        if self.machine.ram_pages is not None:
            self.direct_reclaim(cpu)
        pte = mm.pt.get(page, 0)
        if pte and not pte & 1 and is_migration_entry(pte):
            # migration_entry_wait(): sleep until the migration is over, then retry.
            self.wait_for_unlock(self.frames[migration_pfn(pte)])
            pte = mm.pt.get(page, 0)
            if pte & 1 and not unshare and (not write or pte_write(pte)):
                # The retried access finds the new page mapped as the entry allowed (a
                # writable entry comes back writable): no further fault.
                if write:
                    mm.pt[page] = pte_mkdirty(pte)
                    hit = FaultRecord(mm.name, page, cpu, "none", "none")
                    hit.time_ns = start
                    hit.latency_ns = self.busy_ns - busy
                    if record and self.keep_records:
                        self.records.append(hit)
                    return hit
                return None
        if pte == 0:
            rec = self._do_anonymous_page(mm, vma, page, cpu, write)
        elif not pte & 1:
            rec = do_swap_page(self, mm, vma, page, pte, cpu, write)
        elif write or unshare:
            rec = self.wp_fault(mm, vma, page, pte, cpu, unshare=unshare)
        else:
            if not pte & _PAGE_ACCESSED:
                mm.pt[page] = pte_mkyoung(pte)
            rec = None
        if rec is not None:
            rec.time_ns = start
            rec.latency_ns = self.busy_ns - busy
            if record and self.keep_records:
                self.records.append(rec)
            if rec.violation is not None:
                self.violations.append(rec)
        return rec

    def wp_fault(
        self,
        mm: MM,
        vma: VMA,
        page: int,
        pte: int,
        cpu: int,
        *,
        unshare: bool = False,
        fault_kind: str = "wp",
    ) -> FaultRecord:
        """A write (or unshare) fault on a present read-only PTE: userfaultfd first, then
        do_wp_page()."""
        if pte_uffd_wp(pte) and vma.uffd_wp and not unshare:
            # handle_userfault(): the monitor saves the page and resolves the
            # write-protection (UFFDIO_WRITEPROTECT mode 0); the write retries.
            uffd_unprotect_pte(self, mm, vma, page)
            pte = mm.pt[page]
            self.busy_ns += self.costs.fault_ns
            if pte_write(pte):
                return FaultRecord(mm.name, page, cpu, "none", "none")
        kind = "unshare" if unshare else fault_kind
        if pte & _PAGE_PSE:
            folio = self.frames[pte_pfn(pte)]
            if folio.hugetlb:
                return hugetlb_wp(self, mm, vma, page, folio, cpu, unshare, kind)
            return self.do_huge_pmd_wp_page(mm, vma, page, folio, pte, cpu, unshare, kind)
        return self.do_wp_page(mm, vma, page, pte, cpu, unshare=unshare, fault_kind=kind)

    def do_huge_pmd_wp_page(self, mm: MM, vma: VMA, page: int, folio: Folio, pte: int,
                            cpu: int, unshare: bool, fault_kind: str) -> FaultRecord:
        """do_huge_pmd_wp_page(): ask the policy on path ``pmd`` about the whole THP."""
        index = pte_pfn(pte) - folio.pfn
        if unshare and (not self.config.anon_exclusive or folio.pae_of(index)):
            return FaultRecord(mm.name, page, cpu, "unshare", "none", exclusive=True)
        return self.decide_and_apply(mm, vma, page, folio, index, cpu, path="pmd", pte=pte,
                                     unshare=unshare, fault_kind=fault_kind)

    def _new_anon_pte(self, folio: Folio, vma: VMA, *, write: bool) -> int:
        # do_anonymous_page(): writable and dirty only in a VMA with VM_WRITE.
        writable = write and vma.writable
        return make_pte(folio.pfn, write=writable, dirty=writable, soft_dirty=True)

    def _do_anonymous_page(
        self, mm: MM, vma: VMA, page: int, cpu: int, write: bool
    ) -> FaultRecord | None:
        """do_anonymous_page(): the zero page on a read, a new exclusive page on a write."""
        order = fault_order(self, mm, vma, page) if (vma.thp != "none" or vma.hugetlb) else 0
        if order and (write or vma.hugetlb):
            rec = map_new_large(self, mm, vma, page, order, cpu, write)
            return rec if write else None
        if not write:
            mm.pt[page] = make_pte(ZERO_PFN, write=False)
            return None
        folio = self.alloc_folio(0)
        folio.set_data(0, 0)
        if self.config.anon_exclusive:
            folio.set_pae(0, True)
        folio.map_pte(mm.id, page, 0)
        folio.dirty = True
        mm.pt[page] = self._new_anon_pte(folio, vma, write=True)
        self.lru.add(folio, cpu)
        self.busy_ns += self.costs.alloc_ns + self.costs.zero_4k_ns
        return FaultRecord(mm.name, page, cpu, "anon", "none")

    def do_wp_page(
        self,
        mm: MM,
        vma: VMA,
        page: int,
        pte: int,
        cpu: int,
        *,
        unshare: bool = False,
        fault_kind: str = "wp",
    ) -> FaultRecord:
        """do_wp_page(): copy from the zero page, or ask the policy about an anon folio."""
        pfn = pte_pfn(pte)
        if pfn == ZERO_PFN:
            # vm_normal_page() is NULL for the zero page, so do_wp_page() goes straight to
            # wp_page_copy() with no old page: a new zeroed page, never a reuse decision
            # (every era). An unshare fault (v6.2+ R/O longterm pin, 84209e87c696) maps
            # it read-only. A GUP reference the writer took on the zero page at this
            # address no longer sees what the process maps: the copy breaks it.
            own = zero_page_pinned_by(self, mm, page)
            self._copy_page(mm, vma, page, None, cpu, unshare=unshare)
            return FaultRecord(
                mm.name, page, cpu, "unshare" if unshare else "anon", "none",
                reason="zero_page", violation="pin_incoherent" if own else None,
            )
        folio = self.frames[pfn]
        index = pfn - folio.pfn
        if unshare and (not self.config.anon_exclusive or folio.pae_of(index)):
            # Nothing to unshare: the page is already exclusive.
            return FaultRecord(mm.name, page, cpu, "unshare", "none", exclusive=True)
        return self.decide_and_apply(
            mm, vma, page, folio, index, cpu, path="wp", pte=pte, unshare=unshare,
            fault_kind=fault_kind,
        )

    def decide_and_apply(
        self,
        mm: MM,
        vma: VMA,
        page: int,
        folio: Folio,
        index: int,
        cpu: int,
        *,
        path: str,
        pte: int,
        unshare: bool = False,
        fault_kind: str | None = None,
        swap_offset: int = 0,
    ) -> FaultRecord:
        """The one place that asks the policy and applies REUSE or COPY."""
        oracle_view: OracleFaultView | None = None
        view: FaultView
        if self._oracle:
            oracle_view = OracleFaultView(self, folio, index, mm, vma, page, cpu, path, unshare)
            view = oracle_view
        else:
            view = FaultView(self, folio, index, mm, vma, page, cpu, path, unshare)
        on_swap_path = path == "swap"
        if on_swap_path:
            view.locked_by_policy = True  # do_swap_page holds the folio lock
        # A PMD reuse makes the whole folio writable: every page must be exclusive.
        truth = page_truth(
            folio,
            None if path == "pmd" else index,
            mm.id,
            page,
            cpu,
            self.gups,
            self.swap,
            mapped_by_writer=0 if on_swap_path else 1,
        )
        if oracle_view is not None:
            oracle_view.truth = truth
        self.busy_ns += self.costs.decide_ns
        try:
            decision = self._decide(view)
        except Sleep:
            # Engine mode: lock() must sleep; the fault is retried when the holder is done.
            if view.locked_by_policy and not on_swap_path:
                self.unlock_folio(folio)
            raise
        except PolicyError as exc:
            raise PolicyError(self._policy_context(mm, page) + f": {exc}") from exc
        except Exception as exc:
            raise PolicyError(
                self._policy_context(mm, page) + f" raised {type(exc).__name__}: {exc}"
            ) from exc
        self.nr_decisions += 1
        if not isinstance(decision, Decision):
            raise PolicyError(
                self._policy_context(mm, page)
                + f" returned {decision!r}, not a Decision (Decision.REUSE or Decision.COPY)"
            )
        reuse = decision.kind == "reuse"
        counters = self.counters
        if on_swap_path:
            finish_swap_path(
                self, mm, vma, page, folio, index, pte, swap_offset, reuse, view.locked_by_policy
            )
            if not reuse:
                # Mapped read-only: the write continues into do_wp_page().
                return self.do_wp_page(mm, vma, page, mm.pt[page], cpu, fault_kind="swap")
            counters.swapin_reuse += 1
        elif path == "pmd":
            if view.locked_by_policy:
                self.unlock_folio(folio)
            start = page - index
            if reuse:
                reuse_pmd(self, mm, start, folio, unshare, writable=vma.writable)
                counters.pgreuse += 1
                counters.anon_wp_reuse += 1
            elif not self.config.thp_cow_copies_whole:
                # v5.8+ (3917c80280c9): split the PMD and fall back to the 4 KiB page.
                split_pmd(self, mm, start)
                return self.do_wp_page(mm, vma, page, mm.pt[page], cpu, unshare=unshare,
                                       fault_kind=fault_kind or "wp")
            else:
                copy_huge(self, mm, start, folio, cpu, unshare, writable=vma.writable)
                reason = decision.reason
                counters["anon_wp_copy_" + (reason if reason in COPY_REASONS else "policy")] += 1
        else:
            if view.locked_by_policy:
                self.unlock_folio(folio)
            if reuse:
                self._reuse_page(mm, vma, page, folio, index, unshare)
                counters.pgreuse += 1
                counters.anon_wp_reuse += 1
            else:
                self._copy_page(mm, vma, page, folio, cpu, unshare=unshare)
                reason = decision.reason
                counters["anon_wp_copy_" + (reason if reason in COPY_REASONS else "policy")] += 1
        violation = judge(truth, reuse)
        return FaultRecord(
            mm.name,
            page,
            cpu,
            fault_kind or path,
            "reuse" if reuse else "copy",
            decision.reason,
            violation,
            truth.exclusive,
            () if reuse or not truth.exclusive else truth.blockers,
        )

    def _policy_context(self, mm: MM, page: int) -> str:
        name = getattr(self.policy, "name", type(self.policy).__name__)
        return (
            f"policy '{name}' at the write fault of mm {mm.name} page {page} "
            f"(t={self.clock.now} ns)"
        )

    def _reuse_page(
        self, mm: MM, vma: VMA, page: int, folio: Folio, index: int, unshare: bool
    ) -> None:
        """wp_page_reuse(): make the PTE writable in place (or, for unshare, only mark
        the page exclusive). v5.19+ page_move_anon_rmap() sets PageAnonExclusive."""
        if self.config.anon_exclusive:
            folio.set_pae(index, True)
        if folio.ksm:
            # reuse_ksm_page() (up to v5.8): the page leaves the stable tree.
            folio.ksm = False
        if unshare:
            return
        pte = mm.pt[page]
        # maybe_mkwrite(pte_mkdirty()): a COW break in a VMA without VM_WRITE (v5.8's
        # forced break on PROT_READ memory) leaves the PTE dirty but read-only.
        pte = pte_mkyoung(pte_mkdirty(pte))
        mm.pt[page] = pte_mkwrite(pte) if vma.writable else pte
        folio.dirty = True

    def _copy_page(
        self, mm: MM, vma: VMA, page: int, old: Folio | None, cpu: int, *, unshare: bool = False
    ) -> None:
        """wp_page_copy(): allocate, copy, map the copy (exclusive), drop the old mapping;
        the old PTE is cleared and flushed (remotely if the mm runs on other CPUs)."""
        costs = self.costs
        new = self.alloc_folio(0)
        old_pte = mm.pt[page]
        if old is None:
            new.set_data(0, 0)
            self.busy_ns += costs.alloc_ns + costs.zero_4k_ns + costs.rmap_ns
        else:
            sub = pte_pfn(old_pte) - old.pfn
            new.set_data(0, old.data_of(sub))
            self.busy_ns += costs.alloc_ns + costs.copy_4k_ns + costs.rmap_ns
            self.counters.pages_copied += 1
            if old.ksm:
                self.counters.cow_ksm += 1
        if self.config.anon_exclusive:
            new.set_pae(0, True)
        new.map_pte(mm.id, page, 0)
        if unshare:
            pte = make_pte(
                new.pfn,
                write=False,
                dirty=False,
                soft_dirty=pte_soft_dirty(old_pte),
                uffd_wp=pte_uffd_wp(old_pte),
            )
        else:
            pte = make_pte(new.pfn, write=vma.writable, dirty=True, soft_dirty=True)
        mm.pt[page] = pte
        self.lru.add(new, cpu)
        if old is not None:
            self.put_mapping(old, mm.id, page, pte_pfn(old_pte) - old.pfn)
        self.flush_tlb(mm, cpu)

    def put_mapping(self, folio: Folio, mm_id: int, page: int, sub: int) -> None:
        """Drop one PTE mapping; a large folio left partly mapped queues for a split."""
        folio.unmap_pte(mm_id, page, sub)
        if folio.refcount == 0:
            self.release_folio(folio)
        elif folio.order:
            note_partially_mapped(self, folio)

    # ==================================================================================
    # madvise
    # ==================================================================================
    @operation
    def madvise(self, mm: MM, page: int, pages: int, advice: str, cpu: int = 0) -> None:
        """madvise() on ``[page, page+pages)``."""
        self.check_range(page, pages)
        self.check_cpu(cpu)
        self.busy_ns += self.costs.syscall_ns
        end = page + pages
        if advice not in ADVICES:
            raise KernelError(f"unknown advice {advice!r} (expected one of {', '.join(ADVICES)})")
        if not mm.covered(page, end):
            raise KernelError(
                f"mm {mm.name}: madvise of pages {page}..{end - 1}: part of the "
                "range is not mapped (ENOMEM)"
            )
        if advice in _LOCKED_EINVAL:
            check_not_locked(self, mm, page, end, advice)
        if advice == "free" and any(
            v.hugetlb for v in mm.vmas if v.start < end and page < v.end
        ):
            raise KernelError(
                f"mm {mm.name}: madvise(free) of pages {page}..{end - 1}: hugetlb (EINVAL)"
            )
        if advice == "pageout":
            madvise_pageout(self, mm, page, end, cpu)
        elif advice == "free":
            madvise_free(self, mm, page, end, cpu)
        elif advice == "unmergeable":
            unmerge_range(self, mm, page, end, cpu)
        elif advice == "cold":
            madvise_cold(self, mm, page, end, cpu)
        elif advice == "dontneed":
            self.zap_range(mm, page, end)
        elif advice in ("dontfork", "dofork"):
            # vma_adjust_trans_huge(): a VMA boundary inside a PMD THP splits the PMD.
            split_pmds_in(self, mm, page, end)
            for vma in mm.split_range(page, end):
                vma.dontfork = advice == "dontfork"
        elif advice == "mergeable":
            split_pmds_in(self, mm, page, end)
            for vma in mm.split_range(page, end):
                vma.mergeable = True
        else:
            # MADV_COLLAPSE (v6.1, 7d8faaf15545): every aligned 2 MiB block in the range.
            first = (page + 511) & ~511
            for start in range(first, end - 511, 512):
                collapse(self, mm, start, cpu)

    # ==================================================================================
    # operations implemented in their own modules
    # ==================================================================================
    @operation
    def fork(self, parent: MM, child_name: str, cpu: int = 0) -> MM:
        """fork(): a new mm sharing (or, per era, copying) the parent's pages."""
        # Copying an address space allocates a few objects per page, and they all live
        # on: Python's cyclic garbage collector would rescan the whole (growing) heap
        # many times during a large fork, most of its time. Nothing it allocates can
        # become cyclic garbage before it returns, so collection waits until then.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return fork_mm(self, parent, child_name, cpu)
        finally:
            if collecting:
                gc.enable()

    @operation
    def gup(
        self,
        mm: MM,
        page: int,
        pages: int,
        *,
        pin: bool,
        write: bool,
        longterm: bool = False,
        fast: bool = False,
        name: str,
        cpu: int = 0,
    ) -> list[FaultRecord]:
        """Take a GUP reference (``pin=False``) or pin on each page, faulting in as the era
        requires; returns the fault records of those faults."""
        return get_user_pages(
            self,
            mm,
            page,
            pages,
            pin=pin,
            write=write,
            longterm=longterm,
            fast=fast,
            name=name,
            cpu=cpu,
        )

    @operation
    def put(self, name: str) -> None:
        """Drop every reference or pin taken by the GUP request ``name``."""
        put_user_pages(self, name)

    def gup_read(self, name: str) -> list[object]:
        """What the holder of GUP reference ``name`` reads through it."""
        return gup_read(self, name)

    def gup_write(self, name: str) -> None:
        """A device writes new data through R/W pin ``name`` (DMA)."""
        gup_write(self, name)

    @operation
    def ksm_merge(self, pages: list[tuple[MM, int]]) -> int:
        """Merge pages of equal content into one KSM page; returns how many map it."""
        return merge_pages(self, pages)

    @operation
    def mprotect(self, mm: MM, page: int, pages: int, prot: str) -> None:
        """mprotect() of ``[page, page+pages)`` to ``prot`` (none, r, rw)."""
        change_protection(self, mm, page, pages, prot)

    @operation
    def clear_softdirty(self, mm: MM) -> None:
        """echo 4 > /proc/pid/clear_refs."""
        clear_soft_dirty(self, mm)

    @operation
    def uffd_wp(self, mm: MM, page: int, pages: int, enable: bool) -> None:
        """userfaultfd write-protection of ``[page, page+pages)`` on or off."""
        userfaultfd_wp(self, mm, page, pages, enable)

    @operation
    def migrate(self, folio: Folio, duration_ns: int, cpu: int = 0) -> bool:
        """Begin migrating ``folio`` (kcompactd, NUMA balancing): it stays locked and
        unmapped behind migration entries for ``duration_ns``, then is copied to a new
        folio (or restored if someone holds a reference). False if it cannot be migrated."""
        # The entries are held for duration_ns after the work this operation did so far
        # (a move_pages() call drains every CPU's batches first).
        release_at = self.clock.now + self.busy_ns + duration_ns
        if not start_migration(self, folio, release_at):
            return False

        def done() -> None:
            finish_migration(self, folio, cpu)

        self.clock.schedule(release_at, done)
        return True

    @operation
    def migrate_pages(
        self, mm: MM, page: int, pages: int, duration_ns: int, cpu: int = 0
    ) -> int:
        """move_pages(2) / migrate_pages(2) of the pages mapped at ``[page, page+pages)``.

        Every CPU's LRU batches are drained first (migrate_prep() up to v5.10, then
        lru_cache_disable(): either way lru_add_drain_all()) so that freshly faulted
        pages can be isolated; each distinct folio is then migrated as
        :meth:`migrate` does (locked and behind migration entries for ``duration_ns``;
        a fault on one of its pages waits, then sees the new page). A page that is not
        present, is the zero page, or cannot be isolated (a large folio, KSM, in the
        swapcache, under writeback, locked, pinned and exclusive from v5.19) is skipped,
        as move_pages() reports -EBUSY / -ENOENT for it. Returns how many folios started
        migrating; whether each one moved is decided when it ends (refcount check).
        """
        self.check_range(page, pages)
        self.check_cpu(cpu)
        self.busy_ns += self.costs.syscall_ns
        end = page + pages
        if not mm.covered(page, end):
            raise KernelError(
                f"mm {mm.name}: migrate of pages {page}..{end - 1}: part of the range is "
                "not mapped (ENOMEM)"
            )
        self.lru_add_drain_all()
        started = 0
        seen: set[int] = set()
        for p in range(page, end):
            pte = mm.pt.get(p, 0)
            if not pte & 1 or pte_pfn(pte) == ZERO_PFN:
                continue
            folio = self.frames[pte_pfn(pte)]
            if id(folio) in seen:
                continue
            seen.add(id(folio))
            started += self.migrate(folio, duration_ns, cpu)
        return started

    @operation
    def mlock(self, mm: MM, page: int, pages: int, cpu: int = 0) -> list[FaultRecord]:
        """mlock() of ``[page, page+pages)`` (VM_LOCKED, populated: see mlock.py)."""
        self.check_range(page, pages)
        self.check_cpu(cpu)
        self.busy_ns += self.costs.syscall_ns
        return mlock_range(self, mm, page, pages, cpu)

    @operation
    def munlock(self, mm: MM, page: int, pages: int) -> None:
        """munlock() of ``[page, page+pages)``."""
        self.check_range(page, pages)
        self.busy_ns += self.costs.syscall_ns
        munlock_range(self, mm, page, pages)

    @operation
    def speculative_ref(self, mm: MM, page: int, pages: int = 1) -> int:
        """Take the transient reference another CPU's GUP-fast (or a PFN walker) holds
        for a moment on each present page of ``[page, page+pages)``; returns how many
        were taken. :meth:`drop_speculative` drops them (see gup.py)."""
        self.check_range(page, pages)
        return take_speculative(self, mm, page, pages)

    def drop_speculative(self) -> None:
        """Drop every speculative reference taken by :meth:`speculative_ref`."""
        drop_speculative(self)

    @operation
    def mremap(self, mm: MM, page: int, pages: int, new_page: int) -> None:
        """mremap() ``[page, page+pages)`` to ``new_page`` (MREMAP_MAYMOVE|MREMAP_FIXED)."""
        self.busy_ns += self.costs.syscall_ns
        move_range(self, mm, page, pages, new_page)

    @operation
    def reclaim(self, pages: int, cpu: int = 0) -> int:
        """Memory pressure: reclaim up to ``pages`` pages from the LRU (kswapd or direct
        reclaim on ``cpu``); returns how many were reclaimed."""
        self.check_cpu(cpu)
        return shrink_lru(self, pages, cpu, "reclaim")

    def reclaim_unmapped_swapcache(self) -> int:
        """Free clean swapcache folios nothing refers to any more (what reclaim would do)."""
        return reclaim_unmapped_swapcache(self)

    # ==================================================================================
    # time
    # ==================================================================================
    def io_complete(self) -> None:
        """Finish all pending I/O (runs every queued event)."""
        self.clock.run_all()

    def advance(self, ns: int) -> None:
        """Let ``ns`` of simulated time pass; I/O due by then completes."""
        self.clock.run_until(self.clock.now + ns)

    # ==================================================================================
    # invariants (checked by the property tests and cowlab.testing)
    # ==================================================================================
    def check_invariants(self, *, safe_run: bool = False) -> list[str]:
        """Every structural invariant; with ``safe_run`` also the PAE invariants, which
        only hold while no violation has happened."""
        problems: list[str] = []
        seen: set[int] = set()
        mapped_by: dict[tuple[int, int], set[int]] = {}
        for folio in self.frames.values():
            if id(folio) in seen:
                continue
            seen.add(id(folio))
            problems += [f"{folio.describe()}: {p}" for p in folio.check_ledger()]
            if folio.refcount <= 0:
                problems.append(f"{folio.describe()}: live folio without references")
        for mm in self.mms.values():
            for p, pte in mm.pt.items():
                if mm.find_vma(p) is None:
                    problems.append(f"mm {mm.name} page {p}: a PTE outside every VMA")
                if is_migration_entry(pte):
                    if (mm, p) not in self.migration_entries.get(migration_pfn(pte), ()):
                        problems.append(f"mm {mm.name} page {p}: stray migration entry")
                    continue
                if not pte_present(pte):
                    off = swp_offset(pte)
                    if self.swap.owners_of(off).get(mm.id, 0) <= 0:
                        problems.append(f"mm {mm.name} page {p}: swap PTE without swap count")
                    continue
                pfn = pte_pfn(pte)
                if pfn == ZERO_PFN:
                    continue
                mapped = self.frames.get(pfn)
                if mapped is None:
                    problems.append(f"mm {mm.name} page {p}: maps freed pfn {pfn:#x}")
                    continue
                folio = mapped
                sub = pfn - folio.pfn
                if pte & _PAGE_PSE:
                    if folio.count(PMD, (mm.id, p - sub), 0) != 1:
                        problems.append(f"mm {mm.name} page {p}: PMD mapping not in the ledger")
                elif folio.maps(mm.id, p, sub) != 1:
                    problems.append(f"mm {mm.name} page {p}: mapping missing from the ledger")
                mapped_by.setdefault((folio.pfn, sub), set()).add(mm.id)
                if (
                    self.config.anon_exclusive
                    and safe_run
                    and pte_write(pte)
                    and not (folio.pae_of(sub))
                ):
                    problems.append(f"mm {mm.name} page {p}: writable anon PTE without PAE")
        if self.config.anon_exclusive and safe_run:
            for (pfn, sub), mms in mapped_by.items():
                if len(mms) > 1 and self.frames[pfn].pae_of(sub):
                    problems.append(f"pfn {pfn + sub:#x}: PAE page mapped by mms {sorted(mms)}")
        return problems

    def ground_truth(self, mm: MM, page: int, cpu: int = 0) -> Truth | None:
        """The ground truth for a write to ``page`` now (None if not present)."""
        pte = mm.pt.get(page, 0)
        if not pte & 1 or pte_pfn(pte) == ZERO_PFN:
            return None
        folio = self.frames[pte_pfn(pte)]
        return page_truth(folio, pte_pfn(pte) - folio.pfn, mm.id, page, cpu, self.gups, self.swap)
