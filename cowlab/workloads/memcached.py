"""``memcached-pressure-v1``: a multi-threaded cache server under memory pressure.

memcached keeps its items in slab pages of one big anonymous heap, served by several
worker threads. Here the machine has less RAM (``ram_pages``) than the working set
(``pages``), with swap on a fast device (``swap``, pmem by default, as in the v5.18
discussion of swap on persistent memory): kswapd (on its own CPU) and direct reclaim
swap pages out, and requests fault them back in. The write fault that follows a swap-in
is the decision that v5.9 turned into a copy (the swapcache and LRU-batch references)
and v5.18 / v5.19 made a reuse again, and worker threads that the scheduler moves
between CPUs leave LRU-batch references behind on the CPU they left, which a local
``lru_add_drain()`` cannot drop.

A loader thread SETs every item once (CPU 0), then ``threads`` workers (on CPUs
``0..cpus-1``, round robin) serve requests: a key drawn with Zipf skew ``skew``, a GET
(read) or with probability ``set_ratio`` a SET (write), ``request_ns`` of user time each.
After each request a worker moves to another CPU with probability ``migrate_prob``
(the scheduler's load balancing; ``Engine.migrate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from cowlab.kernel.actors import start_actors
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.kernel.mm import MM
from cowlab.workloads.base import Run
from cowlab.workloads.common import (
    CommonParams,
    ZipfKeys,
    actor_cpus,
    check_range,
    check_swap,
    randbelow,
    throttle_reclaim,
)


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class MemcachedPressureParams(CommonParams):
    """Parameters of ``memcached-pressure-v1``."""

    kswapd: bool = True
    #: Worker threads (1..63).
    threads: int = 4
    #: CPUs the workers run on (0: one per thread).
    cpus: int = 0
    #: Working set: pages of items.
    pages: int = 4096
    #: RAM of the machine in pages (at least 256); below ``pages`` for memory pressure.
    ram_pages: int = 3072
    #: Swap device: pmem, zram (synchronous) or ssd, nvme (asynchronous).
    swap: str = "pmem"
    #: Zipf exponent of the key popularity (0: uniform).
    skew: float = 0.9
    #: Fraction of requests that are SETs (writes).
    set_ratio: float = 0.1
    #: User time per request, ns.
    request_ns: int = 2_000
    #: Probability that a worker moves to another CPU after a request.
    migrate_prob: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("threads", self.threads, 1, 63)
        check_range("cpus", self.cpus, 0, 63)
        check_range("pages", self.pages, 1, 1 << 20)
        check_range("ram_pages", self.ram_pages, 256, 1 << 30)
        check_swap(self.swap)
        check_range("skew", self.skew, 0, 5)
        check_range("set_ratio", self.set_ratio, 0, 1)
        check_range("request_ns", self.request_ns, 1, 1e9)
        check_range("migrate_prob", self.migrate_prob, 0, 1)

    @property
    def worker_cpus(self) -> int:
        """CPUs the workers use."""
        return self.cpus or self.threads


@mypyc_attr(allow_interpreted_subclasses=True)
class MemcachedPressure:
    """memcached under memory pressure with swap (see the module docstring)."""

    id = "memcached-pressure-v1"

    def __init__(self, **params: Any) -> None:
        self.p = MemcachedPressureParams(**params)

    def machine_overrides(self) -> Mapping[str, object]:
        """Worker CPUs plus one for kswapd and the other actors; limited RAM and swap."""
        p = self.p
        return {
            "cpus": p.worker_cpus + actor_cpus(p.actors()),
            "ram_pages": p.ram_pages,
            "swap": p.swap,
        }

    def setup(self, run: Run) -> None:
        """Map the item heap, start the actors and the loader."""
        p = self.p
        mm = run.mm("memcached")
        run.kernel.mmap(mm, 0, p.pages)
        keys = ZipfKeys(p.pages, p.skew, run.rng)
        start_actors(run, p.actors())
        run.spawn("loader", lambda t: self._loader(t, run, mm, keys), cpu=0, mm=mm)

    def _loader(self, t: Thread, run: Run, mm: MM, keys: ZipfKeys) -> ThreadGen:
        for page in range(self.p.pages):
            yield from throttle_reclaim(t)
            yield from t.write(mm, page)
        for i in range(self.p.threads):
            run.spawn(f"worker{i}", lambda w: self._worker(w, run, mm, keys),
                      cpu=i % self.p.worker_cpus, mm=mm)

    def _worker(self, t: Thread, run: Run, mm: MM, keys: ZipfKeys) -> ThreadGen:
        p = self.p
        rng = run.rng
        clock = t.kernel.clock
        ncpus = p.worker_cpus
        end = p.duration_ns
        while clock.now < end:
            key = keys.sample(rng)
            yield from throttle_reclaim(t)
            if rng.random() < p.set_ratio:
                yield from t.write(mm, key)
            else:
                yield from t.read(mm, key)
            yield from t.think(p.request_ns)
            if ncpus > 1 and p.migrate_prob and rng.random() < p.migrate_prob:
                target = randbelow(rng, ncpus - 1)
                t.engine.migrate(t, target + (target >= t.cpu))
                yield from t.sleep(0)  # the context switch onto the new CPU
