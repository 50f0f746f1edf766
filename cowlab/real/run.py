"""One scenario, simulated and on the real kernel: load, simulate, run, compare.

The scenario is loaded and simulated exactly as ``cowlab scenario run`` does (same
parser, same errors); the simulator runs on the preset that stands for the host (or
``kernel``), with ``machine.swap`` set to the class of the host's swap device so that
both sides swap to the same kind of device. Then the harness runs the same steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from cowlab.plugins import PluginError, get_registry
from cowlab.real.compare import Comparison, ResultError, compare
from cowlab.real.harness import HarnessError, check_host, run_harness
from cowlab.real.host import MachineSetup, SetupError, preset_for, swap_device_class
from cowlab.real.script import DEFAULT_TIMEOUT_S, PMD_ORDER, Script, translate
from cowlab.scenario import Scenario, ScenarioError, ScenarioResult, ScenarioRunner

#: Errors that are the user's input or the host refusing: exit status 2.
USAGE_ERRORS = (ScenarioError, HarnessError, SetupError, ResultError, PluginError)


@dataclasses.dataclass
class Prepared:
    """A loaded scenario, its simulation and its harness script."""

    scenario: Scenario
    sim: ScenarioResult
    script: Script
    swap_note: str


def host_release() -> str:
    return os.uname().release


def prepare(path: str | Path, *, kernel: str | None = None, swap: str | None = None,
            policy: str | None = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> Prepared:
    """Load and validate ``path``, simulate it on ``kernel`` (default: the host's preset)
    with machine.swap = ``swap`` (default: the host's device class, if it swaps)."""
    preset = kernel or preset_for(host_release())
    scenario = Scenario.load(path, kernel=preset)
    note = ""
    device = swap if swap is not None else swap_device_class()
    if device is not None and device != scenario.machine.swap:
        note = (f"machine.swap {scenario.machine.swap} -> {device} (the host swaps to "
                f"{'that kind of device' if swap is None else 'it, as asked'})")
        scenario.machine = dataclasses.replace(scenario.machine, swap=device)
    pol = get_registry().make_policy(policy or scenario.kernel.default_policy,
                                     where="--policy")
    sim = ScenarioRunner(scenario, pol).run()
    return Prepared(scenario, sim, translate(scenario, timeout_s=timeout_s), note)


def thp_orders(scenario: Scenario) -> set[int]:
    """The large-folio orders the scenario's mappings ask for (9 is PMD)."""
    orders = set()
    for step in scenario.steps:
        if step.op == "mmap" and step.args["thp"] != "none":
            thp = step.args["thp"]
            orders.add(PMD_ORDER if thp == "pmd" else int(thp.split("-")[1]))
    return orders


def hugetlb_2m_pages(scenario: Scenario) -> int:
    """2 MiB hugetlb pages to reserve: every hugetlb page mapped, once for the mapping and
    once more per fork (each side of a COW may get its own copy), plus one spare."""
    mapped = sum(step.args["pages"] // 512 for step in scenario.steps
                 if step.op == "mmap" and step.args["hugetlb"] == "2m")
    forks = sum(step.op == "fork" for step in scenario.steps)
    return mapped * (1 + forks) + 1 if mapped else 0


def run_real(path: str | Path, *, kernel: str | None = None, swapfile: int | None = None,
             policy: str | None = None, log: list[str] | None = None,
             timeout_s: int = DEFAULT_TIMEOUT_S) -> Comparison:
    """Run ``path`` on the host and in the simulator and compare them."""
    check_host()
    log = [] if log is None else log
    # The swapfile first: the simulated device follows the host's.
    with MachineSetup(swapfile=swapfile, log=log) as _swap:
        prep = prepare(path, kernel=kernel, policy=policy, timeout_s=timeout_s)
        with MachineSetup(thp_orders=thp_orders(prep.scenario), log=log, guard_ksm=True,
                          hugetlb_2m=hugetlb_2m_pages(prep.scenario)):
            result = run_harness(prep.script)
    comp = compare(prep.sim, result, prep.script, where=str(path))
    comp.swap_device = prep.scenario.machine.swap
    if prep.swap_note:
        comp.notes.append(prep.swap_note)
    return comp


def import_result(result_path: str | Path, path: str | Path, *, kernel: str | None = None,
                  swap: str | None = None, policy: str | None = None) -> Comparison:
    """Compare a result an emitted harness printed (maybe on another machine) with the
    simulator on the preset for that machine's kernel."""
    try:
        data: Any = json.loads(Path(result_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultError(f"{result_path}: cannot read a JSON result: {exc}") from None
    release = str((data.get("uname") or {}).get("release", "")) if isinstance(data, dict) \
        else ""
    if not release:
        raise ResultError(f"{result_path}: no uname.release in the result")
    preset = kernel or preset_for(release)
    host = data.get("host") or {}
    # Without a swap device on that machine every pageout was skipped: keep the file's.
    area = str(host.get("swap_area") or "")
    device = swap if swap is not None else (
        swap_device_class("header\n" + area, stat_files=False) if area else None)
    prep = prepare(path, kernel=preset, swap=device, policy=policy)
    comp = compare(prep.sim, data, prep.script, where=str(result_path))
    comp.swap_device = prep.scenario.machine.swap
    if prep.swap_note:
        comp.notes.append(prep.swap_note)
    return comp
