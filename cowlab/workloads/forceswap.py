"""``forceswap-v1``: Nadav Amit's reproducer from the November 2021 mailing-list thread.

``forceswap nthreads nops npages``: helper threads spin on the other CPUs (so the mm
is live there and a COW copy needs a remote TLB shootdown); the main thread loops
``nops`` times over: MADV_PAGEOUT of ``npages`` pages, then for each page a read
(which swaps it back in, mapped read-only) followed by a timed write. Whether that
write reuses the page or copies it is exactly what v5.8 -> v5.9 -> v5.18 changed.

On an asynchronous device (ssd, nvme) the swap-out of a page is only started by
MADV_PAGEOUT: the folio stays in the swapcache under writeback for the device's write
latency, and a folio under writeback cannot be reclaimed (shrink_folio_list() keeps it,
"case 2" of its writeback handling). A page the write reused in place (v5.7/v5.8's
reuse_swap_page(), v5.19's PageAnonExclusive) is still under writeback when the next
iteration's MADV_PAGEOUT comes, so that call leaves it mapped and writable, and the
iteration's read and write do not fault at all: before this was handled, the loop ran
its ``nops`` iterations with a decision only once per write latency (10 decisions for
2,000 iterations on an ssd with v5.19). The loop therefore does what a program timing
swap-in faults has to do: after MADV_PAGEOUT it reads /proc/self/pagemap, and while a
page of the buffer is still present and swap I/O is in flight it sleeps until that I/O
completes and calls MADV_PAGEOUT again, so every iteration really swaps every page out
and times a real fault. The pagemap read is not charged (it is outside the timed
fault); on a synchronous device the first MADV_PAGEOUT always succeeds, so those runs
are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from cowlab.kernel.costs import DEVICES
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.workloads.base import Run


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class ForceswapParams:
    """Parameters of ``forceswap-v1``."""

    #: Helper threads spinning on other CPUs (CPUs 1..nthreads).
    nthreads: int = 1
    #: Loop iterations (each: pageout, then read + write every page).
    nops: int = 100_000
    #: Pages in the buffer.
    npages: int = 1
    #: Swap device: zram, pmem (synchronous) or ssd, nvme (asynchronous).
    swap: str = "pmem"
    #: User time between the read and the write of a page, in ns.
    think_ns: int = 100

    def __post_init__(self) -> None:
        if not 0 <= self.nthreads <= 63:
            raise ValueError(f"nthreads must be 0..63, got {self.nthreads}")
        if self.nops < 1:
            raise ValueError(f"nops must be at least 1, got {self.nops}")
        if not 1 <= self.npages <= 1 << 20:
            raise ValueError(f"npages must be 1..1048576, got {self.npages}")
        if self.swap not in DEVICES:
            raise ValueError(f"swap must be one of {', '.join(DEVICES)}, got {self.swap!r}")
        if self.think_ns < 0:
            raise ValueError(f"think_ns must be non-negative, got {self.think_ns}")


@mypyc_attr(allow_interpreted_subclasses=True)
class Forceswap:
    """The forceswap loop on the engine."""

    id = "forceswap-v1"

    def __init__(self, nthreads: int = 1, nops: int = 100_000, npages: int = 1,
                 swap: str = "pmem", think_ns: int = 100) -> None:
        self.p = ForceswapParams(nthreads, nops, npages, swap, think_ns)

    def machine_overrides(self) -> Mapping[str, object]:
        """At least one CPU per thread, and the chosen swap device."""
        return {"cpus": self.p.nthreads + 1, "swap": self.p.swap}

    def setup(self, run: Run) -> None:
        """Map the buffer, start the helpers, then the main loop."""
        mm = run.mm("forceswap")
        run.kernel.mmap(mm, 0, self.p.npages)
        for i in range(self.p.nthreads):
            run.spawn(f"helper{i + 1}", self._helper, cpu=i + 1, mm=mm, daemon=True)
        run.spawn("main", self._main, cpu=0, mm=mm)

    def _helper(self, t: Thread) -> ThreadGen:
        # A spinning thread: it touched the buffer once, then burns its CPU.
        assert t.mm is not None
        yield from t.read(t.mm, 0)
        while True:
            yield from t.think(1_000_000)

    def _until_swapped_out(self, t: Thread) -> ThreadGen:
        """Repeat MADV_PAGEOUT after each swap I/O completion while a page of the buffer is
        still present (pagemap's present bit) and I/O is in flight (see the module
        docstring). A page that cannot be swapped out with no I/O pending stays mapped."""
        mm = t.mm
        assert mm is not None
        k = t.kernel
        npages = self.p.npages
        while any(mm.pt.get(page, 0) & 1 for page in range(npages)):
            due = k.clock.next_event_time()
            if due is None:
                return
            yield from t.sleep(max(1, due - k.clock.now))
            yield from t.madvise(mm, 0, npages, "pageout")

    def _main(self, t: Thread) -> ThreadGen:
        mm = t.mm
        assert mm is not None
        p = self.p
        yield from t.write_range(mm, 0, p.npages)
        for _ in range(p.nops):
            yield from t.madvise(mm, 0, p.npages, "pageout")
            pt = mm.pt
            for page in range(p.npages):
                if pt.get(page, 0) & 1:
                    yield from self._until_swapped_out(t)
                    break
            for page in range(p.npages):
                yield from t.read(mm, page)
                yield from t.think(p.think_ns)
                yield from t.write(mm, page)
