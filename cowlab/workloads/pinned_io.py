"""``pinned-io-v1``: RDMA / io_uring fixed buffers pinned long-term, with fork and
soft-dirty write protection in between.

An RDMA application registers memory regions (``ibv_reg_mr``) and an io_uring
application registers fixed buffers (``IORING_REGISTER_BUFFERS``); both pin the pages
with ``pin_user_pages(FOLL_LONGTERM)`` for as long as they are registered: receive
buffers R/W (the device writes into them by DMA), send buffers R/O. The application
keeps writing into its buffers and its heap. Meanwhile:

* it fork()s now and then (``system()``, a helper process) and the child exits soon;
  v5.9+ copies the pinned pages for the child at fork (70e806e4e645), before that the
  parent's next write copies its pinned page away from the device (the pin becomes
  incoherent);
* a checkpointing or live-migration tool clears the soft-dirty bits
  (``echo 4 > /proc/pid/clear_refs``), write-protecting every PTE: the next write to a
  pinned page faults, and only a rule that knows the page is exclusive
  (PageAnonExclusive, v5.19) reuses it; a refcount rule sees the 1024 pin bias and
  copies, breaking the pin (cow.c's "R/O-mapping a page registered as io_uring fixed
  buffer" case; fixed by 6c287605fd56's series);
* optionally the buffers are unregistered and registered again (a pin taken on a
  page that is no longer exclusive after a fork runs an unshare fault in v5.19+).

Threads: the application (CPU 0) writes a buffer page or a heap page every
``write_interval_ns``; the device (CPU 1, standing for the NIC / the io_uring
completion context) DMA-writes into the R/W buffers every ``dma_interval_ns``
(``Kernel.gup_write``); a monitor (CPU 1) clears soft-dirty every
``softdirty_period_ms``. The application itself forks every ``fork_period_ms``; the
child (CPU 1) reads ``child_reads`` pages and exits.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from cowlab.kernel.actors import start_actors
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.kernel.mm import MM
from cowlab.workloads.base import Run
from cowlab.workloads.common import CommonParams, actor_cpus, check_range, randbelow


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class PinnedIoParams(CommonParams):
    """Parameters of ``pinned-io-v1``."""

    #: Receive buffers: pages pinned R/W long-term (the device writes into them).
    rw_buffer_pages: int = 32
    #: Send buffers: pages pinned R/O long-term.
    ro_buffer_pages: int = 16
    #: Other application memory (not pinned).
    heap_pages: int = 128
    #: Time between two application writes, ns.
    write_interval_ns: int = 1_000
    #: Fraction of application writes that go to a buffer (the rest to the heap).
    buffer_write_ratio: float = 0.5
    #: Time between two device DMA writes into the R/W buffers, ns (0: no DMA).
    dma_interval_ns: int = 5_000
    #: Time between two fork()s by the application, ms (0: never).
    fork_period_ms: float = 1.0
    #: Pages the child reads before it exits.
    child_reads: int = 16
    #: Time between two soft-dirty clears, ms (0: never).
    softdirty_period_ms: float = 0.5
    #: Time between two unregister + register cycles of the buffers, ms (0: never).
    reregister_period_ms: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rw_buffer_pages", self.rw_buffer_pages, 0, 1 << 16)
        check_range("ro_buffer_pages", self.ro_buffer_pages, 0, 1 << 16)
        if self.rw_buffer_pages + self.ro_buffer_pages < 1:
            raise ValueError("pinned-io-v1 needs at least one buffer page")
        check_range("heap_pages", self.heap_pages, 0, 1 << 20)
        check_range("write_interval_ns", self.write_interval_ns, 1, 1e9)
        check_range("buffer_write_ratio", self.buffer_write_ratio, 0, 1)
        check_range("dma_interval_ns", self.dma_interval_ns, 0, 1e9)
        check_range("fork_period_ms", self.fork_period_ms, 0, 1e6)
        check_range("child_reads", self.child_reads, 0, 1 << 20)
        check_range("softdirty_period_ms", self.softdirty_period_ms, 0, 1e6)
        check_range("reregister_period_ms", self.reregister_period_ms, 0, 1e6)


class _Buffers:
    """The names of the GUP pins currently registered (one R/W and one R/O request)."""

    def __init__(self) -> None:
        self.generation = 0
        self.rw: str | None = None
        self.ro: str | None = None


@mypyc_attr(allow_interpreted_subclasses=True)
class PinnedIo:
    """Long-term pinned buffers with fork and soft-dirty tracking (see the module doc)."""

    id = "pinned-io-v1"

    def __init__(self, **params: Any) -> None:
        self.p = PinnedIoParams(**params)

    def machine_overrides(self) -> Mapping[str, object]:
        """The application's CPU, one for the device, monitor and children, and actors."""
        return {"cpus": 2 + actor_cpus(self.p.actors())}

    def setup(self, run: Run) -> None:
        """Map buffers and heap, then start the application, device and monitor."""
        p = self.p
        mm = run.mm("app")
        run.kernel.mmap(mm, 0, p.rw_buffer_pages + p.ro_buffer_pages + p.heap_pages)
        buffers = _Buffers()
        start_actors(run, p.actors())
        run.spawn("app", lambda t: self._app(t, run, mm, buffers), cpu=0, mm=mm)
        if p.dma_interval_ns:
            run.spawn("device", lambda t: self._device(t, buffers), cpu=1, daemon=True)
        if p.softdirty_period_ms:
            run.spawn("monitor", lambda t: self._monitor(t, mm), cpu=1, daemon=True)

    def _register(self, t: Thread, mm: MM, buffers: _Buffers) -> ThreadGen:
        """ibv_reg_mr / IORING_REGISTER_BUFFERS: FOLL_PIN | FOLL_LONGTERM on the buffers."""
        p = self.p
        k = t.kernel
        buffers.generation += 1
        g = buffers.generation
        if p.rw_buffer_pages:
            name = f"rdma-rw-{g}"
            yield from t.call(k.gup, mm, 0, p.rw_buffer_pages, pin=True, write=True,
                              longterm=True, name=name, cpu=t.cpu)
            buffers.rw = name
        if p.ro_buffer_pages:
            name = f"rdma-ro-{g}"
            yield from t.call(k.gup, mm, p.rw_buffer_pages, p.ro_buffer_pages, pin=True,
                              write=False, longterm=True, name=name, cpu=t.cpu)
            buffers.ro = name

    def _unregister(self, t: Thread, buffers: _Buffers) -> ThreadGen:
        k = t.kernel
        names = (buffers.rw, buffers.ro)
        buffers.rw = buffers.ro = None  # the device stops using them first
        for name in names:
            if name is not None:
                yield from t.call(k.put, name)

    def _app(self, t: Thread, run: Run, mm: MM, buffers: _Buffers) -> ThreadGen:
        p = self.p
        rng = run.rng
        clock = t.kernel.clock
        nbuf = p.rw_buffer_pages + p.ro_buffer_pages
        total = nbuf + p.heap_pages
        yield from t.write_range(mm, 0, total)
        yield from self._register(t, mm, buffers)
        fork_period = round(p.fork_period_ms * 1e6)
        rereg_period = round(p.reregister_period_ms * 1e6)
        next_fork = clock.now + fork_period if fork_period else None
        next_rereg = clock.now + rereg_period if rereg_period else None
        children = 0
        end = p.duration_ns
        while clock.now < end:
            if next_fork is not None and clock.now >= next_fork:
                children += 1
                child = yield from t.fork(mm, f"app-child-{children}")
                run.spawn(f"child-{children}",
                          functools.partial(self._child, run=run, child=child), cpu=1, mm=child)
                next_fork = clock.now + fork_period
            if next_rereg is not None and clock.now >= next_rereg:
                yield from self._unregister(t, buffers)
                yield from self._register(t, mm, buffers)
                next_rereg = clock.now + rereg_period
            if p.heap_pages == 0 or (nbuf and rng.random() < p.buffer_write_ratio):
                page = randbelow(rng, nbuf)
            else:
                page = nbuf + randbelow(rng, p.heap_pages)
            yield from t.write(mm, page)
            yield from t.think(p.write_interval_ns)

    def _child(self, t: Thread, run: Run, child: MM) -> ThreadGen:
        k = t.kernel
        total = self.p.rw_buffer_pages + self.p.ro_buffer_pages + self.p.heap_pages
        for _ in range(self.p.child_reads):
            yield from t.read(child, randbelow(run.rng, total))
        yield from t.call(k.exit_mm, child)

    def _device(self, t: Thread, buffers: _Buffers) -> ThreadGen:
        k = t.kernel
        while True:
            yield from t.sleep(self.p.dma_interval_ns)
            if buffers.rw is not None:
                yield from t.call(k.gup_write, buffers.rw)

    def _monitor(self, t: Thread, mm: MM) -> ThreadGen:
        k = t.kernel
        period = round(self.p.softdirty_period_ms * 1e6)
        while mm.alive:
            yield from t.sleep(period)
            yield from t.call(k.clear_softdirty, mm)
