"""The discrete-event engine: threads on CPUs, sharing the kernel's one clock.

A :class:`Thread` is a Python generator bound to an mm (or to none, for a kernel
thread such as kswapd) and to a CPU. Its body performs kernel operations through the
thread (``rec = yield from t.write(mm, page)``) and may think (``yield from
t.think(ns)``). Each operation charges its simulated cost to the thread; the engine
then keeps the thread, and its CPU, busy for that long.

The scheduler fits in a paragraph. Every CPU runs one thread at a time, without
preemption: a thread that becomes ready while its CPU is busy waits until the CPU is
free, and ready threads run in order of the time they became ready (ties in the
order they were scheduled, so a run is a deterministic function of its inputs).
Thinking and sleeping free the CPU. A kernel operation that must sleep (a fault on a
page whose read is in flight, ``lock()`` in an era that sleeps on the page lock)
raises :class:`~cowlab.kernel.clock.Sleep`; the engine parks the thread until then
and retries the operation from the start, as a fault returning VM_FAULT_RETRY is.
Before a thread runs at time *t*, every clock event due by *t* (I/O completions) runs.
Threads can migrate between CPUs (:meth:`Engine.migrate`).

A run never ends silently. It ends when every thread that keeps it going (a non-daemon)
has finished (``end_reason`` "finished"), when ``stop()`` says so ("stopped") or when
the clock passes ``until_ns`` ("time"). A thread whose operation can wake at no known
time (a lock nobody is due to release: ``Sleep(None, ...)``) is parked as *blocked* and
retried after another thread has run; once every live non-daemon thread is blocked and
no clock event is pending, nothing can ever wake them and the engine raises
:class:`~cowlab.kernel.errors.StallError` naming each blocked thread and what it waits
on. It raises the same error if it runs out of runnable threads before the live ones
finished and no stop condition was reached.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from cowlab.kernel.clock import Sleep, TimedEntry, heap_pop, heap_push, heap_replace
from cowlab.kernel.errors import BlockedThread, KernelError, StallError

if TYPE_CHECKING:
    from cowlab.kernel.fault import FaultRecord
    from cowlab.kernel.kernel import Kernel
    from cowlab.kernel.mm import MM

T = TypeVar("T")

#: What a thread body yields to the engine, the operation's time in ``Engine.arg``
#: (set just before the yield, read just after it): BUSY keeps the thread's CPU busy for
#: ``arg`` ns; SLEEP parks it with the CPU free until the time ``arg``; BLOCK parks it
#: until another thread has run (nothing pending is known to wake it). Thread bodies
#: yield only through the :class:`Thread` operations (``yield from t.think(ns)``).
#: Compiled, a small int and a field are passed where a tuple and an int object were
#: made at every step.
BUSY: Final = 0
SLEEP: Final = 1
BLOCK: Final = 2
#: What :func:`_resume` returns for a body that has finished.
_DONE: Final = -1
Yield = int
ThreadGen = Generator[Yield, None, None]
ThreadBody = Callable[["Thread"], ThreadGen]
Op = Generator[Yield, None, T]


def _time_of(entry: TimedEntry) -> int:
    """The time of a ready-queue entry. (A typed function: assigned from the entry
    directly, a variable would be typed Any where it is used, and compiled code would
    compare it generically.)"""
    at: int = entry[0]
    return at


def _thread_of(entry: TimedEntry) -> Thread:
    """The thread of a ready-queue entry (typed, as :func:`_time_of`)."""
    thread: Thread = entry[2]
    return thread


def _finished_body() -> ThreadGen:
    return
    yield  # a generator function


def _resume(gen: ThreadGen) -> int:
    """What ``gen`` yields next, or :data:`_DONE` once it has finished: ``next(gen)``
    without the StopIteration. Compiled, the loop resumes the generator through its C
    slot, where a call of the builtin ``next`` is a lookup by name and a generic call at
    every step."""
    for item in gen:
        return item
    return _DONE


#: The body of a closed thread: a generator that has finished.
_FINISHED: Final[ThreadGen] = _finished_body()
next(_FINISHED, None)


class Thread:
    """A simulated thread: a generator body running on a CPU, optionally in an mm."""

    __slots__ = ("_gen", "alive", "cpu", "daemon", "engine", "mm", "name", "ops", "tid",
                 "waiting")

    def __init__(self, engine: Engine, tid: int, name: str, mm: MM | None, cpu: int,
                 body: ThreadBody, daemon: bool = False) -> None:
        self.engine = engine
        #: A daemon (a spinning helper, a kernel thread) does not keep the run going.
        self.daemon = daemon
        self.tid = tid
        self.name = name
        self.mm = mm
        self.cpu = cpu
        self.alive = True
        self.ops = 0
        #: Why the thread's current operation is waiting (None while it is not).
        self.waiting: str | None = None
        self._gen = body(self)

    def close(self) -> None:
        """Finish the thread where it stands (:meth:`Engine.close`): its body gets
        GeneratorExit, as an abandoned generator does, and is dropped (its frame refers
        to this thread)."""
        gen, self._gen = self._gen, _FINISHED
        self.alive = False
        gen.close()

    @property
    def kernel(self) -> Kernel:
        """The kernel this thread runs on."""
        return self.engine.kernel

    def _wait(self, sleep: Sleep) -> Op[None]:
        """An operation slept: charge what it cost so far, then park the thread until
        the sleep's wake-up time (or, with none known, until another thread ran)."""
        self.waiting = sleep.reason
        engine = self.engine
        k = engine.kernel
        if k.busy_ns:
            engine.arg = k.busy_ns
            yield BUSY
        if sleep.until_ns is None:
            engine.arg = 0
            yield BLOCK
        else:
            engine.arg = sleep.until_ns
            yield SLEEP

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Op[T]:
        """Run a kernel operation as this thread: charge its cost, retry after sleeps."""
        engine = self.engine
        k = engine.kernel
        while True:
            try:
                result = fn(*args, **kwargs)
            except Sleep as sleep:
                yield from self._wait(sleep)
                continue
            self.waiting = None
            self.ops += 1
            if k.busy_ns:
                engine.arg = k.busy_ns
                yield BUSY
            return result

    # -- the operations a workload thread performs -----------------------------------------
    def write(self, mm: MM, page: int, data: object = None) -> Op[FaultRecord]:
        """Store to ``page`` of ``mm`` on this thread's CPU.

        :meth:`call` spelled out for the hottest operation (a workload's every store):
        the kernel is called directly instead of through a bound method and an argument
        tuple (a sleep, the rare path, goes through the same :meth:`_wait`). The CPU is
        the one at the call, kept over retries, as :meth:`call` does.
        """
        engine = self.engine
        k = engine.kernel
        cpu = self.cpu
        while True:
            try:
                result = k.write(mm, page, cpu, data)
            except Sleep as sleep:
                yield from self._wait(sleep)
                continue
            self.waiting = None
            self.ops += 1
            if k.busy_ns:
                engine.arg = k.busy_ns
                yield BUSY
            return result

    def write_range(self, mm: MM, start: int, count: int) -> Op[None]:
        """Store to pages ``start .. start + count - 1`` in turn (a process filling its
        memory): exactly the operations and scheduling points of ``count`` calls of
        :meth:`write`, run from compiled code instead of the workload's loop."""
        for page in range(start, start + count):
            yield from self.write(mm, page)

    def read(self, mm: MM, page: int) -> Op[object]:
        """Load from ``page`` (:meth:`call` spelled out, as :meth:`write`)."""
        engine = self.engine
        k = engine.kernel
        cpu = self.cpu
        while True:
            try:
                result = k.read(mm, page, cpu)
            except Sleep as sleep:
                yield from self._wait(sleep)
                continue
            self.waiting = None
            self.ops += 1
            if k.busy_ns:
                engine.arg = k.busy_ns
                yield BUSY
            return result

    def madvise(self, mm: MM, page: int, pages: int, advice: str) -> Op[None]:
        """madvise() on this thread's CPU."""
        return self.call(self.kernel.madvise, mm, page, pages, advice, self.cpu)

    def fork(self, mm: MM, child_name: str) -> Op[MM]:
        """fork() the mm."""
        return self.call(self.kernel.fork, mm, child_name, self.cpu)

    def think(self, ns: int) -> Op[None]:
        """Spend ``ns`` of user time (the CPU stays busy, no kernel state changes)."""
        if ns > 0:
            self.engine.arg = ns
            yield BUSY

    def sleep(self, ns: int) -> Op[None]:
        """Sleep for ``ns`` with the CPU free for other threads."""
        yield from self.sleep_until(self.engine.kernel.clock.now + max(0, ns))

    def sleep_until(self, at_ns: int) -> Op[None]:
        """Sleep until the time ``at_ns`` (at once if it has passed) with the CPU free."""
        self.engine.arg = at_ns
        yield SLEEP


