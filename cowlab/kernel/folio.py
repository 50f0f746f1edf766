"""Folios and their reference ledger.

A folio is one physical allocation of ``2**order`` base pages (order 0..9 on
x86-64). The kernel only keeps a refcount; cowlab also keeps a *ledger* of who
holds each reference (KERNEL_MODEL.md section 1), so the ground truth can tell a
reference from the LRU batch of CPU 1 from a DMA pin of another process.
Refcount, per-page mapcount and pincount are changed only through the ledger
methods (:meth:`Folio.get` / :meth:`Folio.put` / :meth:`Folio.map_pte` ...), and
:meth:`Folio.check_ledger` recomputes them from the ledger.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from cowlab.kernel.errors import LedgerError as LedgerError

# Holder kinds of a reference (the ledger's first key).
PTE: Final = "pte"  #: one PTE mapping: owner = mm id, sub = page index in the folio
PMD: Final = "pmd"  #: a PMD mapping of a THP: owner = mm id (entire mapcount)
SWAPCACHE: Final = "swapcache"  #: the swapcache: nr_pages references
LRU_BATCH: Final = "lru_batch"  #: a per-CPU folio batch: owner = (cpu, batch name)
ISOLATED: Final = "isolated"  #: LRU isolation by reclaim, MADV_PAGEOUT/COLD, migration: owner = who
GUP: Final = "gup"  #: FOLL_GET: owner = GUP handle id
#: FOLL_PIN: owner = GUP handle id (1024 for a small folio, 1 + pincount if large)
PIN: Final = "pin"
SPECULATIVE: Final = "speculative"  #: transient GUP-fast / PFN walker reference
FAULT: Final = "fault"  #: the faulting thread's own transient reference (do_swap_page)

HOLDER_KINDS = (PTE, PMD, SWAPCACHE, LRU_BATCH, ISOLATED, GUP, PIN, SPECULATIVE, FAULT)

#: The shared zero page's PFN: read faults on untouched anonymous memory map it.
ZERO_PFN: Final = 0

#: include/linux/mm.h GUP_PIN_COUNTING_BIAS (fc1d8e7cca2d, v5.7).
GUP_PIN_COUNTING_BIAS: Final = 1024

#: (holder kind, owner, page index in the folio); the owner's type depends on the kind.
LedgerKey = tuple[str, Any, int]


class LockHolder(NamedTuple):
    """Who holds a folio's page lock, why, and when it will be released (ns, if known)."""

    reason: str
    release_at: int | None = None


#: The per-mm mapcount slots of every small folio (never written: see Folio.__init__).
_UNTRACKED_IDS: list[int | None] = [None, None]
_UNTRACKED_COUNTS: list[int] = [0, 0]


