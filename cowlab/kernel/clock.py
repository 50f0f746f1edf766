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

import heapq
from collections.abc import Callable

from cowlab.kernel.errors import Sleep as Sleep

Callback = Callable[[], None]


class Clock:
    """Simulated time in nanoseconds plus a queue of timed callbacks."""

    __slots__ = ("_queue", "_seq", "now")

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, Callback]] = []
        self._seq = 0

    def schedule(self, at_ns: int, callback: Callback) -> None:
        """Run ``callback`` when the clock reaches ``at_ns`` (not before now)."""
        self._seq += 1
        heapq.heappush(self._queue, (max(at_ns, self.now), self._seq, callback))

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
        while queue and queue[0][0] <= t_ns:
            at, _, callback = heapq.heappop(queue)
            self.now = max(self.now, at)
            callback()
        self.now = max(self.now, t_ns)

    def run_all(self) -> None:
        """Run every pending event (including ones they schedule)."""
        queue = self._queue
        while queue:
            at, _, callback = heapq.heappop(queue)
            self.now = max(self.now, at)
            callback()

    def run_while(self, waiting: Callable[[], bool]) -> bool:
        """Run events one at a time while ``waiting()`` holds.

        Returns False if the queue ran dry while still waiting (nothing can
        ever end the wait: a deadlock in the scenario).
        """
        queue = self._queue
        while waiting():
            if not queue:
                return False
            at, _, callback = heapq.heappop(queue)
            self.now = max(self.now, at)
            callback()
        return True
