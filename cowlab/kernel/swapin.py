"""Swap-in: do_swap_page(), swap readahead and the era differences of the swap path.

* up to v5.17 a write fault on a swap PTE asks the policy itself (path "swap": the
  kernel's reuse_swap_page() decision, before the entry is freed);
* v5.18+ (c145e0b47c77) a write fault on a swapcache folio that is off the LRU drains
  the local LRU batches (lru_add_drain()), the entry is freed, and the page is mapped
  writable only when certainly exclusive (a fresh synchronous-bypass page, refcount 1,
  and v5.19+ the swap PTE's exclusive bit, 1493a1913e34); otherwise do_wp_page()
  decides;
* v6.11+ (c18160dba5ff) an exclusive page is mapped writable even on a read fault
  (writable but clean: only a write dirties the PTE).
* v6.12+ (242d12c98174) a fault that bypasses the swapcache on a synchronous device may
  swap in a whole mTHP folio (:func:`large_swapin_order`, facility
  ``swapin_large_folio``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    make_pte,
    make_swap_pte,
    pte_swp_exclusive,
    pte_swp_soft_dirty,
    pte_swp_uffd_wp,
    swp_offset,
    swp_type,
)
from cowlab.kernel.clock import Sleep
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.folio import FAULT, Folio
from cowlab.kernel.mlock import folio_mlocked
from cowlab.kernel.mm import MM, VMA
from cowlab.kernel.safety import judge, page_truth
from cowlab.kernel.thp import parse_thp

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def read_swap_cache_async(k: Kernel, offset: int, cpu: int) -> Folio:
    """__read_swap_cache_async() + swap_read_folio(): a new locked swapcache folio in
    the local LRU-add batch. A synchronous device reads inline (charged to the fault);
    an asynchronous one completes after its latency, the folio locked meanwhile."""
    folio = k.alloc_folio(0)
    k.swap.add_to_cache(folio, offset)
    k.lru.add(folio, cpu)
    k.counters.pswpin += 1
    spec = k.swap.spec
    if spec.synchronous:
        folio.set_data(0, k.swap.contents.get(offset))
        k.charge(spec.read_ns)
    else:
        done = k.clock.now + spec.read_ns
        k.lock_folio(folio, "swapin_read", done)

        def complete() -> None:
            folio.set_data(0, k.swap.contents.get(offset))
            k.unlock_folio(folio)

        k.clock.schedule(done, complete)
    return folio


def swapin_readahead(k: Kernel, offset: int, cpu: int) -> Folio:
    """swap_cluster_readahead() (mm/swap_state.c): read the adaptive window around
    ``offset``; the batch is drained after the window's reads are issued, so the
    target stays in the batch only when the window is a single page."""
    win = k.swap.readahead_window(offset, k.config.page_cluster)
    if win <= 1:
        return read_swap_cache_async(k, offset, cpu)
    mask = win - 1
    start = max(offset & ~mask, 1)
    for off in range(start, (offset | mask) + 1):
        if off in k.swap.cache or not k.swap.in_use(off):
            continue
        folio = read_swap_cache_async(k, off, cpu)
        if off != offset:
            folio.readahead = True
            k.counters.swap_ra += 1
    k.lru_add_drain(cpu)
    return k.swap.cache[offset]


def do_swap_page(
    k: Kernel, mm: MM, vma: VMA, page: int, pte: int, cpu: int, write: bool
) -> FaultRecord | None:
    """do_swap_page(): bring the page in, then decide by era (see KernelConfig)."""
    cfg = k.config
    swap = k.swap
    offset = swp_offset(pte)
    folio = swap.cache.get(offset)
    bypass = False
    if folio is None:
        k.counters.pgmajfault += 1
        if swap.synchronous and swap.count(offset) == 1:
            order = large_swapin_order(k, mm, vma, page, pte) if cfg.swapin_large_folio else 0
            if order:
                return swapin_large_folio(k, mm, vma, page, pte, order, cpu, write)
            # SWP_SYNCHRONOUS_IO: read straight into a new folio, skipping the swapcache.
            folio = k.alloc_folio(0)
            # The fault's own reference first: the batch may drain (and drop its
            # reference) as soon as the folio is added.
            folio.get(FAULT, mm.id)
            k.lru.add(folio, cpu)
            folio.set_data(0, swap.contents.get(offset))
            k.counters.pswpin += 1
            k.charge(swap.spec.read_ns)
            bypass = True
        else:
            folio = swapin_readahead(k, offset, cpu)
            folio.get(FAULT, mm.id)
    else:
        if folio.readahead:
            folio.readahead = False
            swap.ra_hits += 1
            k.counters.swap_ra_hit += 1
        folio.get(FAULT, mm.id)
    # folio_lock_or_retry(): sleep until an in-flight read (or other holder) is done; under
    # the engine the fault drops its reference and is retried then (VM_FAULT_RETRY).
    try:
        k.wait_for_unlock(folio)
    except Sleep:
        k.put_ref(folio, FAULT, mm.id)
        raise
    if not bypass and swap.cache.get(offset) is not folio and mm.pt.get(page) == pte:
        # The folio left the swapcache while we slept (migration handed its slot to a
        # new folio): the check after folio_lock() fails and the fault is retried.
        k.put_ref(folio, FAULT, mm.id)
        return do_swap_page(k, mm, vma, page, pte, cpu, write)
    k.lock_folio(folio, "do_swap_page")
    # The faulting page's place in its folio (a large folio stays in the swapcache whole).
    index = offset - folio.swap_entry[1] if folio.swap_entry is not None else 0
    exclusive = False
    if cfg.swp_exclusive and not folio.ksm:
        exclusive = pte_swp_exclusive(pte)
        if bypass:
            exclusive = True
        elif exclusive and folio.writeback and swap.stable_writes:
            exclusive = False
    soft_dirty = pte_swp_soft_dirty(pte)
    uffd = pte_swp_uffd_wp(pte)
    writable = False
    if cfg.swap_fault_decides and write and not uffd:
        # Up to v5.17 do_swap_page() asks reuse_swap_page() itself, before the swap
        # entry is freed and before the page is mapped.
        try:
            return k.decide_and_apply(
                mm, vma, page, folio, index, cpu, path="swap", pte=pte, swap_offset=offset
            )
        except Sleep:
            k.unlock_folio(folio)
            k.put_ref(folio, FAULT, mm.id)
            raise
    # v5.18+ (c145e0b47c77): to map a swapcache folio writable the refcount must show
    # no other user, so a write fault drains the local LRU batches first when the folio
    # is not on the LRU (it may wait in this CPU's LRU-add batch); KSM pages never are.
    if (
        cfg.swapin_refcount_reuse
        and write
        and not bypass
        and folio.swap_entry is not None
        and not folio.ksm
        and not folio.lru
    ):
        k.lru_add_drain(cpu)
    # Then free the entry, try to free the swapcache when likely exclusive, and map
    # writable only when certainly exclusive. In every era the swapcache is also freed
    # when the VMA is VM_LOCKED, the folio mlocked or swap more than half full (up to
    # v5.17 after mapping, from v5.18 in should_try_to_free_swap(); the order does not
    # change the outcome of a read fault).
    _swap_free(k, offset, mm.id)
    if folio.swap_entry is not None and (
        locked_or_swap_full(k, vma, folio)
        or (
            write
            and not folio.ksm
            and folio.refcount == 1 + folio.nr_pages
            and cfg.swapin_refcount_reuse
        )
    ):
        k.try_to_free_swap(folio)
    certainly_exclusive = (
        cfg.swapin_refcount_reuse and not folio.ksm and (exclusive or bypass or folio.refcount == 1)
    )
    if certainly_exclusive:
        if cfg.anon_exclusive:
            folio.set_pae(index, True)
        wp_tracking = uffd or (vma.softdirty_tracking and not soft_dirty)
        if vma.writable and not wp_tracking and (write or cfg.swapin_map_writable_on_read):
            writable = True
    # A write fault maps the page writable and dirty (maybe_mkwrite(pte_mkdirty())); the
    # v6.11 read-fault mapping (c18160dba5ff) is writable but clean.
    new = make_pte(
        folio.pfn + index,
        write=writable,
        dirty=writable and write,
        soft_dirty=soft_dirty,
        uffd_wp=uffd,
    )
    mm.pt[page] = new
    folio.map_pte(mm.id, page, index)
    k.put_ref(folio, FAULT, mm.id)
    k.unlock_folio(folio)
    if write and writable:
        # The kernel's own reuse: judged like any other, though it never asks the policy.
        k.counters.swapin_reuse += 1
        truth = page_truth(folio, index, mm.id, page, cpu, k.gups, swap)
        return FaultRecord(
            mm.name,
            page,
            cpu,
            "swap",
            "reuse",
            "swapin_exclusive",
            judge(truth, True),
            truth.exclusive,
        )
    if write:
        return k.wp_fault(mm, vma, page, new, cpu, fault_kind="swap")
    return None


def large_swapin_order(k: Kernel, mm: MM, vma: VMA, page: int, pte: int) -> int:
    """alloc_swap_folio() (v6.12, 242d12c98174): the mTHP order to swap in at once, or 0.

    Called only where do_swap_page() skips the swapcache (a synchronous device and a
    swap count of 1 on the faulting entry). The order is the mapping's mTHP size
    (cowlab enables one size per mapping; a PMD-size THP is never swapped in whole) and
    applies when the mapping is not userfaultfd-armed, the naturally aligned range lies
    inside the VMA, the swap offset is aligned like the address
    (thp_swap_suitable_orders()), and every PTE of the range is a swap entry of the
    same device, with consecutive offsets and the same exclusive / soft-dirty / uffd-wp
    bits as the faulting one (can_swapin_thp() -> swap_pte_batch()), none of whose
    slots is in the swapcache. zswap and the swap zeromap are not modelled (both would
    fall back to a base page when in use).
    """
    order = parse_thp(vma.thp)
    if not 2 <= order < 9 or not k.config.mthp or k.machine.thp == "never":
        return 0
    if vma.uffd_wp or order not in k.geometry.mthp_orders:
        return 0
    nr = 1 << order
    start = page & ~(nr - 1)
    offset = swp_offset(pte)
    if start < vma.start or start + nr > vma.end or page % nr != offset % nr:
        return 0
    first = offset - (page - start)
    typ = swp_type(pte)
    for i in range(nr):
        expected = make_swap_pte(
            typ,
            first + i,
            exclusive=pte_swp_exclusive(pte),
            soft_dirty=pte_swp_soft_dirty(pte),
            uffd_wp=pte_swp_uffd_wp(pte),
        )
        if mm.pt.get(start + i, 0) != expected or (first + i) in k.swap.cache:
            return 0
    return order


def swapin_large_folio(
    k: Kernel, mm: MM, vma: VMA, page: int, pte: int, order: int, cpu: int, write: bool
) -> FaultRecord | None:
    """do_swap_page() with a large folio from alloc_swap_folio() (v6.12, 242d12c98174).

    The folio never enters the swapcache, so it is exclusive: every page gets
    PageAnonExclusive and all ``nr`` PTEs are set at once with the same permissions
    (set_ptes()): writable when the mapping is writable and the fault writes (or, from
    v6.11, c18160dba5ff, on a read too), unless soft-dirty tracking needs the write
    fault; dirty only on a write fault. Every swap entry of the range is freed
    (swap_free_nr()); the device reads the whole folio (pswpin counts base pages). A
    write is then the kernel's own reuse (fault ``swap``, reason ``swapin_exclusive``)
    and the policy is not asked.
    """
    cfg = k.config
    swap = k.swap
    nr = 1 << order
    start = page & ~(nr - 1)
    first = swp_offset(pte) - (page - start)
    folio = k.alloc_folio(order)
    folio.get(FAULT, mm.id)
    for i in range(nr):
        folio.set_data(i, swap.contents.get(first + i))
    k.counters.pswpin += nr
    k.charge(swap.spec.read_ns * nr)
    soft_dirty = pte_swp_soft_dirty(pte)
    wp_tracking = vma.softdirty_tracking and not soft_dirty
    writable = (
        vma.writable and not wp_tracking and (write or cfg.swapin_map_writable_on_read)
    )
    for i in range(nr):
        _swap_free(k, first + i, mm.id)
        if cfg.anon_exclusive:
            folio.set_pae(i, True)
        mm.pt[start + i] = make_pte(
            folio.pfn + i, write=writable, dirty=writable and write, soft_dirty=soft_dirty
        )
        folio.map_pte(mm.id, start + i, i)
    k.lru.add(folio, cpu)  # a large folio goes to the LRU at once
    k.put_ref(folio, FAULT, mm.id)
    index = page - start
    if write and writable:
        k.counters.swapin_reuse += 1
        truth = page_truth(folio, index, mm.id, page, cpu, k.gups, swap)
        return FaultRecord(
            mm.name, page, cpu, "swap", "reuse", "swapin_exclusive",
            judge(truth, True), truth.exclusive,
        )
    if write:
        return k.wp_fault(mm, vma, page, mm.pt[page], cpu, fault_kind="swap")
    return None


def locked_or_swap_full(k: Kernel, vma: VMA, folio: Folio) -> bool:
    """do_swap_page()'s unconditional reasons to free the swapcache after a swap-in:
    mem_cgroup_swap_full() (vm_swap_full() here: no cgroup-v2 swap limit is modelled),
    VM_LOCKED on the faulting VMA, or PageMlocked. Same rule v5.7..v6.15 (from v5.18 it
    is the first test of should_try_to_free_swap(), c145e0b47c77)."""
    return vma.locked or k.swap.full() or folio_mlocked(k, folio)


def _swap_free(k: Kernel, offset: int, mm_id: int) -> None:
    """swap_free() of the faulting PTE's entry (the folio still holds the slot if cached)."""
    k.swap.free_entry(offset, mm_id)


