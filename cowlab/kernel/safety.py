"""Ground truth: who can observe a physical page, and what a decision violates.

The kernel only sees counts; the simulator knows every observer of every page
(KERNEL_MODEL.md section 5): PTE and PMD mappings with their mm, swap PTEs that
will map the swapcache folio later, and GUP references and pins with their mm
and address. Only the ground-truth report and oracle policies read this module.

* **leak**: a write by mm X lands on a page another observer can see: another
  mm's mapping or swap PTE, a GUP reference or pin of another mm, or a second
  mapping of the same page (a KSM merge inside one mm). Reusing such a page is
  CVE-2020-29374's bug class.
* **pin_incoherent**: a copy replaces the page under the writer's own live GUP
  pin or reference for that address; the pin and the mapping diverge (RDMA,
  io_uring fixed buffers).
* **blockers** of an unnecessary copy: why the refcount exceeded the mapping
  count although nobody else could see the page.
"""

from __future__ import annotations

from typing import Final

from cowlab.kernel.folio import (
    FAULT,
    GUP,
    ISOLATED,
    LRU_BATCH,
    PIN,
    PMD,
    SPECULATIVE,
    SWAPCACHE,
    Folio,
)
from cowlab.kernel.gup import GupHandle
from cowlab.kernel.swap import SwapDevice

BLOCKERS: Final = (
    "lru_batch_local",
    "lru_batch_remote",
    "swapcache",
    "writeback",
    "lock",
    "pin",
    "gup",
    "isolation",
    "speculative",
    "large_folio",
    "ksm",
)
VIOLATIONS: Final = ("leak", "pin_incoherent")


class Truth:
    """What was really true about a page when a fault was decided. Read-only by
    convention. (A plain class: the compiled build makes one in a few nanoseconds,
    where a NamedTuple or a frozen dataclass runs interpreted code for each.)"""

    __slots__ = ("blockers", "exclusive", "foreign", "own_gup")

    def __init__(
        self,
        exclusive: bool,
        own_gup: bool,
        foreign: tuple[str, ...],
        blockers: tuple[str, ...],
    ) -> None:
        #: No observer other than the writer's own mapping at this address (and its
        #: own GUP).
        self.exclusive = exclusive
        #: The writer holds a live GUP reference or pin on this page (a copy would
        #: break it).
        self.own_gup = own_gup
        #: Descriptions of the observers that make the page shared (empty when
        #: exclusive).
        self.foreign = foreign
        #: What made the refcount (or a flag) block reuse although the page was
        #: exclusive.
        self.blockers = blockers

    def _fields(self) -> tuple[bool, bool, tuple[str, ...], tuple[str, ...]]:
        return (self.exclusive, self.own_gup, self.foreign, self.blockers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Truth):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"Truth(exclusive={self.exclusive}, own_gup={self.own_gup}, "
            f"foreign={self.foreign!r}, blockers={self.blockers!r})"
        )


#: The truth of a page nobody but the writer observes, with nothing blocking its reuse.
EXCLUSIVE: Final = Truth(exclusive=True, own_gup=False, foreign=(), blockers=())


def page_truth(
    folio: Folio,
    index: int | None,
    mm_id: int,
    page: int,
    cpu: int,
    gups: dict[int, GupHandle],
    swap: SwapDevice | None,
    *,
    mapped_by_writer: int = 1,
) -> Truth:
    """Ground truth for a write by ``mm_id`` at virtual ``page`` (on ``cpu``) to page
    ``index`` of ``folio``; ``index`` None means the whole folio (a PMD-mapped THP or a
    hugetlb page, which a reuse makes writable as a whole).

    ``mapped_by_writer`` is how many of the writer's mappings of this page are
    expected (1 on the wp path; 0 on the swap path, before do_swap_page maps it).
    """
    if (
        index is not None
        and mapped_by_writer == 1
        and not folio.order
        and folio.sole_mapping_is(mm_id, page, index)
        and not folio.has_refs()
        and folio.swap_entry is None
        and not folio.writeback
        and folio.lock is None
        and not folio.ksm
    ):
        # The common case, decided without building anything: the writer's own
        # mapping is the page's only reference and no flag blocks a reuse.
        return EXCLUSIVE
    foreign: list[str] = []
    blockers: list[str] = []
    own_gup = False
    if index is None or not mapped_by_writer or not folio.sole_mapping_is(mm_id, page, index):
        for owner_mm, owner_page, sub in folio.pte_mappings():
            if index is not None and sub != index:
                continue
            if owner_mm != mm_id:
                foreign.append(f"mapping of mm {owner_mm}")
            elif index is None or owner_page != page or not mapped_by_writer:
                foreign.append(f"second mapping in mm {owner_mm} at page {owner_page}")
    for kind, owner, _sub, _n in folio.refs():
        if kind == PMD:
            owner_mm, owner_page = owner
            if owner_mm != mm_id:
                foreign.append(f"PMD mapping of mm {owner_mm}")
            elif index is not None or owner_page != page & ~(folio.nr_pages - 1):
                # The writer's own PMD elsewhere (or, on the PTE path, at all).
                foreign.append(f"second mapping in mm {owner_mm} at page {owner_page}")
        elif kind in (GUP, PIN):
            handle = gups.get(owner)
            if handle is None:
                continue
            if index is None:
                if not folio.pfn <= handle.pfn < folio.pfn + folio.nr_pages:
                    continue
            elif handle.pfn != folio.pfn + index:
                continue
            if handle.mm_id != mm_id:
                foreign.append(f"{kind} '{handle.name}' of mm {handle.mm_id}")
            else:
                own_gup = True
                blockers.append("pin" if kind == PIN else "gup")
        elif kind == LRU_BATCH:
            bcpu = owner[0]
            blockers.append("lru_batch_local" if bcpu == cpu else "lru_batch_remote")
        elif kind == SWAPCACHE:
            blockers.append("swapcache")
        elif kind == ISOLATED:
            blockers.append("isolation")
        elif kind == SPECULATIVE:
            blockers.append("speculative")
        elif kind == FAULT:
            pass
    entry = folio.swap_entry
    slots = () if entry is None or swap is None else (
        range(folio.nr_pages) if index is None else (index,))
    for slot in slots:
        owners = swap.owners_of(entry[1] + slot)  # type: ignore[union-attr, index]
        if owners:
            for owner, count in owners.items():
                if owner != mm_id:
                    foreign.append(f"swap PTE of mm {owner}")
                elif mapped_by_writer == 0 and count > 1:
                    foreign.append(f"second swap PTE in mm {owner}")
                elif mapped_by_writer:
                    # The writer's own page is mapped and still referenced by its own
                    # swap PTE elsewhere: another address of the same mm.
                    foreign.append(f"swap PTE in mm {owner} at another address")
    if folio.writeback:
        blockers.append("writeback")
    if folio.locked:
        blockers.append("lock")
    if folio.ksm:
        blockers.append("ksm")
    if folio.order:
        blockers.append("large_folio")
    if not foreign and not blockers and not own_gup:
        return EXCLUSIVE  # the common case, without building a tuple
    return Truth(
        exclusive=not foreign,
        own_gup=own_gup,
        foreign=tuple(foreign),
        blockers=tuple(dict.fromkeys(blockers)) if len(blockers) > 1 else tuple(blockers),
    )


def judge(truth: Truth, reused: bool) -> str | None:
    """The violation a decision commits: ``leak``, ``pin_incoherent`` or None."""
    if reused:
        return None if truth.exclusive else "leak"
    return "pin_incoherent" if truth.own_gup else None