class _Cpu:
    """A CPU's scheduling state: when it is free again, and how long it has been busy
    (native fields: compiled, no int object is made when they change)."""

    __slots__ = ("busy_ns", "free_at")

    def __init__(self) -> None:
        self.free_at = 0
        self.busy_ns = 0


class Engine:
    """Runs threads on the kernel's CPUs against the kernel's clock."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.clock = kernel.clock
        kernel.defer_sleeps = True
        self._ready: list[TimedEntry] = []  # (time_ns, seq, thread): clock.heap_push
        self._seq = 0
        self._next_tid = 1
        self._cpus = [_Cpu() for _ in range(kernel.machine.cpus)]
        self.threads: list[Thread] = []
        self.steps = 0
        self._live = 0  # threads that are not daemons and have not finished
        #: Threads parked with nothing pending to wake them (retried after any other step).
        self._blocked: list[Thread] = []
        #: Why the last :meth:`run` ended: "finished", "stopped" or "time" (None: not run).
        self.end_reason: str | None = None
        #: The time of what a thread body yielded last (see :data:`Yield`).
        self.arg = 0

    def spawn(self, name: str, body: ThreadBody, *, cpu: int = 0, mm: MM | None = None,
              start_ns: int | None = None, daemon: bool = False) -> Thread:
        """Create a thread running ``body`` on ``cpu``, ready at ``start_ns`` (now).

        The engine stops when only daemon threads are left.
        """
        self.kernel.check_cpu(cpu)
        thread = Thread(self, self._next_tid, name, mm, cpu, body, daemon)
        if not daemon:
            self._live += 1
        self._next_tid += 1
        self.threads.append(thread)
        self._push(self.clock.now if start_ns is None else start_ns, thread)
        return thread

    def migrate(self, thread: Thread, cpu: int) -> None:
        """Move ``thread`` to ``cpu`` (effective from its next step)."""
        self.kernel.check_cpu(cpu)
        thread.cpu = cpu

    @property
    def cpu_free_at(self) -> list[int]:
        """When each CPU is free again (ns)."""
        return [c.free_at for c in self._cpus]

    @property
    def cpu_busy_ns(self) -> list[int]:
        """How long each CPU has been kept busy by threads (ns)."""
        return [c.busy_ns for c in self._cpus]

    def _push(self, at: int, thread: Thread) -> None:
        self._seq += 1
        heap_push(self._ready, (at, self._seq, thread))

    @property
    def idle(self) -> bool:
        """No thread that keeps the run going is left."""
        return self._live == 0

    def describe_waits(self) -> tuple[BlockedThread, ...]:
        """Every live thread that keeps the run going, and every blocked one, with what
        it waits on (for :class:`StallError` and diagnostics)."""
        blocked = {id(t) for t in self._blocked}
        out = []
        for t in self.threads:
            if not t.alive or (t.daemon and id(t) not in blocked):
                continue
            if id(t) in blocked:
                what = f"blocked: {t.waiting}"
            elif t.waiting is not None:
                what = f"sleeping: {t.waiting}"
            else:
                what = "runnable"
            out.append(BlockedThread(t.name, t.mm.name if t.mm else None, t.cpu, what))
        return tuple(out)

    def _stall(self, message: str) -> StallError:
        return StallError(message, self.describe_waits(), self.clock.now)

    def _live_all_blocked(self) -> bool:
        """Every live non-daemon thread is blocked, and no clock event can change that."""
        nblocked = sum(1 for t in self._blocked if not t.daemon)
        return nblocked >= self._live and self.clock.pending == 0

    def run(self, *, until_ns: int | None = None,
            stop: Callable[[], bool] | None = None,
            max_decisions: int | None = None) -> None:
        """Run threads until none is left, the clock passes ``until_ns``, or ``stop()``.

        ``max_decisions`` stops the run as ``stop()`` does once the kernel has asked its
        policy that many times (checked after every step, as ``stop()`` is, but without
        a call into Python per step: a workload run's budget, :class:`~cowlab.workloads.
        base.Budget`).

        Raises:
            StallError: Every live thread is blocked with nothing pending, or the run
                ran out of runnable threads before they finished.
        """
        ready = self._ready
        clock = self.clock
        kernel = self.kernel
        cpus = self._cpus
        blocked = self._blocked
        reason: str | None = None
        # The thread that just ran, when it is due strictly before every queued one: it
        # runs again at once without a trip through the queue (the order is the one
        # the queue would give: nothing else was queued in between).
        nxt: Thread | None = None
        nxt_at = 0
        while self._live:
            if nxt is not None:
                thread, at = nxt, nxt_at
                nxt = None
                if (until_ns is not None and at > until_ns) or cpus[thread.cpu].free_at > at:
                    self._push(at, thread)  # the general path below decides
                    continue
                start = at
            elif not ready:
                if blocked and not clock.pending:
                    raise self._stall("stalled: every live thread is blocked and nothing "
                                      "pending can wake it")
                if blocked:
                    # Only an I/O completion can help: run to it and retry the blocked.
                    due = clock.next_event_time()
                    assert due is not None
                    if until_ns is not None and due > until_ns:
                        reason = "time"
                        break
                    clock.run_until(due)
                    self._unblock(clock.now)
                    continue
                raise self._stall("stalled: the run ran out of runnable threads before its "
                                  "workload's end")
            else:
                first = ready[0]
                at = _time_of(first)
                thread = _thread_of(first)
                if until_ns is not None and at > until_ns:
                    reason = "time"
                    break
                start = max(at, cpus[thread.cpu].free_at)
                if start > at:
                    # Its CPU is busy: it becomes runnable when the CPU frees up.
                    heap_replace(ready, (start, first[1], thread))
                    continue
                heap_pop(ready)
            clock.run_until(start)
            kernel.busy_ns = 0
            try:
                kind = _resume(thread._gen)
            except Sleep as exc:  # a body that called the kernel directly
                raise KernelError(
                    f"thread {thread.name}: kernel operations must go through the thread "
                    f"(yield from thread.write(...)), got {exc}"
                ) from None
            if kind == _DONE:  # the body has finished
                thread.alive = False
                if not thread.daemon:
                    self._live -= 1
                if blocked:
                    self._unblock(start)
                continue
            value = self.arg
            self.steps += 1
            if kind == BLOCK:
                blocked.append(thread)
                if self._live_all_blocked():
                    raise self._stall("stalled: every live thread is blocked and nothing "
                                      "pending can wake it")
                continue
            if blocked:
                self._unblock(start)
            if kind == BUSY:
                due = start + value
                c = cpus[thread.cpu]
                c.free_at = due
                c.busy_ns += value
            elif kind == SLEEP:
                due = max(value, start)
            else:
                raise KernelError(
                    f"thread {thread.name} yielded {kind!r}: a thread body yields only "
                    f"through the thread's operations (yield from thread.think(ns), ...)")
            if not ready or due < _time_of(ready[0]):
                nxt, nxt_at = thread, due
            else:
                self._push(due, thread)
            if max_decisions is not None and kernel.nr_decisions >= max_decisions:
                reason = "stopped"
                break
            if stop is not None and stop():
                reason = "stopped"
                break
        if nxt is not None:
            self._push(nxt_at, nxt)
        if reason is None:
            reason = "finished"
        self.end_reason = reason
        if until_ns is not None and reason != "stopped":
            clock.run_until(max(clock.now, until_ns))

    def close(self) -> None:
        """Abandon the run: finish every thread and forget them (a finished run's
        teardown, :meth:`Run.close <cowlab.workloads.base.Run.close>`). Threads and the
        engine refer to each other; once closed, a run's memory is freed by reference
        counting alone."""
        for thread in self.threads:
            thread.close()
        self.threads.clear()
        self._ready.clear()
        self._blocked.clear()
        self._live = 0

    def _unblock(self, at: int) -> None:
        """Another thread ran (or I/O completed): retry every blocked thread at ``at``."""
        for thread in self._blocked:
            self._push(at, thread)
        self._blocked.clear()
