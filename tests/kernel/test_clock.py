"""The clock's time-ordered queue (cowlab/kernel/clock.py): the same order as heapq."""

from __future__ import annotations

import heapq
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cowlab.kernel.clock import Clock, heap_pop, heap_push, heap_replace

#: A queue's life: push at a time, pop, or replace the earliest with a new time.
OPS = st.lists(st.tuples(st.sampled_from(["push", "pop", "replace"]),
                         st.integers(-3, 40)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_the_queue_keeps_heapq_s_list_and_order_exactly(ops: list[tuple[str, int]]) -> None:
    """Entry by entry the same list as heapq's functions keep (so the same pops), with
    ties in time broken by the order of queueing."""
    ours: list[tuple[Any, ...]] = []
    theirs: list[tuple[Any, ...]] = []
    for seq, (op, at) in enumerate(ops):
        entry = (at, seq, object())
        if op == "push":
            heap_push(ours, entry)
            heapq.heappush(theirs, entry)
        elif ours and op == "pop":
            assert heap_pop(ours) is heapq.heappop(theirs)
        elif ours:
            assert heap_replace(ours, entry) is heapq.heapreplace(theirs, entry)
        assert ours == theirs


def test_events_at_one_time_run_in_the_order_they_were_scheduled() -> None:
    clock = Clock()
    ran: list[str] = []
    for name, at in (("b", 5), ("a", 3), ("c", 5), ("d", 3), ("e", 9)):
        clock.schedule(at, lambda name=name: ran.append(name))  # type: ignore[misc]
    clock.run_until(5)
    assert ran == ["a", "d", "b", "c"] and clock.now == 5 and clock.pending == 1
    clock.run_all()
    assert ran[-1] == "e" and clock.now == 9
