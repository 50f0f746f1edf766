"""The suite's scenario sources and report, without running the harness."""

from __future__ import annotations

from typing import Any

from cowlab.plugins import get_registry
from cowlab.real.suite import (
    _summarize,
    extra_scenarios,
    families,
    format_report,
    random_scenarios,
    selftest_scenarios,
)
from cowlab.scenario import Scenario, ScenarioRunner


def _runs(doc: dict[str, Any]) -> None:
    sc = Scenario.from_mapping(doc, source="s.yaml", kernel="v6.15")
    ScenarioRunner(sc, get_registry().make_policy(sc.kernel.default_policy)).run()


def test_selftest_and_extra_scenarios_are_accepted_by_the_simulator() -> None:
    docs = list(selftest_scenarios()) + list(extra_scenarios())
    assert len(docs) == 5 * 8 + 4 + 8
    for _name, doc in docs:
        _runs(doc)


def test_generated_scenarios_are_deterministic_per_seed() -> None:
    a = list(random_scenarios(5, 3, "v6.15"))
    b = list(random_scenarios(5, 3, "v6.15"))
    c = list(random_scenarios(5, 4, "v6.15"))
    assert a == b and a != c
    assert [name for name, _ in a] == [f"random-3-{i:02d}" for i in range(5)]


def test_families_name_the_ops_a_scenario_uses() -> None:
    doc = {"steps": [{"op": "mmap", "thp": "mthp-4"}, {"op": "fork"},
                     {"op": "gup", "kind": "pin"}, {"op": "madvise", "advice": "pageout"},
                     {"op": "clear_softdirty"}]}
    assert families(doc) == ["fork", "io_uring pin", "mthp", "soft-dirty", "swap"]
    assert families({"steps": [{"op": "write"}]}) == ["basic"]


def test_report_counts_agreement_per_family_and_lists_disagreements() -> None:
    row = {"step": 3, "mm": "a", "page": 0, "status": "differ", "differs": ["outcome"],
           "sim": {"fault": "wp", "outcome": "copy", "violation": None, "reason": "early",
                   "blockers": []},
           "real": {"fault": "wp", "outcome": "reuse", "violation": None, "excl_before": 1,
                    "excl_after": 1}}
    entries = [
        {"name": "x", "families": ["fork"], "status": "differ", "agree": 3, "differ": 1,
         "excluded": 0, "not_compared": 0, "host_release": "6.18", "rows": [row],
         "steps": [{"step": 0, "op": "mmap", "status": "ok"}]},
        {"name": "y", "families": ["fork", "swap"], "status": "agree", "agree": 4, "differ": 0,
         "excluded": 2, "not_compared": 1, "host_release": "6.18", "rows": [],
         "steps": [{"step": 1, "op": "madvise", "status": "skipped: no swap"}]},
    ]
    report = _summarize(entries, "v6.15", 1.0, ["log line"])
    assert report["totals"] == {"compared": 8, "agree": 7, "differ": 1, "excluded": 2,
                                "not_compared": 1}
    assert report["families"]["fork"]["agreement"] == 0.875
    assert report["families"]["swap"]["agreement"] == 1.0
    md = format_report(report)
    assert "- **x** step 3 mm a page 0: simulator wp/copy/- (reason early" in md
    entries[0]["rows"] = [row, {**row, "page": 1}, {**row, "page": 2}, {**row, "page": 5}]
    md = format_report(_summarize(entries, "v6.15", 1.0, []))
    assert "- **x** step 3 mm a pages 0-2 (3 stores): simulator wp/copy/-" in md
    assert "- **x** step 3 mm a page 5: simulator" in md
    assert "- 1 x skipped: no swap" in md
