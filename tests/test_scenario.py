"""Behaviour of scenario files (cowlab.scenario): validation, runtime errors, results.

Bad input must give one clear line naming the file, the step index and the
reason, always as a ScenarioError; good input (every shipped scenario, every op)
must run and produce a deterministic, JSON-friendly result.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView
from cowlab.kernel.presets import PRESETS
from cowlab.plugins import get_registry
from cowlab.scenario import (
    OPS,
    Scenario,
    ScenarioError,
    ScenarioRunner,
    format_result,
    run_scenario,
)

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
SHIPPED = sorted(SCENARIO_DIR.glob("*.yaml"))
ALL_PRESETS = (
    "v5.7", "v5.8", "v5.9", "v5.11", "v5.12", "v5.18", "v5.19", "v6.2", "v6.9", "v6.11",
    "v6.12", "v6.15",
)

RESULT_KEYS = {"scenario", "kernel", "policy", "attempts", "counters", "violations", "metrics"}
ATTEMPT_KEYS = {"step", "mm", "page", "cpu", "fault", "outcome", "reason", "violation",
                "exclusive", "blockers", "latency_ns"}

MMAP_A = {"op": "mmap", "mm": "a", "page": 0, "pages": 2}


# --------------------------------------------------------------------------- helpers


def write_scenario(tmp_path: Path, doc: Any, name: str = "scenario.yaml") -> Path:
    """Write ``doc`` (a mapping, dumped as YAML, or raw text) to a file under tmp_path."""
    path = tmp_path / name
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def policy_for(scenario: Scenario, name: str | None = None) -> Any:
    return get_registry().make_policy(name or scenario.kernel.default_policy)


def run(scenario: Scenario, policy: str | None = None, **kwargs: Any) -> Any:
    return ScenarioRunner(scenario, policy_for(scenario, policy), **kwargs).run()


def load_error(tmp_path: Path, doc: Any, **kwargs: Any) -> tuple[Path, str]:
    """The ScenarioError message raised while loading ``doc`` (one line)."""
    path = write_scenario(tmp_path, doc)
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return path, message


def run_error(tmp_path: Path, doc: Any) -> tuple[Path, str]:
    """The ScenarioError message raised while running ``doc`` (which must load)."""
    path = write_scenario(tmp_path, doc)
    scenario = Scenario.load(path)
    with pytest.raises(ScenarioError) as info:
        run(scenario)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return path, message


# --------------------------------------------------------------------------- validation


def test_unknown_op_names_file_step_and_suggests_the_closest_op(tmp_path: Path) -> None:
    path, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": "wirte", "mm": "a", "page": 0}]})
    assert f"{path}: step 1:" in msg
    assert "unknown op 'wirte'" in msg
    assert "did you mean 'write'?" in msg
    assert "known ops:" in msg and "ksm_merge" in msg


def test_step_without_op_is_reported_with_its_index(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"mm": "a", "page": 0}]})
    assert "step 1: missing 'op'" in msg


def test_step_that_is_not_a_mapping_is_reported_with_its_index(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, "write"]})
    assert "step 1: expected a mapping with 'op'" in msg


def test_unknown_field_in_a_step_suggests_the_closest_field(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": "write", "mm": "a", "pgae": 0}]})
    assert "step 1 (write): unknown field 'pgae'" in msg
    assert "did you mean 'page'?" in msg
    assert "write takes mm, page, pages, cpu" in msg


@pytest.mark.parametrize("value", ["0", True, 1.5, None], ids=["string", "bool", "float", "null"])
def test_page_of_the_wrong_type_is_rejected_as_not_an_integer(tmp_path: Path,
                                                              value: object) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": value}]})
    assert "step 1 (write): field 'page': expected integer" in msg
    assert repr(value) in msg


def test_bool_field_given_a_string_is_rejected(tmp_path: Path) -> None:
    step = {"op": "uffd_wp", "mm": "a", "page": 0, "enable": "yes"}
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, step]})
    assert "step 1 (uffd_wp): field 'enable': expected boolean, got 'yes'" in msg


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": "write", "mm": "a"}]})
    assert "step 1 (write): missing field 'page'" in msg


def test_negative_page_is_rejected_before_running(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": -1}]})
    assert "step 1 (write): field 'page' must be non-negative, got -1" in msg


def test_zero_pages_is_rejected(tmp_path: Path) -> None:
    step = {"op": "write", "mm": "a", "page": 0, "pages": 0}
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, step]})
    assert "step 1 (write): field 'pages' must be at least 1, got 0" in msg


def test_unknown_madvise_advice_suggests_the_closest_advice(tmp_path: Path) -> None:
    step = {"op": "madvise", "mm": "a", "page": 0, "advice": "pagout"}
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, step]})
    assert "step 1 (madvise): field 'advice': unknown advice 'pagout'" in msg
    assert "did you mean 'pageout'?" in msg


def test_unknown_top_level_key_suggests_the_closest_key(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"kernal": "v5.19", "steps": [MMAP_A]})
    assert "unknown key 'kernal'" in msg
    assert "did you mean 'kernel'?" in msg
    assert "expected one of kernel, geometry, machine, steps" in msg


def test_unknown_machine_key_suggests_the_closest_key(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"machine": {"cpu": 2}, "steps": [MMAP_A]})
    assert "machine: unknown key 'cpu'" in msg
    assert "did you mean 'cpus'?" in msg


def test_unknown_swap_device_lists_the_known_devices(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"machine": {"swap": "floppy"}, "steps": [MMAP_A]})
    assert "machine.swap: unknown device 'floppy'" in msg
    for device in ("zram", "pmem", "ssd", "nvme"):
        assert device in msg


def test_machine_cpus_out_of_range_is_rejected(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"machine": {"cpus": 0}, "steps": [MMAP_A]})
    assert "machine.cpus" in msg and "got 0" in msg


def test_unknown_kernel_preset_suggests_the_closest_preset(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"kernel": "v5.91", "steps": [MMAP_A]})
    assert "kernel: unknown kernel preset 'v5.91'" in msg
    assert "did you mean 'v5.9'?" in msg
    assert "v6.15" in msg


def test_unknown_kernel_preset_given_as_override_names_the_kernel_option(
        tmp_path: Path) -> None:
    path = write_scenario(tmp_path, {"steps": [MMAP_A]})
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path, kernel="v5.91")
    assert "--kernel: unknown kernel preset 'v5.91' (did you mean 'v5.9'?)" in str(info.value)


def test_unknown_kernel_facility_override_suggests_the_closest_facility(tmp_path: Path) -> None:
    doc = {"kernel": {"preset": "v5.18", "lru_batch_sz": 31}, "steps": [MMAP_A]}
    _, msg = load_error(tmp_path, doc)
    assert "kernel: unknown kernel facility 'lru_batch_sz'" in msg
    assert "did you mean 'lru_batch_size'?" in msg


def test_kernel_facility_override_is_applied(tmp_path: Path) -> None:
    path = write_scenario(tmp_path, {"kernel": {"preset": "v5.18", "lru_batch_size": 31},
                                     "steps": [MMAP_A]})
    scenario = Scenario.load(path)
    assert scenario.kernel.name == "v5.18"
    assert scenario.kernel.lru_batch_size == 31


def test_kernel_mapping_without_preset_is_rejected(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"kernel": {"lru_batch_size": 31}, "steps": [MMAP_A]})
    assert "kernel: a mapping needs 'preset'" in msg


def test_invalid_yaml_message_names_the_line(tmp_path: Path) -> None:
    text = ("kernel: v5.19\n"
            "steps:\n"
            "  - {op: mmap, mm: a, page: 0}\n"
            "  - {op: write, mm: a: page: 0}\n")
    _, msg = load_error(tmp_path, text)
    assert ": line 4 invalid YAML:" in msg


def test_missing_file_is_reported_as_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "does-not-exist.yaml"
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path)
    msg = str(info.value)
    assert msg.startswith(str(path))
    assert "cannot read scenario" in msg and "No such file" in msg


@pytest.mark.parametrize("doc", [{"steps": []}, {"kernel": "v5.19"}, {"steps": "write"}],
                         ids=["empty-list", "absent", "not-a-list"])
def test_empty_or_missing_steps_is_rejected(tmp_path: Path, doc: dict[str, Any]) -> None:
    _, msg = load_error(tmp_path, doc)
    assert "'steps' must be a non-empty list of operations" in msg


def test_document_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, "- {op: mmap, mm: a, page: 0}\n")
    assert "a scenario must be a mapping" in msg


def test_whole_scenario_is_validated_before_any_step_runs(tmp_path: Path) -> None:
    # Step 0 would fail only when run (no mm 'ghost'); steps 1-4 are fine; step 5 is
    # invalid. Validation must report step 5, so step 0 was never run.
    steps: list[dict[str, Any]] = [{"op": "write", "mm": "ghost", "page": 0}]
    steps += [{"op": "mmap", "mm": "a", "page": i} for i in range(4)]
    steps.append({"op": "frok", "mm": "a", "child": "b"})
    _, msg = load_error(tmp_path, {"steps": steps})
    assert "step 5: unknown op 'frok' (did you mean 'fork'?)" in msg
    assert "step 0" not in msg and "ghost" not in msg


def test_negative_ksm_merge_page_is_rejected_before_any_step_runs(tmp_path: Path) -> None:
    steps = [{"op": "write", "mm": "ghost", "page": 0},
             {"op": "ksm_merge", "pages": [{"mm": "a", "page": -1}, {"mm": "a", "page": 1}]}]
    _, msg = load_error(tmp_path, {"steps": steps})
    assert "step 1 (ksm_merge)" in msg and "-1" in msg


def test_a_valid_prefix_runs_step_by_step_until_the_first_runtime_error(
        tmp_path: Path) -> None:
    steps = [MMAP_A, {"op": "write", "mm": "a", "page": 0},
             {"op": "write", "mm": "ghost", "page": 0}, {"op": "write", "mm": "a", "page": 1}]
    scenario = Scenario.load(write_scenario(tmp_path, {"steps": steps}))
    seen: list[int] = []
    runner = ScenarioRunner(scenario, policy_for(scenario),
                            step_hook=lambda _k, step: seen.append(step.index))
    with pytest.raises(ScenarioError, match=r"step 2 \(write\): unknown mm 'ghost'"):
        runner.run()
    assert seen == [0, 1]


# --------------------------------------------------------------------------- runtime errors


def test_write_to_an_mm_that_was_never_mmapped_lists_the_known_mms(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A, {"op": "mmap", "mm": "b", "page": 0},
                     {"op": "write", "mm": "c", "page": 0}]}
    path, msg = run_error(tmp_path, doc)
    assert f"{path}: step 2 (write): unknown mm 'c' (known: a, b)" in msg


def test_write_before_any_mmap_says_no_mm_is_known_yet(tmp_path: Path) -> None:
    _, msg = run_error(tmp_path, {"steps": [{"op": "write", "mm": "c", "page": 0}]})
    assert "step 0 (write): unknown mm 'c'" in msg
    assert "none yet" in msg


def test_write_to_a_page_outside_any_mapping_names_the_page(tmp_path: Path) -> None:
    _, msg = run_error(tmp_path, {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": 5}]})
    assert "step 1 (write): mm a: page 5 is not inside any mapping" in msg


def test_address_above_the_4_level_user_limit_names_the_limit(tmp_path: Path) -> None:
    page = 2**35  # address 2**47
    _, msg = run_error(tmp_path, {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": page}]})
    assert "step 1 (write):" in msg
    assert f"address {2**47:#x}" in msg
    assert "above the user address limit" in msg
    assert "4-level paging" in msg


def test_mmap_reaching_past_the_user_limit_is_refused(tmp_path: Path) -> None:
    step = {"op": "mmap", "mm": "a", "page": 2**35 - 1, "pages": 2}
    _, msg = run_error(tmp_path, {"steps": [step]})
    assert "step 0 (mmap):" in msg and "above the user address limit" in msg


def test_an_mm_used_after_exit_is_reported_as_exited(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A, {"op": "exit", "mm": "a"}, {"op": "write", "mm": "a", "page": 0}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 2 (write): mm 'a' has exited" in msg


def test_mmap_of_an_exited_mm_does_not_revive_it(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A, {"op": "exit", "mm": "a"}, MMAP_A]}
    _, msg = run_error(tmp_path, doc)
    assert "step 2 (mmap): mm 'a' has exited" in msg


def test_put_of_an_unknown_gup_name_lists_the_held_references(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": 0},
                     {"op": "gup", "mm": "a", "page": 0, "kind": "get", "name": "pipe"},
                     {"op": "put", "name": "pip"}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 3 (put): no GUP reference named 'pip' is held (held: pipe)" in msg


def test_gup_kind_other_than_get_or_pin_is_rejected(tmp_path: Path) -> None:
    step = {"op": "gup", "mm": "a", "page": 0, "kind": "grab", "name": "x"}
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, step]})
    assert "step 1 (gup): field 'kind' must be 'get' or 'pin', got 'grab'" in msg


def test_mthp_on_a_kernel_without_it_names_the_kernel(tmp_path: Path) -> None:
    step = {"op": "mmap", "mm": "a", "page": 0, "pages": 64, "thp": "mthp-4"}
    _, msg = run_error(tmp_path, {"kernel": "v5.19", "steps": [step]})
    assert "step 0 (mmap):" in msg
    assert "needs multi-size THP" in msg and "v5.19" in msg


def test_an_unknown_thp_mode_is_rejected_before_running(tmp_path: Path) -> None:
    step = {"op": "mmap", "mm": "a", "page": 0, "pages": 512, "thp": "huge"}
    _, msg = load_error(tmp_path, {"steps": [step]})
    assert "step 0 (mmap): field 'thp'" in msg


def test_ksm_merge_of_pages_with_different_contents_is_refused(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A,
                     {"op": "madvise", "mm": "a", "page": 0, "pages": 2, "advice": "mergeable"},
                     {"op": "write", "mm": "a", "page": 0, "pages": 2},
                     {"op": "ksm_merge", "pages": [{"mm": "a", "page": 0},
                                                   {"mm": "a", "page": 1}]}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 3 (ksm_merge):" in msg
    assert "does not have the same content" in msg


def test_ksm_merge_outside_a_mergeable_area_is_refused(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": 0, "pages": 2},
                     {"op": "ksm_merge", "pages": [{"mm": "a", "page": 0},
                                                   {"mm": "a", "page": 1}]}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 2 (ksm_merge): mm a: page 0 is not in a MADV_MERGEABLE area" in msg


def test_write_to_a_prot_read_mapping_is_a_sigsegv(tmp_path: Path) -> None:
    doc = {"steps": [{"op": "mmap", "mm": "a", "page": 0, "prot": "r"},
                     {"op": "write", "mm": "a", "page": 0}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 1 (write): mm a: write to page 0 in a PROT_R mapping (SIGSEGV)" in msg


def test_write_after_mprotect_read_only_is_a_sigsegv(tmp_path: Path) -> None:
    doc = {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": 0},
                     {"op": "mprotect", "mm": "a", "page": 0, "prot": "r"},
                     {"op": "write", "mm": "a", "page": 0}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 3 (write):" in msg and "PROT_R" in msg


def test_cpu_the_machine_does_not_have_is_refused(tmp_path: Path) -> None:
    doc = {"machine": {"cpus": 2},
           "steps": [MMAP_A, {"op": "write", "mm": "a", "page": 0, "cpu": 5}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 1 (write): cpu 5 does not exist (machine has 2 CPUs)" in msg


def test_a_policy_that_raises_is_reported_with_the_step(tmp_path: Path) -> None:
    class Boom:
        name = "boom"

        def reset(self, seed: int | None) -> None:
            pass

        def decide(self, fault: FaultView) -> Decision:
            raise RuntimeError("kaboom")

    doc = {"steps": [MMAP_A, {"op": "write", "mm": "a", "page": 0},
                     {"op": "fork", "mm": "a", "child": "b"},
                     {"op": "write", "mm": "a", "page": 0}]}
    path = write_scenario(tmp_path, doc)
    with pytest.raises(ScenarioError) as info:
        ScenarioRunner(Scenario.load(path), Boom()).run()
    msg = str(info.value)
    assert msg.startswith(f"{path}: step 3 (write): policy 'boom'")
    assert "RuntimeError: kaboom" in msg


# --------------------------------------------------------------------------- odd input types


@pytest.mark.parametrize("op", [["write"], {"write": 1}, 5], ids=["list", "mapping", "int"])
def test_op_that_is_not_a_string_is_reported_as_an_unknown_op(tmp_path: Path,
                                                               op: object) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": op, "mm": "a", "page": 0}]})
    assert "step 1: unknown op" in msg and "known ops:" in msg


def test_swap_device_that_is_not_a_string_is_reported_as_unknown(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"machine": {"swap": ["zram"]}, "steps": [MMAP_A]})
    assert "machine.swap: unknown device ['zram']" in msg


def test_non_string_kernel_facility_key_is_rejected(tmp_path: Path) -> None:
    _, msg = load_error(tmp_path, {"kernel": {"preset": "v5.18", 5: 1}, "steps": [MMAP_A]})
    assert "kernel:" in msg and "5" in msg


@pytest.mark.parametrize("key", ["name", "default_policy", "description"])
def test_preset_identity_fields_cannot_be_overridden(tmp_path: Path, key: str) -> None:
    _, msg = load_error(tmp_path, {"kernel": {"preset": "v5.18", key: "x"}, "steps": [MMAP_A]})
    assert f"kernel: '{key}'" in msg
    assert "cannot be overridden" in msg
    assert f"did you mean '{key}'" not in msg


@pytest.mark.parametrize("us", [math.nan, math.inf, -1], ids=["nan", "inf", "negative"])
def test_advance_by_a_non_finite_or_negative_time_is_rejected(tmp_path: Path,
                                                              us: float) -> None:
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, {"op": "advance", "us": us}]})
    assert "step 1 (advance): field 'us' must be" in msg and "non-negative" in msg


@pytest.mark.parametrize("populate", [True, False], ids=["populate", "lazy"])
def test_mmap_on_a_cpu_the_machine_lacks_is_refused(tmp_path: Path, populate: bool) -> None:
    step = {"op": "mmap", "mm": "a", "page": 0, "populate": populate, "cpu": 9}
    _, msg = run_error(tmp_path, {"machine": {"cpus": 2}, "steps": [step]})
    assert "step 0 (mmap): cpu 9 does not exist (machine has 2 CPUs)" in msg


def test_fork_on_a_cpu_the_machine_lacks_is_refused(tmp_path: Path) -> None:
    # With a pinned page, v5.19 fork copies it for the child on the forking CPU.
    doc = {"kernel": "v5.19", "machine": {"cpus": 2},
           "steps": [MMAP_A, {"op": "write", "mm": "a", "page": 0},
                     {"op": "gup", "mm": "a", "page": 0, "kind": "pin", "write": True,
                      "name": "x"},
                     {"op": "fork", "mm": "a", "child": "b", "cpu": 9}]}
    _, msg = run_error(tmp_path, doc)
    assert "step 3 (fork): cpu 9 does not exist (machine has 2 CPUs)" in msg


def test_non_utf8_file_is_reported_as_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"steps:\n  - {op: mmap, mm: caf\xe9, page: 0}\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "UTF-8" in msg and "\n" not in msg


@pytest.mark.parametrize("slots", [-1, 0], ids=["negative", "zero"])
def test_swap_slots_out_of_range_is_rejected(tmp_path: Path, slots: int) -> None:
    _, msg = load_error(tmp_path, {"machine": {"swap_slots": slots}, "steps": [MMAP_A]})
    assert "machine.swap_slots" in msg and f"got {slots}" in msg


def test_write_data_of_the_wrong_type_is_rejected(tmp_path: Path) -> None:
    step = {"op": "write", "mm": "a", "page": 0, "data": 1.5}
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, step]})
    assert "step 1 (write): field 'data': expected 64-bit integer or string, got 1.5" in msg


def test_write_data_beyond_a_64_bit_word_is_rejected(tmp_path: Path) -> None:
    step = {"op": "write", "mm": "a", "page": 0, "data": 1 << 64}
    _, msg = load_error(tmp_path, {"steps": [MMAP_A, step]})
    assert f"field 'data': expected 64-bit integer or string, got {1 << 64}" in msg


# --------------------------------------------------------------------------- shipped scenarios


def test_shipped_scenarios_are_present() -> None:
    names = {p.name for p in SHIPPED}
    assert {"cve-2020-29374.yaml", "forceswap.yaml", "fork-child-exited.yaml",
            "fork-child-live.yaml", "pinned-buffer.yaml"} <= names


def test_the_kernel_presets_are_the_documented_eight() -> None:
    assert tuple(PRESETS) == ALL_PRESETS


@pytest.mark.parametrize("preset", ALL_PRESETS)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_runs_under_every_preset_with_its_default_policy(
        path: Path, preset: str) -> None:
    scenario = Scenario.load(path, kernel=preset)
    assert scenario.kernel.name == preset
    result = run(scenario)
    assert result.policy == PRESETS[preset].default_policy
    assert result.attempts, "every shipped scenario writes at least once"
    assert all(r.step is not None for r in result.attempts)
    json.dumps(result.to_dict())


def test_run_scenario_loads_and_runs_a_file_with_a_kernel_override() -> None:
    cve = SCENARIO_DIR / "cve-2020-29374.yaml"
    leaky = run_scenario(cve, get_registry().make_policy("legacy"))
    assert leaky.scenario.kernel.name == "v5.7"
    assert [r.violation for r in leaky.violations] == ["leak"]
    safe = run_scenario(cve, get_registry().make_policy("exclusive"), kernel="v5.19")
    assert safe.scenario.kernel.name == "v5.19"
    assert safe.violations == []


# --------------------------------------------------------------------------- results


def test_result_to_dict_is_json_serialisable_with_the_documented_keys() -> None:
    result = run(Scenario.load(SCENARIO_DIR / "fork-child-live.yaml"))
    doc = result.to_dict()
    assert set(doc) == RESULT_KEYS
    again = json.loads(json.dumps(doc))
    assert again["scenario"] == str(SCENARIO_DIR / "fork-child-live.yaml")
    assert again["kernel"] == "v5.19"
    assert again["policy"] == "exclusive"
    assert isinstance(again["counters"], dict) and isinstance(again["metrics"], dict)


def test_every_attempt_dict_has_the_documented_keys() -> None:
    result = run(Scenario.load(SCENARIO_DIR / "cve-2020-29374.yaml"), "legacy")
    doc = result.to_dict()
    assert doc["attempts"] and doc["violations"]
    for entry in [*doc["attempts"], *doc["violations"]]:
        assert set(entry) >= ATTEMPT_KEYS, ATTEMPT_KEYS - set(entry)
        assert isinstance(entry["blockers"], list)


def test_records_carry_the_index_of_the_step_that_produced_them(tmp_path: Path) -> None:
    doc = {"steps": [{"op": "mmap", "mm": "p", "page": 0, "pages": 3},
                     {"op": "read", "mm": "p", "page": 0},
                     {"op": "write", "mm": "p", "page": 0, "pages": 3},
                     {"op": "fork", "mm": "p", "child": "c"},
                     {"op": "advance", "us": 1},
                     {"op": "write", "mm": "c", "page": 1, "pages": 2}]}
    scenario = Scenario.load(write_scenario(tmp_path, doc))
    counts: dict[int, int] = {}
    runner = ScenarioRunner(scenario, policy_for(scenario),
                            step_hook=lambda k, step: counts.__setitem__(step.index,
                                                                         len(k.records)))
    result = runner.run()
    assert [(r.step, r.mm, r.page) for r in result.attempts] == [
        (2, "p", 0), (2, "p", 1), (2, "p", 2), (5, "c", 1), (5, "c", 2)]
    # The hook saw the records grow exactly at the write steps.
    assert counts == {0: 0, 1: 0, 2: 3, 3: 3, 4: 3, 5: 5}


def test_every_op_in_OPS_is_dispatched_by_the_runner(tmp_path: Path) -> None:
    steps: list[dict[str, Any]] = [
        {"op": "mmap", "mm": "parent", "page": 0, "pages": 8},
        {"op": "madvise", "mm": "parent", "page": 0, "pages": 8, "advice": "mergeable"},
        {"op": "write", "mm": "parent", "page": 1, "pages": 7},
        {"op": "read", "mm": "parent", "page": 0},
        {"op": "madvise", "mm": "parent", "page": 7, "advice": "dontfork"},
        {"op": "madvise", "mm": "parent", "page": 7, "advice": "dofork"},
        {"op": "fork", "mm": "parent", "child": "child"},
        # Parent and child page 1 share one page (and so its content) after fork.
        {"op": "ksm_merge", "pages": [{"mm": "parent", "page": 1},
                                      {"mm": "child", "page": 1}]},
        {"op": "write", "mm": "child", "page": 2, "cpu": 1},
        {"op": "gup", "mm": "parent", "page": 3, "kind": "get", "name": "ref"},
        {"op": "gup", "mm": "parent", "page": 4, "kind": "pin", "write": True,
         "longterm": True, "fast": True, "name": "pin"},
        {"op": "put", "name": "ref"},
        {"op": "put", "name": "pin"},
        {"op": "mprotect", "mm": "parent", "page": 5, "prot": "r"},
        {"op": "mprotect", "mm": "parent", "page": 5, "prot": "rw"},
        {"op": "clear_softdirty", "mm": "parent"},
        {"op": "uffd_wp", "mm": "parent", "page": 5, "enable": True},
        {"op": "uffd_wp", "mm": "parent", "page": 5, "enable": False},
        # Page 6 is shared with the child until the parent's write copies it; only then
        # may MADV_COLD / MADV_PAGEOUT touch it.
        {"op": "write", "mm": "parent", "page": 6},
        {"op": "madvise", "mm": "parent", "page": 6, "advice": "cold"},
        {"op": "madvise", "mm": "parent", "page": 6, "advice": "pageout"},
        {"op": "io_complete"},
        {"op": "reclaim", "pages": 4},
        {"op": "advance", "us": 2.5},
        {"op": "lru_drain", "cpu": 0},
        {"op": "lru_drain", "cpu": "all"},
        {"op": "madvise", "mm": "parent", "page": 6, "advice": "dontneed"},
        {"op": "speculative", "mm": "parent", "page": 3},
        {"op": "write", "mm": "parent", "page": 3},
        {"op": "migrate", "mm": "parent", "page": 3, "duration_us": 5},
        {"op": "mlock", "mm": "parent", "page": 2, "pages": 2},
        {"op": "munlock", "mm": "parent", "page": 2, "pages": 2},
        {"op": "madvise", "mm": "parent", "page": 2, "advice": "free"},
        {"op": "madvise", "mm": "parent", "page": 1, "advice": "unmergeable"},
        {"op": "mremap", "mm": "parent", "page": 6, "new_page": 100},
        {"op": "munmap", "mm": "child", "page": 0, "pages": 8},
        {"op": "exit", "mm": "child"},
    ]
    assert {s["op"] for s in steps} == set(OPS)
    doc = {"kernel": "v5.19", "machine": {"cpus": 2, "swap": "zram"}, "steps": steps}
    scenario = Scenario.load(write_scenario(tmp_path, doc))
    seen: list[str] = []
    result = ScenarioRunner(scenario, policy_for(scenario),
                            step_hook=lambda _k, step: seen.append(step.op)).run()
    assert seen == [s["op"] for s in steps]
    counters = result.counters
    assert counters["pswpout"] >= 1  # pageout reached the swap device
    assert counters["nr_foll_pin_acquired"] == counters["nr_foll_pin_released"] == 1
    assert counters["lru_add_drain_all"] >= 2  # ksm_merge and lru_drain all
    assert result.kernel.gup_names == {}
    assert result.violations == []


def test_ksm_merge_of_a_pinned_page_copied_at_fork_merges_two_distinct_pages(
        tmp_path: Path) -> None:
    # Every write stores a unique token, so two distinct pages with equal content come
    # from a copy without a store: v5.19 fork copies a pinned exclusive page for the child.
    doc = {"kernel": "v5.19",
           "steps": [{"op": "mmap", "mm": "parent", "page": 0},
                     {"op": "madvise", "mm": "parent", "page": 0, "advice": "mergeable"},
                     {"op": "write", "mm": "parent", "page": 0},
                     {"op": "gup", "mm": "parent", "page": 0, "kind": "pin", "name": "dma"},
                     {"op": "fork", "mm": "parent", "child": "child"},
                     {"op": "put", "name": "dma"},
                     {"op": "ksm_merge", "pages": [{"mm": "parent", "page": 0},
                                                   {"mm": "child", "page": 0}]},
                     {"op": "write", "mm": "child", "page": 0}]}
    result = run(Scenario.load(write_scenario(tmp_path, doc)))
    assert result.counters["ksm_merged"] == 1
    last = result.attempts[-1]
    assert (last.step, last.mm, last.outcome) == (7, "child", "copy")
    assert result.counters["cow_ksm"] == 1
    assert result.violations == []


def test_ksm_merge_of_pages_written_with_the_same_data_merges_them(tmp_path: Path) -> None:
    doc = {"kernel": "v5.19",
           "steps": [MMAP_A,
                     {"op": "madvise", "mm": "a", "page": 0, "pages": 2, "advice": "mergeable"},
                     {"op": "write", "mm": "a", "page": 0, "pages": 2, "data": "same"},
                     {"op": "ksm_merge", "pages": [{"mm": "a", "page": 0},
                                                   {"mm": "a", "page": 1}]},
                     {"op": "write", "mm": "a", "page": 1}]}
    result = run(Scenario.load(write_scenario(tmp_path, doc)))
    assert result.counters["ksm_merged"] == 1
    last = result.attempts[-1]
    assert (last.step, last.outcome, last.reason) == (4, "copy", "ksm")
    assert result.violations == []


@pytest.mark.parametrize("policy", [None, "random"], ids=["default", "random"])
def test_running_the_same_scenario_twice_gives_identical_output(policy: str | None) -> None:
    path = SCENARIO_DIR / "forceswap.yaml"
    first = run(Scenario.load(path), policy).to_dict()
    second = run(Scenario.load(path), policy).to_dict()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_format_result_shows_the_attempt_table_and_the_violations() -> None:
    result = run(Scenario.load(SCENARIO_DIR / "cve-2020-29374.yaml"), "legacy")
    text = format_result(result)
    lines = text.splitlines()
    assert lines[0].endswith("kernel v5.7, policy legacy")
    assert lines[2].split()[:6] == ["step", "mm", "page", "cpu", "fault", "outcome"]
    assert "violations: 1" in lines
    assert "  step 5: leak at mm parent page 0 (reuse)" in lines


# ------------------------------------------------------- page bounds and progress (issue 16)


@pytest.mark.parametrize("op", ["write", "mprotect", "madvise", "gup"])
def test_a_step_over_the_page_limit_is_refused_before_anything_runs(
    tmp_path: Path, op: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from cowlab.cli import main

    extra = {"write": "", "mprotect": ", prot: r", "madvise": ", advice: pageout",
             "gup": ", name: g, kind: pin"}[op]
    path = tmp_path / "big.yaml"
    path.write_text("steps:\n  - {op: mmap, mm: a, page: 0, pages: 4}\n"
                    f"  - {{op: {op}, mm: a, page: 0, pages: 1000000000{extra}}}\n")
    assert main(["scenario", "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"big.yaml: step 1 ({op}): field 'pages' is 1000000000, over the limit of " \
           "1048576 pages per step (raise it with --max-pages)" in err


def test_max_pages_raises_or_lowers_the_limit(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cowlab.cli import main
    from cowlab.scenario import MAX_PAGES

    path = tmp_path / "s.yaml"
    path.write_text("steps:\n  - {op: mmap, mm: a, page: 0, pages: 8}\n"
                    "  - {op: write, mm: a, page: 0, pages: 8}\n")
    assert MAX_PAGES == 1 << 20
    assert main(["scenario", "run", str(path), "--max-pages", "4"]) == 2
    assert "over the limit of 4 pages" in capsys.readouterr().err
    assert main(["scenario", "run", str(path), "--max-pages", "8", "--quiet"]) == 0
    assert main(["scenario", "run", str(path), "--max-pages", "0"]) == 2


def test_long_scenario_runs_report_progress() -> None:
    import io

    from cowlab.scenario import Scenario, ScenarioRunner

    scenario = Scenario.from_mapping({"steps": [
        {"op": "mmap", "mm": "a", "page": 0, "pages": 6},
        {"op": "write", "mm": "a", "page": 0, "pages": 6},
    ]}, source="s.yaml")
    out = io.StringIO()
    ScenarioRunner(scenario, get_registry().make_policy("exclusive"), progress=out,
                   progress_every_s=0.0).run()
    lines = out.getvalue().splitlines()
    assert "s.yaml: step 2/2 (write) page 3/6, 3 write attempts" in lines[3]
    assert lines[-1].startswith("s.yaml: step 2/2 (write) done, 6 write attempts")
    quiet = io.StringIO()
    ScenarioRunner(scenario, get_registry().make_policy("exclusive"), progress=quiet).run()
    assert quiet.getvalue() == ""  # a short run prints nothing


def test_migrate_duration_must_be_positive_and_finite(tmp_path: Path) -> None:
    doc = {"steps": [{"op": "mmap", "mm": "a", "page": 0},
                     {"op": "migrate", "mm": "a", "page": 0, "duration_us": 0}]}
    with pytest.raises(ScenarioError, match=r"step 1 \(migrate\): field 'duration_us'"):
        Scenario.load(write_scenario(tmp_path, doc))


def test_madvise_free_of_an_mlocked_range_names_the_step(tmp_path: Path) -> None:
    doc = {"steps": [{"op": "mmap", "mm": "a", "page": 0},
                     {"op": "mlock", "mm": "a", "page": 0},
                     {"op": "madvise", "mm": "a", "page": 0, "advice": "free"}]}
    scenario = Scenario.load(write_scenario(tmp_path, doc))
    with pytest.raises(ScenarioError, match=r"step 2 \(madvise\): .*mlocked \(EINVAL\)"):
        ScenarioRunner(scenario, policy_for(scenario)).run()


def test_a_speculative_reference_lasts_exactly_until_the_next_write_step(
    tmp_path: Path,
) -> None:
    doc = {"kernel": "v5.9", "machine": {"swap": "pmem"}, "steps": [
        {"op": "mmap", "mm": "a", "page": 0},
        {"op": "write", "mm": "a", "page": 0},
        {"op": "madvise", "mm": "a", "page": 0, "advice": "pageout"},
        {"op": "read", "mm": "a", "page": 0},
        {"op": "lru_drain", "cpu": 0},
        {"op": "speculative", "mm": "a", "page": 0},
        {"op": "write", "mm": "a", "page": 0},
        {"op": "mprotect", "mm": "a", "page": 0, "prot": "r"},
        {"op": "mprotect", "mm": "a", "page": 0, "prot": "rw"},
        {"op": "lru_drain", "cpu": 0},
        {"op": "write", "mm": "a", "page": 0},
    ]}
    result = ScenarioRunner(Scenario.load(write_scenario(tmp_path, doc)),
                            get_registry().make_policy("baseline")).run()
    copy, reuse = result.attempts[-2:]
    assert (copy.outcome, copy.blockers) == ("copy", ("speculative",))
    assert reuse.outcome == "reuse"
    assert result.kernel.speculative == []

