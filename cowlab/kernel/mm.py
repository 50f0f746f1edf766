"""Address spaces: VMAs and page tables.

An :class:`MM` holds sorted, non-overlapping private anonymous VMAs and a page table
(:class:`~cowlab.kernel.pagetable.PageTable`) mapping a virtual page number to a 64-bit
x86 PTE value (``cowlab.geometry`` encodes present and swap PTEs with the real bit
positions).
The physical page a present PTE maps is found through its PFN.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field

from cowlab.kernel.pagetable import PageTable

PROTS = ("none", "r", "rw")
THP_MODES = ("none", "pmd")  # mTHP orders are spelled "mthp-<order>"


@dataclass
class VMA:
    """A private anonymous mapping ``[start, end)`` in pages.

    Flags follow the kernel's: ``dontfork`` (VM_DONTCOPY), ``mergeable``
    (VM_MERGEABLE), ``uffd_wp`` (registered with UFFDIO_REGISTER_MODE_WP),
    ``softdirty`` (VM_SOFTDIRTY: set means soft-dirty tracking is *not* active,
    cleared by writing 4 to /proc/pid/clear_refs), ``locked`` (VM_LOCKED: mlock()).
    """

    start: int
    end: int
    prot: str = "rw"
    thp: str = "none"
    dontfork: bool = False
    mergeable: bool = False
    uffd_wp: bool = False
    softdirty: bool = True
    #: hugetlb page order (9: 2 MiB, 18: 1 GiB), 0 for ordinary anonymous memory.
    hugetlb: int = 0
    #: VM_LOCKED (mlock()): its pages are unevictable, and do_swap_page() frees the swap
    #: slot of a page swapped in here. Not inherited by fork (dup_mmap() clears it).
    locked: bool = False

    @property
    def pages(self) -> int:
        """Length in pages."""
        return self.end - self.start

    @property
    def writable(self) -> bool:
        """VM_WRITE."""
        return self.prot == "rw"

    @property
    def readable(self) -> bool:
        """VM_READ."""
        return self.prot != "none"

    @property
    def maywrite(self) -> bool:
        """VM_MAYWRITE: always set on a private anonymous mapping, whatever its prot.

        do_mmap() gives every mapping VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC and takes
        VM_MAYWRITE away only from a file mapping whose file is not open for writing, so a
        PROT_READ or PROT_NONE anonymous mapping may still be mprotect()ed writable.
        """
        return True

    @property
    def is_cow_mapping(self) -> bool:
        """is_cow_mapping(): private (no VM_SHARED) and VM_MAYWRITE, whatever the prot."""
        return self.maywrite

    @property
    def softdirty_tracking(self) -> bool:
        """vma_soft_dirty_enabled(): tracking is on once VM_SOFTDIRTY was cleared."""
        return not self.softdirty

    def split_copy(self, start: int, end: int) -> VMA:
        """A VMA with the same flags over ``[start, end)``."""
        return dataclasses.replace(self, start=start, end=end)


def _vma_start(vma: VMA) -> int:
    return vma.start


@dataclass
class MM:
    """One process's address space."""

    id: int
    name: str
    vmas: list[VMA] = field(default_factory=list)
    #: virtual page number -> PTE value (present or swap); absent means pte_none.
    pt: PageTable = field(default_factory=PageTable)
    #: MMF_HAS_PINNED (v5.9: mm->has_pinned): set by the first FOLL_PIN, never cleared.
    has_pinned: bool = False
    #: CPUs this mm has run on (mm_cpumask): targets of remote TLB flushes.
    cpus: set[int] = field(default_factory=set)
    alive: bool = True
    #: Index in ``vmas`` of the VMA the last find_vma() returned: checked first (a hint,
    #: never trusted: the VMA found there must contain the page, in the list as it is).
    vma_hint: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vma_hint = 0

    def find_vma(self, page: int) -> VMA | None:
        """The VMA containing ``page``, or None."""
        vmas = self.vmas
        i = self.vma_hint
        if i < len(vmas):
            v = vmas[i]
            if v.start <= page < v.end:
                return v
        # The last VMA starting at or below ``page`` (bisect_right by start, written out:
        # compiled, it beats calling bisect with a key function on every fault).
        lo, hi = 0, len(vmas)
        while lo < hi:
            mid = (lo + hi) // 2
            if page < vmas[mid].start:
                hi = mid
            else:
                lo = mid + 1
        if lo and page < vmas[lo - 1].end:
            self.vma_hint = lo - 1
            return vmas[lo - 1]
        return None

    def overlaps(self, start: int, end: int) -> bool:
        """True if any VMA intersects ``[start, end)``."""
        return any(v.start < end and start < v.end for v in self.vmas)

    def insert_vma(self, vma: VMA) -> None:
        """Insert keeping the list sorted by start."""
        bisect.insort(self.vmas, vma, key=_vma_start)

    def split_range(self, start: int, end: int) -> list[VMA]:
        """Split VMAs at ``start`` and ``end``; return the VMAs inside ``[start, end)``."""
        out: list[VMA] = []
        new: list[VMA] = []
        for v in self.vmas:
            if v.end <= start or v.start >= end:
                new.append(v)
                continue
            if v.start < start:
                new.append(v.split_copy(v.start, start))
            mid = v.split_copy(max(v.start, start), min(v.end, end))
            new.append(mid)
            out.append(mid)
            if v.end > end:
                new.append(v.split_copy(end, v.end))
        self.vmas = new
        return out

    def covered(self, start: int, end: int) -> bool:
        """True if ``[start, end)`` is entirely inside VMAs (no holes)."""
        pos = start
        for v in self.vmas:
            if v.end <= pos:
                continue
            if v.start > pos:
                return False
            pos = v.end
            if pos >= end:
                return True
        return pos >= end
