"""Tests of the wait-for-swapin example plugin: discovery, behaviour, command line.

The discovery and command-line tests need the distribution installed
(``pip install -e plugins/cowlab-wait-for-swapin``) and skip themselves otherwise; the
behaviour tests build simulated kernels in-process and need only cowlab.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cowlab.geometry import pte_pfn
from cowlab.kernel import Decision, FaultRecord, FaultView, Kernel, Machine, get_preset
from cowlab.kernel.folio import Folio
from cowlab.kernel.mm import MM
from cowlab.plugins import PluginError, format_plugins, load_registry
from cowlab.scenario import Scenario, ScenarioRunner

import cowlab_wait_for_swapin
from cowlab_wait_for_swapin import COWLAB_HOOK_API, WaitForSwapin, WaitParams

DIST = "cowlab-wait-for-swapin"
ENTRY_POINT = "wait_for_swapin"
POLICY = "wait-for-swapin"

#: The cowlab checkout this plugin ships in (plugins/cowlab-wait-for-swapin/tests/...).
REPO = Path(__file__).resolve().parents[3]
SCENARIOS = REPO / "experiments" / "scenarios"
SCENARIO_FILES = sorted(SCENARIOS.glob("*.yaml"))


def _dist_version() -> str | None:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


needs_dist = pytest.mark.skipif(
    _dist_version() is None,
    reason=f"distribution {DIST} is not installed, so its entry point cannot be found "
    "(pip install -e plugins/cowlab-wait-for-swapin)",
)
needs_scenarios = pytest.mark.skipif(
    not SCENARIO_FILES,
    reason=f"no cowlab checkout around this plugin: {SCENARIOS} has no scenario files",
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COWLAB_DISABLE_PLUGINS", None)
    return env


def _kernel(preset: str, policy: object, **machine: object) -> Kernel:
    return Kernel(get_preset(preset), policy, machine=Machine(**machine))  # type: ignore[arg-type]


def _folio(k: Kernel, mm: MM, page: int) -> Folio:
    return k.frames[pte_pfn(mm.pt[page])]


# --------------------------------------------------------------------------- discovery


@needs_dist
def test_entry_point_is_discovered_with_its_distribution_and_version() -> None:
    registry = load_registry(disable=())
    info = registry.plugin(ENTRY_POINT)
    assert info is not None, format_plugins(registry)
    assert (info.dist, info.version) == (DIST, _dist_version())
    assert info.hook_api == COWLAB_HOOK_API
    assert info.registered == [("policy", POLICY)]
    assert [p for p in registry.problems if p.plugin == ENTRY_POINT] == []
    assert registry.origin("policy", POLICY) == f"{DIST} {_dist_version()} (plugin {ENTRY_POINT})"
    assert isinstance(registry.make_policy(POLICY), WaitForSwapin)


@needs_dist
def test_disabling_the_distribution_removes_the_policy() -> None:
    registry = load_registry(disable=[DIST])
    assert POLICY not in registry.names("policy")
    assert (ENTRY_POINT, DIST) in registry.disabled
    assert "exclusive" in registry.names("policy")


@needs_dist
def test_cowlab_plugins_lists_it_with_distribution_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cowlab.cli", "plugins"],
        capture_output=True, text=True, env=_env(), check=True,
    ).stdout
    assert f"{ENTRY_POINT}  {DIST} {_dist_version()}\n" in out
    assert f"  policy  {POLICY}  — " in out
    assert "Problems:" not in out


def test_registration_validates_parameters() -> None:
    # In-process registration: works whether or not the distribution is installed.
    registry = load_registry(entry_points=False, extra_plugins=[("wfs", cowlab_wait_for_swapin)])
    assert registry.problems == []
    policy = registry.make_policy(POLICY, {"max_refcount": "2"})  # command-line strings
    assert isinstance(policy, WaitForSwapin) and policy.max_refcount == 2
    with pytest.raises(PluginError, match="max_refcount must be at least 1"):
        registry.make_policy(POLICY, {"max_refcount": 0})
    with pytest.raises(PluginError, match="expected int"):
        registry.make_policy(POLICY, {"max_refcount": True})
    with pytest.raises(PluginError, match="unknown parameter 'max_ref'"):
        registry.make_policy(POLICY, {"max_ref": 2})


def test_params_reject_a_zero_threshold() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WaitParams(max_refcount=0)
    with pytest.raises(ValueError, match="at least 1"):
        WaitForSwapin(max_refcount=0)
    assert WaitParams().max_refcount == 3


# --------------------------------------------------------------------------- behaviour


def test_reuses_an_exclusive_swapped_in_page_on_v5_18_pmem() -> None:
    # forceswap, one round: write, MADV_PAGEOUT, read back (mapped read-only), write.
    k = _kernel("v5.18", WaitForSwapin(), cpus=2, swap="pmem")
    mm = k.create_mm("forceswap")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.madvise(mm, 0, 1, "pageout")
    k.read(mm, 0)
    rec = k.write(mm, 0)
    assert (rec.fault, rec.outcome, rec.violation) == ("wp", "reuse", None)
    assert rec.exclusive is True
    assert k.counters["pswpin"] == 1 and k.counters["anon_wp_reuse"] == 1


def test_copies_a_page_shared_with_a_live_child() -> None:
    k = _kernel("v5.19", WaitForSwapin())
    parent = k.create_mm("parent")
    k.mmap(parent, 0, 1)
    k.write(parent, 0)
    child = k.fork(parent, "child")
    rec = k.write(parent, 0)
    assert (rec.outcome, rec.reason, rec.violation) == ("copy", "early", None)
    assert rec.exclusive is False
    # The parent has its own copy now, so the child's page is exclusive and reused.
    rec = k.write(child, 0)
    assert (rec.outcome, rec.violation) == ("reuse", None)


def _swapped_in_behind_a_lock(policy: object, *, writeback: bool) -> tuple[Kernel, MM]:
    """A v5.18 kernel on an SSD whose page was swapped out and read back (mapped
    read-only, still in the swapcache), then locked by a swap-in that releases the lock
    3 us later. ``writeback=True`` reads it back before its writeback has finished."""
    k = _kernel("v5.18", policy, cpus=2, swap="ssd")
    mm = k.create_mm("app")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.madvise(mm, 0, 1, "pageout")
    if not writeback:
        k.io_complete()
    k.read(mm, 0)
    folio = _folio(k, mm, 0)
    assert folio.swap_entry is not None and folio.writeback is writeback
    # Scenario files cannot hold a lock across a write, so take it here the way the
    # swap-in path does (Kernel.lock_folio) and release it from the event queue.
    k.lock_folio(folio, "do_swap_page")
    k.clock.schedule(k.clock.now + 3_000, lambda: k.unlock_folio(folio))
    return k, mm


def test_sleeps_on_the_lock_of_a_swapcache_page_and_reuses_it() -> None:
    k, mm = _swapped_in_behind_a_lock(WaitForSwapin(), writeback=False)
    rec = k.write(mm, 0)
    assert (rec.outcome, rec.violation, rec.exclusive) == ("reuse", None, True)
    assert rec.latency_ns >= 3_000  # the sleep is charged to the fault
    assert _folio(k, mm, 0).swap_entry is None  # free_swap() under the lock


def test_the_v5_18_rule_copies_the_same_page() -> None:
    k, mm = _swapped_in_behind_a_lock(load_registry().make_policy("patched-lru"), writeback=False)
    rec = k.write(mm, 0)
    assert (rec.outcome, rec.reason) == ("copy", "lock")
    assert "lock" in rec.blockers


def test_copies_when_the_locked_page_is_under_writeback() -> None:
    k, mm = _swapped_in_behind_a_lock(WaitForSwapin(), writeback=True)
    rec = k.write(mm, 0)
    assert (rec.outcome, rec.reason, rec.violation) == ("copy", "lock", None)
    assert k.counters["anon_wp_copy_lock"] == 1


class _Recording(WaitForSwapin):
    """WaitForSwapin that remembers which path asked and what it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, Decision]] = []

    def decide(self, fault: FaultView) -> Decision:
        decision = super().decide(fault)
        self.asked.append((fault.path, decision))
        return decision


