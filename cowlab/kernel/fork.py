"""fork(): dup_mmap() and the per-era copy of present and swap PTEs (mm/memory.c
copy_present_pte(), copy_nonpresent_pte()).

* up to v5.8: every anon page is shared read-only with the child;
* v5.9+ (70e806e4e645): a maybe-DMA-pinned page of an mm that has pinned is copied
  for the child at once, so the parent's pin stays coherent; hugetlb pages only from
  v5.12 (4eae4efa2c29 "hugetlb: do early cow when page pinned on src mm");
* v5.19+ (6c287605fd56): sharing clears PageAnonExclusive; a PAE page that may be
  pinned is copied instead (page_try_dup_anon_rmap()); the exclusive bit of a swap
  PTE is cleared in parent and child (1493a1913e34).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    _PAGE_PSE,
    make_pte,
    make_swap_pte,
    pte_mkold,
    pte_pfn,
    pte_swp_clear_exclusive,
    pte_swp_clear_uffd_wp,
    pte_swp_exclusive,
    pte_swp_soft_dirty,
    pte_wrprotect,
    swp_offset,
)
from cowlab.geometry import pte_clear_uffd_wp as _pte_clear_uffd
from cowlab.kernel.folio import ZERO_PFN, Folio
from cowlab.kernel.migrate import SWP_MIGRATION_READ, is_migration_entry, migration_pfn
from cowlab.kernel.mm import MM
from cowlab.kernel.thp import split_pmd

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def fork_mm(k: Kernel, parent: MM, child_name: str, cpu: int = 0) -> MM:
    """dup_mmap() / copy_present_pte() / copy_nonpresent_pte() of every era."""
    k.check_cpu(cpu)
    k.charge(k.costs.syscall_ns)
    if k.machine.ram_pages is not None:
        k.direct_reclaim(cpu)
    cfg = k.config
    child = k.create_mm(child_name)
    ppt = parent.pt
    cpt = child.pt
    wrprotected = False
    for vma in parent.vmas:
        if vma.dontfork:
            continue
        cvma = vma.split_copy(vma.start, vma.end)
        # dup_userfaultfd(): VM_UFFD_WP is not inherited without UFFD_FEATURE_EVENT_FORK.
        cvma.uffd_wp = False
        # dup_mmap(): the child's VMAs never inherit VM_LOCKED (mlock is per process).
        cvma.locked = False
        child.vmas.append(cvma)
        # copy_pte_range(): the VMA's entries in address order (a snapshot of the pages).
        for p in ppt.range_keys(vma.start, vma.end):
            k.busy_ns += k.costs.fork_pte_ns
            pte = ppt[p]
            if not pte & 1 and is_migration_entry(pte):
                # copy_nonpresent_pte(): a writable or exclusive migration entry becomes a
                # readable one in both; the child's entry is restored with the parent's.
                pte = make_swap_pte(
                    SWP_MIGRATION_READ, swp_offset(pte), soft_dirty=pte_swp_soft_dirty(pte)
                )
                ppt[p] = pte
                cpt[p] = pte
                k.migration_entries[migration_pfn(pte)].append((child, p))
                continue
            if not pte & 1:
                # copy_nonpresent_pte(): the child shares the swap entry; v5.19+ the
                # exclusive bit is cleared in both.
                k.swap.dup(swp_offset(pte), child.id)
                if pte_swp_exclusive(pte):
                    pte = pte_swp_clear_exclusive(pte)
                    ppt[p] = pte
                cpt[p] = pte_swp_clear_uffd_wp(pte)
                continue
            pfn = pte_pfn(pte)
            if pfn == ZERO_PFN:
                cpt[p] = pte
                continue
            folio = k.frames[pfn]
            sub = pfn - folio.pfn
            if pte & _PAGE_PSE:
                if sub:
                    continue  # handled with the first page of the huge mapping
                if not copy_huge_mapping(k, parent, child, p, folio, cpu):
                    continue
                # A pinned THP: split the PMD and copy its pages one by one (v5.9+).
                pte = ppt[p]
            if parent.has_pinned and must_copy_at_fork(k, parent, folio, sub):
                copy_page_for_child(k, child, p, folio, sub, cpu)
                continue
            if cfg.anon_exclusive:
                folio.set_pae(sub, False)
            folio.map_pte(child.id, p, sub)
            if pte & 2:
                pte = pte_wrprotect(pte)
                ppt[p] = pte
                wrprotected = True
            cpt[p] = _pte_clear_uffd(pte_mkold(pte))
    if wrprotected:
        k.flush_tlb(parent, cpu)
    return child


def copy_huge_mapping(k: Kernel, parent: MM, child: MM, start: int, folio: Folio,
                      cpu: int) -> bool:
    """copy_huge_pmd() / copy_hugetlb_page_range(): share the huge mapping read-only with
    the child (clearing PageAnonExclusive), or, for a page that may be pinned by a process
    that has pinned, copy a hugetlb page for the child at once / split a THP's PMD. Returns
    True when the caller must continue with the split PMD's PTEs."""
    nr = folio.nr_pages
    # copy_hugetlb_page_range() copies a pinned hugetlb page only from v5.12
    # (4eae4efa2c29); before that it is shared like any other.
    hugetlb_copies = k.config.hugetlb_fork_copies_pinned or not folio.hugetlb
    if hugetlb_copies and must_copy_at_fork(k, parent, folio, 0):
        if not folio.hugetlb:
            split_pmd(k, parent, start)
            return True
        new = k.alloc_folio(folio.order)
        new.hugetlb = True
        new.set_data_list(folio.data_list())
        if k.config.anon_exclusive:
            new.set_all_pae(True)
        new.map_pmd((child.id, start))
        for i in range(nr):
            child.pt[start + i] = make_pte(new.pfn + i, write=True, dirty=True,
                                           soft_dirty=True, huge=True)
        k.charge(k.costs.copy_ns(nr))
        k.counters.pages_copied += nr
        return False
    if k.config.anon_exclusive:
        folio.set_all_pae(False)
    folio.map_pmd((child.id, start))
    ppt = parent.pt
    for i in range(nr):
        pte = pte_wrprotect(ppt[start + i])
        ppt[start + i] = pte
        child.pt[start + i] = _pte_clear_uffd(pte_mkold(pte))
    k.flush_tlb(parent, cpu)
    return False


def must_copy_at_fork(k: Kernel, parent: MM, folio: Folio, sub: int) -> bool:
    """page_needs_cow_for_dma(): v5.9+ copies a maybe-pinned page when the mm has
    pinned (70e806e4e645); v5.19+ only a PAE page can be pinned, and such a page is
    never shared (page_try_dup_anon_rmap())."""
    cfg = k.config
    if folio.ksm or not parent.has_pinned or not folio.maybe_dma_pinned():
        return False
    if cfg.anon_exclusive:
        return folio.pae_of(sub)
    return cfg.fork_copies_pinned


def copy_page_for_child(k: Kernel, child: MM, page: int, folio: Folio, sub: int, cpu: int) -> None:
    """copy_present_page(): the child gets its own writable, exclusive copy now."""
    new = k.alloc_folio(0)
    new.set_data(0, folio.data_of(sub))
    if k.config.anon_exclusive:
        new.set_pae(0, True)
    new.map_pte(child.id, page, 0)
    child.pt[page] = make_pte(new.pfn, write=True, dirty=True, soft_dirty=True)
    k.lru.add(new, cpu)
    k.counters.pages_copied += 1


# ==================================================================================
# GUP
