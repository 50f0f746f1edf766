"""``softdirty-tracking-v1``: write tracking of exclusive pages by soft-dirty and uffd-wp.

Two trackers write-protect pages that are certainly exclusive, so that every write
fault they cause should be a reuse; a rule that copies there only wastes memory and
time:

* **CRIU iterative pre-dump** (``mode`` ``criu``): the dumped process writes its memory
  while CRIU, every ``criu_period_ms``, reads which pages are soft-dirty
  (``/proc/pid/pagemap``), spends ``criu_page_ns`` per dirty page copying it out, and
  clears the soft-dirty bits (``echo 4 > /proc/pid/clear_refs``, fs/proc/task_mmu.c
  ``clear_soft_dirty()``), which write-protects every PTE. Since 64fe24a3e05e (v6.0)
  ``mprotect()`` may not map such a page writable again before it is written.
* **QEMU background snapshot** (``mode`` ``qemu``): the VM's RAM is registered with
  userfaultfd in write-protect mode; every ``qemu_period_ms`` a snapshot starts: all of
  RAM is write-protected (UFFDIO_WRITEPROTECT), then the migration thread saves it
  ``qemu_chunk_pages`` at a time (``qemu_page_ns`` per page) and removes the protection
  of what it saved. A guest write to a page not yet saved is delivered to QEMU, which
  saves that page at once and unprotects it (the fault retries; cowlab's kernel does
  this inline); v6.0+ maps a page that is provably exclusive writable at once, earlier
  kernels leave it to a write fault.

``mode`` ``both`` runs the two side by side (two processes, CPUs 0 and 1 for the writers,
2 for CRIU and QEMU's migration thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from cowlab.geometry import pte_present, pte_soft_dirty
from cowlab.kernel.actors import start_actors
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.kernel.mm import MM
from cowlab.workloads.base import Run
from cowlab.workloads.common import CommonParams, ZipfKeys, actor_cpus, check_range

MODES = ("criu", "qemu", "both")


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class SoftdirtyTrackingParams(CommonParams):
    """Parameters of ``softdirty-tracking-v1``."""

    #: Which tracker runs: criu, qemu or both.
    mode: str = "both"
    #: Pages of the tracked process (and of the VM's RAM).
    pages: int = 1024
    #: Zipf exponent of the writers' page choice (0: uniform).
    skew: float = 0.8
    #: Time between two writes of a writer, ns.
    write_interval_ns: int = 1_000
    #: CRIU: time between two pre-dump iterations (read soft-dirty, clear_refs), ms.
    criu_period_ms: float = 1.0
    #: CRIU: time spent dumping one dirty page, ns.
    criu_page_ns: int = 100
    #: QEMU: time between two background snapshots, ms.
    qemu_period_ms: float = 2.0
    #: QEMU: pages saved (and unprotected) per step of the migration thread.
    qemu_chunk_pages: int = 64
    #: QEMU: time spent saving one page, ns.
    qemu_page_ns: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_range("pages", self.pages, 1, 1 << 20)
        check_range("skew", self.skew, 0, 5)
        check_range("write_interval_ns", self.write_interval_ns, 1, 1e9)
        check_range("criu_period_ms", self.criu_period_ms, 0.001, 1e6)
        check_range("criu_page_ns", self.criu_page_ns, 0, 1e9)
        check_range("qemu_period_ms", self.qemu_period_ms, 0.001, 1e6)
        check_range("qemu_chunk_pages", self.qemu_chunk_pages, 1, 1 << 20)
        check_range("qemu_page_ns", self.qemu_page_ns, 0, 1e9)


@mypyc_attr(allow_interpreted_subclasses=True)
class SoftdirtyTracking:
    """CRIU soft-dirty pre-dumps and QEMU uffd-wp snapshots (see the module docstring)."""

    id = "softdirty-tracking-v1"

    def __init__(self, **params: Any) -> None:
        self.p = SoftdirtyTrackingParams(**params)

    def machine_overrides(self) -> Mapping[str, object]:
        """Two writer CPUs, one for the trackers, one for background actors if any."""
        return {"cpus": 3 + actor_cpus(self.p.actors())}

    def setup(self, run: Run) -> None:
        """Map and start the tracked processes and their trackers."""
        p = self.p
        k = run.kernel
        start_actors(run, p.actors())
        if p.mode in ("criu", "both"):
            mm = run.mm("criu-target")
            k.mmap(mm, 0, p.pages)
            keys = ZipfKeys(p.pages, p.skew, run.rng)
            run.spawn("criu-target", lambda t: self._writer(t, run, mm, keys), cpu=0, mm=mm)
            run.spawn("criu", lambda t: self._criu(t, mm), cpu=2, daemon=True)
        if p.mode in ("qemu", "both"):
            vm = run.mm("qemu-vm")
            k.mmap(vm, 0, p.pages)
            keys = ZipfKeys(p.pages, p.skew, run.rng)
            run.spawn("vcpu", lambda t: self._writer(t, run, vm, keys), cpu=1, mm=vm)
            run.spawn("qemu-migration", lambda t: self._qemu(t, vm), cpu=2, daemon=True)

    def _writer(self, t: Thread, run: Run, mm: MM, keys: ZipfKeys) -> ThreadGen:
        p = self.p
        yield from t.write_range(mm, 0, p.pages)
        clock = t.kernel.clock
        end = p.duration_ns
        interval = p.write_interval_ns
        rng = run.rng
        while clock.now < end:
            yield from t.write(mm, keys.sample(rng))
            yield from t.think(interval)

    def _criu(self, t: Thread, mm: MM) -> ThreadGen:
        """CRIU's pre-dump loop: pagemap scan, dump the dirty pages, clear_refs."""
        p = self.p
        k = t.kernel
        period = round(p.criu_period_ms * 1e6)
        while mm.alive:
            yield from t.sleep(period)
            dirty = sum(
                1 for pte in mm.pt.values() if pte_present(pte) and pte_soft_dirty(pte)
            )
            yield from t.think(dirty * p.criu_page_ns)
            yield from t.call(k.clear_softdirty, mm)

    def _qemu(self, t: Thread, vm: MM) -> ThreadGen:
        """QEMU's background snapshot: protect all RAM, then save and unprotect it."""
        p = self.p
        k = t.kernel
        period = round(p.qemu_period_ms * 1e6)
        chunk = p.qemu_chunk_pages
        while vm.alive:
            yield from t.sleep(period)
            yield from t.call(k.uffd_wp, vm, 0, p.pages, True)
            for start in range(0, p.pages, chunk):
                n = min(chunk, p.pages - start)
                yield from t.think(n * p.qemu_page_ns)
                yield from t.call(k.uffd_wp, vm, start, n, False)