class Folio:
    """One physical allocation with its flags, per-page state and reference ledger."""

    __slots__ = (
        "anon",
        "data",
        "dirty",
        "entire_mapcount",
        "freed",
        "hugetlb",
        "ksm",
        "lazyfree",
        "ledger",
        "lock",
        "lru",
        "lru_list",
        "mapcount",
        "maybe_shared",
        "mm_counts",
        "mm_ids",
        "nr_pages",
        "order",
        "pae",
        "pfn",
        "pincount",
        "readahead",
        "reclaim",
        "refcount",
        "swap_entry",
        "writeback",
    )

    def __init__(self, pfn: int, order: int = 0) -> None:
        self.pfn = pfn
        self.order = order
        self.nr_pages = 1 << order
        self.refcount = 0
        self.ledger: dict[LedgerKey, int] = {}
        self.mapcount = [0] * self.nr_pages
        self.entire_mapcount = 0
        self.pincount = 0
        self.pae = [False] * self.nr_pages
        #: Page contents: one opaque token per base page (a write stores a new one).
        self.data: list[object] = [None] * self.nr_pages
        self.anon = True
        self.hugetlb = False
        self.ksm = False
        self.dirty = False
        #: MADV_FREE'd (PG_swapbacked clear): reclaim discards it unless written again.
        self.lazyfree = False
        self.lru = False  # PG_lru: on an LRU list (not in a batch, not isolated)
        self.lru_list: str | None = None  # "active" | "inactive" while PG_lru
        self.writeback = False
        self.reclaim = False  # PG_reclaim: rotate to the inactive tail when writeback ends
        self.readahead = False  # PG_readahead: read by swap readahead, not yet hit
        self.lock: LockHolder | None = None
        #: Swap entry (type, first offset) while in the swapcache, else None.
        self.swap_entry: tuple[int, int] | None = None
        self.freed = False
        # v6.15 per-mm mapcount tracking of large folios (1da190f4d0a6's series): two
        # slots of (mm id, mappings); a third mm sets maybe_shared, which clears only
        # when every mapping belongs to one tracked mm again.
        # A small folio never tracks (_track() runs for large folios only): every small
        # folio shares the one pair of lists below, which nothing writes (memory).
        self.mm_ids: list[int | None] = [None, None] if order else _UNTRACKED_IDS
        self.mm_counts = [0, 0] if order else _UNTRACKED_COUNTS
        self.maybe_shared = False

    # -- derived state -------------------------------------------------------------------
    @property
    def is_large(self) -> bool:
        """True for order >= 1."""
        return self.order > 0

    @property
    def swapcache(self) -> bool:
        """PG_swapcache."""
        return self.swap_entry is not None

    @property
    def locked(self) -> bool:
        """PG_locked."""
        return self.lock is not None

    @property
    def large_mapcount(self) -> int:
        """folio_mapcount(): all PTE mappings plus PMD mappings (the folio's total)."""
        return sum(self.mapcount) + self.entire_mapcount

    def page_mapcount(self, index: int) -> int:
        """page_mapcount(): PTE mappings of one page plus the folio's PMD mappings."""
        return self.mapcount[index] + self.entire_mapcount

    def max_page_mapcount(self) -> int:
        """page_trans_huge_mapcount(): the highest mapcount of any page of the folio."""
        if not self.order:
            return self.mapcount[0]
        return max(self.mapcount) + self.entire_mapcount

    def maybe_dma_pinned(self) -> bool:
        """folio_maybe_dma_pinned(): exact pincount for large folios, bias test for small."""
        if self.order:
            return self.pincount > 0
        return self.refcount >= GUP_PIN_COUNTING_BIAS

    # -- the ledger ----------------------------------------------------------------------
    def get(self, kind: str, owner: Any = None, n: int = 1, sub: int = 0) -> None:
        """Take ``n`` references for ``(kind, owner, sub)``."""
        key = (kind, owner, sub)
        self.ledger[key] = self.ledger.get(key, 0) + n
        self.refcount += n

    def put(self, kind: str, owner: Any = None, n: int = 1, sub: int = 0) -> None:
        """Drop ``n`` references taken by ``get`` with the same key."""
        key = (kind, owner, sub)
        have = self.ledger.get(key, 0)
        if have < n:
            raise LedgerError(f"folio pfn {self.pfn:#x}: put of {n} {key} but only {have} held")
        if have == n:
            del self.ledger[key]
        else:
            self.ledger[key] = have - n
        self.refcount -= n

    def map_pte(self, owner: tuple[int, int], index: int) -> None:
        """A PTE of ``owner = (mm id, virtual page)`` now maps page ``index``: +1 ref,
        +1 mapcount."""
        self.get(PTE, owner, 1, index)
        self.mapcount[index] += 1
        if self.order:
            self._track(owner[0], 1)

    def unmap_pte(self, owner: tuple[int, int], index: int) -> None:
        """The reverse of :meth:`map_pte`."""
        self.put(PTE, owner, 1, index)
        self.mapcount[index] -= 1
        if self.order:
            self._track(owner[0], -1)

    def map_pmd(self, owner: tuple[int, int]) -> None:
        """A PMD of ``owner = (mm id, first virtual page)`` maps the whole folio: +1 ref,
        entire mapcount +1."""
        self.get(PMD, owner)
        self.entire_mapcount += 1
        self._track(owner[0], 1)

    def unmap_pmd(self, owner: tuple[int, int]) -> None:
        """The reverse of :meth:`map_pmd`."""
        self.put(PMD, owner)
        self.entire_mapcount -= 1
        self._track(owner[0], -1)

    def _track(self, mm_id: int, delta: int) -> None:
        """folio_add/remove_large_mapcount(): per-mm mapcounts in two slots."""
        ids, counts = self.mm_ids, self.mm_counts
        if mm_id in ids:
            i = ids.index(mm_id)
            counts[i] += delta
            if not counts[i]:
                ids[i] = None
        elif delta > 0:
            if None in ids:
                i = ids.index(None)
                ids[i] = mm_id
                counts[i] = delta
            else:
                self.maybe_shared = True
        if self.maybe_shared:
            total = self.large_mapcount
            if total == 0 or total in counts:
                self.maybe_shared = False

    def maybe_mapped_shared(self) -> bool:
        """folio_maybe_mapped_shared() (v6.15): never a false negative, sometimes a false
        positive (an untracked third mm)."""
        if not self.order:
            return self.mapcount[0] > 1
        return self.maybe_shared or (self.mm_counts[0] > 0 and self.mm_counts[1] > 0)

    def pin(self, handle: int) -> None:
        """FOLL_PIN: +1024 refs on a small folio; +1 ref and pincount +1 on a large one."""
        if self.order:
            self.get(PIN, handle, 1)
            self.pincount += 1
        else:
            self.get(PIN, handle, GUP_PIN_COUNTING_BIAS)

    def unpin(self, handle: int) -> None:
        """The reverse of :meth:`pin`."""
        if self.order:
            self.put(PIN, handle, 1)
            self.pincount -= 1
        else:
            self.put(PIN, handle, GUP_PIN_COUNTING_BIAS)

    def holders(self, kind: str) -> list[tuple[Any, int, int]]:
        """Ledger entries of one kind as (owner, sub, count)."""
        return [(o, s, c) for (k, o, s), c in self.ledger.items() if k == kind]

    def check_ledger(self) -> list[str]:
        """Recompute refcount, mapcounts and pincount from the ledger; return mismatches."""
        problems = []
        total = sum(self.ledger.values())
        if total != self.refcount:
            problems.append(f"refcount {self.refcount} != ledger total {total}")
        per_page = [0] * self.nr_pages
        entire = pins = 0
        for (kind, _owner, sub), count in self.ledger.items():
            if count <= 0:
                problems.append(f"ledger entry {(kind, _owner, sub)} has count {count}")
            if kind == PTE:
                per_page[sub] += count
            elif kind == PMD:
                entire += count
            elif kind == PIN and self.order:
                pins += count
        if per_page != self.mapcount:
            problems.append(f"mapcount {self.mapcount} != ledger {per_page}")
        if entire != self.entire_mapcount:
            problems.append(f"entire mapcount {self.entire_mapcount} != ledger {entire}")
        if self.order and pins != self.pincount:
            problems.append(f"pincount {self.pincount} != ledger {pins}")
        return problems

    def describe(self) -> str:
        """A one-line state summary (for render and error messages)."""
        flags = [
            name
            for name, on in (
                ("anon", self.anon),
                ("ksm", self.ksm),
                ("swapcache", self.swapcache),
                ("lru", self.lru),
                ("locked", self.locked),
                ("writeback", self.writeback),
                ("dirty", self.dirty),
                ("lazyfree", self.lazyfree),
            )
            if on
        ]
        pae = "".join("E" if p else "-" for p in self.pae[:16])
        return (
            f"folio pfn={self.pfn:#x} order={self.order} ref={self.refcount} "
            f"map={self.large_mapcount} pae={pae} [{' '.join(flags)}]"
        )
