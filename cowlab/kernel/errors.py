"""Errors raised by the simulated kernel."""

from __future__ import annotations

from typing import NamedTuple


class KernelError(ValueError):
    """An operation the simulated kernel refuses (bad address, unknown mapping, ...)."""


class BlockedThread(NamedTuple):
    """One thread of a stalled run and what it was waiting for."""

    name: str
    #: The thread's mm (None for a kernel thread).
    mm: str | None
    cpu: int
    #: What it waits on ("folio lock held by migration, no release pending", "finished
    #: nothing: ready at 1200 ns", ...).
    waits_on: str


class StallError(KernelError):
    """A run that can no longer reach its workload's own end.

    Raised by the :class:`~cowlab.kernel.engine.Engine` when every thread that keeps the
    run going is blocked with nothing pending that could wake it (no I/O completion, no
    lock with a release time), or when the engine runs out of work before those threads
    finished and no stop condition (budget, time limit) was reached. A stalled run is
    an error, never a result: its figures would describe a run that did not happen.
    """

    def __init__(self, message: str, blocked: tuple[BlockedThread, ...] = (),
                 time_ns: int = 0) -> None:
        self.message = message
        self.blocked = tuple(BlockedThread(*b) for b in blocked)
        self.time_ns = time_ns
        lines = [f"{message} at t={time_ns} ns"]
        lines += [
            f"  thread {b.name} (mm {b.mm or '-'}, cpu {b.cpu}): {b.waits_on}" for b in self.blocked
        ]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[StallError], tuple[str, tuple[BlockedThread, ...], int]]:
        # Picklable with its fields, so a worker process can report it.
        return (StallError, (self.message, self.blocked, self.time_ns))


# The exceptions below belong to fault.py, folio.py, swap.py and clock.py, which
# re-export them. They live here because this module stays interpreted in the compiled
# build (setup.py): mypyc cannot compile a class derived from RuntimeError, and a
# compiled exception neither pickles its attributes nor shows its signature.
class PolicyError(RuntimeError):
    """A policy misused a primitive or returned something that is not a Decision."""


class LedgerError(RuntimeError):
    """A reference was dropped that was never taken: a simulator bug, never user input."""


class SwapFullError(RuntimeError):
    """No free swap slot (the device's size was exhausted)."""


class Sleep(Exception):
    """Raised by a kernel operation that must sleep until ``until_ns`` and then be retried.

    ``until_ns`` None means nothing pending will wake the thread (a lock with no release
    time while no I/O is in flight): the engine parks it as *blocked* and retries it after
    another thread has run, and refuses the run (StallError) once every thread that keeps
    it going is blocked with nothing pending. Only raised when the kernel runs under the
    :class:`~cowlab.kernel.engine.Engine` (``Kernel.defer_sleeps``): the engine parks the
    thread and retries its operation at that time, the way a fault returns VM_FAULT_RETRY
    and runs again once the page lock is free. Used directly, the kernel sleeps inline by
    running the clock instead.
    """

    def __init__(self, until_ns: int | None, reason: str) -> None:
        when = "nothing pending wakes it" if until_ns is None else f"until {until_ns} ns"
        super().__init__(f"sleep, {when} ({reason})")
        self.until_ns = until_ns
        self.reason = reason

    def __reduce__(self) -> tuple[type[Sleep], tuple[int | None, str]]:
        # A process pool ships exceptions back to the parent: rebuild from both arguments.
        return type(self), (self.until_ns, self.reason)
