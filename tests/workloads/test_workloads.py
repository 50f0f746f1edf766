"""Each shipped workload models what its documentation says, and validates its parameters.

One test per workload pins down the kernel behaviour it exists to exercise, seen
through the decisions, the ground truth and the counters of a short run.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main
from cowlab.kernel import Kernel
from cowlab.metrics import summarize
from cowlab.plugins import PluginError, get_registry
from cowlab.workloads import machine_for
from tests.workloads.helpers import SMALL, build

ROOT = Path(__file__).resolve().parents[2]


def run(name: str, params: dict[str, Any] | None = None, *, preset: str, policy: str,
        decisions: int = 1000, seed: int = 0) -> Kernel:
    r = build(name, {**SMALL[name], **(params or {})}, preset=preset, policy=policy,
              seed=seed, decisions=decisions, time_ms=50)
    r.execute()
    assert r.kernel.check_invariants() == []
    return r.kernel


def metrics(k: Kernel) -> dict[str, Any]:
    return summarize(k.records, k.counters)


def decided(k: Kernel, mm_prefix: str = "") -> list[Any]:
    return [r for r in k.records if r.outcome in ("reuse", "copy") and
            r.mm.startswith(mm_prefix)]


# --------------------------------------------------------------------- fork-snapshot-v1
def test_fork_snapshot_copies_while_the_child_lives_and_reuses_after_it_exited() -> None:
    k = run("fork-snapshot-v1", preset="v5.9", policy="baseline")
    children = [mm for mm in k.mms.values() if mm.name.startswith("redis-bgsave-")]
    assert len(children) >= 3 and not any(mm.alive for mm in children[:-1])
    faults = decided(k, "redis")
    copies = [r for r in faults if r.outcome == "copy"]
    reuses = [r for r in faults if r.outcome == "reuse"]
    # Every copy was of a page the child still mapped; every reuse of an exclusive one.
    assert copies and not any(r.exclusive for r in copies)
    assert reuses and all(r.exclusive for r in reuses)
    leaky = run("fork-snapshot-v1", preset="v5.19", policy="always-reuse")
    assert metrics(leaky)["violations"]["leak"] > 0


# ------------------------------------------------------------------------- pinned-io-v1
def test_pinned_io_breaks_long_term_pins_before_v5_19_and_not_after() -> None:
    """Soft-dirty clears write-protect the pinned buffers: the page_count rule sees the
    pin bias and copies (the pin becomes incoherent); PageAnonExclusive reuses."""
    v5_9 = run("pinned-io-v1", preset="v5.9", policy="baseline")
    assert metrics(v5_9)["violations"]["pin_incoherent"] > 0
    assert v5_9.counters["nr_foll_pin_acquired"] >= 48
    # The device wrote into the registered R/W buffers by DMA.
    [rw] = [name for name in v5_9.gup_names if name.startswith("rdma-rw-")]
    assert any(isinstance(d, tuple) and d[0] == "dma" for d in v5_9.gup_read(rw))
    v5_19 = run("pinned-io-v1", preset="v5.19", policy="exclusive")
    assert metrics(v5_19)["violations_total"] == 0
    # v5.8 does not copy pinned pages at fork: the parent's write copies its pin away.
    v5_8 = run("pinned-io-v1", {"softdirty_period_ms": 0.0}, preset="v5.8", policy="legacy")
    assert metrics(v5_8)["violations"]["pin_incoherent"] > 0


# --------------------------------------------------------------- memcached-pressure-v1
def test_memcached_swaps_under_pressure_and_workers_leave_remote_batch_references() -> None:
    params = {"duration_ms": 10.0}
    k = run("memcached-pressure-v1", params, preset="v5.18", policy="patched-lru")
    assert k.machine.ram_pages == 400 and k.machine.swap == "pmem"
    assert k.counters["pswpout"] > 0 and k.counters["pswpin"] > 0
    workers = {r.cpu for r in k.records if r.mm == "memcached"}
    assert workers >= {0, 1, 2, 3}
    blockers = metrics(k)["unnecessary_copies_by_blocker"]
    assert blockers.get("lru_batch_remote", 0) > 0
    # v5.19 restores PageAnonExclusive from the swap PTE: nothing blocks reuse.
    v5_19 = run("memcached-pressure-v1", params, preset="v5.19", policy="exclusive")
    assert metrics(v5_19)["unnecessary_copies"] == 0 and v5_19.counters["pswpin"] > 0


# --------------------------------------------------------------- softdirty-tracking-v1
@pytest.mark.parametrize("mode", ["criu", "qemu"])
def test_write_tracking_faults_only_on_exclusive_pages(mode: str) -> None:
    k = run("softdirty-tracking-v1", {"mode": mode}, preset="v5.9", policy="baseline")
    faults = decided(k)
    assert faults and {r.mm for r in faults} == {"criu-target" if mode == "criu" else "qemu-vm"}
    assert all(r.exclusive for r in faults)
    assert metrics(k)["violations_total"] == 0


def test_v6_0_unprotects_exclusive_pages_writable_so_qemu_snapshots_cause_no_wp_fault() -> None:
    """can_change_pte_writable() (64fe24a3e05e): removing uffd-wp maps a PAE, dirty page
    writable at once; before, the write after the snapshot thread's unprotect faults."""
    assert decided(run("softdirty-tracking-v1", {"mode": "qemu"}, preset="v5.19",
                       policy="exclusive"))
    assert not decided(run("softdirty-tracking-v1", {"mode": "qemu"}, preset="v6.9",
                           policy="large-strict"))