def test_leaves_the_swap_path_to_do_wp_page_before_v5_18() -> None:
    # v5.9: a write fault on a swap PTE asks from do_swap_page() first.
    policy = _Recording()
    k = _kernel("v5.9", policy, swap="zram")
    mm = k.create_mm("app")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.madvise(mm, 0, 1, "pageout")
    rec: FaultRecord = k.write(mm, 0)
    assert policy.asked == [("swap", Decision.COPY.because("swapcache")), ("wp", Decision.REUSE)]
    assert (rec.fault, rec.outcome, rec.violation) == ("swap", "reuse", None)


@needs_scenarios
@pytest.mark.parametrize("preset", ["v5.19", "v6.9"])
@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.stem)
def test_no_violation_in_the_shipped_scenarios(path: Path, preset: str) -> None:
    result = ScenarioRunner(Scenario.load(path, kernel=preset), WaitForSwapin()).run()
    assert [r.to_dict() for r in result.violations] == []
    assert any(r.outcome in ("reuse", "copy") for r in result.attempts)


@needs_scenarios
@pytest.mark.parametrize("preset", ["v5.7", "v5.9", "v5.18"])
def test_no_cve_2020_29374_leak_on_older_kernels(preset: str) -> None:
    path = SCENARIOS / "cve-2020-29374.yaml"
    result = ScenarioRunner(Scenario.load(path, kernel=preset), WaitForSwapin()).run()
    assert result.violations == []
    final = result.attempts[-1]
    assert (final.mm, final.outcome, final.exclusive) == ("parent", "copy", False)


# --------------------------------------------------------------------------- command line


@needs_dist
@needs_scenarios
def test_cowlab_scenario_run_with_the_plugin_policy() -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "cowlab.cli", "scenario", "run",
            str(SCENARIOS / "forceswap.yaml"), "--policy", POLICY, "--json",
        ],
        capture_output=True, text=True, env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["policy"] == POLICY
    assert doc["violations"] == []
    writes = [a for a in doc["attempts"] if a["fault"] == "wp"]
    assert [a["outcome"] for a in writes] == ["reuse", "reuse", "reuse"]

