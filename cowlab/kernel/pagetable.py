"""Compact page tables and the frame table.

:class:`PageTable` is an mm's page table: virtual page number -> 64-bit PTE value. Like
x86-64's last level it keeps the entries of each 2 MiB-aligned run of 512 pages (what one
PMD entry covers) in one table of 512 unsigned 64-bit words, 8 bytes per page, created by
the first entry stored in it (``pte_alloc()``) and released once its last entry is
cleared. A PTE value of 0 is ``pte_none()``: an absent entry, never a stored one.

:class:`FrameTable` maps a page frame number to the :class:`Folio` that holds it (the role
of ``pfn_to_page()`` / ``page_folio()`` over the kernel's memmap), in chunks of 512
slots, so a frame costs one pointer.

Both keep the mapping-like API the kernel's callers use (``get``, ``[]``, ``in``,
``del``, ``pop``, ``len``, iteration), with two deliberate differences from a dict:

* iteration runs in address order (page or frame number), like the kernel's own table
  walks (``copy_page_range()``, ``zap_pte_range()``, ``change_pte_range()``), not in
  insertion order;
* ``keys()``, ``values()`` and ``items()`` return lists, snapshots taken when called, so
  a caller may change the table while it walks one.

Which tables exist never changes a result: releasing an empty table only returns its
memory (upstream frees empty PTE tables in ``free_pgtables()`` at munmap/exit time).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Final, SupportsIndex

from cowlab.kernel.folio import Folio

#: PTRS_PER_PTE on x86-64: entries per page table (and slots per frame-table chunk).
#: (Final: mypyc folds these constants into the compiled code.)
PTRS_PER_PTE: Final = 512
_SHIFT: Final = 9
_MASK: Final = 511
#: The slot numbers as ready-made index objects: typed SupportsIndex, the compiled build
#: passes them to the array as they are instead of making a new int object per access.
_SLOTS: Final[tuple[SupportsIndex, ...]] = tuple(range(PTRS_PER_PTE))
#: A page table's worth of zero (pte_none) entries, copied for each new table.
_EMPTY: Final = array("Q", bytes(8 * PTRS_PER_PTE))


class _PteTable:
    """One last-level table: the 512 entries of pages ``[index << 9, (index + 1) << 9)``."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.entries: array[int] = _EMPTY[:]
        #: Entries that are not pte_none.
        self.used = 0


