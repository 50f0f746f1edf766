"""Ordinary mistakes around the simulator are exit 2 with a located message (issue 16):
a policy whose reset() or decide() raises, even SystemExit(0), in every command."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from cowlab import Decision, hookimpl
from cowlab.cli import main


class _Broken:
    """A policy that fails where ``mode`` says."""

    def __init__(self, mode: str) -> None:
        self.name = f"broken-{mode}"
        self.mode = mode

    def reset(self, seed: int | None) -> None:
        if self.mode == "reset":
            raise ValueError("reset broke")

    def decide(self, view: object) -> Decision:
        if self.mode == "exit":
            raise SystemExit(0)
        if self.mode == "decide":
            raise RuntimeError("decide broke")
        return Decision.COPY


@pytest.fixture(autouse=True)
def broken_policies(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from cowlab import plugins

    @hookimpl
    def cowlab_register_policies(register: plugins.RegisterFn) -> None:
        for mode in ("reset", "decide", "exit"):
            register(f"broken-{mode}", lambda mode=mode: _Broken(mode),
                     description=f"raises in {mode}")

    module = types.ModuleType("broken_policies")
    module.cowlab_register_policies = cowlab_register_policies  # type: ignore[attr-defined]
    registry = plugins.load_registry(extra_plugins=[("broken_policies", module)])
    monkeypatch.setattr(plugins, "_cached", registry)
    yield


MODES = [("reset", "ValueError: reset broke"), ("decide", "raised RuntimeError: decide broke"),
         ("exit", "raised SystemExit(0)")]


@pytest.mark.parametrize(("mode", "words"), MODES)
def test_eval_reports_a_failing_policy_as_a_usage_error(
    tmp_path: Path, mode: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["eval", "--policy", f"broken-{mode}", "--workload", "forceswap-v1",
                 "--decisions", "20", "--out", str(tmp_path / "r.jsonl"),
                 "--executor", "inprocess", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"run of broken-{mode} on forceswap-v1 / v5.19 / seed 0" in err and words in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("mode", "words"), MODES)
def test_leaderboard_reports_a_failing_policy_as_a_usage_error(
    tmp_path: Path, mode: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["leaderboard", "configs/leaderboard/smoke.yaml", f"entries=[broken-{mode}]",
                 f"output={tmp_path}", "executor=inprocess", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"run of broken-{mode} on " in err and words in err and "Traceback" not in err


@pytest.mark.parametrize(("mode", "words"), MODES)
def test_workload_and_scenario_runs_report_a_failing_policy(
    tmp_path: Path, mode: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["workload", "run", "forceswap-v1", "--policy", f"broken-{mode}",
                 "--decisions", "5"]) == 2
    err = capsys.readouterr().err
    assert "workload forceswap-v1" in err and "Traceback" not in err
    scenario = tmp_path / "s.yaml"
    scenario.write_text("steps:\n  - {op: mmap, mm: a, page: 0, pages: 1}\n"
                        "  - {op: write, mm: a, page: 0}\n  - {op: fork, mm: a, child: b}\n"
                        "  - {op: write, mm: a, page: 0}\n")
    assert main(["scenario", "run", str(scenario), "--policy", f"broken-{mode}"]) == 2
    err = capsys.readouterr().err
    assert "s.yaml" in err and "Traceback" not in err
    if mode == "exit":
        assert words in err
