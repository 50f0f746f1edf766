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
