"""The discrete-event engine: threads, CPUs, sleeps and retries on one clock."""

from __future__ import annotations

import functools

import pytest

from cowlab.kernel.engine import Engine, Thread, ThreadGen
from cowlab.kernel.errors import KernelError
from tests.conftest import KernelFactory


def test_threads_on_one_cpu_run_one_after_the_other(kernel: KernelFactory) -> None:
    k = kernel("v5.19", cpus=2)
    engine = Engine(k)
    log: list[tuple[str, int]] = []

    def worker(t: Thread) -> ThreadGen:
        for _ in range(2):
            log.append((t.name, k.clock.now))
            yield from t.think(1000)

    engine.spawn("a", worker, cpu=0)
    engine.spawn("b", worker, cpu=0)
    engine.spawn("c", worker, cpu=1)
    engine.run()
    # Per CPU, one thread at a time (a, then b on CPU 0 while c runs on CPU 1).
    assert sorted(log, key=lambda x: (x[1], x[0])) == [
        ("a", 0), ("c", 0), ("b", 1000), ("c", 1000), ("a", 2000), ("b", 3000)]
    starts = {name: [t for n, t in log if n == name] for name in "abc"}
    assert starts == {"a": [0, 2000], "b": [1000, 3000], "c": [0, 1000]}


def test_a_fault_on_a_page_whose_read_is_in_flight_sleeps_and_is_retried(
    kernel: KernelFactory,
) -> None:
    """do_swap_page() on a locked swapcache folio returns VM_FAULT_RETRY: the thread sleeps
    until the read completes and the fault runs again."""
    k = kernel("v5.19", swap="ssd", facilities={"page_cluster": 0})
    engine = Engine(k)
    mm = k.create_mm("m")
    k.mmap(mm, 0, 2)
    done: list[int] = []

    def first(t: Thread) -> ThreadGen:
        yield from t.write(mm, 0)
        yield from t.madvise(mm, 0, 1, "pageout")
        yield from t.sleep(300_000)  # writeback completes (ssd ~200 us)
        yield from t.call(k.reclaim, 8, t.cpu)  # memory pressure frees the clean folio
        assert not k.frames or all(f.lru_list for f in k.frames.values())
        yield from t.read(mm, 0)  # major fault: read in flight ~150 us
        done.append(k.clock.now)

    def second(t: Thread) -> ThreadGen:
        yield from t.sleep(600_000)
        # By now the first thread's read is in flight; this fault must wait for it.
        yield from t.read(mm, 0)
        done.append(k.clock.now)

    engine.spawn("first", first, cpu=0, mm=mm)
    engine.spawn("second", second, cpu=1, mm=mm)
    engine.run()
    assert k.counters["pswpout"] >= 1 and k.counters["pswpin"] == 1
    assert k.check_invariants() == []
    assert len(done) == 2


