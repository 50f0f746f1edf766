"""Folios and their reference ledger.

A folio is one physical allocation of ``2**order`` base pages (order 0..9 on
x86-64, up to 18 for a 1 GiB hugetlb page). The kernel only keeps a refcount;
cowlab also keeps a *ledger* of who holds each reference (KERNEL_MODEL.md section
1), so the ground truth can tell a reference from the LRU batch of CPU 1 from a DMA
pin of another process. Refcount, per-page mapcount and pincount are changed only
through the ledger methods (:meth:`Folio.get` / :meth:`Folio.put` /
:meth:`Folio.map_pte` ...), and :meth:`Folio.check_ledger` recomputes them from the
ledger.

Memory layout. A simulated machine holds millions of folios, almost all of them
order 0 and mapped once, so the layout is made for that case (the kernel's own
``struct page`` is 64 bytes):

* the PTE mappings (the reverse map) are not dictionary entries: the first one is
  three integer fields (mm id, virtual page, page index), further ones go to a flat
  list of integer triples, allocated only when a second mapping appears (fork);
* every other reference is a (kind, owner, page index, count) entry of a flat list
  that exists only while such references are held (None otherwise: an LRU batch's
  reference is dropped when the batch drains); a folio rarely holds more than two,
  so a scan beats hashing a tuple key;
* per-page state (mapcount, PageAnonExclusive, contents) is a scalar field for an
  order-0 folio and a list for a large one, read and written through accessors
  (:meth:`Folio.pae_of`, :meth:`Folio.set_pae`, :meth:`Folio.data_of` ...);
* LRU list membership is intrusive (``lru_prev``/``lru_next``, see
  :mod:`cowlab.kernel.lru`), like the kernel's ``folio->lru``.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from cowlab.kernel.errors import LedgerError as LedgerError

# Holder kinds of a reference (the ledger's first key).
PTE: Final = "pte"  #: one PTE mapping: owner = (mm id, virtual page), sub = page index
PMD: Final = "pmd"  #: a PMD mapping of a THP: owner = mm id (entire mapcount)
SWAPCACHE: Final = "swapcache"  #: the swapcache: nr_pages references
LRU_BATCH: Final = "lru_batch"  #: a per-CPU folio batch: owner = (cpu, batch name)
ISOLATED: Final = "isolated"  #: LRU isolation by reclaim, MADV_PAGEOUT/COLD, migration: owner = who
GUP: Final = "gup"  #: FOLL_GET: owner = GUP handle id
#: FOLL_PIN: owner = GUP handle id (1024 for a small folio, 1 + pincount if large)
PIN: Final = "pin"
SPECULATIVE: Final = "speculative"  #: transient GUP-fast / PFN walker reference
FAULT: Final = "fault"  #: the faulting thread's own transient reference (do_swap_page)

HOLDER_KINDS: Final = (PTE, PMD, SWAPCACHE, LRU_BATCH, ISOLATED, GUP, PIN, SPECULATIVE, FAULT)

#: The shared zero page's PFN: read faults on untouched anonymous memory map it.
ZERO_PFN: Final = 0

#: include/linux/mm.h GUP_PIN_COUNTING_BIAS (fc1d8e7cca2d, v5.7).
GUP_PIN_COUNTING_BIAS: Final = 1024

#: (holder kind, owner, page index in the folio); the owner's type depends on the kind.
LedgerKey = tuple[str, Any, int]

#: One PTE mapping: (mm id, virtual page, page index in the folio).
PteMapping = tuple[int, int, int]


class LockHolder(NamedTuple):
    """Who holds a folio's page lock, why, and when it will be released (ns, if known)."""

    reason: str
    release_at: int | None = None


