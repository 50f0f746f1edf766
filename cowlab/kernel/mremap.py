"""mremap(): move part of a mapping to another address (MREMAP_MAYMOVE | MREMAP_FIXED).

The pages keep their identity: PTEs move with their folios (the ledger's owner changes
address), swap PTEs and migration entries move as they are. A PMD mapping moves whole
only when both addresses are 2 MiB aligned for it (move_huge_pmd()); a PMD the range
covers in part, or that would land misaligned, is split first, which is how cow.c's
"partially mremap()'ed THP" ends up PTE-mapped at two places.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.geometry import _PAGE_PSE, HPAGE_PMD_NR, pte_pfn
from cowlab.kernel.errors import KernelError
from cowlab.kernel.folio import ZERO_PFN
from cowlab.kernel.migrate import is_migration_entry, migration_pfn
from cowlab.kernel.mm import MM
from cowlab.kernel.thp import split_pmd, split_pmds_in

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def move_range(k: Kernel, mm: MM, page: int, pages: int, new_page: int) -> None:
    """Move ``[page, page+pages)`` of ``mm`` to ``new_page``."""
    k.check_range(page, pages)
    k.check_range(new_page, pages)
    end = page + pages
    vma = mm.find_vma(page)
    if vma is None or end > vma.end:
        raise KernelError(
            f"mm {mm.name}: mremap of pages {page}..{end - 1}: the range must lie inside one "
            "mapping (EFAULT)"
        )
    if vma.hugetlb:
        raise KernelError("mremap of hugetlb mappings is not supported")
    if mm.overlaps(new_page, new_page + pages):
        raise KernelError(
            f"mm {mm.name}: mremap target {new_page}..{new_page + pages - 1} overlaps a mapping"
        )
    split_pmds_in(k, mm, page, end)
    pt = mm.pt
    if (new_page - page) % HPAGE_PMD_NR:
        for p in range(page, end, HPAGE_PMD_NR):
            split_pmd(k, mm, p & ~(HPAGE_PMD_NR - 1))
    (moved,) = mm.split_range(page, end)
    mm.vmas.remove(moved)
    mm.insert_vma(moved.split_copy(new_page, new_page + pages))
    delta = new_page - page
    for p in range(page, end):
        pte = pt.pop(p, 0)
        if not pte:
            continue
        q = p + delta
        pt[q] = pte
        if is_migration_entry(pte):
            entries = k.migration_entries[migration_pfn(pte)]
            entries[entries.index((mm, p))] = (mm, q)
        elif pte & 1 and pte_pfn(pte) != ZERO_PFN:
            folio = k.frames[pte_pfn(pte)]
            sub = pte_pfn(pte) - folio.pfn
            if pte & _PAGE_PSE:
                if sub == 0:
                    folio.unmap_pmd((mm.id, p))
                    folio.map_pmd((mm.id, q))
            else:
                folio.unmap_pte(mm.id, p, sub)
                folio.map_pte(mm.id, q, sub)
    k.flush_tlb(mm, None)
