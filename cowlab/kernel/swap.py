"""A swap device: slots, the swap map, the swapcache and I/O latency.

Models mm/swapfile.c and mm/swap_state.c at the level do_wp_page() can see:

* ``swap_map[offset]``: how many swap PTEs refer to a slot (the kernel's count
  without SWAP_HAS_CACHE). A slot is free when that count is zero and no
  folio in the swapcache holds it.
* the swapcache: slot -> folio, holding nr_pages references on the folio.
* slot contents written at swap-out, read back at swap-in.
* ground truth: which mm owns each swap PTE (the kernel does not know this;
  only :mod:`cowlab.kernel.safety` looks at it).

Slot 0 is the swap header and never allocated, as in the kernel.
"""

from __future__ import annotations

from cowlab.kernel.costs import DeviceSpec
from cowlab.kernel.errors import SwapFullError as SwapFullError
from cowlab.kernel.folio import Folio


class SwapDevice:
    """One swap area of ``nr_slots`` 4 KiB slots on a device of ``spec``."""

    __slots__ = (
        "_free",
        "_next",
        "_shared",
        "_sole",
        "cache",
        "contents",
        "nr_slots",
        "prev_offset",
        "ra_hits",
        "ra_last_win",
        "spec",
        "swap_map",
        "type",
    )

    def __init__(self, spec: DeviceSpec, nr_slots: int = 1 << 20, type_: int = 0) -> None:
        self.spec = spec
        self.type = type_
        self.nr_slots = nr_slots
        self.swap_map: dict[int, int] = {}
        self.cache: dict[int, Folio] = {}
        self.contents: dict[int, object] = {}
        # Which mms' swap PTEs refer to each slot in use (the count is swap_map's):
        # almost always one mm, kept without a dict of its own (_sole); a slot that
        # several mms refer to (after fork) has a per-mm count (_shared).
        self._sole: dict[int, int] = {}
        self._shared: dict[int, dict[int, int]] = {}
        self._next = 1  # slot 0 is the swap header
        self._free: list[int] = []
        # swapin_nr_pages() state (mm/swap_state.c): readahead hits since the last
        # decision, the previous fault offset and the last window.
        self.ra_hits = 0
        self.prev_offset = 0
        self.ra_last_win = 0

    @property
    def synchronous(self) -> bool:
        """SWP_SYNCHRONOUS_IO."""
        return self.spec.synchronous

    @property
    def stable_writes(self) -> bool:
        """SWP_STABLE_WRITES: a page under writeback must not change."""
        return self.spec.stable_writes

    def alloc_slot(self) -> int:
        """get_swap_page(): a free slot (lowest recently freed first)."""
        if self._free:
            return self._free.pop()
        if self._next >= self.nr_slots:
            raise SwapFullError(f"swap device ({self.spec.kind}) is full: {self.nr_slots} slots")
        slot = self._next
        self._next += 1
        return slot

    def alloc_slots(self, nr: int) -> int:
        """get_swap_pages() for a folio of ``nr`` pages: ``nr`` free, naturally aligned,
        contiguous slots (a swap cluster); returns the first."""
        if nr == 1:
            return self.alloc_slot()
        start = (self._next + nr - 1) & ~(nr - 1)
        if start + nr > self.nr_slots:
            raise SwapFullError(
                f"swap device ({self.spec.kind}) has no {nr} contiguous free slots"
            )
        self._free.extend(range(self._next, start))
        self._next = start + nr
        return start

    def full(self) -> bool:
        """vm_swap_full(): more than half of the swap slots are in use (slot 0, the
        header, is not swap space)."""
        total = self.nr_slots - 1
        used = self._next - 1 - len(self._free)
        return (total - used) * 2 < total

    def in_use(self, offset: int) -> bool:
        """A slot is in use while a swap PTE or the swapcache refers to it."""
        return self.swap_map.get(offset, 0) > 0 or offset in self.cache

    def count(self, offset: int) -> int:
        """swap_count(): the number of swap PTEs referring to ``offset``."""
        return self.swap_map.get(offset, 0)

    def owners_of(self, offset: int) -> dict[int, int]:
        """The mms whose swap PTEs refer to ``offset``, with how many each (a new dict)."""
        sole = self._sole.get(offset)
        if sole is not None:
            return {sole: self.swap_map[offset]}
        shared = self._shared.get(offset)
        return {} if shared is None else dict(shared)

    def dup(self, offset: int, mm_id: int) -> None:
        """swap_duplicate(): one more swap PTE (owned by ``mm_id``) refers to the slot."""
        count = self.swap_map.get(offset, 0)
        self.swap_map[offset] = count + 1
        if not count:
            self._sole[offset] = mm_id
            return
        sole = self._sole.get(offset)
        if sole is None:
            shared = self._shared[offset]
            shared[mm_id] = shared.get(mm_id, 0) + 1
        elif sole != mm_id:
            del self._sole[offset]
            self._shared[offset] = {sole: count, mm_id: 1}

    def free_entry(self, offset: int, mm_id: int) -> int:
        """swap_free(): a swap PTE of ``mm_id`` went away; returns the remaining count.

        The slot itself is released once nothing refers to it (the swapcache keeps
        it, like SWAP_HAS_CACHE).
        """
        count = self.swap_map[offset] - 1
        sole = self._sole.get(offset)
        if sole is None:
            shared = self._shared[offset]
            left = shared[mm_id] - 1
            if left:
                shared[mm_id] = left
            else:
                del shared[mm_id]
                if len(shared) == 1:
                    # One mm left: its count is the slot's.
                    del self._shared[offset]
                    for only in shared:
                        self._sole[offset] = only
        elif sole != mm_id:
            raise KeyError(f"swap slot {offset} has no swap PTE of mm {mm_id}")
        if count:
            self.swap_map[offset] = count
        else:
            del self.swap_map[offset]
            self._sole.pop(offset, None)
            self._release_if_unused(offset)
        return count

    def _release_if_unused(self, offset: int) -> None:
        if offset not in self.cache and offset not in self.swap_map:
            self.contents.pop(offset, None)
            self._free.append(offset)

    def add_to_cache(self, folio: Folio, offset: int) -> None:
        """add_to_swap_cache(): the folio holds slots ``offset..offset+nr-1``."""
        for i in range(folio.nr_pages):
            self.cache[offset + i] = folio
        folio.swap_entry = (self.type, offset)
        folio.get("swapcache", None, folio.nr_pages)

    def migrate_cache(self, old: Folio, new: Folio) -> None:
        """folio_migrate_mapping() of a swapcache folio: ``new`` takes over ``old``'s
        slots (and the swapcache's references) without any slot being freed."""
        assert old.swap_entry is not None and new.swap_entry is None
        offset = old.swap_entry[1]
        for i in range(old.nr_pages):
            self.cache[offset + i] = new
        new.swap_entry = old.swap_entry
        new.get("swapcache", None, new.nr_pages)
        old.swap_entry = None
        old.put("swapcache", None, old.nr_pages)

    def delete_from_cache(self, folio: Folio) -> None:
        """delete_from_swap_cache(): drop the swapcache's references and free unused slots."""
        assert folio.swap_entry is not None
        offset = folio.swap_entry[1]
        folio.swap_entry = None
        for i in range(folio.nr_pages):
            del self.cache[offset + i]
            self._release_if_unused(offset + i)
        folio.put("swapcache", None, folio.nr_pages)

    def swapped(self, folio: Folio) -> bool:
        """folio_swapped(): does any swap PTE still refer to the folio's slots?"""
        assert folio.swap_entry is not None
        offset = folio.swap_entry[1]
        return any(self.swap_map.get(offset + i, 0) for i in range(folio.nr_pages))

    def readahead_window(self, offset: int, page_cluster: int) -> int:
        """swapin_nr_pages(): the adaptive readahead window for a fault at ``offset``.

        Follows mm/swap_state.c: window = hits + 2 rounded up to a power of two
        (at least 4); with no hits, 1 unless the fault is next to the previous one;
        never above 2^page_cluster; never shrinks below half the previous window.
        """
        max_pages = 1 << page_cluster
        if max_pages <= 1:
            return 1
        hits = self.ra_hits
        self.ra_hits = 0
        pages = hits + 2
        if pages == 2:
            if offset != self.prev_offset + 1 and offset != self.prev_offset - 1:
                pages = 1
        else:
            roundup = 4
            while roundup < pages:
                roundup <<= 1
            pages = roundup
        pages = min(pages, max_pages)
        pages = max(pages, self.ra_last_win // 2)
        if not hits:
            self.prev_offset = offset
        self.ra_last_win = pages
        return pages
