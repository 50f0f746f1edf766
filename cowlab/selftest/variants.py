"""The memory variants of cow.c: how the area under test is made before a case runs.

Each variant reproduces one of cow.c's setup functions (``run_with_base_page()``,
``do_run_with_thp()`` with its ``thp_run`` modes, ``run_with_hugetlb()``) as a sequence
of simulated system calls on a fresh mm named ``parent``, and returns the
:class:`Area` the case then works on, or a :class:`Skip` with cow.c's skip message
when the setup did not produce what the case needs (cow.c checks that a THP was
populated and that MADV_PAGEOUT really swapped the range out).

Layout. cow.c maps twice the THP size and aligns inside it; the simulator maps with
MAP_FIXED, so the area starts at :data:`AREA` (aligned for every size up to 1 GiB) and
the half moved by the "partially mremap()'ed" variant goes to :data:`REMAP`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cowlab.geometry import HPAGE_PMD_ORDER, pte_huge, pte_pfn, pte_present
from cowlab.kernel import Kernel
from cowlab.kernel.folio import ZERO_PFN
from cowlab.kernel.migrate import is_migration_entry
from cowlab.kernel.mm import MM

#: First page of the area under test (8 GiB: aligned for a 1 GiB hugetlb page).
AREA = 1 << 21
#: Where the "partially mremap()'ed THP" variant moves the upper half (64 GiB).
REMAP = 1 << 24
#: Pages a pipe holds: vmsplice() transfers at most PIPE_DEF_BUFFERS (16) pages.
PIPE_PAGES = 16
#: The base pages of an area that the runner writes and compares: all of them up to this
#: many; of a larger area (only a 1 GiB hugetlb page) a sample (see touched_pages()).
MAX_TOUCHED = 512

#: hugetlb page orders and the ``hugetlb=`` spelling of the kernel's mmap().
HUGETLB_SIZES = {9: "2m", 18: "1g"}

PAGEOUT_SKIP = "MADV_PAGEOUT did not work, is swap enabled?"
NO_THP_SKIP = "Did not get a THP populated"


def size_kb(order: int) -> int:
    """The size of a folio of ``order`` in kB (4 kB base pages)."""
    return 4 << order


@dataclass(frozen=True)
class Variant:
    """One memory variant of cow.c.

    ``kind`` is one of :data:`KINDS`; ``order`` is the folio order (0 for a base page,
    2..9 for a THP, 9 or 18 for hugetlb).
    """

    kind: str
    order: int = 0

    @property
    def family(self) -> str:
        """The variant's name without its size, as in cow.c's ``[RUN]`` line."""
        return KINDS[self.kind]

    @property
    def label(self) -> str:
        """The ``... with <label>`` suffix cow.c prints, e.g. ``THP (2048 kB)``."""
        if self.kind in ("base", "base_swap"):
            return self.family
        return f"{self.family} ({size_kb(self.order)} kB)"

    @property
    def is_hugetlb(self) -> bool:
        """cow.c passes ``is_hugetlb`` to the case (hugetlb vmsplice cases may xfail)."""
        return self.kind == "hugetlb"

    @property
    def swapped(self) -> bool:
        """The area is swapped out before the case runs."""
        return self.kind.endswith("_swap")

    @property
    def id(self) -> str:
        """A short stable identifier, e.g. ``pte_thp_swap-9``."""
        return self.kind if self.kind in ("base", "base_swap") else f"{self.kind}-{self.order}"


#: Variant kinds in cow.c's order, with the text of their ``[RUN]`` line.
KINDS: dict[str, str] = {
    "base": "base page",
    "base_swap": "swapped out base page",
    "thp": "THP",
    "thp_swap": "swapped-out THP",
    "pte_thp": "PTE-mapped THP",
    "pte_thp_swap": "swapped-out, PTE-mapped THP",
    "single_pte": "single PTE of THP",
    "single_pte_swap": "single PTE of swapped-out THP",
    "partial_mremap": "partially mremap()'ed THP",
    "partial_shared": "partially shared THP",
    "hugetlb": "hugetlb",
}

#: The variants cow.c runs for every THP size, and the two it adds for the PMD size.
THP_KINDS = ("pte_thp", "pte_thp_swap", "single_pte", "single_pte_swap", "partial_mremap",
             "partial_shared")
PMD_ONLY_KINDS = ("thp", "thp_swap")


@dataclass
class Area:
    """The memory a case works on: ``pages`` pages of ``mm`` from ``start``."""

    k: Kernel
    mm: MM
    start: int
    pages: int
    variant: Variant

    @property
    def touched(self) -> list[int]:
        """The pages written and compared (every page, see :data:`MAX_TOUCHED`)."""
        return touched_pages(self.start, self.pages)

    @property
    def sampled(self) -> bool:
        """Only a sample of the pages is touched (see :func:`touched_pages`)."""
        return self.pages > MAX_TOUCHED

    @property
    def pipe_pages(self) -> int:
        """How many pages a vmsplice() of the area puts into a pipe."""
        return min(self.pages, PIPE_PAGES)

    @property
    def pipe(self) -> list[int]:
        """The pages a vmsplice() of the area puts into a pipe (the first ones)."""
        return list(range(self.start, self.start + self.pipe_pages))


@dataclass(frozen=True)
class Skip:
    """The setup did not produce the memory the case needs (cow.c's skip message)."""

    reason: str


def touched_pages(start: int, pages: int) -> list[int]:
    """Every page of ``[start, start+pages)``, or for an area larger than
    :data:`MAX_TOUCHED` pages the first :data:`PIPE_PAGES` (what a pipe holds), one page
    per 2 MiB and the last one.

    Only a 1 GiB hugetlb page is that large. hugetlb_wp() maps, shares, copies and reuses
    a hugetlb page as one unit, so its base pages all behave alike; touching 262144 of
    them per pass would cost seconds of Python for no extra information.
    """
    if pages <= MAX_TOUCHED:
        return list(range(start, start + pages))
    step = pages // MAX_TOUCHED
    sample = {*range(start, start + PIPE_PAGES), *range(start, start + pages, step),
              start + pages - 1}
    return sorted(sample)


def fill(k: Kernel, mm: MM, pages: list[int], tag: str) -> None:
    """memset(): write a distinct token ``(tag, page)`` to every page of ``pages``."""
    for p in pages:
        k.write(mm, p, data=(tag, p))


def is_swapped(mm: MM, page: int) -> bool:
    """pagemap_is_swapped(): the page table holds a swap entry for ``page``."""
    pte = mm.pt.get(page, 0)
    return bool(pte) and not pte_present(pte) and not is_migration_entry(pte)


def is_populated(mm: MM, page: int) -> bool:
    """pagemap_is_populated(): present (not the zero page) or swapped."""
    pte = mm.pt.get(page, 0)
    if not pte:
        return False
    if pte_present(pte):
        return pte_pfn(pte) != ZERO_PFN
    return True


def is_pmd_mapped_thp(k: Kernel, mm: MM, start: int) -> bool:
    """The 2 MiB at ``start`` are one PMD mapping of an order-9 folio."""
    pte = mm.pt.get(start, 0)
    return pte_present(pte) and pte_huge(pte) and k.frames[pte_pfn(pte)].order == HPAGE_PMD_ORDER


def setup(k: Kernel, variant: Variant) -> Area | Skip:
    """Build the memory of ``variant`` in a new mm ``parent``, as cow.c does."""
    mm = k.create_mm("parent")
    if variant.kind in ("base", "base_swap"):
        return _base_page(k, mm, variant)
    if variant.kind == "hugetlb":
        return _hugetlb(k, mm, variant)
    return _thp(k, mm, variant)


def _base_page(k: Kernel, mm: MM, variant: Variant) -> Area | Skip:
    """do_run_with_base_page(): one page, MADV_NOHUGEPAGE, populated by memset()."""
    k.mmap(mm, AREA, 1)
    fill(k, mm, [AREA], "init")
    area = Area(k, mm, AREA, 1, variant)
    if variant.swapped:
        return _swap_out(area)
    return area


def _swap_out(area: Area) -> Area | Skip:
    """MADV_PAGEOUT of the area, then cow.c's check that every page is swapped."""
    area.k.madvise(area.mm, area.start, area.pages, "pageout")
    if not all(is_swapped(area.mm, p) for p in area.touched):
        return Skip(PAGEOUT_SKIP)
    return area


def _thp(k: Kernel, mm: MM, variant: Variant) -> Area | Skip:
    """do_run_with_thp(): a THP-aligned area with MADV_HUGEPAGE (the mapping's ``thp``
    mode: ``pmd``, or ``mthp-<order>`` as cow.c enables only the size under test), the
    first byte written, the last subpage checked for population, then memset()."""
    order = variant.order
    nr = 1 << order
    thp = "pmd" if order == HPAGE_PMD_ORDER else f"mthp-{order}"
    k.mmap(mm, AREA, nr, thp=thp)
    k.write(mm, AREA, data=("init", AREA))
    if not is_populated(mm, AREA + nr - 1):
        return Skip(NO_THP_SKIP)
    fill(k, mm, list(range(AREA + 1, AREA + nr)), "init")
    pages = nr
    kind = variant.kind
    if kind in ("pte_thp", "pte_thp_swap"):
        # Map one subpage R/O and back: the PMD is split (a no-op below PMD size).
        k.mprotect(mm, AREA + 1, 1, "r")
        k.mprotect(mm, AREA + 1, 1, "rw")
    elif kind in ("single_pte", "single_pte_swap"):
        # Discard all but the first subpage: one PTE maps one page of the THP.
        k.madvise(mm, AREA + 1, nr - 1, "dontneed")
        pages = 1
    elif kind == "partial_mremap":
        # Move the upper half elsewhere (MREMAP_MAYMOVE | MREMAP_FIXED onto a fresh
        # PROT_NONE mapping, which mremap() replaces: unmapped here first).
        half = nr // 2
        k.mmap(mm, REMAP, half, prot="none")
        k.munmap(mm, REMAP, half)
        k.mremap(mm, AREA + half, half, REMAP)
        pages = half
    elif kind == "partial_shared":
        # Share only the first subpage with a child that exits at once, then allow
        # sharing everything again.
        k.madvise(mm, AREA + 1, nr - 1, "dontfork")
        child = k.fork(mm, "setup-child")
        k.exit_mm(child)
        k.madvise(mm, AREA + 1, nr - 1, "dofork")
    area = Area(k, mm, AREA, pages, variant)
    if variant.swapped:
        return _swap_out(area)
    return area


def _hugetlb(k: Kernel, mm: MM, variant: Variant) -> Area | Skip:
    """run_with_hugetlb(): MAP_HUGETLB of one huge page, populated by memset(). (cow.c
    also checks that a second huge page is free for COW; the simulated pool never runs
    out.)"""
    nr = 1 << variant.order
    k.mmap(mm, AREA, nr, hugetlb=HUGETLB_SIZES[variant.order])
    area = Area(k, mm, AREA, nr, variant)
    fill(k, mm, area.touched, "init")
    return area


def variants_for(mthp: bool, mthp_orders: tuple[int, ...], *,
                 hugetlb_orders: tuple[int, ...] = (9, 18)) -> list[Variant]:
    """Every variant cow.c runs per anonymous case, in its order: base page, swapped out
    base page, then for every THP size in ascending order (the ``mthp_orders`` below PMD
    size only where the kernel has multi-size THP, ``mthp``) the THP variants, then the
    hugetlb sizes."""
    out = [Variant("base"), Variant("base_swap")]
    orders = [o for o in mthp_orders if o < HPAGE_PMD_ORDER] if mthp else []
    for order in [*orders, HPAGE_PMD_ORDER]:
        kinds = (*PMD_ONLY_KINDS, *THP_KINDS) if order == HPAGE_PMD_ORDER else THP_KINDS
        out += [Variant(kind, order) for kind in kinds]
    out += [Variant("hugetlb", order) for order in hugetlb_orders]
    return out
