"""The LRU: active and inactive lists and the per-CPU folio batches.

Models mm/swap.c: a folio added to the LRU first waits in the adding CPU's
``lru_add`` batch, holding a reference with PG_lru clear, until the batch
fills (15 entries, 31 from v6.9) or is drained. ``lru_add_drain()`` empties
only the local CPU's batches; ``lru_add_drain_all()`` every CPU's. Other batches
(``deactivate`` for MADV_COLD, ``move_tail`` when writeback of a reclaimed
folio ends, ``lazyfree`` for MADV_FREE: lru_lazyfree_fn(), 802a3a92ad7a, v4.12) hold
references the same way; unlike ``lru_add``, their folios keep PG_lru while queued.
Large folios never wait in a batch (they drain it at once), as
``folio_batch_add_and_move()`` does for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from cowlab.kernel.folio import LRU_BATCH, Folio

BATCH_NAMES: Final = ("lru_add", "deactivate", "move_tail", "lazyfree")


class LruList:
    """One LRU list, oldest first: a doubly linked list through the folios' own
    ``lru_prev``/``lru_next`` fields, as the kernel links ``folio->lru`` into the
    lruvec (no per-folio allocation; O(1) add, delete and rotation)."""

    __slots__ = ("head", "name", "size", "tail")

    def __init__(self, name: str) -> None:
        self.name = name
        self.head: Folio | None = None  # the oldest folio, where reclaim scans from
        self.tail: Folio | None = None  # the newest
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, folio: Folio) -> None:
        """Add ``folio`` (on no list) at the newest end: lruvec_add_folio()."""
        tail = self.tail
        folio.lru_prev = tail
        folio.lru_next = None
        if tail is None:
            self.head = folio
        else:
            tail.lru_next = folio
        self.tail = folio
        self.size += 1

    def push_oldest(self, folio: Folio) -> None:
        """Add ``folio`` (on no list) at the oldest end: lruvec_add_folio_tail()."""
        head = self.head
        folio.lru_prev = None
        folio.lru_next = head
        if head is None:
            self.tail = folio
        else:
            head.lru_prev = folio
        self.head = folio
        self.size += 1

    def remove(self, folio: Folio) -> None:
        """Unlink ``folio``, which is on this list: lruvec_del_folio()."""
        prev, nxt = folio.lru_prev, folio.lru_next
        if prev is None:
            self.head = nxt
        else:
            prev.lru_next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.lru_prev = prev
        folio.lru_prev = folio.lru_next = None
        self.size -= 1

    def clear(self) -> None:
        """Unlink every folio, emptying the list (:meth:`Lru.close`)."""
        folio = self.head
        while folio is not None:
            nxt = folio.lru_next
            folio.lru_prev = folio.lru_next = None
            folio = nxt
        self.head = self.tail = None
        self.size = 0

    def first(self) -> Folio | None:
        """The oldest folio, or None."""
        return self.head

    def values(self) -> list[Folio]:
        """The folios, oldest first (a snapshot: the list may change while it is used)."""
        out: list[Folio] = []
        folio = self.head
        while folio is not None:
            out.append(folio)
            folio = folio.lru_next
        return out


def _closed(folio: Folio) -> None:
    raise RuntimeError("the LRU of a closed kernel released a folio")


class Lru:
    """LRU lists plus per-CPU batches; ``release`` is called when a batch drops a last ref."""

    __slots__ = (
        "active", "batch_size", "batches", "inactive", "new_anon_active", "owners", "release",
    )

    def __init__(
        self,
        nr_cpus: int,
        batch_size: int,
        release: Callable[[Folio], None],
        new_anon_active: bool = False,
    ) -> None:
        self.batch_size = batch_size
        self.new_anon_active = new_anon_active
        self.active = LruList("active")
        self.inactive = LruList("inactive")
        self.batches: list[dict[str, list[Folio]]] = [
            {name: [] for name in BATCH_NAMES} for _ in range(nr_cpus)
        ]
        self.release = release
        #: The ledger owner of each batch's references, (cpu, batch name), made once.
        self.owners: list[dict[str, tuple[int, str]]] = [
            {name: (cpu, name) for name in BATCH_NAMES} for cpu in range(nr_cpus)
        ]

    def close(self) -> None:
        """Drop the links of a finished run (:meth:`Kernel.close`): the lists' links
        between folios and the ``release`` callback (a method of the kernel, which
        holds this Lru) are reference cycles."""
        self.active.clear()
        self.inactive.clear()
        self.release = _closed

    # -- lists ---------------------------------------------------------------------------
    def _list(self, name: str) -> LruList:
        return self.active if name == "active" else self.inactive

    def add_to_list(self, folio: Folio, name: str) -> None:
        """Put a folio on a list (at its newest end) and set PG_lru."""
        if folio.lru:
            self.del_from_list(folio)
        self._list(name).append(folio)
        folio.lru = True
        folio.lru_list = name

    def del_from_list(self, folio: Folio) -> None:
        """Take a folio off its list and clear PG_lru (isolation, or freeing)."""
        if folio.lru and folio.lru_list is not None:
            self._list(folio.lru_list).remove(folio)
        folio.lru = False
        folio.lru_list = None

    # -- batches -------------------------------------------------------------------------
    def add(self, folio: Folio, cpu: int, batch: str = "lru_add") -> None:
        """Queue ``folio`` in ``cpu``'s batch with a reference; drain when full."""
        folio.get(LRU_BATCH, self.owners[cpu][batch])
        queue = self.batches[cpu][batch]
        queue.append(folio)
        if folio.order or len(queue) >= self.batch_size:
            self.drain_batch(cpu, batch)

    def drain_batch(self, cpu: int, batch: str) -> None:
        """folio_batch_move_lru(): move every queued folio and drop the batch's references."""
        queue = self.batches[cpu][batch]
        if not queue:
            return
        self.batches[cpu][batch] = []
        owner = self.owners[cpu][batch]
        for folio in queue:
            if not folio.freed and folio.refcount > 1:
                if batch == "lru_add":
                    self.add_to_list(folio, "active" if self.new_anon_active else "inactive")
                elif batch == "deactivate" and folio.lru:
                    self.add_to_list(folio, "inactive")
                elif batch == "move_tail" and folio.lru:
                    # lru_move_tail(): off its list, PG_active cleared, onto the inactive
                    # list's reclaim end (the kernel's tail), to be reclaimed next.
                    self.del_from_list(folio)
                    self.inactive.push_oldest(folio)
                    folio.lru = True
                    folio.lru_list = "inactive"
                elif batch == "lazyfree" and folio.lru and folio.anon and not folio.swapcache:
                    # lru_lazyfree(): clear PG_swapbacked and move it to the inactive
                    # (file) list, where reclaim finds it first.
                    folio.lazyfree = True
                    self.add_to_list(folio, "inactive")
            folio.put(LRU_BATCH, owner)
            if folio.refcount == 0:
                self.release(folio)

    def drain_cpu(self, cpu: int) -> int:
        """lru_add_drain() on ``cpu``; returns the number of folios moved."""
        moved = 0
        for name in BATCH_NAMES:
            moved += len(self.batches[cpu][name])
            self.drain_batch(cpu, name)
        return moved

    def drain_all(self) -> int:
        """lru_add_drain_all(): every CPU's batches."""
        return sum(self.drain_cpu(cpu) for cpu in range(len(self.batches)))

    def batch_refs(self, folio: Folio) -> list[tuple[int, str]]:
        """(cpu, batch) pairs holding a reference on ``folio`` (from its ledger)."""
        return [owner for owner, _sub, _n in folio.holders(LRU_BATCH)]
