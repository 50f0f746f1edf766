"""Reclaim of anonymous folios: MADV_PAGEOUT, MADV_COLD and shrink_folio_list().

Swap-out isolates the folio (a reference, PG_lru clear), locks it, adds it to the
swapcache, unmaps every PTE to a swap PTE (try_to_unmap; v5.19+ moving
PageAnonExclusive into the swap PTE's exclusive bit, 1493a1913e34) and starts
writeback. A synchronous device completes at once and the folio is freed; an
asynchronous one leaves it in the swapcache under writeback, back on the LRU
(through the local batch after MADV_PAGEOUT, folio_putback_lru(); directly after
kswapd or direct reclaim, move_folios_to_lru()). From v5.11 (feb889fb40fa) a page that
may be DMA-pinned is kept out of the swapcache altogether.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    _PAGE_ACCESSED,
    make_swap_pte,
    pte_dirty,
    pte_mkclean,
    pte_mkold,
    pte_pfn,
    pte_soft_dirty,
    pte_uffd_wp,
    pte_young,
    swp_offset,
)
from cowlab.kernel.folio import ISOLATED, PMD, ZERO_PFN, Folio
from cowlab.kernel.migrate import is_migration_entry
from cowlab.kernel.mlock import folio_mlocked
from cowlab.kernel.mm import MM
from cowlab.kernel.swap import SwapFullError
from cowlab.kernel.thp import split_deferred, split_folio, split_pmd, split_pmds_in

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def present_folios(k: Kernel, mm: MM, start: int, end: int) -> list[tuple[int, Folio, int]]:
    out = []
    pt = mm.pt
    for p in range(start, end):
        pte = pt.get(p, 0)
        if pte & 1 and pte_pfn(pte) != ZERO_PFN:
            folio = k.frames[pte_pfn(pte)]
            out.append((p, folio, pte_pfn(pte) - folio.pfn))
    return out


def madvise_pageout(k: Kernel, mm: MM, start: int, end: int, cpu: int) -> None:
    """madvise_pageout() (mm/madvise.c): drain the local batch, isolate each folio
    mapped only here that is on the LRU, and reclaim it (reclaim_pages())."""
    k.lru_add_drain(cpu)
    isolated: list[Folio] = []
    for p, folio, sub in present_folios(k, mm, start, end):
        if folio.order:
            if folio.hugetlb:
                continue
            # A large folio partly outside the range, or shared, is split first
            # (madvise_cold_or_pageout_pte_range()); if that fails it is left alone.
            first = p - sub
            if (first < start or first + folio.nr_pages > end
                    or folio.max_page_mapcount() != 1):
                if not folio.lru or not split_folio(k, folio):
                    continue
                folio = k.frames[folio.pfn + sub]
                sub = 0
        # "Do not interfere with other mappings of this folio and non-LRU folio."
        # (An isolated folio is off the LRU, so it is never taken twice.)
        if not folio.lru or folio.page_mapcount(sub) != 1:
            continue
        k.lru.del_from_list(folio)
        folio.get(ISOLATED, "pageout")
        isolated.append(folio)
    for folio in isolated:
        reclaim_folio(k, folio, cpu, "pageout")


def madvise_cold(k: Kernel, mm: MM, start: int, end: int, cpu: int) -> None:
    """madvise_cold(): age the page; an active one goes to the deactivate batch."""
    k.lru_add_drain(cpu)
    for p, folio, sub in present_folios(k, mm, start, end):
        if not folio.lru or folio.page_mapcount(sub) != 1:
            continue
        mm.pt[p] = pte_mkold(mm.pt[p])
        if folio.lru_list == "active":
            k.lru.add(folio, cpu, "deactivate")


def reclaim_folio(k: Kernel, folio: Folio, cpu: int, who: str) -> bool:
    """shrink_folio_list() for one isolated folio: lock, add to swap, unmap every PTE
    (try_to_unmap), write it out; free it if possible, else put it back on the LRU
    (:func:`putback_folio`). ``who`` isolated it (the owner of its ISOLATED reference).
    Returns True if freed."""
    cfg = k.config
    if folio.lock is not None or folio.writeback or folio.ksm or folio.hugetlb:
        return putback_folio(k, folio, cpu, who)
    if folio_mlocked(k, folio):
        # folio_evictable() is false for an mlocked folio: it is kept (upstream culls it
        # to the unevictable list; here it goes back and is never reclaimed).
        return putback_folio(k, folio, cpu, who)
    if folio.lazyfree:
        return discard_lazyfree(k, folio, cpu, who)
    if folio.order and folio.swap_entry is None and folio.order < 9 and not cfg.mthp_swapout:
        # Before v6.10 an mTHP folio is split to be swapped out page by page; the pieces
        # go back to the LRU and are reclaimed on their own.
        if not split_folio_isolated(k, folio, who):
            return putback_folio(k, folio, cpu, who)
        return False
    # try_to_unmap(TTU_SPLIT_HUGE_PMD): PMD mappings become PTEs first.
    if folio.entire_mapcount:
        for owner, _sub, _n in folio.holders(PMD):
            split_pmd(k, k.mms[owner[0]], owner[1])
    k.lock_folio(folio, "reclaim")
    swap = k.swap
    if folio.swap_entry is None and cfg.reclaim_skips_pinned and folio.maybe_dma_pinned():
        # v5.11+ (feb889fb40fa "mm: don't put pinned pages into the swap cache"): a page
        # that may be DMA-pinned is kept before add_to_swap() (keep_locked).
        k.unlock_folio(folio)
        return putback_folio(k, folio, cpu, who)
    if folio.swap_entry is None:
        try:
            offset = swap.alloc_slots(folio.nr_pages)
        except SwapFullError:
            k.unlock_folio(folio)
            return putback_folio(k, folio, cpu, who)
        swap.add_to_cache(folio, offset)
        folio.dirty = True
    else:
        offset = folio.swap_entry[1]
    # try_to_unmap(): every mapping becomes a swap PTE.
    for mm_id, page, sub in folio.pte_mappings():
        mm = k.mms[mm_id]
        pte = mm.pt[page]
        excl = False
        if cfg.anon_exclusive and folio.pae_of(sub):
            # page_try_share_anon_rmap(): a maybe-pinned exclusive page stays mapped.
            if folio.maybe_dma_pinned():
                continue
            excl = cfg.swp_exclusive
            folio.set_pae(sub, False)
        if pte_dirty(pte):
            folio.dirty = True
        mm.pt[page] = make_swap_pte(
            swap.type,
            offset + sub,
            exclusive=excl,
            soft_dirty=pte_soft_dirty(pte),
            uffd_wp=pte_uffd_wp(pte),
        )
        swap.dup(offset + sub, mm_id)
        folio.unmap_pte(mm_id, page, sub)
        k.flush_tlb(mm, cpu)
    if folio.large_mapcount:
        k.unlock_folio(folio)
        return putback_folio(k, folio, cpu, who)
    if folio.dirty:
        # pageout(): start writeback; the slot holds the data from now on.
        for i in range(folio.nr_pages):
            swap.contents[offset + i] = folio.data_of(i)
        folio.dirty = False
        folio.writeback = True
        k.counters.pswpout += folio.nr_pages
        if swap.synchronous:
            k.charge(swap.spec.write_ns)
            end_writeback(k, folio, cpu)
        else:
            folio.reclaim = True
            k.clock.schedule(k.clock.now + swap.spec.write_ns, lambda: end_writeback(k, folio, cpu))
            k.unlock_folio(folio)
            return putback_folio(k, folio, cpu, who)
    # __remove_mapping(): free a clean folio whose only references are ours.
    if folio.refcount == folio.nr_pages + 1 and not folio.writeback:
        swap.delete_from_cache(folio)
        k.unlock_folio(folio)
        k.put_ref(folio, ISOLATED, who)
        return True
    k.unlock_folio(folio)
    return putback_folio(k, folio, cpu, who)


#: The isolator whose kept folios go back through folio_putback_lru() (the per-CPU
#: batch): MADV_PAGEOUT's reclaim_pages(). kswapd and direct reclaim use
#: move_folios_to_lru(), which puts them straight back on the list.
BATCHED_PUTBACK = ("pageout",)


def madvise_free(k: Kernel, mm: MM, start: int, end: int, cpu: int) -> None:
    """MADV_FREE (854e9ed09ded, v4.5; madvise_free_pte_range() in mm/madvise.c).

    After draining the local batch (madvise_free_single_vma()), for each page of the range:
    a swap PTE is dropped at once (free_swap_and_cache(), the PTE cleared: the data is
    gone); a present page that is dirty or in the swapcache is skipped when it is locked
    or mapped more than once, or when its swapcache cannot be freed, and otherwise loses
    PG_dirty; its PTE is made old and clean; and the folio is queued in the local
    ``lazyfree`` batch (mark_page_lazyfree() / folio_mark_lazyfree(): only a folio on the
    LRU, not in the swapcache, not mlocked), which holds a reference on it until the batch
    drains and clears PG_swapbacked. Reclaim then discards it (:func:`discard_lazyfree`)
    unless it was written again. Large folios are left alone here (upstream splits an
    exclusive one first, or keeps a whole PMD THP); the zero page is skipped.
    """
    k.lru_add_drain(cpu)
    pt = mm.pt
    split_pmds_in(k, mm, start, end)
    for p in range(start, end):
        pte = pt.get(p, 0)
        if not pte:
            continue
        if not pte & 1:
            if is_migration_entry(pte):
                continue
            del pt[p]
            k.free_swap_and_cache(swp_offset(pte), mm.id)
            continue
        pfn = pte_pfn(pte)
        if pfn == ZERO_PFN:
            continue
        folio = k.frames[pfn]
        sub = pfn - folio.pfn
        if folio.order or folio.hugetlb:
            continue
        if folio.swap_entry is not None or folio.dirty:
            if folio.lock is not None or folio.page_mapcount(sub) != 1:
                continue
            if folio.swap_entry is not None and not k.try_to_free_swap(folio):
                continue
            folio.dirty = False
        if pte_young(pte) or pte_dirty(pte):
            pt[p] = pte_mkclean(pte_mkold(pte))
            k.flush_tlb(mm, cpu)
        if folio.lru and folio.swap_entry is None and not folio.lazyfree and not folio_mlocked(
            k, folio
        ):
            k.lru.add(folio, cpu, "lazyfree")


def discard_lazyfree(k: Kernel, folio: Folio, cpu: int, who: str) -> bool:
    """try_to_unmap_one() on a MADV_FREE'd folio: discard it if nobody wrote it since.

    Every mapping is checked: a dirty PTE (a write after MADV_FREE) or PG_dirty means the
    data is live again, so the folio gets PG_swapbacked back and stays (it is swapped out
    like any other page next time). Otherwise it is discarded if the only references are
    the isolation and the mappings (the refcount check of 6c8e2a256915, v5.18, "mm: fix
    race between MADV_FREE reclaim and blkdev direct IO read"; a GUP or batch reference
    keeps it): every PTE is cleared to pte_none, so the next read maps the zero page and
    the next write a new zeroed page. Returns True if it was discarded.
    """
    mappings = folio.pte_mappings()
    redirtied = folio.dirty or any(pte_dirty(k.mms[m].pt[p]) for m, p, _ in mappings)
    if redirtied or folio.refcount != 1 + folio.large_mapcount:
        folio.lazyfree = False  # folio_set_swapbacked(): an ordinary anon folio again
        if redirtied:
            folio.dirty = True
        return putback_folio(k, folio, cpu, who)
    for mm_id, page, sub in mappings:
        mm = k.mms[mm_id]
        del mm.pt[page]
        folio.unmap_pte(mm_id, page, sub)
        k.flush_tlb(mm, cpu)
    folio.lazyfree = False
    k.put_ref(folio, ISOLATED, who)
    return True


def putback_folio(k: Kernel, folio: Folio, cpu: int, who: str) -> bool:
    """Return a kept folio to the LRU and drop the isolation reference.

    MADV_PAGEOUT (reclaim_pages() -> reclaim_folio_list()) uses folio_putback_lru(), so
    the folio waits in the local LRU-add batch; shrink_inactive_list() (kswapd, direct
    reclaim) uses move_folios_to_lru(), which puts it on the inactive list at once.
    """
    if who in BATCHED_PUTBACK:
        k.lru.add(folio, cpu)
    else:
        k.lru.add_to_list(folio, "inactive")
    k.put_ref(folio, ISOLATED, who)
    return False


def end_writeback(k: Kernel, folio: Folio, cpu: int) -> None:
    """folio_end_writeback(): a reclaimed folio on the LRU rotates to the inactive
    tail through the move_tail batch (folio_rotate_reclaimable())."""
    folio.writeback = False
    if folio.reclaim:
        folio.reclaim = False
        if folio.lru and folio.lock is None and not folio.dirty and not folio.freed:
            k.lru.add(folio, cpu, "move_tail")


def reclaim_unmapped_swapcache(k: Kernel) -> int:
    """What memory reclaim would eventually do to clean, unmapped swapcache folios that
    no swap PTE refers to any more (orphaned readahead): free them. Returns how many."""
    freed = 0
    for folio in list({id(f): f for f in k.swap.cache.values()}.values()):
        if (
            folio.lock is None
            and not folio.writeback
            and folio.large_mapcount == 0
            and not k.swap.swapped(folio)
        ):
            k.swap.delete_from_cache(folio)
            if folio.refcount == 0:
                k.release_folio(folio)
            freed += 1
    return freed


def split_folio_isolated(k: Kernel, folio: Folio, who: str) -> bool:
    """Split an isolated large folio: its pieces return to the inactive list."""
    folio.put(ISOLATED, who)
    if split_folio(k, folio):
        for i in range(folio.nr_pages):
            piece = k.frames.get(folio.pfn + i)
            if piece is not None:
                k.lru.add_to_list(piece, "inactive")
        return True
    folio.get(ISOLATED, who)
    return False


def folio_referenced(k: Kernel, folio: Folio) -> int:
    """folio_referenced(): how many PTEs mapping the folio are young; clears them."""
    young = 0
    for mm_id, page, _sub in folio.pte_mappings():
        mm = k.mms[mm_id]
        pte = mm.pt[page]
        if pte & _PAGE_ACCESSED:
            young += 1
            mm.pt[page] = pte_mkold(pte)
    return young


def shrink_lru(k: Kernel, nr_to_reclaim: int, cpu: int, who: str = "kswapd") -> int:
    """shrink_lruvec() for anonymous memory; returns the pages reclaimed.

    The local batch is drained first (shrink_inactive_list() does so). The active list is
    aged into the inactive one while it is the longer of the two (anon pages are
    deactivated whether referenced or not; only executable file pages are protected).
    Then the inactive list is scanned from its oldest end: a folio whose PTEs are young is
    activated (folio_check_references(), simplified to "referenced -> activate"), any
    other is isolated and reclaimed: swapped out, or freed if it is a clean swapcache
    folio nobody maps.
    """
    lru = k.lru
    lru.drain_cpu(cpu)
    split_deferred(k)  # the deferred-split shrinker runs under the same pressure
    while len(lru.active) > len(lru.inactive):
        oldest = lru.active.first()
        assert oldest is not None
        folio_referenced(k, oldest)
        lru.add_to_list(oldest, "inactive")
    reclaimed = 0
    for folio in lru.inactive.values():
        if reclaimed >= nr_to_reclaim:
            break
        if not folio.lru or folio.lru_list != "inactive":
            continue
        if folio_referenced(k, folio):
            lru.add_to_list(folio, "active")
            continue
        lru.del_from_list(folio)
        folio.get(ISOLATED, who)
        if reclaim_folio(k, folio, cpu, who):
            reclaimed += folio.nr_pages
    k.counters.pgscan += 1
    return reclaimed