def finish_swap_path(
    k: Kernel,
    mm: MM,
    vma: VMA,
    page: int,
    folio: Folio,
    index: int,
    pte: int,
    offset: int,
    reuse: bool,
    still_locked: bool,
) -> None:
    """The rest of a pre-v5.18 do_swap_page() after reuse_swap_page() answered.

    reuse_swap_page() deleted the folio from the swapcache when the faulting PTE was its
    only user and it was not under writeback. That is done here once the faulting swap
    entry is freed: if another swap PTE still refers to the slot (a policy reused a page
    the kernel would not have), the folio stays in the swapcache and the other process
    will map it, data included.
    """
    _swap_free(k, offset, mm.id)
    if reuse and folio.swap_entry is not None and not folio.writeback and not k.swap.swapped(folio):
        k.swap.delete_from_cache(folio)
        folio.dirty = True
        k.charge(k.costs.free_swap_ns)
    elif folio.swap_entry is not None and locked_or_swap_full(k, vma, folio):
        # After mapping: "if (mem_cgroup_swap_full(page) || (vma->vm_flags & VM_LOCKED) ||
        # PageMlocked(page)) try_to_free_swap(page)"; do_wp_page() then sees no swapcache.
        k.try_to_free_swap(folio)
    soft_dirty = pte_swp_soft_dirty(pte)
    # maybe_mkwrite(pte_mkdirty()): writable only in a VMA with VM_WRITE.
    new = make_pte(folio.pfn + index, write=reuse and vma.writable, dirty=reuse,
                   soft_dirty=soft_dirty or reuse)
    mm.pt[page] = new
    folio.map_pte(mm.id, page, index)
    k.put_ref(folio, FAULT, mm.id)
    if still_locked or folio.lock is not None:
        k.unlock_folio(folio)
