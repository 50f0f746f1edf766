"""``vmsplice-pipe-v1``: forked workers vmsplice() shared pages into pipes, then go away.

The CVE-2020-29374 pattern as a workload. A server keeps writing a dataset (Zipf-skewed
keys, as ``fork-snapshot-v1``); every ``splice_period_ms`` it forks a worker that
vmsplice()s ``pages_per_splice`` pages of the inherited dataset into a pipe (a FOLL_GET
reference per page, taken by the *worker's* mm) and exits at once; the pipe is read
``pipe_lifetime_us`` later (the references are dropped then). Until the pipe is read, a
write by the server to one of those pages must be copied: whatever the server writes in
place, the pipe's reader sees. A rule that looks only at mapcounts (v5.7, and the swap
and THP paths up to v5.17) reuses the page and leaks; refcount rules copy.
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
class VmsplicePipeParams(CommonParams):
    """Parameters of ``vmsplice-pipe-v1``."""

    #: Pages of the server's dataset (1..2^20).
    pages: int = 1024
    #: Writes per simulated second by the server.
    write_rate: float = 1_000_000.0
    #: Zipf exponent of the key popularity (0: uniform).
    skew: float = 0.99
    #: Time between two worker forks, ms.
    splice_period_ms: float = 0.5
    #: Pages each worker splices into its pipe (drawn from the same key popularity).
    pages_per_splice: int = 16
    #: How long a pipe holds its pages before the reader drains it, us.
    pipe_lifetime_us: float = 200.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("pages", self.pages, 1, 1 << 20)
        check_range("write_rate", self.write_rate, 1, 1e9)
        check_range("skew", self.skew, 0, 5)
        check_range("splice_period_ms", self.splice_period_ms, 0.001, 1e6)
        check_range("pages_per_splice", self.pages_per_splice, 1, self.pages)
        check_range("pipe_lifetime_us", self.pipe_lifetime_us, 0, 1e9)


@mypyc_attr(allow_interpreted_subclasses=True)
class VmsplicePipe:
    """The vmsplice-and-exit pattern on the engine (see the module docstring)."""

    id = "vmsplice-pipe-v1"

    def __init__(self, **params: Any) -> None:
        self.p = VmsplicePipeParams(**params)

    def machine_overrides(self) -> Mapping[str, object]:
        """The server's CPU, the workers' CPU, and one for background actors if any."""
        return {"cpus": 2 + actor_cpus(self.p.actors())}

    def setup(self, run: Run) -> None:
        """Map the dataset and start the server (and the actors)."""
        mm = run.mm("server")
        run.kernel.mmap(mm, 0, self.p.pages)
        keys = ZipfKeys(self.p.pages, self.p.skew, run.rng)
        start_actors(run, self.p.actors())
        run.spawn("server", lambda t: self._server(t, run, mm, keys), cpu=0, mm=mm)

    def _server(self, t: Thread, run: Run, mm: MM, keys: ZipfKeys) -> ThreadGen:
        p = self.p
        rng = run.rng
        interval = max(1, round(1e9 / p.write_rate))
        period = max(1, round(p.splice_period_ms * 1e6))
        clock = t.kernel.clock
        yield from t.write_range(mm, 0, p.pages)
        next_fork = clock.now + period
        generation = 0
        end = p.duration_ns
        while clock.now < end:
            if clock.now >= next_fork:
                generation += 1
                child = yield from t.fork(mm, f"worker-{generation}")
                chosen = sorted({keys.sample(rng) for _ in range(p.pages_per_splice)})
                run.spawn(f"worker-{generation}",
                          functools.partial(self._worker, child=child, pages=chosen,
                                            generation=generation),
                          cpu=1, mm=child)
                next_fork = clock.now + period
            yield from t.write(mm, keys.sample(rng))
            yield from t.think(interval)

    def _worker(self, t: Thread, child: MM, pages: list[int], generation: int) -> ThreadGen:
        k = t.kernel
        names = []
        for page in pages:
            name = f"pipe-{generation}-{page}"
            yield from t.call(k.gup, child, page, 1, pin=False, write=False, name=name,
                              cpu=t.cpu)
            names.append(name)
        yield from t.call(k.exit_mm, child)
        # The pipe's reader drains it later: the references go away then.
        yield from t.sleep(round(self.p.pipe_lifetime_us * 1000))
        for name in names:
            yield from t.call(k.put, name)
