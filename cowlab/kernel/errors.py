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


# The exceptions below belong to fault.py, folio.py and swap.py (which re-export them);
# they live here because the compiled build (setup.py) cannot compile a class derived
# from RuntimeError, and this module stays interpreted.
class PolicyError(RuntimeError):
    """A policy misused a primitive or returned something that is not a Decision."""


class LedgerError(RuntimeError):
    """A reference was dropped that was never taken: a simulator bug, never user input."""


class SwapFullError(RuntimeError):
    """No free swap slot (the device's size was exhausted)."""
