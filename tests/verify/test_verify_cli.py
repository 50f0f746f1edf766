"""``cowlab verify`` on the command line: exit statuses, --out, --json, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cowlab.cli import main


def test_a_counterexample_exits_1_and_is_written_as_a_scenario(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cx.yaml"
    assert main(["verify", "--policy", "always-reuse", "--kernel", "v5.9", "--depth", "2",
                 "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "counterexample of 2 steps: leak" in text
    assert out.exists() and "kernel: v5.9" in out.read_text()


def test_an_exhausted_bound_exits_0_and_says_safe_up_to_depth(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--policy", "oracle", "--depth", "2", "--ops", "write,fork"]) == 0
    text = capsys.readouterr().out
    assert "safe up to depth 2 over this universe: 2 mms, 1 pages, 2 cpus" in text


def test_json_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--policy", "oracle", "--depth", "2", "--ops", "write,fork",
                 "--json", "--progress"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["status"] == "safe" and doc["explored"] > 0 and doc["distinct"] > 1
    assert "explored" in captured.err and "states/s" in captured.err


@pytest.mark.parametrize("argv,message", [
    (["--policy", "nope"], "unknown policy 'nope'"),
    (["--kernel", "v9.9"], "unknown kernel preset"),
    (["--ops", "write,frok"], "unknown op family 'frok'"),
    (["--depth", "0"], "--depth"),
    (["--ops", "thp", "--kernel", "v5.19"], "--ops thp"),
    (["--random", "--budget", "soon"], "--budget"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_random_mode_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--policy", "always-reuse", "--random", "--sequences", "5",
                 "--steps", "20", "--seed", "1"]) == 1
    assert "random: counterexample" in capsys.readouterr().out
