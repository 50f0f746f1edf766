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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    make_pte,
    pte_swp_exclusive,
    pte_swp_soft_dirty,
    pte_swp_uffd_wp,
    swp_offset,
)
from cowlab.kernel.clock import Sleep
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.folio import FAULT, Folio
from cowlab.kernel.mm import MM, VMA
from cowlab.kernel.safety import judge, page_truth

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def read_swap_cache_async(k: Kernel, offset: int, cpu: int) -> Folio:
    """__read_swap_cache_async() + swap_read_folio(): a new locked swapcache folio in
    the local LRU-add batch. A synchronous device reads inline (charged to the fault);
    an asynchronous one completes after its latency, the folio locked meanwhile."""
    folio = k.alloc_folio(0)
    k.swap.add_to_cache(folio, offset)
    k.lru.add(folio, cpu)
    k.counters["pswpin"] += 1
    spec = k.swap.spec
    if spec.synchronous:
        folio.data[0] = k.swap.contents.get(offset)
        k.charge(spec.read_ns)
    else:
        done = k.clock.now + spec.read_ns
        k.lock_folio(folio, "swapin_read", done)

        def complete() -> None:
            folio.data[0] = k.swap.contents.get(offset)
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
            k.counters["swap_ra"] += 1
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
        k.counters["pgmajfault"] += 1
        if swap.synchronous and swap.count(offset) == 1:
            # SWP_SYNCHRONOUS_IO: read straight into a new folio, skipping the swapcache.
            folio = k.alloc_folio(0)
            # The fault's own reference first: the batch may drain (and drop its
            # reference) as soon as the folio is added.
            folio.get(FAULT, mm.id)
            k.lru.add(folio, cpu)
            folio.data[0] = swap.contents.get(offset)
            k.counters["pswpin"] += 1
            k.charge(swap.spec.read_ns)
            bypass = True
        else:
            folio = swapin_readahead(k, offset, cpu)
            folio.get(FAULT, mm.id)
    else:
        if folio.readahead:
            folio.readahead = False
            swap.ra_hits += 1
            k.counters["swap_ra_hit"] += 1
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
    # writable only when certainly exclusive.
    _swap_free(k, offset, mm.id)
    if (
        folio.swap_entry is not None
        and write
        and not folio.ksm
        and folio.refcount == 1 + folio.nr_pages
        and cfg.swapin_refcount_reuse
    ):
        k.try_to_free_swap(folio)
    certainly_exclusive = (
        cfg.swapin_refcount_reuse and not folio.ksm and (exclusive or bypass or folio.refcount == 1)
    )
    if certainly_exclusive:
        if cfg.anon_exclusive:
            folio.pae[index] = True
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
    folio.map_pte((mm.id, page), index)
    k.put_ref(folio, FAULT, mm.id)
    k.unlock_folio(folio)
    if write and writable:
        # The kernel's own reuse: judged like any other, though it never asks the policy.
        k.counters["swapin_reuse"] += 1
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
    soft_dirty = pte_swp_soft_dirty(pte)
    # maybe_mkwrite(pte_mkdirty()): writable only in a VMA with VM_WRITE.
    new = make_pte(folio.pfn + index, write=reuse and vma.writable, dirty=reuse,
                   soft_dirty=soft_dirty or reuse)
    mm.pt[page] = new
    folio.map_pte((mm.id, page), index)
    k.put_ref(folio, FAULT, mm.id)
    if still_locked or folio.lock is not None:
        k.unlock_folio(folio)
