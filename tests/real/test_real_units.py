"""Unit tests of cowlab real that run everywhere: the script, emit, the comparison, the
host helpers and cost files. No harness is run here (see test_real_host.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cowlab.costfile import CostFileError, load_costs
from cowlab.plugins import get_registry
from cowlab.real.calibrate import derive_costs
from cowlab.real.compare import ResultError, compare, format_comparison
from cowlab.real.harness import emit, source
from cowlab.real.host import SetupError, parse_size, preset_for, swap_device_class, thp_plan
from cowlab.real.script import data_word, translate
from cowlab.scenario import Scenario, ScenarioError, ScenarioResult, ScenarioRunner

FORK = {"kernel": "v6.15", "steps": [
    {"op": "mmap", "mm": "p", "page": 0, "pages": 2},
    {"op": "write", "mm": "p", "page": 0, "pages": 2},
    {"op": "fork", "mm": "p", "child": "c"},
    {"op": "write", "mm": "p", "page": 0},
    {"op": "speculative", "mm": "p", "page": 1},
    {"op": "write", "mm": "p", "page": 1},
]}


def _sim(doc: dict[str, Any]) -> tuple[Scenario, ScenarioResult]:
    sc = Scenario.from_mapping(doc, source="t.yaml")
    pol = get_registry().make_policy(sc.kernel.default_policy)
    return sc, ScenarioRunner(sc, pol).run()


def _real_from_sim(sim: ScenarioResult, script_hash: str, *,
                   steps_status: dict[int, str] | None = None) -> dict[str, Any]:
    """A harness result that says exactly what the simulator said (mm as indices), with
    the translated skips reported as the harness reports them."""
    mms = {name: i for i, name in enumerate(["p", "c"])}
    skipped = translate(sim.scenario).skipped
    status = {i: f"skipped: {why}" for i, why in skipped.items()} | (steps_status or {})
    return {
        "format": "cowlab-real-result", "version": 1, "script_hash": script_hash,
        "uname": {"release": "6.18.0"}, "host": {},
        "steps": [{"step": s.index, "op": s.op, "status": status.get(s.index, "ok")}
                  for s in sim.scenario.steps],
        "attempts": [{"step": r.step, "mm": mms[r.mm], "page": r.page, "fault": r.fault,
                      "outcome": r.outcome, "violation": r.violation, "note": ""}
                     for r in sim.attempts],
    }


def test_translation_numbers_mms_and_skips_unsupported_ops() -> None:
    sc, _ = _sim(FORK)
    script = translate(sc)
    assert script.mms == ["p", "c"]
    assert "S 2 fork 0 1 0" in script.lines
    assert script.skipped == {4: script.skipped[4]}
    assert "GUP-fast" in script.skipped[4]


def test_translation_maps_gup_kinds_to_pipes_and_rings() -> None:
    sc = Scenario.from_mapping({"steps": [
        {"op": "mmap", "mm": "a", "page": 0},
        {"op": "gup", "mm": "a", "page": 0, "kind": "get", "name": "x"},
        {"op": "put", "name": "x"},
        {"op": "gup", "mm": "a", "page": 0, "kind": "pin", "write": True, "name": "x"},
        {"op": "put", "name": "x"},
        {"op": "gup", "mm": "a", "page": 0, "kind": "pin", "name": "ro"},
        {"op": "put", "name": "ro"}]}, source="g.yaml")
    lines = translate(sc).lines
    assert lines[1] == "S 1 gupget 0 0 1 0 0"
    assert lines[2] == "S 2 put 0 0"
    assert lines[3] == "S 3 gupring 0 0 1 0 0"
    assert lines[4] == "S 4 put 1 0"
    assert "FOLL_WRITE" in lines[5] and lines[6].startswith("S 6 skip")


def test_data_words_are_equal_for_equal_data_and_64_bit() -> None:
    assert data_word("x") == data_word("x") != data_word("y")
    assert data_word(-1) == -1 and data_word(1 << 64) == 0
    assert -(1 << 63) <= data_word("a long string of data") < 1 << 63


def test_script_hash_changes_with_any_step() -> None:
    a = translate(Scenario.from_mapping(FORK, source="t.yaml")).hash
    doc = json.loads(json.dumps(FORK))
    doc["steps"][3]["page"] = 1
    assert translate(Scenario.from_mapping(doc, source="t.yaml")).hash != a


def test_emit_bakes_the_script_into_the_harness_source() -> None:
    script = translate(Scenario.from_mapping(FORK, source="t.yaml"))
    c = emit(script)
    assert '/*@SCRIPT@*/ "";' in source()
    assert '/*@SCRIPT@*/' not in c
    assert f'"hash {script.hash}\\n"' in c
    assert '"S 2 fork 0 1 0\\n"' in c


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")
def test_emitted_program_compiles(tmp_path: Path) -> None:
    script = translate(Scenario.from_mapping(FORK, source="t.yaml"))
    c_file = tmp_path / "t.c"
    c_file.write_text(emit(script))
    proc = subprocess.run(["cc", "-O2", "-Wall", "-Werror=implicit-function-declaration",
                           "-pthread", str(c_file), "-o", str(tmp_path / "t")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_comparison_agrees_with_an_identical_result() -> None:
    _, sim = _sim(FORK)
    script = translate(sim.scenario)
    comp = compare(sim, _real_from_sim(sim, script.hash), script)
    # The write after the skipped speculative step is excluded, the others agree.
    assert [r.status for r in comp.rows] == ["agree", "agree", "agree", "excluded"]
    assert comp.exit_status == 0
    assert "EXCLUDED" in format_comparison(comp)


def test_comparison_reports_a_differing_outcome() -> None:
    _, sim = _sim(FORK)
    script = translate(sim.scenario)
    real = _real_from_sim(sim, script.hash)
    real["attempts"][2]["outcome"] = "reuse"
    comp = compare(sim, real, script)
    assert comp.rows[2].status == "differ" and comp.rows[2].differs == ("outcome",)
    assert comp.exit_status == 1


def test_comparison_leaves_out_an_unobservable_outcome() -> None:
    _, sim = _sim(FORK)
    script = translate(sim.scenario)
    real = _real_from_sim(sim, script.hash)
    real["attempts"][2]["outcome"] = "unknown"
    comp = compare(sim, real, script)
    assert comp.rows[2].status == "agree"
    assert comp.rows[2].compared == ("fault", "violation")


def test_comparison_excludes_writes_after_a_skipped_step() -> None:
    _, sim = _sim(FORK)
    script = translate(sim.scenario)
    real = _real_from_sim(sim, script.hash, steps_status={2: "skipped: no fork here"})
    comp = compare(sim, real, script)
    assert [r.status for r in comp.rows] == ["agree", "agree", "excluded", "excluded"]
    assert "step 2" in comp.rows[2].note


def test_comparison_refuses_a_result_of_another_scenario() -> None:
    _, sim = _sim(FORK)
    script = translate(sim.scenario)
    with pytest.raises(ResultError, match="different scenario"):
        compare(sim, _real_from_sim(sim, "0" * 64), script)
    with pytest.raises(ResultError, match="not a cowlab real-kernel result"):
        compare(sim, {"format": "other"}, script)


def test_missing_real_store_is_a_disagreement() -> None:
    _, sim = _sim(FORK)
    script = translate(sim.scenario)
    real = _real_from_sim(sim, script.hash)
    del real["attempts"][2]
    comp = compare(sim, real, script)
    assert comp.rows[2].differs == ("alignment",)


def test_host_preset_is_the_newest_at_or_below_the_release() -> None:
    assert preset_for("6.18.44-fc") == "v6.15"
    assert preset_for("6.12.0") == "v6.12"
    assert preset_for("5.10.0") == "v5.9"
    with pytest.raises(SetupError, match="older than every preset"):
        preset_for("4.19.0")


def test_swap_device_class_reads_the_first_swap_area() -> None:
    head = "Filename Type Size Used Priority\n"
    assert swap_device_class(head) is None
    assert swap_device_class(head + "/dev/nvme0n1p3 partition 8 0 -2") == "nvme"
    assert swap_device_class(head + "/dev/sda2 partition 8 0 -2") == "ssd"
    assert swap_device_class(head + "/swap.img file 8 0 -2", stat_files=False) == "ssd"


def test_sizes_parse_and_bad_sizes_are_refused() -> None:
    assert parse_size("1G") == 1 << 30 and parse_size("4096") == 4096
    with pytest.raises(SetupError):
        parse_size("lots")


def test_thp_plan_enables_only_the_wanted_orders() -> None:
    plan = thp_plan({4})
    if not plan:
        pytest.skip("no /sys/kernel/mm/transparent_hugepage here")
    values = {p.parent.name: v for p, v in plan.items()}
    if "hugepages-64kB" in values:
        assert values["hugepages-64kB"] == "madvise"
    assert values.get("hugepages-2048kB", "never") == "never"


def test_derived_costs_keep_defaults_for_missing_timings() -> None:
    costs, notes = derive_costs({"reuse_fault": {"median_ns": 700, "samples": 5}})
    assert costs == {"fault_ns": 690}
    assert len(notes) == 3


def test_cost_file_loads_into_the_scenario(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("format: cowlab-costs\ncosts: {fault_ns: 999}\n")
    doc = {"machine": {"costs": "c.yaml"}, "kernel": "v5.19", "steps": [
        {"op": "mmap", "mm": "a", "page": 0}, {"op": "write", "mm": "a", "page": 0},
        {"op": "mprotect", "mm": "a", "page": 0, "prot": "r"},
        {"op": "mprotect", "mm": "a", "page": 0, "prot": "rw"},
        {"op": "write", "mm": "a", "page": 0}]}
    sc = Scenario.from_mapping(doc, source=str(tmp_path / "s.yaml"))
    assert sc.costs is not None and sc.costs.fault_ns == 999
    pol = get_registry().make_policy(sc.kernel.default_policy)
    res = ScenarioRunner(sc, pol).run()
    base = Scenario.from_mapping({k: v for k, v in doc.items() if k != "machine"},
                                 source="s.yaml")
    res0 = ScenarioRunner(base, pol).run()
    assert res.attempts[-1].latency_ns - res0.attempts[-1].latency_ns == 999 - 505


def test_bad_cost_files_name_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("format: cowlab-costs\ncosts: {fault_nz: 1}\n")
    with pytest.raises(CostFileError, match=r"c.yaml: costs.fault_nz: unknown cost"):
        load_costs(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("format: cowlab-costs\ncosts: {fault_ns: -1}\n")
    with pytest.raises(CostFileError, match="non-negative"):
        load_costs(tmp_path / "d.yaml")
    doc = {"machine": {"costs": "missing.yaml"}, "steps": [{"op": "mmap", "mm": "a",
                                                            "page": 0}]}
    with pytest.raises(ScenarioError, match=r"s.yaml: machine.costs: .*missing.yaml"):
        Scenario.from_mapping(doc, source=str(tmp_path / "s.yaml"))


def test_not_root_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from cowlab.real.harness import HarnessError, check_host

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(HarnessError, match="needs root"):
        check_host()
    monkeypatch.setattr("sys.platform", "darwin")
    with pytest.raises(HarnessError, match="needs Linux"):
        check_host()


def test_missing_compiler_names_what_was_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    from cowlab.real.harness import HarnessError, find_compiler

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(HarnessError, match="tried cc, gcc, clang"):
        find_compiler()
    monkeypatch.setenv("CC", "my-cc --flag")
    with pytest.raises(HarnessError, match="tried my-cc --flag"):
        find_compiler()


def test_cli_refuses_run_when_not_root(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from cowlab.cli import main

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["real", "run", "experiments/scenarios/cve-2020-29374.yaml"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_committed_cost_file_loads() -> None:
    costs = load_costs("experiments/real/costs.yaml")
    assert costs.fault_ns > 0 and costs.lru_drain_ns > 0
