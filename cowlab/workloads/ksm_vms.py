"""``ksm-vms-v1``: virtual machines whose memory KSM merges, then the guests write.

A VM host runs ``vms`` guests (one mm each, QEMU marks guest RAM MADV_MERGEABLE) whose
RAM holds many pages of equal content (the same guest kernel and libraries, zeroed
pages): a fraction ``shared_fraction`` of each guest's ``pages`` holds one of
``distinct_contents`` common contents, the rest is unique. ksmd (on its own CPU)
scans ``ksm_pages_to_scan`` pages every ``ksm_sleep_ms`` and merges equal pages into
read-only KSM pages, holding each candidate's page lock for ``ksm_merge_window_us``
after write-protecting it.

After ``idle_ms`` of idling (while ksmd merges) each guest's vCPU (one per guest) writes
a page every ``write_interval_ns`` (Zipf skew ``skew``): a write to a KSM page is
always copied (``cow_ksm``; v5.9+ never reuses a KSM page, 09854ba94c6a), a write to a
page ksmd has write-protected takes a write fault whose trylock fails while the merge
window is open, and a write to a page whose merge failed finds it read-only but
exclusive.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr

from cowlab.kernel.actors import ActorsConfig, KsmdConfig, start_actors
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.kernel.mm import MM
from cowlab.workloads.base import Run
from cowlab.workloads.common import CommonParams, ZipfKeys, check_range, randbelow


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class KsmVmsParams(CommonParams):
    """Parameters of ``ksm-vms-v1``."""

    #: Guests (one mm and one vCPU thread each), 1..32.
    vms: int = 4
    #: RAM pages per guest.
    pages: int = 512
    #: Fraction of a guest's pages holding a common content.
    shared_fraction: float = 0.5
    #: Number of distinct common contents.
    distinct_contents: int = 32
    #: Time the guests idle before they start writing, ms.
    idle_ms: float = 2.0
    #: Time between two writes of a vCPU, ns.
    write_interval_ns: int = 5_000
    #: Zipf exponent of a vCPU's page choice (0: uniform).
    skew: float = 0.5
    #: Run ksmd.
    ksmd: bool = True
    #: ksmd: pages scanned per wake.
    ksm_pages_to_scan: int = 100
    #: ksmd: sleep between two wakes, ms (the kernel's default is 20).
    ksm_sleep_ms: float = 0.2
    #: ksmd: how long one merge attempt holds the page locks, us.
    ksm_merge_window_us: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("vms", self.vms, 1, 32)
        check_range("pages", self.pages, 1, 1 << 20)
        check_range("shared_fraction", self.shared_fraction, 0, 1)
        check_range("distinct_contents", self.distinct_contents, 1, 1 << 20)
        check_range("idle_ms", self.idle_ms, 0, 1e6)
        check_range("write_interval_ns", self.write_interval_ns, 1, 1e9)
        check_range("skew", self.skew, 0, 5)
        check_range("ksm_pages_to_scan", self.ksm_pages_to_scan, 1, 1 << 20)
        check_range("ksm_sleep_ms", self.ksm_sleep_ms, 0.001, 1e6)
        check_range("ksm_merge_window_us", self.ksm_merge_window_us, 0.001, 1e6)

    def actors(self) -> ActorsConfig:
        """The common actors plus ksmd."""
        base = super().actors()
        if not self.ksmd:
            return base
        return ActorsConfig(
            kswapd=base.kswapd,
            kcompactd=base.kcompactd,
            lru_drain_all=base.lru_drain_all,
            ksmd=KsmdConfig(
                pages_to_scan=self.ksm_pages_to_scan,
                sleep_ns=max(1, round(self.ksm_sleep_ms * 1e6)),
                merge_window_ns=max(1, round(self.ksm_merge_window_us * 1e3)),
            ),
        )


@mypyc_attr(allow_interpreted_subclasses=True)
class KsmVms:
    """VM guests with mergeable memory under ksmd (see the module docstring)."""

    id = "ksm-vms-v1"

    def __init__(self, **params: Any) -> None:
        self.p = KsmVmsParams(**params)

    def machine_overrides(self) -> Mapping[str, object]:
        """One CPU per vCPU plus one for ksmd and the other actors."""
        return {"cpus": self.p.vms + (1 if self.p.actors().enabled else 0)}

    def setup(self, run: Run) -> None:
        """Map guest RAM (MADV_MERGEABLE), start ksmd and the vCPUs."""
        p = self.p
        k = run.kernel
        start_actors(run, p.actors())
        for i in range(p.vms):
            vm = run.mm(f"vm{i}")
            k.mmap(vm, 0, p.pages)
            k.madvise(vm, 0, p.pages, "mergeable")
            # Which pages hold common content, and which content: fixed per guest.
            contents: list[object] = [
                ("common", randbelow(run.rng, p.distinct_contents))
                if run.rng.random() < p.shared_fraction
                else None
                for _ in range(p.pages)
            ]
            keys = ZipfKeys(p.pages, p.skew, run.rng)
            body = functools.partial(self._vcpu, run=run, vm=vm, contents=contents, keys=keys)
            run.spawn(f"vcpu{i}", body, cpu=i, mm=vm)

    def _vcpu(self, t: Thread, run: Run, vm: MM, contents: list[object],
              keys: ZipfKeys) -> ThreadGen:
        p = self.p
        for page, data in enumerate(contents):  # the guest boots and fills its RAM
            yield from t.write(vm, page, data)
        yield from t.sleep(round(p.idle_ms * 1e6))
        clock = t.kernel.clock
        end = p.duration_ns
        interval = p.write_interval_ns
        rng = run.rng
        while clock.now < end:
            yield from t.write(vm, keys.sample(rng))
            yield from t.think(interval)