# ---------------------------------------------------------------------------- ksm-vms-v1
def test_ksm_vms_merge_equal_guest_pages_and_every_write_to_one_copies() -> None:
    k = run("ksm-vms-v1", preset="v5.19", policy="exclusive")
    assert k.counters["ksm_merged"] > 0 and k.counters["cow_ksm"] > 0
    assert {r.reason for r in decided(k)} == {"ksm"}
    # Before v5.9 a KSM page mapped once (its last user) was reused (reuse_ksm_page()).
    v5_8 = run("ksm-vms-v1", preset="v5.8", policy="legacy")
    assert any(r.outcome == "reuse" for r in decided(v5_8))
    quiet = run("ksm-vms-v1", {"ksmd": False}, preset="v5.19", policy="exclusive")
    assert quiet.counters["ksm_merged"] == 0 and not decided(quiet)


# ---------------------------------------------------------------------- the machinery
def test_workloads_ask_for_the_machine_they_need() -> None:
    reg = get_registry()
    memcached = reg.make("workload", "memcached-pressure-v1", {"threads": 6, "swap": "ssd"})
    machine = machine_for(memcached, None)  # type: ignore[arg-type]
    assert (machine.cpus, machine.ram_pages, machine.swap) == (7, 3072, "ssd")
    no_kswapd = reg.make("workload", "memcached-pressure-v1", {"kswapd": False})
    assert machine_for(no_kswapd, None).cpus == 4  # type: ignore[arg-type]
    ksm = reg.make("workload", "ksm-vms-v1", {"vms": 3})
    assert machine_for(ksm, None).cpus == 4  # type: ignore[arg-type]


BAD_PARAMS = [
    ("fork-snapshot-v1", "pages", 0),
    ("fork-snapshot-v1", "skew", -1.0),
    ("fork-snapshot-v1", "duration_ms", 0.0),
    ("pinned-io-v1", "buffer_write_ratio", 1.5),
    ("pinned-io-v1", "dma_interval_ns", -1),
    ("memcached-pressure-v1", "ram_pages", 100),
    ("memcached-pressure-v1", "swap", "floppy"),
    ("memcached-pressure-v1", "threads", 64),
    ("softdirty-tracking-v1", "mode", "dirtybit"),
    ("softdirty-tracking-v1", "qemu_chunk_pages", 0),
    ("ksm-vms-v1", "shared_fraction", 2.0),
    ("ksm-vms-v1", "compaction_rate", -5.0),
    ("mix-v1", "ksm_vms", -1.0),
]


@pytest.mark.parametrize(("name", "key", "value"), BAD_PARAMS)
def test_out_of_range_parameters_are_rejected_with_their_name(
    name: str, key: str, value: object
) -> None:
    with pytest.raises(PluginError, match=re.escape(key)):
        get_registry().make("workload", name, {key: value})