class PageTable:
    """An mm's page table: page number -> non-zero 64-bit PTE value (present or swap).

    >>> pt = PageTable()
    >>> pt[513] = 1 << 63 | 0x67
    >>> pt.get(513, 0) == 1 << 63 | 0x67, pt.get(7, 0), len(pt), 513 in pt
    (True, 0, 1, True)
    >>> del pt[513]
    >>> len(pt), pt.tables
    (0, 0)
    """

    def __init__(self) -> None:
        self._tables: dict[int, _PteTable] = {}
        self._len = 0
        #: The table the last lookup found: faults walk neighbouring pages.
        self._last: _PteTable | None = None
        # A one-entry cache of the last page looked up or changed, and its value (0 for
        # pte_none): a fault reads the same PTE several times before it changes it.
        # Every change goes through this class and updates it, so it is never stale.
        self._cpage = 0
        self._cpte = 0

    # -- lookup ---------------------------------------------------------------------------
    def _table(self, index: int) -> _PteTable | None:
        t = self._last
        if t is not None and t.index == index:
            return t
        t = self._tables.get(index)
        if t is not None:
            self._last = t
        return t

    def _lookup(self, page: int) -> int:
        """The value of ``page``'s entry, 0 for pte_none."""
        if page == self._cpage:
            return self._cpte
        t = self._table(page >> _SHIFT)
        pte: int = 0 if t is None else t.entries[_SLOTS[page & _MASK]]
        self._cpage = page
        self._cpte = pte
        return pte

    def get(self, page: int, default: int = 0) -> int:
        """The PTE of ``page``, or ``default`` if it is pte_none (0 by default)."""
        pte = self._cpte if page == self._cpage else self._lookup(page)
        return pte if pte else default

    def __getitem__(self, page: int) -> int:
        pte = self._cpte if page == self._cpage else self._lookup(page)
        if pte:
            return pte
        raise KeyError(page)

    def __contains__(self, page: int) -> bool:
        return self._lookup(page) != 0

    def __len__(self) -> int:
        """The number of entries that are not pte_none."""
        return self._len

    def __bool__(self) -> bool:
        return self._len != 0

    @property
    def tables(self) -> int:
        """How many 512-entry tables are allocated."""
        return len(self._tables)

    # -- update ---------------------------------------------------------------------------
    def __setitem__(self, page: int, pte: int) -> None:
        """set_pte(): store a non-zero PTE value (0 is pte_none: clear with ``del``)."""
        if not pte:
            raise ValueError(
                f"page {page}: storing PTE value 0 (pte_none); clear an entry with del/pop"
            )
        old = self._lookup(page)
        index = page >> _SHIFT
        slot = _SLOTS[page & _MASK]
        t = self._table(index)
        if t is None:
            t = _PteTable(index)  # pte_alloc()
            t.entries[slot] = pte  # a value outside 64 bits raises here, before any change
            self._tables[index] = t
            self._last = t
        else:
            t.entries[slot] = pte
        self._cpte = pte  # _lookup() made ``page`` the cached one
        if not old:
            t.used += 1
            self._len += 1

    def _clear(self, page: int) -> int:
        """Clear ``page``'s entry; returns its old value (0: it was already pte_none)."""
        pte = self._lookup(page)
        if pte:
            t = self._table(page >> _SHIFT)
            assert t is not None
            t.entries[_SLOTS[page & _MASK]] = 0
            self._cpte = 0
            t.used -= 1
            self._len -= 1
            if t.used == 0:  # free_pte_range()
                del self._tables[t.index]
                if self._last is t:
                    self._last = None
        return pte

    def __delitem__(self, page: int) -> None:
        """pte_clear(); KeyError if the entry is already pte_none."""
        if not self._clear(page):
            raise KeyError(page)

    def pop(self, page: int, default: int | None = None) -> int:
        """ptep_get_and_clear(): clear the entry and return its old value; an entry that is
        already pte_none returns ``default``, or raises KeyError without one."""
        pte = self._clear(page)
        if pte:
            return pte
        if default is None:
            raise KeyError(page)
        return default

    def clear(self) -> None:
        """Drop every entry and table."""
        self._tables.clear()
        self._len = 0
        self._last = None
        self._cpte = 0  # every entry is pte_none now, the cached page's too

    # -- walks, in address order ------------------------------------------------------------
    def _indexes(self, start: int, end: int) -> list[int]:
        """Indexes of the allocated tables that cover part of ``[start, end)``, ascending."""
        if end <= start:
            return []
        first = start >> _SHIFT
        last = (end - 1) >> _SHIFT
        if last - first + 1 <= len(self._tables):
            return [i for i in range(first, last + 1) if i in self._tables]
        return sorted(i for i in self._tables if first <= i <= last)

    def range_items(self, start: int, end: int) -> list[tuple[int, int]]:
        """``(page, pte)`` of every entry in ``[start, end)`` that is not pte_none, in
        address order (a snapshot: the caller may change the table while it walks)."""
        out: list[tuple[int, int]] = []
        for index in self._indexes(start, end):
            base = index << _SHIFT
            lo = max(start - base, 0)
            hi = min(end - base, PTRS_PER_PTE)
            values: list[int] = self._tables[index].entries[lo:hi].tolist()
            page = base + lo
            for pte in values:
                if pte:
                    out.append((page, pte))
                page += 1
        return out

    def range_keys(self, start: int, end: int) -> list[int]:
        """Pages of ``[start, end)`` whose entry is not pte_none, in address order."""
        out: list[int] = []
        for index in self._indexes(start, end):
            base = index << _SHIFT
            lo = max(start - base, 0)
            hi = min(end - base, PTRS_PER_PTE)
            values: list[int] = self._tables[index].entries[lo:hi].tolist()
            page = base + lo
            for pte in values:
                if pte:
                    out.append(page)
                page += 1
        return out

    def items(self) -> list[tuple[int, int]]:
        """Every ``(page, pte)``, in address order."""
        out: list[tuple[int, int]] = []
        for index in sorted(self._tables):
            page = index << _SHIFT
            values: list[int] = self._tables[index].entries.tolist()
            for pte in values:
                if pte:
                    out.append((page, pte))
                page += 1
        return out

    def keys(self) -> list[int]:
        """Every page with an entry, in address order."""
        if not self._tables:
            return []
        return self.range_keys(min(self._tables) << _SHIFT, (max(self._tables) + 1) << _SHIFT)

    def values(self) -> list[int]:
        """Every PTE value, in address order."""
        return [pte for _page, pte in self.items()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def __repr__(self) -> str:
        return f"PageTable({len(self)} entries in {self.tables} tables)"


class _FrameChunk:
    """Slots for the folios of frames ``[index << 9, (index + 1) << 9)``."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.slots: list[Folio | None] = [None] * PTRS_PER_PTE
        #: Slots holding a folio.
        self.used = 0


class FrameTable:
    """The live frames: pfn -> the :class:`Folio` holding it (one pfn per page of a large
    folio, all naming the same folio). A chunk of 512 slots is allocated by its first frame
    and released with its last.

    >>> from cowlab.kernel.folio import Folio
    >>> frames = FrameTable()
    >>> f = Folio(600, 1)
    >>> frames[600] = frames[601] = f
    >>> frames[601] is f, frames.get(5), len(frames), list(frames)
    (True, None, 2, [600, 601])
    """

    def __init__(self) -> None:
        self._chunks: dict[int, _FrameChunk] = {}
        self._len = 0
        #: The chunk the last lookup found: neighbouring pages have neighbouring frames.
        self._last: _FrameChunk | None = None

    def _chunk(self, index: int) -> _FrameChunk | None:
        c = self._last
        if c is not None and c.index == index:
            return c
        c = self._chunks.get(index)
        if c is not None:
            self._last = c
        return c

    def get(self, pfn: int) -> Folio | None:
        """The folio holding ``pfn``, or None if the frame is free."""
        c = self._chunk(pfn >> _SHIFT)
        if c is None:
            return None
        return c.slots[pfn & _MASK]

    def __getitem__(self, pfn: int) -> Folio:
        c = self._chunk(pfn >> _SHIFT)
        if c is not None:
            folio = c.slots[pfn & _MASK]
            if folio is not None:
                return folio
        raise KeyError(pfn)

    def __contains__(self, pfn: int) -> bool:
        c = self._chunk(pfn >> _SHIFT)
        return c is not None and c.slots[pfn & _MASK] is not None

    def __len__(self) -> int:
        """The number of live frames."""
        return self._len

    def __bool__(self) -> bool:
        return self._len != 0

    @property
    def chunks(self) -> int:
        """How many 512-slot chunks are allocated."""
        return len(self._chunks)

    def __setitem__(self, pfn: int, folio: Folio) -> None:
        index = pfn >> _SHIFT
        c = self._chunk(index)
        if c is None:
            c = _FrameChunk(index)
            self._chunks[index] = c
            self._last = c
        slots = c.slots
        slot = pfn & _MASK
        if slots[slot] is None:
            c.used += 1
            self._len += 1
        slots[slot] = folio

    def __delitem__(self, pfn: int) -> None:
        index = pfn >> _SHIFT
        c = self._chunk(index)
        slot = pfn & _MASK
        if c is None or c.slots[slot] is None:
            raise KeyError(pfn)
        c.slots[slot] = None
        c.used -= 1
        self._len -= 1
        if c.used == 0:
            del self._chunks[index]
            if self._last is c:
                self._last = None

    def items(self) -> list[tuple[int, Folio]]:
        """Every ``(pfn, folio)``, in pfn order (which is allocation order)."""
        out: list[tuple[int, Folio]] = []
        for index in sorted(self._chunks):
            pfn = index << _SHIFT
            for folio in self._chunks[index].slots:
                if folio is not None:
                    out.append((pfn, folio))
                pfn += 1
        return out

    def keys(self) -> list[int]:
        """Every live pfn, ascending."""
        return [pfn for pfn, _folio in self.items()]

    def values(self) -> list[Folio]:
        """The folio of every live pfn, in pfn order (a large folio once per page)."""
        return [folio for _pfn, folio in self.items()]

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys())

    def __repr__(self) -> str:
        return f"FrameTable({len(self)} frames in {self.chunks} chunks)"
