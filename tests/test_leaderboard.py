"""The leaderboard: safety-first ranking, scores per cell, every output end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main
from cowlab.config import WorkloadEntry
from cowlab.leaderboard import (
    LeaderboardError,
    SuiteConfig,
    analyze,
    latex_escape,
    load_leaderboard_config,
    suite_specs,
)
from cowlab.records import RunSpec

SUITE = SuiteConfig(name="t-v1", kernels=["v5.19"], workloads=[WorkloadEntry("w", {})],
                    seeds=[0, 1], max_decisions=10)


def _record(policy: str, seed: int, rate: float, violations: int = 0,
            kind: str = "kernel") -> dict[str, Any]:
    spec = RunSpec(policy=policy, kernel="v5.19", workload="w", seed=seed, max_decisions=10)
    return {
        "config": spec.to_dict(),
        "policy": {"kind": kind},
        "metrics": {
            "reuse_rate": rate, "violations": {"leak": violations, "pin_incoherent": 0},
            "violations_total": violations, "unnecessary_copies": 2,
            "unnecessary_copies_by_blocker": {"lru": 2}, "mean_latency_ns": 1000.0,
            "p99_latency_ns": 2000.0, "extra_pages": 3,
        },
    }


def _records() -> list[dict[str, Any]]:
    recs = []
    for s in (0, 1):
        recs += [
            _record("baseline", s, 0.2),
            _record("oracle", s, 1.0, kind="oracle"),
            _record("good", s, 0.6),
            _record("reckless", s, 1.0, violations=1 if s else 0),
        ]
    return recs


def test_scores_are_normalized_per_cell_between_baseline_and_oracle() -> None:
    board = analyze(SUITE, ["good", "baseline", "oracle"], _records(), reference="baseline",
                    reps=50)
    rows = {r.entry: r for r in board.rows}
    assert rows["good"].iqm == pytest.approx(0.5)
    assert rows["baseline"].iqm == 0.0
    assert rows["oracle"].iqm == 1.0
    assert rows["oracle"].poi == 1.0  # every oracle run beats every baseline run
    assert rows["good"].mean_latency_us == 1.0
    assert rows["good"].blockers == {"lru": 4}


def test_any_violation_ranks_an_entry_below_every_safe_one() -> None:
    board = analyze(SUITE, ["reckless", "good", "baseline"], _records(), reps=50,
                    reference="baseline")
    assert [r.entry for r in board.rows] == ["good", "baseline", "reckless"]
    assert board.rows[-1].iqm == 1.0 and not board.rows[-1].safe
    assert board.rows[-1].runs_with_violations == 1


def test_a_missing_run_is_reported() -> None:
    from cowlab.leaderboard import LeaderboardError

    with pytest.raises(LeaderboardError, match="no record of good"):
        analyze(SUITE, ["good"], _records()[:3], reps=10, reference="baseline")


def test_suite_specs_add_the_anchor_policies() -> None:
    specs = suite_specs(SUITE, ["exclusive"])
    assert sorted({s.policy for s in specs}) == ["baseline", "exclusive", "oracle"]
    assert len(specs) == 3 * 2


def test_latex_escape_handles_special_characters() -> None:
    assert latex_escape("a_b & 5% #1") == r"a\_b \& 5\% \#1"


def test_committed_config_names_the_suite_and_a_trained_agent() -> None:
    cfg = load_leaderboard_config("configs/leaderboard/cowlab-bench-v1.yaml")
    assert cfg.suite == "configs/suites/cowlab-bench-v1.yaml"
    assert "sb3:experiments/leaderboard/agent/model.zip" in cfg.entries
    assert {"baseline", "oracle", "exclusive"} <= set(cfg.entries)


@pytest.mark.slow
def test_leaderboard_command_writes_every_output_and_they_parse(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the leaderboard extra is not installed")
    out = tmp_path / "lb"
    code = main(["leaderboard", "configs/leaderboard/smoke.yaml", f"output={out}",
                 "executor=inprocess", "bootstrap_reps=100", "--quiet"])
    assert code == 0
    md = (out / "leaderboard.md").read_text()
    assert "| rank | entry | kind |" in md and "lexicographic" in md
    with open(out / "main.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["entry"] for r in rows][:1] and {r["kind"] for r in rows} >= {"kernel", "oracle"}
    assert all(not math.isnan(float(r["score_iqm"])) for r in rows)
    with open(out / "per_workload.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(rows) * 2
    for tex in ("main.tex", "per_workload.tex"):
        text = (out / tex).read_text()
        assert "\\toprule" in text and "\\bottomrule" in text
        assert text.count("\\begin{tabular}") == text.count("\\end{tabular}") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["entries"]) == len(rows)
    from PIL import Image

    for png in ("blockers.png", "profiles.png"):
        with Image.open(out / png) as img:
            assert img.format == "PNG" and img.size[0] > 500
    # A second run reuses every record and writes the same table.
    first = (out / "main.csv").read_text()
    assert main(["leaderboard", "configs/leaderboard/smoke.yaml", f"output={out}",
                 "executor=inprocess", "bootstrap_reps=100", "--quiet"]) == 0
    assert (out / "main.csv").read_text() == first


# ------------------------------------------------------------------- issue 16: no traps


def test_an_unknown_entry_or_reference_fails_before_the_process_pool_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for override, name in (("entries=[exclusiv]", "exclusiv"), ("reference=nope", "nope")):
        out = tmp_path / name
        code = main(["leaderboard", "configs/leaderboard/smoke.yaml", override,
                     f"output={out}", "executor=process", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"unknown policy '{name}'" in err and "configs/leaderboard/smoke.yaml" in err
        assert "Traceback" not in err and not (out / "records.jsonl").exists()


@pytest.mark.parametrize("override, words", [
    ("bootstrap_reps=-1", "bootstrap_reps: must be at least 1"),
    ("confidence=1.5", "confidence: must be between 0 and 1"),
    ("workers=0", "workers: must be at least 1"),
    ("seed=-1", "seed: must not be negative"),
    ("executor=local2", "executor: expected one of inprocess, process, ray"),
])
def test_bad_statistics_or_executor_values_are_located_usage_errors(
    override: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["leaderboard", "configs/leaderboard/smoke.yaml", override]) == 2
    err = capsys.readouterr().err
    assert words in err and "smoke.yaml" in err


def test_the_old_executor_name_local_is_accepted_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'local' is deprecated, use 'process'"):
        cfg = load_leaderboard_config("configs/leaderboard/smoke.yaml", ["executor=local"])
    assert cfg.executor == "process"


def test_the_suite_path_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cowlab.leaderboard import load_suite

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "suite.yaml").write_text(Path("configs/suites/smoke.yaml").read_text())
    (tmp_path / "cfg" / "lb.yaml").write_text("suite: suite.yaml\nentries: [exclusive]\n")
    monkeypatch.chdir(tmp_path)  # a different working directory
    cfg = load_leaderboard_config("cfg/lb.yaml")
    assert Path(cfg.suite) == Path("cfg/suite.yaml")
    assert load_suite(cfg.suite).name == "cowlab-smoke-v1"
    (tmp_path / "cfg" / "bad.yaml").write_text("suite: missing.yaml\nentries: [exclusive]\n")
    assert main(["leaderboard", "cfg/bad.yaml"]) == 2
    assert "cfg/missing.yaml: cannot read suite" in capsys.readouterr().err


def test_entry_labels_name_the_entries_in_every_table(tmp_path: Path) -> None:
    (tmp_path / "lb.yaml").write_text(
        f"suite: {Path('configs/suites/smoke.yaml').resolve()}\n"
        "entries: [{policy: exclusive, label: excl}, baseline]\n")
    cfg = load_leaderboard_config(tmp_path / "lb.yaml")
    assert cfg.entries == ["exclusive", "baseline"] and cfg.labels == {"exclusive": "excl"}
    board = analyze(SUITE, ["good", "baseline", "oracle"], _records(), reference="good",
                    reps=20, labels={"good": "G"})
    from cowlab.leaderboard import main_csv, main_latex, markdown, per_workload_csv

    assert "| G |" in markdown(board, figures=False) and "P(> G)" in markdown(board)
    assert ",G,good,kernel," in main_csv(board) and "\nG,w," in per_workload_csv(board)
    assert " & G & " in main_latex(board)
    (tmp_path / "dup.yaml").write_text(
        f"suite: {Path('configs/suites/smoke.yaml').resolve()}\n"
        "entries: [{policy: exclusive, label: x}, {policy: baseline, label: x}]\n")
    with pytest.raises(LeaderboardError, match=r"the label\(s\) x name more than one entry"):
        load_leaderboard_config(tmp_path / "dup.yaml")


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from cowlab.evaluate import run_sweep
    from cowlab.executors import InProcessExecutor
    from cowlab.leaderboard import load_suite

    suite = load_suite("configs/suites/smoke.yaml")
    specs = suite_specs(suite, ["exclusive", "always-copy", "random"])
    out = tmp_path_factory.mktemp("smoke") / "records.jsonl"
    return run_sweep(specs, out, executor=InProcessExecutor(), progress=False).records


def _outputs(records: list[dict[str, Any]], out: Path) -> dict[str, bytes]:
    from cowlab.leaderboard import load_suite, write_outputs

    suite = load_suite("configs/suites/smoke.yaml")
    board = analyze(suite, ["exclusive", "always-copy", "random", "baseline"], records,
                    reps=300, seed=0, name="det")
    write_outputs(board, out)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_outputs_are_the_same_bytes_when_regenerated_or_made_from_shuffled_records(
    smoke_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    import random

    first = _outputs(smoke_records, tmp_path / "a")
    again = _outputs(smoke_records, tmp_path / "b")
    shuffled = list(smoke_records)
    random.Random(3).shuffle(shuffled)
    mixed = _outputs(shuffled, tmp_path / "c")
    assert {"main.csv", "summary.json", "main.tex", "per_workload.csv"} <= set(first)
    assert first == again == mixed
    # printed numbers are rounded: no float noise past DIGITS decimals in the CSV
    for row in (tmp_path / "a" / "main.csv").read_text().splitlines()[1:]:
        for cell in row.split(","):
            assert len(cell.partition(".")[2]) <= 6 or not cell[:1].isdigit()


def test_without_matplotlib_the_tables_are_written_and_the_figures_explained(
    smoke_records: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    from cowlab.records import rewrite

    records = tmp_path / "records.jsonl"
    rewrite(records, list(smoke_records))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were missing
    code = main(["leaderboard", "configs/leaderboard/smoke.yaml", f"output={tmp_path}",
                 f"records={records}", "entries=[exclusive,always-copy,random]",
                 "executor=inprocess", "bootstrap_reps=50", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "figures need matplotlib" in captured.err
    md = (tmp_path / "leaderboard.md").read_text()
    assert ".png" not in md and "cowlab[leaderboard]" in md
    assert not list(tmp_path.glob("*.png")) and (tmp_path / "main.tex").exists()


def _compile(tmp_path: Path, *tables: str) -> str:
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed")
    doc = tmp_path / "paper.tex"
    doc.write_text("\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
                   "\\usepackage{graphicx}\n\\begin{document}\n"
                   + "".join(f"\\input{{{t}}}\n" for t in tables)
                   + "Text.\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           doc.name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert done.returncode == 0, log[-2000:]
    return log


def test_latex_tables_compile_with_pdflatex_and_fit_a_two_column_page(tmp_path: Path) -> None:
    from cowlab.leaderboard import main_latex, main_narrow_latex, per_workload_latex

    long_name = "sb3:experiments/leaderboard/agent_with_a_long_name/model.zip"
    recs = [{**r, "config": {**r["config"], "policy": long_name}}
            for r in _records() if r["config"]["policy"] == "good"]
    board = analyze(SUITE, [long_name, "baseline", "reckless"], [*_records(), *recs],
                    reference=long_name, reps=20, name="t_v1 & 50%")
    for name, text in (("main.tex", main_latex(board)), ("narrow.tex", main_narrow_latex(board)),
                       ("wl.tex", per_workload_latex(board))):
        (tmp_path / name).write_text(text)
        assert "\\toprule" in text and "\\caption{" in text and "\\label{tab:" in text
    main_tex = (tmp_path / "main.tex").read_text()
    assert "\\begin{tabular}{@{}rllrrrrrrr@{}}" in main_tex  # numbers right-aligned
    assert "$P(>$" in main_tex and "$\\mu$s" in main_tex
    assert "¿" not in main_tex and "P(>" not in main_tex.replace("$P(>$", "")
    log = _compile(tmp_path, "main.tex", "narrow.tex", "wl.tex")
    assert "Overfull \\hbox" not in log
    assert "Output written on paper.pdf" in log


def test_negative_numbers_get_a_math_minus_and_names_keep_their_hyphens() -> None:
    from cowlab.leaderboard import _latex_number

    assert _latex_number("-6.23 [-7.28, -5.24]") == "$-$6.23 [$-$7.28, $-$5.24]"
    assert _latex_number("1 in 2/60 runs") == "1 in 2/60 runs"
    assert latex_escape("always-copy") == "always-copy"
