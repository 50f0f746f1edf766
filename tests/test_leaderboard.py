"""The leaderboard: safety-first ranking, scores per cell, every output end to end."""

from __future__ import annotations

import csv
import json
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


def test_the_score_is_the_reuse_rate_iqm_and_poi_is_against_the_reference() -> None:
    board = analyze(SUITE, ["good", "baseline", "oracle"], _records(), reference="baseline",
                    reps=50).boards[0]
    rows = {r.entry: r for r in board.rows}
    assert rows["good"].iqm == pytest.approx(0.6)
    assert rows["baseline"].iqm == pytest.approx(0.2)
    assert rows["oracle"].iqm == 1.0
    assert rows["oracle"].poi == 1.0  # every oracle run beats every baseline run
    assert rows["baseline"].reference and rows["baseline"].poi == 0.5  # ties count half
    assert rows["good"].mean_latency_us == 1.0
    assert rows["good"].blockers == {"lru": 4}


def test_any_violation_ranks_an_entry_below_every_safe_one() -> None:
    board = analyze(SUITE, ["reckless", "good", "baseline"], _records(), reps=50,
                    reference="baseline").boards[0]
    assert [r.entry for r in board.rows] == ["good", "baseline", "reckless"]
    assert board.rows[-1].iqm == 1.0 and not board.rows[-1].safe
    assert board.rows[-1].runs_with_violations == 1


def test_a_missing_run_is_reported() -> None:
    from cowlab.leaderboard import LeaderboardError

    with pytest.raises(LeaderboardError, match="no record of good"):
        analyze(SUITE, ["good"], _records()[:3], reps=10, reference="baseline")


def test_suite_specs_add_each_presets_kernel_rule_on_that_preset_only() -> None:
    two = SuiteConfig(name="t2-v1", kernels=["v5.9", "v5.19"], workloads=[WorkloadEntry("w")],
                      seeds=[0, 1], max_decisions=10)
    specs = suite_specs(two, ["oracle"])
    assert sorted({(s.policy, s.kernel) for s in specs}) == [
        ("baseline", "v5.9"), ("exclusive", "v5.19"), ("oracle", "v5.19"), ("oracle", "v5.9")]
    assert len(specs) == 4 * 2
    # an entry that is also a preset's rule is run once
    assert len(suite_specs(two, ["exclusive"])) == 3 * 2


def test_latex_escape_handles_special_characters() -> None:
    assert latex_escape("a_b & 5% #1") == r"a\_b \& 5\% \#1"


def test_committed_config_names_the_suite_presets_and_a_trained_agent() -> None:
    from cowlab.leaderboard import KERNEL_REFERENCE, load_suite

    cfg = load_leaderboard_config("configs/leaderboard/cowlab-bench-v2.yaml")
    assert cfg.suite == "configs/suites/cowlab-bench-v2.yaml"
    assert "sb3:experiments/leaderboard/agent/model.zip" in cfg.entries
    assert {"baseline", "oracle", "exclusive", "patched-lru", "large-strict"} <= set(cfg.entries)
    assert cfg.reference == KERNEL_REFERENCE
    assert load_suite(cfg.suite).kernels == ["v5.9", "v5.18", "v5.19", "v6.9"]


