"""``fork-snapshot-v1``: a Redis-like server snapshotting its dataset with fork().

Redis persists its dataset with BGSAVE (an RDB snapshot) and compacts its append-only
file with BGREWRITEAOF; both fork() a child that walks the whole dataset and writes it
out, then exits, while the parent keeps serving writes. Every first write of the parent
to a page after the fork is a COW fault: while the child lives the page is shared and
must be copied; once the child has exited it is exclusive again, and whether the
kernel reuses it depends on the era's rule (refcount, LRU batch, PageAnonExclusive).
The Redis documentation's "copy-on-write" memory overhead of BGSAVE is exactly the
copies made here.

The parent (one thread, CPU 0, as Redis's main thread) loads the dataset (one write
per page), then serves writes: a key drawn from a Zipf distribution of skew ``skew``
(0: uniform) every ``1e9 / write_rate`` ns. Every ``snapshot_period_ms`` the main
thread fork()s (when no child is still running, as Redis runs one at a time); the
child (CPU 1) reads every page, spending ``child_page_ns`` on each (serialising and
writing it out), and exits.

The "with THP" variant (Redis recommends disabling THP because a 2 MiB COW copy per
first write after fork multiplies the overhead) needs large folios, which the kernel
does not model yet.
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
from cowlab.workloads.common import CommonParams, ZipfKeys, actor_cpus, check_range


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class ForkSnapshotParams(CommonParams):
    """Parameters of ``fork-snapshot-v1``."""

    #: Working set: pages of the dataset (1..2^20).
    pages: int = 2048
    #: Writes per simulated second by the server (the time between two writes is
    #: 1e9 / write_rate ns, spent serving the request).
    write_rate: float = 1_000_000.0
    #: Zipf exponent of the key popularity (0: uniform; YCSB uses 0.99).
    skew: float = 0.99
    #: Time from one snapshot start to the next, ms (a snapshot starts only after the
    #: previous child exited).
    snapshot_period_ms: float = 2.0
    #: Time the child spends on each page it saves, ns.
    child_page_ns: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("pages", self.pages, 1, 1 << 20)
        check_range("write_rate", self.write_rate, 1, 1e9)
        check_range("skew", self.skew, 0, 5)
        check_range("snapshot_period_ms", self.snapshot_period_ms, 0.001, 1e6)
        check_range("child_page_ns", self.child_page_ns, 0, 1e9)


@mypyc_attr(allow_interpreted_subclasses=True)
class ForkSnapshot:
    """The Redis BGSAVE / AOF-rewrite pattern on the engine (see the module docstring)."""

    id = "fork-snapshot-v1"

    def __init__(self, **params: Any) -> None:
        self.p = ForkSnapshotParams(**params)

    def machine_overrides(self) -> Mapping[str, object]:
        """The server's CPU, the child's CPU, and one for background actors if any."""
        return {"cpus": 2 + actor_cpus(self.p.actors())}

    def setup(self, run: Run) -> None:
        """Map the dataset and start the server (and the actors)."""
        p = self.p
        mm = run.mm("redis")
        run.kernel.mmap(mm, 0, p.pages)
        keys = ZipfKeys(p.pages, p.skew, run.rng)
        start_actors(run, p.actors())
        run.spawn("redis-server", lambda t: self._server(t, run, mm, keys), cpu=0, mm=mm)

    def _server(self, t: Thread, run: Run, mm: MM, keys: ZipfKeys) -> ThreadGen:
        p = self.p
        rng = run.rng
        interval = max(1, round(1e9 / p.write_rate))
        period = max(1, round(p.snapshot_period_ms * 1e6))
        end = p.duration_ns
        yield from t.write_range(mm, 0, p.pages)  # loading the dataset
        clock = t.kernel.clock
        next_snapshot = clock.now + period
        child_running = [False]
        generation = 0
        while clock.now < end:
            if clock.now >= next_snapshot and not child_running[0]:
                generation += 1
                child = yield from t.fork(mm, f"redis-bgsave-{generation}")
                child_running[0] = True
                run.spawn(f"bgsave-{generation}",
                          functools.partial(self._child, child=child, running=child_running),
                          cpu=1, mm=child)
                next_snapshot = clock.now + period
            yield from t.write(mm, keys.sample(rng))
            yield from t.think(interval)

    def _child(self, t: Thread, child: MM, running: list[bool]) -> ThreadGen:
        k = t.kernel
        for page in range(self.p.pages):
            yield from t.read(child, page)
            yield from t.think(self.p.child_page_ns)
        yield from t.call(k.exit_mm, child)
        running[0] = False
