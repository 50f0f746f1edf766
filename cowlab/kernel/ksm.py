"""KSM: merging anonymous pages of equal content into a read-only KSM page (mm/ksm.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    make_pte,
    pte_dirty,
    pte_pfn,
    pte_soft_dirty,
    pte_wrprotect,
)
from cowlab.kernel.errors import KernelError
from cowlab.kernel.folio import ZERO_PFN, Folio
from cowlab.kernel.mm import MM
from cowlab.kernel.thp import split_pmds_in

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def merge_pages(k: Kernel, pages: list[tuple[MM, int]]) -> int:
    """ksmd merging pages of equal content (mm/ksm.c try_to_merge_two_pages()).

    The scan starts with lru_add_drain_all(). A page is merged only if
    write_protect_page() succeeds: its refcount must be exactly its mappings plus
    the swapcache (plus KSM's own reference), so a GUP reference or a batch
    reference makes the merge fail; v5.19+ a maybe-pinned exclusive page is never
    merged. Returns how many pages now map the KSM page.
    """
    if len(pages) < 2:
        raise KernelError("ksm_merge needs at least two pages")
    k.lru_add_drain_all()
    targets: list[tuple[MM, int, Folio, int]] = []
    content: object = None
    for i, (mm, p) in enumerate(pages):
        vma = k.vma_or_error(mm, p)
        if not vma.mergeable:
            raise KernelError(f"mm {mm.name}: page {p} is not in a MADV_MERGEABLE area")
        pte = mm.pt.get(p, 0)
        if not pte & 1 or pte_pfn(pte) == ZERO_PFN:
            raise KernelError(f"mm {mm.name}: page {p} is not present (touch it first)")
        folio = k.frames[pte_pfn(pte)]
        sub = pte_pfn(pte) - folio.pfn
        if i == 0:
            content = folio.data_of(sub)
        elif folio.data_of(sub) != content:
            raise KernelError(
                f"ksm_merge: mm {mm.name} page {p} does not have the same content as "
                f"mm {pages[0][0].name} page {pages[0][1]}"
            )
        targets.append((mm, p, folio, sub))
    kmm, kp, kfolio, ksub = targets[0]
    if not kfolio.ksm and not write_protect_page(k, kmm, kp, kfolio, ksub):
        return 0
    kfolio.ksm = True
    merged = 1
    for mm, p, folio, sub in targets[1:]:
        if folio is kfolio:
            merged += 1
            continue
        if not write_protect_page(k, mm, p, folio, sub):
            continue
        # replace_page(): map the KSM page read-only, drop the old page.
        kfolio.map_pte(mm.id, p, ksub)
        mm.pt[p] = make_pte(kfolio.pfn + ksub, write=False, soft_dirty=pte_soft_dirty(mm.pt[p]))
        k.put_mapping(folio, mm.id, p, sub)
        k.flush_tlb(mm, None)
        merged += 1
        k.counters.ksm_merged += 1
    return merged


def write_protect_page(k: Kernel, mm: MM, page: int, folio: Folio, sub: int) -> bool:
    if folio.order or folio.lock is not None or folio.writeback:
        return False
    swapped = folio.nr_pages if folio.swap_entry is not None else 0
    if folio.large_mapcount + swapped != folio.refcount:
        return False
    if k.config.anon_exclusive and folio.pae_of(sub):
        if folio.maybe_dma_pinned():
            return False
        folio.set_pae(sub, False)
    pte = mm.pt[page]
    if pte_dirty(pte):
        folio.dirty = True
    mm.pt[page] = pte_wrprotect(pte)
    return True


def unmerge_range(k: Kernel, mm: MM, start: int, end: int, cpu: int) -> None:
    """MADV_UNMERGEABLE (ksm_madvise() -> unmerge_ksm_pages() -> break_ksm()).

    Every KSM page mapped in ``[start, end)`` is replaced by a private copy, then the
    range loses VM_MERGEABLE so ksmd leaves it alone. break_ksm() does so by faulting:
    up to v6.0 a write fault (FAULT_FLAG_WRITE | FAULT_FLAG_REMOTE, without storing
    anything), which runs do_wp_page() and so asks the era's reuse rule like any COW
    fault: v5.7/v5.8's reuse_ksm_page() reuses a KSM page mapped only here, from v5.9
    (09854ba94c6a) a KSM page is always copied. v6.1 (6cce3314b928 "mm/ksm: fix KSM COW
    breaking with userfaultfd-wp via FAULT_FLAG_UNSHARE") uses an unshare fault instead,
    whose copy is mapped read-only; cowlab has no facility for that boundary and uses
    the write fault in every era except in a read-only mapping, where only an unshare
    fault can break it, and which before v5.19 is left merged (see docs/kernel-model.md).
    A swapped-out KSM page is left
    alone, as follow_page() does not see it.
    """
    for p in range(start, end):
        pte = mm.pt.get(p, 0)
        if not pte & 1 or pte_pfn(pte) == ZERO_PFN:
            continue
        if not k.frames[pte_pfn(pte)].ksm:
            continue
        vma = k.vma_or_error(mm, p)
        if vma.writable:
            k.handle_fault(mm, vma, p, cpu, write=True, record=True)
        elif k.config.anon_exclusive:
            k.handle_fault(mm, vma, p, cpu, write=False, record=True, unshare=True)
        # else: a read-only mapping before v5.19 keeps the KSM page (a departure).
    split_pmds_in(k, mm, start, end)
    for vma in mm.split_range(start, end):
        vma.mergeable = False
