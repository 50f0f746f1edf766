"""The ``cowlab real`` verb's input errors (exit 2, file and step named); run everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowlab.cli import main


def test_emit_prints_a_c_program(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["real", "emit", "experiments/scenarios/cve-2020-29374.yaml"]) == 0
    out = capsys.readouterr().out
    assert "int main(int argc" in out and "S 3 gupget 1 0 1 0 0" in out


def test_bad_scenario_fails_like_scenario_run(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {op: mmap, mm: a, page: 0}\n  - {op: wrte, mm: a, page: 0}\n")
    assert main(["real", "emit", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: step 1: unknown op 'wrte'" in err
    assert main(["scenario", "run", str(bad)]) == 2
    assert f"{bad}: step 1: unknown op 'wrte'" in capsys.readouterr().err


def test_runtime_error_of_the_simulator_refuses_emit(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {op: mmap, mm: a, page: 0}\n  - {op: write, mm: a, page: 9}\n")
    assert main(["real", "emit", str(bad)]) == 2
    assert f"{bad}: step 1 (write)" in capsys.readouterr().err


def test_import_refuses_a_non_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = tmp_path / "r.json"
    res.write_text("{\"uname\": {\"release\": \"6.1.0\"}}")
    assert main(["real", "import", str(res), "experiments/scenarios/cve-2020-29374.yaml"]) == 2
    assert "not a cowlab real-kernel result" in capsys.readouterr().err
    res.write_text("not json")
    assert main(["real", "import", str(res), "experiments/scenarios/cve-2020-29374.yaml"]) == 2
    assert "cannot read a JSON result" in capsys.readouterr().err