def test_engine_stops_when_only_daemons_are_left(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    engine = Engine(k)

    def spinner(t: Thread) -> ThreadGen:
        while True:
            yield from t.think(1_000_000)

    def main(t: Thread) -> ThreadGen:
        yield from t.think(5_000_000)

    engine.spawn("spin", spinner, cpu=1, daemon=True)
    engine.spawn("main", main, cpu=0)
    engine.run()
    assert engine.idle
    assert 5_000_000 <= k.clock.now <= 6_000_000


def test_the_same_threads_give_the_same_run(kernel: KernelFactory) -> None:
    def once() -> tuple[object, ...]:
        k = kernel("v5.18", swap="ssd")
        engine = Engine(k)
        mm = k.create_mm("m")
        k.mmap(mm, 0, 8)

        def worker(t: Thread) -> ThreadGen:
            for i in range(40):
                yield from t.write(mm, (i * 3 + t.cpu) % 8)
                if i % 7 == 0:
                    yield from t.madvise(mm, 0, 8, "pageout")

        engine.spawn("a", worker, cpu=0, mm=mm)
        engine.spawn("b", worker, cpu=1, mm=mm)
        engine.run()
        return (k.clock.now, tuple(sorted(k.counters.items())),
                tuple((r.page, r.outcome, r.time_ns) for r in k.records))

    assert once() == once()


def test_a_thread_blocked_on_a_lock_with_no_release_time_runs_once_another_thread_unlocks(
    kernel: KernelFactory,
) -> None:
    """Sleep(None): parked as blocked, retried after other threads run, not a stall while
    a live thread can still release the lock."""
    k = kernel("v5.7", cpus=2)
    engine = Engine(k)
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.fork(mm, "child")
    folio = next(iter(k.frames.values()))
    k.lock_folio(folio, "held")
    done: list[int] = []

    def writer(t: Thread) -> ThreadGen:
        yield from t.write(mm, 0)  # legacy sleeps on the page lock
        done.append(k.clock.now)

    def releaser(t: Thread) -> ThreadGen:
        yield from t.think(5_000)
        k.unlock_folio(folio)
        yield from t.think(1)

    engine.spawn("writer", writer, cpu=0, mm=mm)
    engine.spawn("releaser", releaser, cpu=1)
    engine.run()
    assert engine.end_reason == "finished"
    assert done and done[0] >= 5_000
    assert k.records[-1].outcome == "copy"  # the child still maps it


def test_every_live_thread_blocked_with_nothing_pending_is_a_stall(
    kernel: KernelFactory,
) -> None:
    import pytest

    from cowlab.kernel.errors import StallError

    k = kernel("v5.7", cpus=2)
    engine = Engine(k)
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.fork(mm, "child")
    k.lock_folio(next(iter(k.frames.values())), "leaked")

    def writer(t: Thread) -> ThreadGen:
        yield from t.write(mm, 0)

    def spinner(t: Thread) -> ThreadGen:  # a daemon cannot wake it
        while True:
            yield from t.think(1_000)

    engine.spawn("writer", writer, cpu=0, mm=mm)
    engine.spawn("spinner", spinner, cpu=1, daemon=True)
    with pytest.raises(StallError, match="every live thread is blocked") as info:
        engine.run()
    assert [b.name for b in info.value.blocked] == ["writer"]
    assert "locked by leaked, no release pending" in info.value.blocked[0].waits_on


def test_the_end_reason_tells_a_budget_stop_from_a_finished_run(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    engine = Engine(k)

    def worker(t: Thread) -> ThreadGen:
        for _ in range(10):
            yield from t.think(1_000)

    engine.spawn("w", worker)
    engine.run(until_ns=3_500)
    assert engine.end_reason == "time"
    engine.run(stop=lambda: k.clock.now >= 6_000)
    assert engine.end_reason == "stopped"
    engine.run()
    assert engine.end_reason == "finished"


def _fork_then_rewrite(kernel: KernelFactory) -> Engine:
    """A parent that writes 8 pages, forks, then rewrites them (a decision each)."""
    k = kernel("v5.19", cpus=2)
    engine = Engine(k)
    mm = k.create_mm("parent")
    k.mmap(mm, 0, 8)

    def body(t: Thread) -> ThreadGen:
        for page in range(8):
            yield from t.write(mm, page)
        yield from t.fork(mm, "child")
        for _ in range(3):
            for page in range(8):
                yield from t.write(mm, page)
                yield from t.think(100)

    engine.spawn("w", body, cpu=0)
    return engine


def test_a_decision_budget_stops_the_run_where_a_stop_callback_would(
    kernel: KernelFactory,
) -> None:
    """Engine.run(max_decisions=n) ends the run after the step that made the n-th
    decision, exactly where ``stop=lambda: nr_decisions >= n`` ends it."""
    ends = []
    for use_budget in (True, False):
        engine = _fork_then_rewrite(kernel)
        k = engine.kernel
        if use_budget:
            engine.run(max_decisions=5)
        else:
            engine.run(stop=functools.partial(lambda kk: kk.nr_decisions >= 5, k))
        ends.append((engine.end_reason, k.nr_decisions, engine.steps, k.clock.now,
                     [(r.page, r.outcome) for r in k.records]))
    assert ends[0] == ends[1]
    assert ends[0][:2] == ("stopped", 5)


def test_write_range_runs_the_same_operations_as_one_write_per_page(
    kernel: KernelFactory,
) -> None:
    def run(use_range: bool) -> tuple[object, ...]:
        k = kernel("v5.19", cpus=2)
        engine = Engine(k)
        mm = k.create_mm("m")
        k.mmap(mm, 0, 8)

        def filler(t: Thread) -> ThreadGen:
            if use_range:
                yield from t.write_range(mm, 2, 5)
            else:
                for page in range(2, 7):
                    yield from t.write(mm, page)

        def other(t: Thread) -> ThreadGen:
            for _ in range(3):
                yield from t.write(mm, 0)
                yield from t.think(700)

        engine.spawn("filler", filler, cpu=0)
        engine.spawn("other", other, cpu=0)
        engine.run()
        return (k.clock.now, engine.steps, [(r.page, r.time_ns, r.fault) for r in k.records])

    assert run(True) == run(False)


def test_a_body_that_yields_to_the_engine_itself_is_refused(kernel: KernelFactory) -> None:
    # Bodies yield only through the thread's operations (the engine reads the time of a
    # yield from Engine.arg): anything else is an error, never a silently misread step.
    k = kernel("v5.19")
    engine = Engine(k)

    def rogue(t: Thread) -> ThreadGen:
        yield from t.think(1_000)
        yield ("busy", 1_000)  # type: ignore[misc]

    engine.spawn("rogue", rogue)
    # KernelError from the pure build; the compiled engine's typed resume raises TypeError.
    with pytest.raises((KernelError, TypeError)):
        engine.run()


def test_sleep_until_frees_the_cpu_until_that_time(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    engine = Engine(k)
    woke: list[int] = []

    def sleeper(t: Thread) -> ThreadGen:
        yield from t.sleep_until(5_000)
        woke.append(k.clock.now)
        yield from t.sleep_until(1_000)  # already past: runs on at once
        woke.append(k.clock.now)

    def worker(t: Thread) -> ThreadGen:
        yield from t.think(3_000)

    engine.spawn("sleeper", sleeper, cpu=0)
    engine.spawn("worker", worker, cpu=0)
    engine.run()
    assert woke == [5_000, 5_000]
    assert engine.cpu_busy_ns[0] == 3_000