#: The per-mm mapcount slots of every small folio (never written: see Folio.__init__).
_UNTRACKED_IDS: Final[list[int | None]] = [None, None]
_UNTRACKED_COUNTS: Final[list[int]] = [0, 0]
#: The per-page lists of every small folio: empty and never written (a small folio keeps
#: its one page's state in scalar fields).
_NO_INTS: Final[list[int]] = []
_NO_BOOLS: Final[list[bool]] = []
_NO_DATA: Final[list[object]] = []


class Folio:
    """One physical allocation with its flags, per-page state and reference ledger."""

    __slots__ = (
        "_data",
        "_data0",
        "_mapcount",
        "_mapcount0",
        "_pae",
        "_pae0",
        "_pte_mm",
        "_pte_page",
        "_pte_sub",
        "_ptes",
        "_refs",
        "anon",
        "dirty",
        "entire_mapcount",
        "freed",
        "hugetlb",
        "ksm",
        "lazyfree",
        "lock",
        "lru",
        "lru_list",
        "lru_next",
        "lru_prev",
        "maybe_shared",
        "mm_counts",
        "mm_ids",
        "order",
        "pfn",
        "pincount",
        "readahead",
        "reclaim",
        "refcount",
        "swap_entry",
        "writeback",
    )

    def __init__(self, pfn: int, order: int = 0) -> None:
        # (Field order matters to the compiled build: mypyc lays the fields out in the
        # order they are first assigned, so the one-byte flags come last, together.)
        self.pfn = pfn
        self.order = order
        self.refcount = 0
        # References other than PTE mappings as flat (kind, owner, sub, count) quads;
        # None when there are none (the common state of a mapped page).
        self._refs: list[Any] | None = None
        # The first PTE mapping (mm id -1: none) and the others as flat triples.
        self._pte_mm = -1
        self._pte_page = 0
        self._pte_sub = 0
        self._ptes: list[int] | None = None
        # Per-page state: scalars for an order-0 folio, lists for a large one.
        self._mapcount0 = 0
        #: Page contents: one opaque token per base page (a write stores a new one).
        self._data0: object = None
        if order:
            nr = 1 << order
            self._mapcount = [0] * nr
            self._pae = [False] * nr
            self._data: list[object] = [None] * nr
        else:
            self._mapcount = _NO_INTS
            self._pae = _NO_BOOLS
            self._data = _NO_DATA
        self.entire_mapcount = 0
        self.pincount = 0
        self.lru_list: str | None = None  # "active" | "inactive" while PG_lru
        #: Neighbours on that LRU list (cowlab.kernel.lru.LruList links through them).
        self.lru_prev: Folio | None = None
        self.lru_next: Folio | None = None
        self.lock: LockHolder | None = None
        #: Swap entry (type, first offset) while in the swapcache, else None.
        self.swap_entry: tuple[int, int] | None = None
        # v6.15 per-mm mapcount tracking of large folios (1da190f4d0a6's series): two
        # slots of (mm id, mappings); a third mm sets maybe_shared, which clears only
        # when every mapping belongs to one tracked mm again.
        # A small folio never tracks (_track() runs for large folios only): every small
        # folio shares the one pair of lists below, which nothing writes (memory).
        self.mm_ids: list[int | None] = [None, None] if order else _UNTRACKED_IDS
        self.mm_counts = [0, 0] if order else _UNTRACKED_COUNTS
        self._pae0 = False
        self.anon = True
        self.hugetlb = False
        self.ksm = False
        self.dirty = False
        #: MADV_FREE'd (PG_swapbacked clear): reclaim discards it unless written again.
        self.lazyfree = False
        self.lru = False  # PG_lru: on an LRU list (not in a batch, not isolated)
        self.writeback = False
        self.reclaim = False  # PG_reclaim: rotate to the inactive tail when writeback ends
        self.readahead = False  # PG_readahead: read by swap readahead, not yet hit
        self.freed = False
        self.maybe_shared = False

    # -- derived state -------------------------------------------------------------------
    @property
    def nr_pages(self) -> int:
        """Base pages in the folio: ``2**order``."""
        return 1 << self.order

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
        if not self.order:
            return self._mapcount0
        return sum(self._mapcount) + self.entire_mapcount

    def pte_mapcount(self, index: int) -> int:
        """PTE mappings of page ``index`` (the folio's PMD mappings not included)."""
        return self._mapcount[index] if self.order else self._mapcount0

    def mapcounts(self) -> list[int]:
        """The PTE mapcount of every page of the folio."""
        return list(self._mapcount) if self.order else [self._mapcount0]

    def page_mapcount(self, index: int) -> int:
        """page_mapcount(): PTE mappings of one page plus the folio's PMD mappings."""
        if not self.order:
            return self._mapcount0
        return self._mapcount[index] + self.entire_mapcount

    def max_page_mapcount(self) -> int:
        """page_trans_huge_mapcount(): the highest mapcount of any page of the folio."""
        if not self.order:
            return self._mapcount0
        return max(self._mapcount) + self.entire_mapcount

    def maybe_dma_pinned(self) -> bool:
        """folio_maybe_dma_pinned(): exact pincount for large folios, bias test for small."""
        if self.order:
            return self.pincount > 0
        return self.refcount >= GUP_PIN_COUNTING_BIAS

    # -- per-page state ------------------------------------------------------------------
    def pae_of(self, index: int) -> bool:
        """PageAnonExclusive of page ``index``."""
        return self._pae[index] if self.order else self._pae0

    def set_pae(self, index: int, value: bool) -> None:
        """Set or clear PageAnonExclusive of page ``index``."""
        if self.order:
            self._pae[index] = value
        else:
            self._pae0 = value

    def set_all_pae(self, value: bool) -> None:
        """Set or clear PageAnonExclusive of every page of the folio."""
        if self.order:
            self._pae = [value] * self.nr_pages
        else:
            self._pae0 = value

    def any_pae(self) -> bool:
        """True if some page of the folio is PageAnonExclusive."""
        return any(self._pae) if self.order else self._pae0

    def all_pae(self) -> bool:
        """True if every page of the folio is PageAnonExclusive."""
        return all(self._pae) if self.order else self._pae0

    def pae_list(self) -> list[bool]:
        """PageAnonExclusive of every page of the folio."""
        return list(self._pae) if self.order else [self._pae0]

    def data_of(self, index: int) -> object:
        """The contents token of page ``index``."""
        return self._data[index] if self.order else self._data0

    def set_data(self, index: int, value: object) -> None:
        """Store the contents token of page ``index``."""
        if self.order:
            self._data[index] = value
        else:
            self._data0 = value

    def data_list(self) -> list[object]:
        """The contents tokens of every page of the folio (a copy)."""
        return list(self._data) if self.order else [self._data0]

    def set_data_list(self, values: list[object]) -> None:
        """Store the contents of every page (``len(values) == nr_pages``)."""
        if len(values) != self.nr_pages:
            raise LedgerError(
                f"folio pfn {self.pfn:#x}: {len(values)} pages of data for {self.nr_pages}"
            )
        if self.order:
            self._data = list(values)
        else:
            self._data0 = values[0]

    # -- the ledger ----------------------------------------------------------------------
    def _find(self, kind: str, owner: Any, sub: int) -> int:
        """Index of the (kind, owner, sub) entry in the reference list, or -1."""
        refs = self._refs
        if refs is not None:
            for j in range(0, len(refs), 4):
                # Kinds are the module's constants and most owners are made once, so
                # identity settles almost every comparison.
                held = refs[j + 1]
                if (
                    (refs[j] is kind or refs[j] == kind)
                    and refs[j + 2] == sub
                    and (held is owner or held == owner)
                ):
                    return j
        return -1

    def get(self, kind: str, owner: Any = None, n: int = 1, sub: int = 0) -> None:
        """Take ``n`` references for ``(kind, owner, sub)`` (PTE mappings: :meth:`map_pte`)."""
        refs = self._refs
        if refs is None:
            self._refs = [kind, owner, sub, n]
        else:
            j = self._find(kind, owner, sub)
            if j < 0:
                refs.append(kind)
                refs.append(owner)
                refs.append(sub)
                refs.append(n)
            else:
                refs[j + 3] += n
        self.refcount += n

    def put(self, kind: str, owner: Any = None, n: int = 1, sub: int = 0) -> None:
        """Drop ``n`` references taken by ``get`` with the same key."""
        refs = self._refs
        if (
            refs is not None
            and len(refs) == 4
            and refs[3] == n
            and refs[0] is kind
            and refs[2] == sub
            and (refs[1] is owner or refs[1] == owner)
        ):
            # The common case: the folio's only other reference goes.
            self._refs = None
            self.refcount -= n
            return
        j = self._find(kind, owner, sub)
        have: int = 0 if j < 0 or refs is None else refs[j + 3]
        if have < n or refs is None:
            raise LedgerError(
                f"folio pfn {self.pfn:#x}: put of {n} {(kind, owner, sub)} but only {have} held"
            )
        if have == n:
            del refs[j:j + 4]
            if not refs:
                self._refs = None
        else:
            refs[j + 3] = have - n
        self.refcount -= n

    def count(self, kind: str, owner: Any = None, sub: int = 0) -> int:
        """References held for ``(kind, owner, sub)`` (PTE mappings: :meth:`maps`)."""
        j = self._find(kind, owner, sub)
        refs = self._refs
        return 0 if j < 0 or refs is None else int(refs[j + 3])

    def has_refs(self) -> bool:
        """True if the folio holds references other than its PTE mappings."""
        return self._refs is not None

    def refs(self) -> list[tuple[str, Any, int, int]]:
        """References other than PTE mappings as (kind, owner, sub, count), in the order
        they were first taken."""
        refs = self._refs
        if refs is None:
            return []
        return [(refs[j], refs[j + 1], refs[j + 2], refs[j + 3]) for j in range(0, len(refs), 4)]

    def sole_mapping_is(self, mm_id: int, page: int, index: int) -> bool:
        """True if the folio's one and only PTE mapping is page ``index`` at ``page`` of
        mm ``mm_id`` (no other PTE mapping, whatever else it holds)."""
        return (
            self._pte_mm == mm_id
            and self._pte_page == page
            and self._pte_sub == index
            and self._ptes is None
        )

    def map_pte(self, mm_id: int, page: int, index: int) -> None:
        """A PTE of mm ``mm_id`` at virtual ``page`` now maps page ``index``: +1 ref,
        +1 mapcount."""
        if self._pte_mm < 0:
            self._pte_mm = mm_id
            self._pte_page = page
            self._pte_sub = index
        else:
            more = self._ptes
            if more is None:
                self._ptes = [mm_id, page, index]
            else:
                more.append(mm_id)
                more.append(page)
                more.append(index)
        self.refcount += 1
        if self.order:
            self._mapcount[index] += 1
            self._track(mm_id, 1)
        else:
            self._mapcount0 += 1

    def unmap_pte(self, mm_id: int, page: int, index: int) -> None:
        """The reverse of :meth:`map_pte`."""
        if self._pte_mm == mm_id and self._pte_page == page and self._pte_sub == index:
            self._pte_mm = -1
        else:
            more = self._ptes
            at = -1
            if more is not None:
                for j in range(0, len(more), 3):
                    if more[j] == mm_id and more[j + 1] == page and more[j + 2] == index:
                        at = j
                        break
            if more is None or at < 0:
                raise LedgerError(
                    f"folio pfn {self.pfn:#x}: unmap of page {index} at page {page} of "
                    f"mm {mm_id}, which does not map it"
                )
            del more[at:at + 3]
            if not more:
                self._ptes = None
        self.refcount -= 1
        if self.order:
            self._mapcount[index] -= 1
            self._track(mm_id, -1)
        else:
            self._mapcount0 -= 1

    def maps(self, mm_id: int, page: int, index: int) -> int:
        """How many PTE mappings of page ``index`` at ``page`` of mm ``mm_id`` (0 or 1)."""
        found = int(
            self._pte_mm == mm_id and self._pte_page == page and self._pte_sub == index
        )
        more = self._ptes
        if more is not None:
            for j in range(0, len(more), 3):
                if more[j] == mm_id and more[j + 1] == page and more[j + 2] == index:
                    found += 1
        return found

    def pte_mappings(self) -> list[PteMapping]:
        """Every PTE mapping of the folio as (mm id, virtual page, page index)."""
        out: list[PteMapping] = []
        if self._pte_mm >= 0:
            out.append((self._pte_mm, self._pte_page, self._pte_sub))
        more = self._ptes
        if more is not None:
            for j in range(0, len(more), 3):
                out.append((more[j], more[j + 1], more[j + 2]))
        return out

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
            return self._mapcount0 > 1
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

    def ledger_items(self) -> list[tuple[LedgerKey, int]]:
        """Every ledger entry, PTE mappings first (as ``(PTE, (mm id, page), index)``,
        count 1), then the other references in the order they were first taken."""
        out: list[tuple[LedgerKey, int]] = [
            ((PTE, (mm_id, page), sub), 1) for mm_id, page, sub in self.pte_mappings()
        ]
        for kind, owner, sub, count in self.refs():
            out.append(((kind, owner, sub), count))
        return out

    def holders(self, kind: str) -> list[tuple[Any, int, int]]:
        """Ledger entries of one kind as (owner, sub, count)."""
        if kind == PTE:
            return [((m, p), s, 1) for m, p, s in self.pte_mappings()]
        return [(o, s, c) for k, o, s, c in self.refs() if k == kind]

    def drop_ledger(self) -> None:
        """Forget every reference at once (the folio is being replaced: THP split)."""
        self._refs = None
        self._pte_mm = -1
        self._ptes = None
        self.refcount = 0

    def check_ledger(self) -> list[str]:
        """Recompute refcount, mapcounts and pincount from the ledger; return mismatches."""
        problems = []
        items = self.ledger_items()
        total = sum(count for _key, count in items)
        if total != self.refcount:
            problems.append(f"refcount {self.refcount} != ledger total {total}")
        mappings = self.pte_mappings()
        if len(set(mappings)) != len(mappings):
            problems.append(f"a PTE mapping is recorded twice: {sorted(mappings)}")
        per_page = [0] * self.nr_pages
        entire = pins = 0
        for (kind, owner, sub), count in items:
            if count <= 0:
                problems.append(f"ledger entry {(kind, owner, sub)} has count {count}")
            if kind == PTE:
                per_page[sub] += count
            elif kind == PMD:
                entire += count
            elif kind == PIN and self.order:
                pins += count
        if per_page != self.mapcounts():
            problems.append(f"mapcount {self.mapcounts()} != ledger {per_page}")
        if entire != self.entire_mapcount:
            problems.append(f"entire mapcount {self.entire_mapcount} != ledger {entire}")
        if self.order and pins != self.pincount:
            problems.append(f"pincount {self.pincount} != ledger {pins}")
        if self._refs is not None and not self._refs:
            problems.append("an empty reference list is kept (it should be None)")
        keys = [(kind, owner, sub) for kind, owner, sub, _n in self.refs()]
        if len(set(map(repr, keys))) != len(keys):
            problems.append(f"a reference is recorded twice: {keys}")
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
        pae = "".join("E" if p else "-" for p in self.pae_list()[:16])
        return (
            f"folio pfn={self.pfn:#x} order={self.order} ref={self.refcount} "
            f"map={self.large_mapcount} pae={pae} [{' '.join(flags)}]"
        )
