"""Large folios: PMD-mapped THP, PTE-mapped THP and mTHP, folio and PMD splits, collapse.

A PMD mapping of a 2 MiB THP is kept in the mm's page table as 512 entries carrying the
PSE ("huge") bit, all updated together, plus one PMD reference in the folio's ledger
(entire mapcount). Splitting the PMD (``__split_huge_pmd()``) turns them into ordinary
PTEs, each with its own reference and mapcount, copying PageAnonExclusive to every
subpage. Splitting the *folio* (``split_folio()``) turns one large folio into order-0
folios and is refused while anyone holds a reference beyond the mappings and the
swapcache (a pin, a batch), as ``can_split_folio()`` does.

Era differences (the policy decides on path ``pmd``; see KernelConfig):

* up to v5.7 a COW fault on a PMD copies the whole 2 MiB page; from v5.8 (3917c80280c9)
  it splits the PMD and handles the 4 KiB page (a second decision on path ``wp``);
* up to v5.17 the PMD rule is reuse_swap_page()'s total mapcount; v5.18 (3bff7e3f1f16)
  uses the refcount; v5.19 reuses on PageAnonExclusive;
* mTHP (orders 2..8) is allocated from v6.8 (19eaf44954df) and swapped out whole from
  v6.10 (845982eb264b); a PMD THP is swapped out whole in every preset (THP_SWAP).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    _PAGE_PSE,
    HPAGE_PMD_NR,
    make_pte,
    pte_mkdirty,
    pte_mkwrite,
    pte_mkyoung,
    pte_pfn,
    pte_uffd_wp,
    pte_wrprotect,
)
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.folio import PMD, SWAPCACHE, Folio
from cowlab.kernel.mm import MM, VMA
from cowlab.kernel.safety import judge, page_truth

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel

#: hugetlb page orders: 2 MiB and 1 GiB.
HUGETLB_ORDERS = {"2m": 9, "1g": 18}


def is_huge(pte: int) -> bool:
    """A present entry that belongs to a PMD (or hugetlb) mapping."""
    return bool(pte & 1) and bool(pte & _PAGE_PSE)


def huge_start(page: int, order: int) -> int:
    """The first page of the naturally aligned 2^order block containing ``page``."""
    return page & ~((1 << order) - 1)


def parse_thp(thp: str) -> int:
    """The folio order a ``thp:`` mapping mode asks for: 0, 9 (``pmd``) or 2..8 (``mthp-N``)."""
    if thp == "none":
        return 0
    if thp == "pmd":
        return 9
    if thp.startswith("mthp-"):
        try:
            order = int(thp[5:])
        except ValueError:
            order = -1
        if 2 <= order <= 9:
            return order
    raise KernelError(f"thp: expected none, pmd or mthp-<order 2..9>, got {thp!r}")


# -- faults -------------------------------------------------------------------------------
def fault_order(k: Kernel, mm: MM, vma: VMA, page: int) -> int:
    """The folio order do_anonymous_page() allocates for a write to ``page``.

    A large order is used when the mapping asks for it, the machine's THP policy allows
    it, the aligned block lies inside the VMA and none of its PTEs is populated
    (pte_range_none()); otherwise the fault falls back to a base page.
    """
    if vma.hugetlb:
        return vma.hugetlb
    order = parse_thp(vma.thp)
    if order == 0 or k.machine.thp == "never":
        return 0
    if order < 9 and not k.config.mthp:
        return 0
    nr = 1 << order
    start = huge_start(page, order)
    if start < vma.start or start + nr > vma.end:
        return 0
    pt = mm.pt
    if any(p in pt for p in range(start, start + nr)):
        return 0
    return order


def map_new_large(k: Kernel, mm: MM, vma: VMA, page: int, order: int, cpu: int,
                  write: bool) -> FaultRecord:
    """do_huge_pmd_anonymous_page() / alloc_anon_folio() / hugetlb_no_page(): a new
    exclusive large folio, PMD-mapped for a THP of PMD order and for hugetlb, else
    PTE-mapped (mTHP)."""
    nr = 1 << order
    start = huge_start(page, order)
    folio = k.alloc_folio(order)
    folio.set_data_list([0] * nr)
    if k.config.anon_exclusive:
        folio.set_all_pae(True)
    folio.dirty = True
    writable = vma.writable and (write or not vma.hugetlb)
    huge = order >= 9
    if huge:
        folio.map_pmd((mm.id, start))
    for i in range(nr):
        if not huge:
            folio.map_pte(mm.id, start + i, i)
        mm.pt[start + i] = make_pte(folio.pfn + i, write=writable, dirty=writable,
                                    soft_dirty=True, huge=huge)
    if vma.hugetlb:
        folio.hugetlb = True
    else:
        k.lru.add(folio, cpu)
    k.counters.thp_fault_alloc += 1
    k.charge(k.costs.alloc_ns + k.costs.zero_4k_ns * nr)
    return FaultRecord(mm.name, page, cpu, "anon", "none")


# -- splitting ----------------------------------------------------------------------------
def split_pmd(k: Kernel, mm: MM, start: int) -> None:
    """__split_huge_pmd(): the PMD mapping at ``start`` becomes 512 PTE mappings of the same
    folio (refcount +511), each subpage inheriting PageAnonExclusive."""
    entry = mm.pt.get(start, 0)
    if not is_huge(entry):
        return
    folio = k.frames[pte_pfn(entry)]
    if folio.hugetlb:
        raise KernelError("hugetlb mappings cannot be split: use huge-page aligned ranges")
    folio.unmap_pmd((mm.id, start))
    for i in range(folio.nr_pages):
        mm.pt[start + i] &= ~_PAGE_PSE
        folio.map_pte(mm.id, start + i, i)
    if folio.pae_of(0):
        folio.set_all_pae(True)
    k.counters.thp_split_pmd += 1


def split_pmds_in(k: Kernel, mm: MM, start: int, end: int) -> None:
    """Split every PMD mapping that ``[start, end)`` covers only in part."""
    for edge in (start, end - 1):
        base = huge_start(edge, 9)
        if (base < start or base + HPAGE_PMD_NR > end) and is_huge(mm.pt.get(base, 0)):
            split_pmd(k, mm, base)


def split_folio(k: Kernel, folio: Folio) -> bool:
    """split_folio(): replace a large folio by order-0 folios, keeping every mapping,
    swapcache slot and LRU position; refused (False) when the folio is locked, under
    writeback, hugetlb, or held by a reference other than its mappings and swapcache."""
    if not folio.order or folio.hugetlb or folio.lock is not None or folio.writeback:
        return False
    swapcache = folio.nr_pages if folio.swap_entry is not None else 0
    if folio.refcount != folio.large_mapcount + swapcache:
        return False
    for owner, _sub, _n in folio.holders(PMD):
        split_pmd(k, k.mms[owner[0]], owner[1])
    lru_list = folio.lru_list if folio.lru else None
    k.lru.del_from_list(folio)
    k.deferred_split.pop(folio.pfn, None)
    swap = k.swap
    entry = folio.swap_entry
    pieces = [Folio(folio.pfn + i, 0) for i in range(folio.nr_pages)]
    for mm_id, page, sub in folio.pte_mappings():
        pieces[sub].map_pte(mm_id, page, 0)
    for i, piece in enumerate(pieces):
        piece.set_data(0, folio.data_of(i))
        piece.set_pae(0, folio.pae_of(i))
        piece.dirty = folio.dirty
        k.frames[piece.pfn] = piece
        if entry is not None:
            piece.swap_entry = (entry[0], entry[1] + i)
            piece.get(SWAPCACHE, None, 1)
            swap.cache[entry[1] + i] = piece
    folio.drop_ledger()
    folio.freed = True
    for piece in pieces:
        if piece.refcount == 0:
            k.release_folio(piece)
        elif lru_list is not None:
            k.lru.add_to_list(piece, lru_list)
    k.counters.thp_split_page += 1
    return True


def note_partially_mapped(k: Kernel, folio: Folio) -> None:
    """deferred_split_folio(): a large folio lost some but not all of its mappings."""
    if (
        folio.order
        and not folio.hugetlb
        and folio.large_mapcount
        and not folio.freed
        and folio.pfn not in k.deferred_split
        and any(folio.page_mapcount(i) == 0 for i in range(folio.nr_pages))
    ):
        k.deferred_split[folio.pfn] = folio
        k.counters.thp_deferred_split_page += 1


def split_deferred(k: Kernel) -> int:
    """deferred_split_scan(): split the partially mapped large folios; their unmapped
    subpages are freed. Returns how many folios were split."""
    done = 0
    for pfn, folio in list(k.deferred_split.items()):
        del k.deferred_split[pfn]
        if not folio.freed and split_folio(k, folio):
            done += 1
    return done


# -- the PMD write fault ----------------------------------------------------------------------
def reuse_pmd(k: Kernel, mm: MM, start: int, folio: Folio, unshare: bool, *,
              writable: bool = True) -> None:
    """do_huge_pmd_wp_page() reuse: the whole PMD becomes writable (or, for unshare, only
    exclusive; in a VMA without VM_WRITE only dirty, maybe_pmd_mkwrite())."""
    if k.config.anon_exclusive:
        folio.set_all_pae(True)
    if unshare:
        return
    pt = mm.pt
    for i in range(folio.nr_pages):
        pte = pte_mkyoung(pte_mkdirty(pt[start + i]))
        pt[start + i] = pte_mkwrite(pte) if writable else pte
    folio.dirty = True


def copy_huge(k: Kernel, mm: MM, start: int, old: Folio, cpu: int, unshare: bool, *,
              writable: bool = True) -> None:
    """The whole-page copy of a PMD THP (up to v5.7) or of a hugetlb page: a new large
    folio mapped at ``start`` for this mm only; the old one loses this mapping."""
    nr = old.nr_pages
    new = k.alloc_folio(old.order)
    new.set_data_list(old.data_list())
    if k.config.anon_exclusive:
        new.set_all_pae(True)
    new.dirty = True
    old.unmap_pmd((mm.id, start))
    new.map_pmd((mm.id, start))
    first = mm.pt[start]
    for i in range(nr):
        mm.pt[start + i] = make_pte(new.pfn + i, write=writable and not unshare,
                                    dirty=not unshare,
                                    soft_dirty=True, uffd_wp=pte_uffd_wp(first), huge=True)
    if old.hugetlb:
        new.hugetlb = True
    else:
        k.lru.add(new, cpu)
    k.charge(k.costs.alloc_ns + k.costs.copy_ns(nr) + k.costs.rmap_ns)
    k.counters.pages_copied += nr
    if old.refcount == 0:
        k.release_folio(old)
    k.flush_tlb(mm, cpu)


# -- collapse (MADV_COLLAPSE / khugepaged) ---------------------------------------------------
def collapse(k: Kernel, mm: MM, start: int, cpu: int) -> bool:
    """collapse_huge_page(): copy 512 present anonymous pages into a new PMD-mapped THP.

    Like khugepaged and MADV_COLLAPSE it drains every CPU's LRU batches first and gives
    up on a page that is locked, under writeback, KSM, the zero page, or held by a
    reference other than its mappings and swapcache (a pin). Shared pages are copied: the
    new THP belongs to this mm alone and is PageAnonExclusive; the other processes keep
    the old pages. Returns False if the range cannot be collapsed.
    """
    vma = mm.find_vma(start)
    if vma is None or start + HPAGE_PMD_NR > vma.end or vma.start > start or vma.hugetlb:
        return False
    pt = mm.pt
    if is_huge(pt.get(start, 0)):
        return True
    k.lru_add_drain_all()
    olds: list[tuple[int, Folio, int]] = []
    for p in range(start, start + HPAGE_PMD_NR):
        pte = pt.get(p, 0)
        if not pte & 1 or pte_pfn(pte) == 0:
            return False
        folio = k.frames[pte_pfn(pte)]
        swapcache = folio.nr_pages if folio.swap_entry is not None else 0
        if (folio.lock is not None or folio.writeback or folio.ksm
                or folio.refcount != folio.large_mapcount + swapcache):
            return False
        olds.append((p, folio, pte_pfn(pte) - folio.pfn))
    new = k.alloc_folio(9)
    new.set_data_list([f.data_of(sub) for _p, f, sub in olds])
    if k.config.anon_exclusive:
        new.set_all_pae(True)
    new.dirty = True
    for p, folio, sub in olds:
        k.put_mapping(folio, mm.id, p, sub)
    new.map_pmd((mm.id, start))
    for i in range(HPAGE_PMD_NR):
        pt[start + i] = make_pte(new.pfn + i, write=vma.writable, dirty=True,
                                 soft_dirty=True, huge=True)
    k.lru.add(new, cpu)
    k.flush_tlb(mm, cpu)
    k.charge(k.costs.alloc_ns + k.costs.copy_ns(HPAGE_PMD_NR))
    k.counters.thp_collapse_alloc += 1
    return True


def wrprotect_huge(mm: MM, start: int, nr: int) -> None:
    """Write-protect every entry of a huge mapping (fork's copy_huge_pmd())."""
    pt = mm.pt
    for i in range(nr):
        pt[start + i] = pte_wrprotect(pt[start + i])


# -- hugetlb ------------------------------------------------------------------------------
def hugetlb_wp(k: Kernel, mm: MM, vma: VMA, page: int, folio: Folio, cpu: int,
               unshare: bool, fault_kind: str) -> FaultRecord:
    """hugetlb_wp(): hugetlb keeps its own rule in every era, outside the pluggable policy:
    reuse if the huge page is mapped once (page_mapcount() == 1), marking it
    PageAnonExclusive from v5.19; otherwise copy the whole huge page. GUP references are
    invisible to it, which is why cow.c expects hugetlb's vmsplice cases to fail."""
    start = page - (pte_pfn(mm.pt[page]) - folio.pfn)
    if unshare and (not k.config.anon_exclusive or folio.pae_of(0)):
        return FaultRecord(mm.name, page, cpu, "unshare", "none", exclusive=True)
    truth = page_truth(folio, None, mm.id, page, cpu, k.gups, k.swap)
    reuse = folio.entire_mapcount == 1
    if reuse:
        reuse_pmd(k, mm, start, folio, unshare, writable=vma.writable)
        k.counters.pgreuse += 1
    else:
        copy_huge(k, mm, start, folio, cpu, unshare, writable=vma.writable)
    return FaultRecord(
        mm.name, page, cpu, fault_kind, "reuse" if reuse else "copy", "hugetlb",
        judge(truth, reuse), truth.exclusive,
        () if reuse or not truth.exclusive else truth.blockers,
    )