@pytest.mark.slow
def test_leaderboard_command_writes_every_output_and_they_parse(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the leaderboard extra is not installed")
    out = tmp_path / "lb"
    suite = tmp_path / "suite.yaml"
    suite.write_text(Path("configs/suites/smoke.yaml").read_text().replace(
        "kernels: [v5.19]", "kernels: [v5.9, v5.19]"))
    argv = ["leaderboard", "configs/leaderboard/smoke.yaml", f"suite={suite}",
            f"output={out}", "executor=inprocess", "bootstrap_reps=100", "--quiet"]
    code = main(argv)
    assert code == 0
    md = (out / "leaderboard.md").read_text()
    assert "## Summary across presets" in md and "lexicographic" in md
    assert "## v5.9" in md and "## v5.19" in md
    for kernel in ("v5.9", "v5.19"):
        d = out / kernel
        with open(d / "main.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["kind"] for r in rows} >= {"kernel", "oracle"}
        assert all(0.0 <= float(r["reuse_rate_iqm"]) <= 1.0 for r in rows)
        with open(d / "per_workload.csv", newline="") as f:
            assert len(list(csv.DictReader(f))) == len(rows) * 2
        assert (d / "blockers.csv").read_text().startswith("entry,blocker,")
        for tex in ("main.tex", "per_workload.tex", "main-narrow.tex"):
            text = (d / tex).read_text()
            assert "\\toprule" in text and "\\bottomrule" in text
            assert text.count("\\begin{tabular}") == text.count("\\end{tabular}") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [b["kernel"] for b in summary["boards"]] == ["v5.9", "v5.19"]
    # A second run reuses every record and writes the same tables.
    first = (out / "v5.9" / "main.csv").read_text()
    assert main(argv) == 0
    assert (out / "v5.9" / "main.csv").read_text() == first


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
    lb = analyze(SUITE, ["good", "baseline", "oracle"], _records(), reference="good",
                 reps=20, labels={"good": "G"})
    board = lb.boards[0]
    from cowlab.leaderboard import main_csv, main_latex, markdown, per_workload_csv

    assert "| G (reference) |" in markdown(lb, figures=False) and "P(> G)" in markdown(lb)
    assert ",G,good,,kernel,True," in main_csv(board) and "\nG,w," in per_workload_csv(board)
    assert " & G (reference) & " in main_latex(board)
    (tmp_path / "dup.yaml").write_text(
        f"suite: {Path('configs/suites/smoke.yaml').resolve()}\n"
        "entries: [{policy: exclusive, label: x}, {policy: baseline, label: x}]\n")
    with pytest.raises(LeaderboardError, match=r"the label\(s\) x name more than one entry"):
        load_leaderboard_config(tmp_path / "dup.yaml")


SMOKE_ENTRIES = ["exclusive", "always-copy", "random", "random:p_reuse=0.9", "oracle"]


def smoke2() -> SuiteConfig:
    """The smoke suite on two presets (v5.9 and v5.19), for the per-preset boards."""
    from cowlab.leaderboard import load_suite

    suite = load_suite("configs/suites/smoke.yaml")
    suite.kernels = ["v5.9", "v5.19"]
    return suite


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    from cowlab.evaluate import run_sweep
    from cowlab.executors import InProcessExecutor

    specs = suite_specs(smoke2(), SMOKE_ENTRIES)
    out = tmp_path_factory.mktemp("smoke") / "records.jsonl"
    return run_sweep(specs, out, executor=InProcessExecutor(), progress=False).records


def _outputs(records: list[dict[str, Any]], out: Path) -> dict[str, bytes]:
    from cowlab.leaderboard import write_outputs

    lb = analyze(smoke2(), SMOKE_ENTRIES, records, reps=300, seed=0, name="det")
    write_outputs(lb, out)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_outputs_are_the_same_bytes_when_regenerated_or_made_from_shuffled_records(
    smoke_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    import random

    first = _outputs(smoke_records, tmp_path / "a")
    again = _outputs(smoke_records, tmp_path / "b")
    shuffled = list(smoke_records)
    random.Random(3).shuffle(shuffled)
    mixed = _outputs(shuffled, tmp_path / "c")
    assert {"v5.9/main.csv", "summary.json", "v5.19/main.tex", "v5.9/per_workload.csv",
            "summary.csv"} <= set(first)
    assert first == again == mixed
    # printed numbers are rounded: no float noise past DIGITS decimals in the CSV
    for row in (tmp_path / "a" / "v5.9" / "main.csv").read_text().splitlines()[1:]:
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
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.pdf"))
    assert (tmp_path / "v5.19" / "main.tex").exists() and "## v5.19" in md


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
                    reference=long_name, reps=20, name="t_v1 & 50%").boards[0]
    for name, text in (("main.tex", main_latex(board)), ("narrow.tex", main_narrow_latex(board)),
                       ("wl.tex", per_workload_latex(board))):
        (tmp_path / name).write_text(text)
        assert "\\toprule" in text and "\\caption{" in text and "\\label{tab:" in text
    main_tex = (tmp_path / "main.tex").read_text()
    assert "\\begin{tabular}{@{}rllrrrrlrrr@{}}" in main_tex  # numbers right-aligned
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


# ------------------------------------------------ issue 13: per-preset boards, bounded scores


def test_each_preset_gets_its_own_board_ranked_against_its_own_kernel_rule(
    smoke_records: list[dict[str, Any]]
) -> None:

    lb = analyze(smoke2(), SMOKE_ENTRIES, smoke_records, reps=50)
    assert [b.kernel for b in lb.boards] == ["v5.9", "v5.19"]
    old, new = lb.board("v5.9"), lb.board("v5.19")
    assert (old.kernel_rule, old.reference) == ("baseline", "baseline")
    assert (new.kernel_rule, new.reference) == ("exclusive", "exclusive")
    # the v5.9 rule is not an entry: its board adds it as the reference row
    assert [r.entry for r in old.rows if r.reference] == ["baseline"]
    assert "baseline" not in [r.entry for r in new.rows]
    assert [r.entry for r in new.rows if r.reference] == ["exclusive"]
    # P(> rule) is against that preset's rule
    assert next(r for r in old.rows if r.reference).poi == 0.5
    assert next(r for r in new.rows if r.entry == "always-copy").poi == 0.0


def test_a_rule_reading_a_facility_the_preset_lacks_is_flagged_on_that_preset_only(
    smoke_records: list[dict[str, Any]]
) -> None:
    from cowlab.leaderboard import main_rows, markdown

    lb = analyze(smoke2(), SMOKE_ENTRIES, smoke_records, reps=50)
    old = {r.entry: r for r in lb.board("v5.9").rows}
    new = {r.entry: r for r in lb.board("v5.19").rows}
    assert old["exclusive"].absent_reads["anon_exclusive"] > 0
    assert new["exclusive"].absent_reads == {}
    assert old["baseline"].absent_reads == {} and old["always-copy"].absent_reads == {}
    assert lb.board("v5.9").missing_facilities == ["anon_exclusive", "maybe_mapped_shared"]
    row = next(c for c in main_rows(lb.board("v5.9")) if c[1] == "exclusive")
    assert row[7].startswith("PageAnonExclusive (v5.19+) at ")
    assert "absent facility" in markdown(lb, figures=False)


def _rate_record(policy: str, seed: int, rate: float | None, workload: str = "w"
                 ) -> dict[str, Any]:
    rec = _record(policy, seed, 0.0)
    rec["config"]["workload"] = workload
    rec["metrics"]["reuse_rate"] = rate
    return rec


def test_scores_stay_within_0_and_1_when_the_kernel_rule_already_equals_the_oracle() -> None:
    # the cell that made the old normalized score blow up: no gap between rule and oracle
    suite = SuiteConfig(name="t-v1", kernels=["v5.19"],
                        workloads=[WorkloadEntry("w"), WorkloadEntry("x")], seeds=[0, 1, 2],
                        max_decisions=10)
    records = []
    for w in ("w", "x"):
        for s in (0, 1, 2):
            records += [_rate_record("exclusive", s, 1.0, w), _rate_record("oracle", s, 1.0, w),
                        _rate_record("always-copy", s, 0.0, w),
                        _rate_record("random", s, 0.4 + 0.01 * s, w)]
    board = analyze(suite, ["oracle", "always-copy", "random"], records, reps=200).boards[0]
    for r in board.rows:
        for x in (r.iqm, r.ci_low, r.ci_high, r.poi, r.poi_low, r.poi_high):
            assert 0.0 <= x <= 1.0, (r.entry, x)
    rows = {r.entry: r for r in board.rows}
    assert rows["always-copy"].iqm == 0.0 and rows["oracle"].iqm == 1.0
    assert rows["oracle"].poi == 0.5  # ties with the rule everywhere
    assert rows["random"].iqm == pytest.approx(0.41)


def test_runs_without_a_truly_reusable_fault_are_excluded_and_counted() -> None:
    records = [_rate_record("exclusive", s, 1.0) for s in (0, 1)]
    records += [_rate_record("good", 0, 0.5), _rate_record("good", 1, None)]
    board = analyze(SUITE, ["good"], records, reps=20).boards[0]
    good = next(r for r in board.rows if r.entry == "good")
    assert (good.runs, good.scored, good.unscored) == (2, 1, 1)
    assert good.iqm == 0.5
    from cowlab.leaderboard import main_rows

    assert next(c for c in main_rows(board) if c[1] == "good")[-1] == "1/2"


def test_parameterised_entries_are_separate_rows(
    smoke_records: list[dict[str, Any]]
) -> None:

    lb = analyze(smoke2(), SMOKE_ENTRIES, smoke_records, reps=50)
    rows = {r.entry: r for r in lb.board("v5.19").rows}
    assert rows["random"].params == {} and rows["random:p_reuse=0.9"].params == {"p_reuse": 0.9}
    assert rows["random:p_reuse=0.9"].iqm > rows["random"].iqm
    with pytest.raises(LeaderboardError, match="names the same runs as"):
        analyze(smoke2(), ["random:p_reuse=0.5", "random:p_reuse=0.50"], smoke_records, reps=5)


def test_a_bad_entry_parameter_in_a_leaderboard_config_is_a_located_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["leaderboard", "configs/leaderboard/smoke.yaml", "entries=['random:p=1']",
                 f"output={tmp_path}", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "smoke.yaml: entries[0]" in err
    assert "unknown parameter 'p' for policy 'random'" in err


def test_figures_are_png_and_pdf_for_the_summary_and_every_preset(
    smoke_records: list[dict[str, Any]], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib", reason="the leaderboard extra is not installed")
    from PIL import Image

    from cowlab.leaderboard import write_outputs

    lb = analyze(smoke2(), SMOKE_ENTRIES, smoke_records, reps=50)
    files = write_outputs(lb, tmp_path, figures=True)
    stems = ["summary", "v5.9/profiles", "v5.9/blockers", "v5.19/profiles", "v5.19/blockers"]
    for stem in stems:
        png, pdf = tmp_path / f"{stem}.png", tmp_path / f"{stem}.pdf"
        assert png in files and pdf in files
        with Image.open(png) as img:
            assert img.format == "PNG" and img.size[0] > 500
        assert pdf.read_bytes().startswith(b"%PDF")
    md = (tmp_path / "leaderboard.md").read_text()
    assert "(v5.9/profiles.png)" in md and "(summary.png)" in md


def test_entries_keep_their_colour_and_marker_in_every_figure_and_none_repeat() -> None:
    from cowlab.leaderboard import Leaderboard, _styles

    specs = [f"p{i}" for i in range(15)]
    lb = Leaderboard(name="t", suite=SUITE, boards=[], confidence=0.95, reps=1, entries=specs)
    styles = _styles(lb)
    assert len(set(styles.values())) == len(specs)
    assert len({c for c, _ in styles.values()}) == len(specs)  # distinct colours too
