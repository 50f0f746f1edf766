"""``cowlab selftest``: the kernel's tools/testing/selftests/mm/cow.c, simulated.

Every anonymous case of cow.c over every memory variant (base page, swapped out base
page, THP and its PTE-mapped, single-PTE, partially mremap()'ed and partially shared
forms, swapped out or not, for each THP size the kernel supports, and hugetlb), plus the
four THP collapse cases, run against any kernel preset and reuse policy, judged by what
the observers read, and checked against the simulator's violation detector.
"""

from __future__ import annotations

from cowlab.selftest.cases import ALL_CASES, ANON_CASES, THP_CASES, Case, Outcome
from cowlab.selftest.runner import (
    RESULTS,
    SelfTest,
    SelftestResult,
    SuiteResult,
    run_matrix,
    run_suite,
    run_test,
    select,
    suite,
)
from cowlab.selftest.variants import Area, Skip, Variant

__all__ = [
    "ALL_CASES",
    "ANON_CASES",
    "RESULTS",
    "THP_CASES",
    "Area",
    "Case",
    "Outcome",
    "SelfTest",
    "SelftestResult",
    "Skip",
    "SuiteResult",
    "Variant",
    "run_matrix",
    "run_suite",
    "run_test",
    "select",
    "suite",
]
