"""mlock() / munlock(): VM_LOCKED mappings, unevictable pages and their swap slots.

What VM_LOCKED changes for the reuse decision (mm/mlock.c, mm/gup.c, mm/memory.c,
mm/vmscan.c, mm/madvise.c):

* **mlock() populates.** __mm_populate() -> populate_vma_page_range() faults every page
  of the range in, with FOLL_WRITE in a writable private mapping ("we want to touch
  writable mappings with a write fault in order to break COW"), so mlock() after fork()
  takes a write fault, hence a reuse decision, on every shared page. A PROT_NONE range is
  locked but not populated. Unchanged from v5.7 to v6.15.
* **Locked pages are unevictable.** A folio mapped in a VM_LOCKED VMA is PageMlocked;
  shrink_folio_list() keeps it (folio_evictable()), and madvise(MADV_PAGEOUT / COLD /
  DONTNEED / FREE) refuses a VM_LOCKED range with EINVAL (can_madv_lru_vma(),
  madvise_dontneed_free_valid_vma()).
* **Swap-in frees the swap slot.** do_swap_page() calls try_to_free_swap() after the
  swap-in when the VMA is VM_LOCKED, the folio is PageMlocked, or swap is more than half
  full (mem_cgroup_swap_full(), which is vm_swap_full() without a cgroup-v2 swap limit).
  Up to v5.17 that is the only case it does so on a read fault, after the page is mapped;
  from v5.18 (c145e0b47c77) the same three conditions are the first half of
  should_try_to_free_swap(), checked before the page is mapped, whose second half is the
  write-fault refcount test. Freeing the swapcache early drops the swapcache's reference,
  so the write that follows can be reused by a refcount rule.
* **fork() does not inherit VM_LOCKED** (dup_mmap() clears it in the child).

Not modelled: the per-CPU mlock folio batch of v5.18+ (mlock_folio_batch, Hugh Dickins'
munlock rework) and older do_mlock()'s lru_add_drain_all(); MCL_FUTURE / mlockall();
MLOCK_ONFAULT; RLIMIT_MEMLOCK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.folio import PMD, PTE, Folio
from cowlab.kernel.mm import MM
from cowlab.kernel.thp import split_pmds_in

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def folio_mlocked(k: Kernel, folio: Folio) -> bool:
    """PageMlocked(): is any mapping of ``folio`` inside a VM_LOCKED VMA?"""
    if not k.mlock_used:
        return False  # fast path: nothing was ever mlocked
    for (kind, owner, _sub), _n in folio.ledger_items():
        if kind not in (PTE, PMD):
            continue
        mm = k.mms.get(owner[0])
        if mm is None:
            continue
        vma = mm.find_vma(owner[1])
        if vma is not None and vma.locked:
            return True
    return False


def check_not_locked(k: Kernel, mm: MM, start: int, end: int, advice: str) -> None:
    """madvise() of an LRU or discard advice on a VM_LOCKED range fails with EINVAL."""
    if not k.mlock_used:
        return
    for vma in mm.vmas:
        if vma.locked and vma.start < end and start < vma.end:
            raise KernelError(
                f"mm {mm.name}: madvise({advice}) of pages {start}..{end - 1}: the range "
                "is mlocked (EINVAL)"
            )


def mlock_range(k: Kernel, mm: MM, start: int, pages: int, cpu: int) -> list[FaultRecord]:
    """mlock(): mark ``[start, start+pages)`` VM_LOCKED and populate it; returns the
    records of the write faults population took (each a reuse decision)."""
    end = start + pages
    if not mm.covered(start, end):
        raise KernelError(
            f"mm {mm.name}: mlock of pages {start}..{end - 1}: part of the range is not "
            "mapped (ENOMEM)"
        )
    split_pmds_in(k, mm, start, end)  # a VMA boundary inside a PMD THP splits it
    vmas = mm.split_range(start, end)
    k.mlock_used = True
    for vma in vmas:
        vma.locked = True
    records: list[FaultRecord] = []
    mm.cpus.add(cpu)
    for vma in vmas:
        if not vma.readable:
            continue  # PROT_NONE: locked, not populated
        write = vma.writable
        for p in range(vma.start, vma.end):
            pte = mm.pt.get(p, 0)
            # follow_page_mask() found the page (and, with FOLL_WRITE, writable): nothing
            # to do; otherwise handle_mm_fault(), as faultin_page() does.
            if pte & 1 and (not write or pte & 2):
                continue
            rec = k.handle_fault(mm, vma, p, cpu, write=write, record=write)
            if rec is not None and write:
                records.append(rec)
    return records


def munlock_range(k: Kernel, mm: MM, start: int, pages: int) -> None:
    """munlock(): clear VM_LOCKED; the pages become evictable again."""
    end = start + pages
    if not mm.covered(start, end):
        raise KernelError(
            f"mm {mm.name}: munlock of pages {start}..{end - 1}: part of the range is not "
            "mapped (ENOMEM)"
        )
    split_pmds_in(k, mm, start, end)
    for vma in mm.split_range(start, end):
        vma.locked = False
