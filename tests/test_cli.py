"""Behaviour of the ``cowlab`` command line (cowlab.cli.main)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "experiments" / "scenarios"
CVE = SCENARIO_DIR / "cve-2020-29374.yaml"

POLICIES = ("legacy", "baseline", "patched", "patched-lru", "exclusive", "large-strict",
            "exact-mapcount", "oracle", "always-copy", "always-reuse", "random")
KERNELS = ("v5.7", "v5.8", "v5.9", "v5.11", "v5.12", "v5.18", "v5.19", "v6.2", "v6.9", "v6.11",
           "v6.12", "v6.15")


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``cowlab ARGV``; return (exit status, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "scenario", "run", *argv, "--json")
    assert code == 0, err
    assert err == ""
    doc: dict[str, Any] = json.loads(out)
    return doc


def bad_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text("steps:\n  - {op: mmap, mm: a, page: 0}\n  - {op: wirte, mm: a, page: 0}\n",
                    encoding="utf-8")
    return path


def assert_one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cowlab: error: ")
    return lines[0]


# --------------------------------------------------------------------------- scenario run


def test_scenario_run_prints_a_table_with_a_header_and_the_violation_count(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "scenario", "run", str(CVE))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"scenario {CVE}: kernel v5.7, policy legacy"
    header = next(line for line in lines if line.lstrip().startswith("step"))
    for column in ("mm", "page", "cpu", "fault", "outcome", "reason", "violation", "blockers"):
        assert column in header
    assert any(line.startswith("violations: ") for line in lines)
    assert "counters:" in lines


def test_scenario_run_json_prints_one_parseable_document(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, str(SCENARIO_DIR / "fork-child-live.yaml"))
    assert set(doc) == {"scenario", "kernel", "policy", "attempts", "counters", "violations",
                        "metrics"}
    assert doc["kernel"] == "v5.19" and doc["policy"] == "exclusive"
    assert [a["step"] for a in doc["attempts"]] == [1, 1, 1, 1, 3, 3, 4, 4, 5, 5, 6, 6]


def test_legacy_policy_on_the_cve_scenario_reports_the_leak(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, str(CVE), "--policy", "legacy")
    assert doc["kernel"] == "v5.7" and doc["policy"] == "legacy"
    assert [(v["step"], v["mm"], v["violation"]) for v in doc["violations"]] == [
        (5, "parent", "leak")]
    code, out, _ = cli(capsys, "scenario", "run", str(CVE), "--policy", "legacy")
    assert code == 0
    assert "violations: 1" in out.splitlines()
    assert "  step 5: leak at mm parent page 0 (reuse)" in out.splitlines()


@pytest.mark.parametrize(("policy", "kernel"), [
    ("baseline", "v5.9"), ("exclusive", "v5.19"), ("oracle", None), ("oracle", "v5.19"),
])
def test_fixed_policies_on_the_cve_scenario_report_no_violation(
        capsys: pytest.CaptureFixture[str], policy: str, kernel: str | None) -> None:
    extra = ["--kernel", kernel] if kernel else []
    doc = run_json(capsys, str(CVE), "--policy", policy, *extra)
    assert doc["policy"] == policy
    assert doc["kernel"] == (kernel or "v5.7")
    assert doc["violations"] == []
    # The parent's write after the child's vmsplice + unmap must copy.
    last = doc["attempts"][-1]
    assert (last["step"], last["mm"], last["outcome"]) == (5, "parent", "copy")
    code, out, _ = cli(capsys, "scenario", "run", str(CVE), "--policy", policy, *extra)
    assert code == 0 and "violations: 0" in out.splitlines()


def test_kernel_option_selects_the_presets_default_policy(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, str(CVE), "--kernel", "v5.19")
    assert (doc["kernel"], doc["policy"]) == ("v5.19", "exclusive")


def test_unknown_policy_exits_2_and_lists_the_known_policies(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "scenario", "run", str(CVE), "--policy", "nosuch")
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert "--policy: unknown policy 'nosuch'" in line
    assert "known:" in line and "exclusive" in line


def test_misspelt_policy_exits_2_with_a_did_you_mean(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "scenario", "run", str(CVE), "--policy", "exclusiv")
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert "unknown policy 'exclusiv' (did you mean 'exclusive'?)" in line


def test_unknown_kernel_option_exits_2_with_a_did_you_mean(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "scenario", "run", str(CVE), "--kernel", "v5.91")
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert "--kernel: unknown kernel preset 'v5.91' (did you mean 'v5.9'?)" in line


def test_bad_scenario_file_exits_2_with_the_message_on_stderr(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = bad_scenario(tmp_path)
    code, out, err = cli(capsys, "scenario", "run", str(path))
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert f"{path}: step 1: unknown op 'wirte' (did you mean 'write'?)" in line


def test_missing_scenario_file_exits_2(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    code, out, err = cli(capsys, "scenario", "run", str(path))
    assert code == 2 and out == ""
    assert f"{path}: cannot read scenario" in assert_one_error_line(err)


def test_scenario_failing_at_runtime_exits_2_naming_the_step(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "runtime.yaml"
    path.write_text("steps:\n  - {op: mmap, mm: a, page: 0}\n  - {op: write, mm: b, page: 0}\n",
                    encoding="utf-8")
    code, out, err = cli(capsys, "scenario", "run", str(path))
    assert code == 2 and out == ""
    assert f"{path}: step 1 (write): unknown mm 'b' (known: a)" in assert_one_error_line(err)


def test_preset_default_policy_override_in_the_file_is_blamed_on_the_file(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("kernel: {preset: v5.18, default_policy: nosuch}\n"
                    "steps:\n  - {op: mmap, mm: a, page: 0}\n", encoding="utf-8")
    code, out, err = cli(capsys, "scenario", "run", str(path))
    assert code == 2 and out == ""
    line = assert_one_error_line(err)
    assert line.startswith(f"cowlab: error: {path}: kernel: 'default_policy'")


def test_non_utf8_scenario_file_exits_2(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"steps:\n  - {op: mmap, mm: caf\xe9, page: 0}\n")
    code, out, err = cli(capsys, "scenario", "run", str(path))
    assert code == 2 and out == ""
    assert f"{path}: " in assert_one_error_line(err)


# --------------------------------------------------------------------------- listings


def test_plugins_lists_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "plugins")
    assert code == 0 and err == ""
    assert "kernel_policies" in out and "reference_policies" in out
    for name in POLICIES:
        assert f"policy  {name} " in out, name


def test_plugins_json_parses_and_lists_every_shipped_policy(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "plugins", "--json")
    assert code == 0 and err == ""
    plugins = json.loads(out)
    assert isinstance(plugins, list)
    registered = {(item["kind"], item["name"]) for p in plugins for item in p["registered"]}
    assert {("policy", name) for name in POLICIES} <= registered
    assert all(p["loaded"] for p in plugins if p["name"] in ("kernel_policies",
                                                              "reference_policies"))


def test_policies_lists_every_registered_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "policies")
    assert code == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert set(POLICIES) <= set(names)


def test_kernels_lists_every_preset_oldest_first(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "kernels")
    assert code == 0 and err == ""
    names = [line.split()[0] for line in out.splitlines()]
    assert names == list(KERNELS)
    assert "default policy exclusive" in out


def test_kernels_facilities_shows_the_facility_flags(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "kernels", "--facilities")
    assert code == 0
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("facility"))
    assert header.split()[1:] == list(KERNELS)
    rows = {line.split()[0]: line.split()[1:] for line in lines[lines.index(header) + 1:]}
    assert rows["lru_batch_size"][list(KERNELS).index("v6.9")] == "31"
    # v5.11's pinned-page protections start at v5.11 and stay.
    assert rows["reclaim_skips_pinned"] == ["-"] * 3 + ["yes"] * (len(KERNELS) - 3)
    assert rows["anon_exclusive"][list(KERNELS).index("v5.19")] == "yes"


# --------------------------------------------------------------------------- usage


def test_no_arguments_exits_2_with_usage_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys)
    assert code == 2 and out == ""
    assert "usage: cowlab" in err


def test_scenario_without_an_action_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "scenario")
    assert code == 2 and out == ""
    assert "usage: cowlab scenario" in err


def test_module_entry_point_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    path = bad_scenario(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "cowlab.cli", "scenario", "run", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"cowlab: error: {path}: step 1: unknown op 'wirte'")


def test_a_plugin_command_is_added_to_the_cli(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """cowlab_register_commands(cli): the plugin's sub-command runs like a built-in one."""
    import types

    from cowlab import hookimpl
    from cowlab.plugins import load_registry

    plugin = types.ModuleType("hello_plugin")

    @hookimpl
    def cowlab_register_commands(cli: Any) -> None:
        parser = cli.add_command("hello", help="say hello")
        parser.add_argument("who")
        parser.set_defaults(handler=lambda args: print(f"hello {args.who}") or 0)

    plugin.cowlab_register_commands = cowlab_register_commands  # type: ignore[attr-defined]
    registry = load_registry(entry_points=True, extra_plugins=[("hello_plugin", plugin)])
    monkeypatch.setattr("cowlab.cli.get_registry", lambda: registry)
    assert main(["hello", "world"]) == 0
    assert capsys.readouterr().out.strip() == "hello world"