def test_an_unknown_parameter_gets_a_did_you_mean() -> None:
    with pytest.raises(PluginError, match="did you mean 'skew'"):
        get_registry().make("workload", "fork-snapshot-v1", {"skw": 1.0})


def test_the_command_line_runs_a_workload_with_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["workload", "run", "fork-snapshot-v1", "--param", "pages=128",
                 "--param", "snapshot_period_ms=0.2", "--policy", "baseline", "--kernel",
                 "v5.9", "--seed", "3", "--decisions", "50", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["workload"] == "fork-snapshot-v1" and doc["decisions"] == 50
    assert doc["params"] == {"pages": "128", "snapshot_period_ms": "0.2"}


def test_docs_describe_every_workload_parameter_and_actor() -> None:
    text = (ROOT / "docs" / "workloads.md").read_text(encoding="utf-8")
    reg = get_registry()
    for name in reg.names("workload"):
        section = re.search(rf"^## `{re.escape(name)}`$(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert section is not None, f"docs/workloads.md has no section for {name}"
        schema = reg.get("workload", name).params
        assert schema is not None
        for f in dataclasses.fields(schema):
            assert f"`{f.name}`" in section.group(1) or f"`{f.name}`" in text, (
                f"docs/workloads.md does not mention {name} parameter {f.name}"
            )
    for actor in ("kswapd", "kcompactd", "ksmd", "lru_drain_all", "khugepaged"):
        assert actor in text


def test_vmsplice_pipe_leaks_under_the_mapcount_rule_and_not_under_refcount_rules() -> None:
    """CVE-2020-29374 as a workload: v5.7's rule reuses pages an exited worker's pipe
    still references; v5.9's refcount rule and the oracle copy them."""
    from cowlab.kernel import get_preset
    from cowlab.plugins import get_registry
    from cowlab.workloads import Budget, run_workload

    reg = get_registry()

    def violations(policy: str) -> int:
        workload = reg.make("workload", "vmsplice-pipe-v1", {"pages": 256})
        result = run_workload(workload, get_preset("v5.19"), reg.make_policy(policy),
                              seed=1, budget=Budget(max_decisions=600))
        return int(result.metrics["violations_total"])

    assert violations("legacy") > 0
    assert violations("baseline") == violations("exclusive") == violations("oracle") == 0


def test_third_party_code_can_extend_the_shipped_workloads_and_their_parameters() -> None:
    """The shipped workloads run compiled, yet stay open to Python subclasses: a plugin's
    parameters derive from CommonParams (docs/workloads.md) and a variant may derive
    from a shipped workload."""
    from cowlab.kernel.engine import Thread, ThreadGen
    from cowlab.kernel.presets import get_preset
    from cowlab.workloads import Budget, Run
    from cowlab.workloads.common import CommonParams, check_range
    from cowlab.workloads.fork_snapshot import ForkSnapshot, ForkSnapshotParams

    @dataclasses.dataclass(frozen=True)
    class BombParams(CommonParams):
        pages: int = 8

        def __post_init__(self) -> None:
            super().__post_init__()
            check_range("pages", self.pages, 1, 64)

    assert BombParams(pages=4).duration_ns == CommonParams().duration_ns
    with pytest.raises(ValueError, match=r"pages must be 1\.\.64"):
        BombParams(pages=0)

    @dataclasses.dataclass(frozen=True)
    class HotParams(ForkSnapshotParams):
        label: str = "hot"

    class QuietSnapshot(ForkSnapshot):
        id = "quiet-snapshot-v1"

        def _child(self, t: Thread, child: Any, running: list[bool]) -> ThreadGen:
            yield from t.call(t.kernel.exit_mm, child)  # saves nothing: exits at once
            running[0] = False

    workload = QuietSnapshot(pages=16)
    workload.p = HotParams(pages=16, snapshot_period_ms=0.01, duration_ms=0.5)
    policy = get_registry().make_policy("exclusive")
    kernel = Kernel(get_preset("v5.19"), policy, machine=machine_for(workload, None))
    Run(workload, kernel, 0, Budget(max_decisions=None, max_time_ns=500_000)).execute()
    assert kernel.check_invariants() == []
    assert kernel.nr_decisions > 0  # the parent wrote to pages shared with a child
    assert kernel.counters["pgfault"] >= 16  # loading the dataset
