"""Write-protection changes: mprotect(), soft-dirty clearing and userfaultfd-wp.

From v6.0 (64fe24a3e05e) mprotect(RW) and UFFDIO_WRITEPROTECT(off) map a page
writable at once when can_change_pte_writable() proves it exclusive (PAE), dirty,
and not tracked by soft-dirty or uffd-wp; from v6.2 (d84887739d5c) a clean exclusive
page too. Earlier kernels leave it read-only so the next write faults. From v5.11
(9348b73c2e1b) clearing soft-dirty skips pinned pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import (
    _PAGE_PSE,
    pte_dirty,
    pte_mkwrite,
    pte_pfn,
    pte_soft_dirty,
    pte_swp_clear_soft_dirty,
    pte_swp_clear_uffd_wp,
    pte_swp_mkuffd_wp,
    pte_uffd_wp,
    pte_wrprotect,
)
from cowlab.geometry import pte_clear_soft_dirty as _pte_clear_sd
from cowlab.geometry import pte_clear_uffd_wp as _pte_clear_uffd
from cowlab.geometry import pte_mkuffd_wp as _pte_mkuffd
from cowlab.kernel.errors import KernelError
from cowlab.kernel.folio import ZERO_PFN
from cowlab.kernel.mm import MM, PROTS, VMA
from cowlab.kernel.thp import split_pmds_in

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def change_protection(k: Kernel, mm: MM, page: int, pages: int, prot: str) -> None:
    """mprotect(): change_pte_range() write-protects, and (v6.0+, 64fe24a3e05e) maps
    provably exclusive dirty pages writable at once (can_change_pte_writable())."""
    k.check_range(page, pages)
    if prot not in PROTS:
        raise KernelError(f"unknown protection {prot!r} (expected one of {', '.join(PROTS)})")
    end = page + pages
    if not mm.covered(page, end):
        raise KernelError(
            f"mm {mm.name}: mprotect of pages {page}..{end - 1}: part of the "
            "range is not mapped (ENOMEM)"
        )
    split_pmds_in(k, mm, page, end)
    flush = False
    for vma in mm.split_range(page, end):
        vma.prot = prot
        for p in range(vma.start, vma.end):
            pte = mm.pt.get(p, 0)
            if not pte & 1:
                continue
            if prot != "rw":
                if pte & 2:
                    mm.pt[p] = pte_wrprotect(pte)
                    flush = True
            elif can_change_pte_writable(k, vma, pte):
                mm.pt[p] = pte_mkwrite(pte)
    if flush:
        k.flush_tlb(mm, None)


def can_change_pte_writable(k: Kernel, vma: VMA, pte: int) -> bool:
    """can_change_pte_writable() (mm/mprotect.c): may a read-only PTE become writable
    without a fault? v6.0 (64fe24a3e05e) requires PageAnonExclusive and a dirty PTE;
    from v6.2 (d84887739d5c) a private anonymous mapping needs only PageAnonExclusive
    (pte_dirty() is checked for shared mappings only, which cowlab does not have)."""
    if not k.config.mprotect_upgrade_exclusive or pte & 2 or not vma.writable:
        return False
    if not k.config.mprotect_upgrade_clean and not pte_dirty(pte):
        return False
    if vma.softdirty_tracking and not pte_soft_dirty(pte):
        return False
    if pte_uffd_wp(pte):
        return False
    pfn = pte_pfn(pte)
    if pfn == ZERO_PFN:
        return False
    folio = k.frames[pfn]
    return not folio.ksm and folio.pae_of(pfn - folio.pfn)


def clear_soft_dirty(k: Kernel, mm: MM) -> None:
    """echo 4 > /proc/pid/clear_refs: start soft-dirty tracking; write-protect and
    clear the soft-dirty bit of every PTE (fs/proc/task_mmu.c clear_soft_dirty()).

    From v5.11 (9348b73c2e1b "mm: don't play games with pinned pages in
    clear_page_refs") pte_is_pinned() leaves a writable PTE of a COW mapping alone, bit
    and all, when the mm has pinned and the page may be DMA-pinned: write-protecting it
    would make the next write copy the page away from the device. PMD mappings
    (clear_soft_dirty_pmd()) have no such check.
    """
    skip_pinned = k.config.softdirty_skips_pinned
    for vma in mm.vmas:
        vma.softdirty = False
    for p, pte in list(mm.pt.items()):
        if pte & 1:
            if skip_pinned and _pte_is_pinned(k, mm, p, pte):
                continue
            mm.pt[p] = _pte_clear_sd(pte_wrprotect(pte))
        else:
            mm.pt[p] = pte_swp_clear_soft_dirty(pte)
    k.flush_tlb(mm, None)


def _pte_is_pinned(k: Kernel, mm: MM, page: int, pte: int) -> bool:
    """pte_is_pinned() (fs/proc/task_mmu.c, 9348b73c2e1b): a writable PTE of a COW
    mapping in an mm that has pinned, mapping a page that may be DMA-pinned."""
    if not pte & 2 or pte & _PAGE_PSE or not mm.has_pinned:
        return False
    vma = mm.find_vma(page)
    if vma is None or not vma.is_cow_mapping:
        return False
    pfn = pte_pfn(pte)
    if pfn == ZERO_PFN:
        return False
    return k.frames[pfn].maybe_dma_pinned()


def userfaultfd_wp(k: Kernel, mm: MM, page: int, pages: int, enable: bool) -> None:
    """UFFDIO_REGISTER(MODE_WP) + UFFDIO_WRITEPROTECT on ``[page, page+pages)``."""
    k.check_range(page, pages)
    end = page + pages
    if not mm.covered(page, end):
        raise KernelError(
            f"mm {mm.name}: uffd_wp of pages {page}..{end - 1}: part of the range is not mapped"
        )
    split_pmds_in(k, mm, page, end)
    for vma in mm.split_range(page, end):
        vma.uffd_wp = True
        for p in range(vma.start, vma.end):
            if enable:
                uffd_protect_pte(k, mm, p)
            else:
                uffd_unprotect_pte(k, mm, vma, p)
    k.flush_tlb(mm, None)


def uffd_protect_pte(k: Kernel, mm: MM, page: int) -> None:
    pte = mm.pt.get(page, 0)
    if pte & 1:
        mm.pt[page] = _pte_mkuffd(pte)
    elif pte:
        mm.pt[page] = pte_swp_mkuffd_wp(pte)


def uffd_unprotect_pte(k: Kernel, mm: MM, vma: VMA, page: int) -> None:
    pte = mm.pt.get(page, 0)
    if pte & 1:
        pte = _pte_clear_uffd(pte)
        if can_change_pte_writable(k, vma, pte):
            pte = pte_mkwrite(pte)
        mm.pt[page] = pte
    elif pte:
        mm.pt[page] = pte_swp_clear_uffd_wp(pte)


# ==================================================================================
# KSM
