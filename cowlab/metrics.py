"""Metrics computed from a run's write-attempt records.

* ``reuse_rate``: reuses among the *truly reusable* decisions (the page was
  exclusive, so the oracle would reuse it); None when there were none.
* ``violations``: by kind (``leak``, ``pin_incoherent``).
* ``unnecessary_copies``: copies of exclusive pages, in total and by blocker.
* ``mean_latency_ns`` / ``p99_latency_ns``: over write attempts that faulted.
* ``extra_pages``: pages allocated by copies (memory a reuse would have saved or a
  COW had to spend).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from cowlab.kernel.fault import FaultRecord
from cowlab.kernel.safety import BLOCKERS, VIOLATIONS


def percentile(values: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method, 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))  # round: 0.99 * n float drift
    return float(ordered[min(rank, len(ordered)) - 1])


def summarize(records: Iterable[FaultRecord], counters: Mapping[str, int]) -> dict[str, Any]:
    """The metrics of one run."""
    decisions = reuses = reusable = reused_reusable = 0
    violations: Counter[str] = Counter()
    blockers: Counter[str] = Counter()
    unnecessary = 0
    latencies: list[int] = []
    for rec in records:
        if rec.fault != "none":
            latencies.append(rec.latency_ns)
        if rec.outcome not in ("reuse", "copy"):
            continue
        decisions += 1
        reused = rec.outcome == "reuse"
        reuses += reused
        if rec.violation:
            violations[rec.violation] += 1
        if rec.exclusive:
            reusable += 1
            if reused:
                reused_reusable += 1
            else:
                unnecessary += 1
                blockers.update(rec.blockers or ("policy",))
    return {
        "decisions": decisions,
        "reuses": reuses,
        "truly_reusable": reusable,
        "reuse_rate": reused_reusable / reusable if reusable else None,
        "violations": {kind: violations.get(kind, 0) for kind in VIOLATIONS},
        "violations_total": sum(violations.values()),
        "unnecessary_copies": unnecessary,
        "unnecessary_copies_by_blocker": {
            b: blockers[b] for b in (*BLOCKERS, "policy") if blockers.get(b)
        },
        "mean_latency_ns": sum(latencies) / len(latencies) if latencies else 0.0,
        "p99_latency_ns": percentile(latencies, 0.99),
        "extra_pages": counters.get("pages_copied", 0),
    }
