"""The simulated clock and its event queue.

One discrete-event engine drives everything time-dependent in cowlab: I/O
completions (swap-in reads, writeback) are events at a simulated time in
nanoseconds. Scripted scenarios advance it explicitly (``advance``,
``io_complete``) or implicitly when a thread sleeps (``lock()`` on a folio
whose holder releases at a known time).

Events at the same time run in the order they were scheduled, so a run is a
deterministic function of its inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cowlab.kernel.errors import Sleep as Sleep

Callback = Callable[[], None]


#: An entry of a time-ordered queue (the clock's events, the engine's runnable threads):
#: ``(time_ns, seq, item)``, where ``seq`` numbers the entries of one queue in the order
#: they were queued, uniquely, so that two entries never tie and the item is never
#: compared.
TimedEntry = tuple[Any, ...]


def _earlier(a: TimedEntry, b: TimedEntry) -> bool:
    """``a < b`` for two entries, as the tuples compare: by time, then by sequence
    number. Compiled, two native comparisons of integers, where comparing the tuples
    takes three generic comparisons (an equality test to find the first differing
    element, then the order)."""
    a_at: int = a[0]
    b_at: int = b[0]
    if a_at != b_at:
        return a_at < b_at
    a_seq: int = a[1]
    b_seq: int = b[1]
    return a_seq < b_seq


def heap_push(heap: list[TimedEntry], entry: TimedEntry) -> None:
    """:func:`heapq.heappush` of an entry: the same algorithm on the same list, so the
    queue pops in exactly heapq's order (tests/kernel/test_clock.py compares them)."""
    heap.append(entry)
    _sift_toward_root(heap, 0, len(heap) - 1)


def heap_pop(heap: list[TimedEntry]) -> TimedEntry:
    """:func:`heapq.heappop`: remove and return the earliest entry."""
    last = heap.pop()
    if heap:
        first = heap[0]
        heap[0] = last
        _sift_toward_leaves(heap, 0)
        return first
    return last


def heap_replace(heap: list[TimedEntry], entry: TimedEntry) -> TimedEntry:
    """:func:`heapq.heapreplace`: remove and return the earliest entry, then add
    ``entry``."""
    first = heap[0]
    heap[0] = entry
    _sift_toward_leaves(heap, 0)
    return first


def _sift_toward_root(heap: list[TimedEntry], start: int, pos: int) -> None:
    # heapq's _siftdown.
    entry = heap[pos]
    while pos > start:
        parent_pos = (pos - 1) >> 1
        parent = heap[parent_pos]
        if _earlier(entry, parent):
            heap[pos] = parent
            pos = parent_pos
            continue
        break
    heap[pos] = entry


def _sift_toward_leaves(heap: list[TimedEntry], pos: int) -> None:
    # heapq's _siftup: the smaller child moves up until a leaf is reached, then the
    # entry moves back toward the root to its place.
    end = len(heap)
    start = pos
    entry = heap[pos]
    child = 2 * pos + 1
    while child < end:
        right = child + 1
        if right < end and not _earlier(heap[child], heap[right]):
            child = right
        heap[pos] = heap[child]
        pos = child
        child = 2 * pos + 1
    heap[pos] = entry
    _sift_toward_root(heap, start, pos)


class Clock:
    """Simulated time in nanoseconds plus a queue of timed callbacks."""

    __slots__ = ("_queue", "_seq", "now")

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[TimedEntry] = []  # (time_ns, seq, callback)
        self._seq = 0

    def schedule(self, at_ns: int, callback: Callback) -> None:
        """Run ``callback`` when the clock reaches ``at_ns`` (not before now)."""
        self._seq += 1
        heap_push(self._queue, (max(at_ns, self.now), self._seq, callback))

    @property
    def pending(self) -> int:
        """Number of events not yet run."""
        return len(self._queue)

    def next_event_time(self) -> int | None:
        """Time of the earliest pending event, or None."""
        return self._queue[0][0] if self._queue else None

    def cancel_all(self) -> None:
        """Drop every pending event (a closed kernel's: their callbacks refer to it)."""
        self._queue.clear()

    def run_until(self, t_ns: int) -> None:
        """Run every event due at or before ``t_ns`` and move the clock there."""
        queue = self._queue
        while queue:
            due: int = queue[0][0]
            if due > t_ns:
                break
            self._run_next(queue)
        self.now = max(self.now, t_ns)

    def run_all(self) -> None:
        """Run every pending event (including ones they schedule)."""
        queue = self._queue
        while queue:
            self._run_next(queue)

    def run_while(self, waiting: Callable[[], bool]) -> bool:
        """Run events one at a time while ``waiting()`` holds.

        Returns False if the queue ran dry while still waiting (nothing can
        ever end the wait: a deadlock in the scenario).
        """
        queue = self._queue
        while waiting():
            if not queue:
                return False
            self._run_next(queue)
        return True

    def _run_next(self, queue: list[TimedEntry]) -> None:
        """Take the earliest event off ``queue`` (not empty), move the clock to it and
        run it."""
        entry = heap_pop(queue)
        at: int = entry[0]
        callback: Callback = entry[2]
        self.now = max(self.now, at)
        callback()
