"""cow.c simulated (cowlab.selftest): every case over every memory variant on every preset.

The expected verdicts, with their reasons and commits, are in
``test_selftest_expectations.py``. The default run checks a subset that covers every case
on every preset (base page, swapped out base page, 2 MiB hugetlb, the smallest mTHP's
variants, the collapse cases and PMD-THP spot checks) with each preset's own rule and the
reference policies, and checks the committed matrices in experiments/selftest against the
expectations. The ``slow`` tests run the whole matrix, 1 GiB hugetlb included, compare it
with the committed one, and run the oracle over every PMD-THP variant.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from cowlab.kernel import get_preset
from cowlab.plugins import get_registry
from cowlab.selftest import ALL_CASES, ANON_CASES, SelfTest, SuiteResult, run_test, select, suite
from cowlab.selftest.divergences import divergence_for
from cowlab.selftest.report import MatrixColumn, format_matrix_csv, format_tap, tap_result
from cowlab.selftest.runner import Job, default_jobs, run_jobs
from cowlab.selftest.variants import MAX_TOUCHED, Variant, touched_pages
from tests.test_selftest_expectations import (
    COLLAPSE,
    IOURING_FORK,
    IOURING_RO,
    LEAK_CASES,
    MTHP_SWAPPED,
    PIN_CASES,
    PRESETS,
    RO_PIN_SHARED,
    VMSPLICE,
    expected,
)

REFERENCE_POLICIES = ("oracle", "always-copy", "always-reuse")
#: The variants of the default (fast) run: every case over these on every preset.
FAST_VARIANTS = frozenset({
    "base", "base_swap", "hugetlb-9",
    "pte_thp-2", "pte_thp_swap-2", "single_pte-2", "single_pte_swap-2", "partial_mremap-2",
    "partial_shared-2",
})
#: PMD-sized THP spot checks of the default run: where the eras part ways on the PMD path.
PMD_SPOTS = frozenset({
    ("v5.7", "vmsplice-child", "thp-9"), ("v5.7", "vmsplice-child", "partial_mremap-9"),
    ("v5.9", "vmsplice-child", "thp-9"), ("v5.9", "vmsplice-child", "pte_thp-9"),
    ("v5.9", "iouring-ro", "thp-9"), ("v5.18", "iouring-ro", "thp-9"),
    ("v5.9", "ro-pin-exclusive", "thp-9"), ("v5.19", "ro-pin-shared", "thp-9"),
    ("v6.15", "ro-pin-previously-shared", "pte_thp-9"),
})


def fast_subset(preset: str) -> list[SelfTest]:
    """Every case over :data:`FAST_VARIANTS`, the :data:`PMD_SPOTS`, the collapse cases."""
    return [t for t in suite(get_preset(preset))
            if t.variant.id in FAST_VARIANTS or t.case.thp_only
            or (preset, t.case.family, t.variant.id) in PMD_SPOTS]


def pmd_and_fast_subset(preset: str) -> list[SelfTest]:
    """The fast subset plus every variant of the PMD-sized THP."""
    return [t for t in suite(get_preset(preset))
            if t.variant.id in FAST_VARIANTS
            or (t.variant.order == 9 and t.variant.kind != "hugetlb")]


def run_all(presets: Iterable[str], policy: str | None, *,
            subset: Callable[[str], list[SelfTest]] | None = fast_subset,
            hugetlb_1g: Iterable[str] = (), check_invariants: bool = False,
            workers: int = 1) -> dict[str, SuiteResult]:
    """Run ``subset(preset)`` (None: the whole suite) on every preset with ``policy`` (None:
    the preset's own rule) in one pool; 1 GiB hugetlb runs on the presets in ``hugetlb_1g``.
    Invariants are checked after every test but the 1 GiB ones (that check alone takes
    seconds there)."""
    jobs: list[Job] = []
    spans: dict[str, tuple[int, int, str]] = {}
    big = set(hugetlb_1g)
    for preset in presets:
        config = get_preset(preset)
        name = policy or config.default_policy
        tests = suite(config) if subset is None else subset(preset)
        spans[preset] = (len(jobs), len(jobs) + len(tests), name)
        jobs += [Job(i, t, config, name, preset in big,
                     check_invariants and t.variant.order != 18)
                 for i, t in enumerate(tests, 1)]
    results = run_jobs(jobs, workers=workers)
    return {p: SuiteResult(p, name, results[a:b], p in big)
            for p, (a, b, name) in spans.items()}


@dataclass(frozen=True)
class Row:
    """One test's verdict, from a run or from a committed matrix.csv."""

    preset: str
    policy: str
    family: str
    variant: str  # variant id, e.g. "pte_thp_swap-4"
    name: str
    result: str
    message: str

    @property
    def kind(self) -> str:
        return self.variant.split("-")[0]

    @property
    def swapped(self) -> bool:
        return self.kind.endswith("_swap")


def rows(suites: dict[str, SuiteResult]) -> list[Row]:
    return [Row(p, s.policy, r.test.case.family, r.test.variant.id, r.test.name, r.result,
                r.message) for p, s in suites.items() for r in s.results]


def csv_rows(path: Path) -> list[Row]:
    with path.open(encoding="utf-8") as f:
        return [Row(d["kernel"], d["policy"], *d["id"].split("/"), d["name"], d["result"],
                    d["message"]) for d in csv.DictReader(f)]


def problems_against(tests: Iterable[Row], want: Callable[[Row], str]) -> list[str]:
    """Tests whose verdict differs from ``want(row)``, as readable lines."""
    return [f"{t.preset} {t.policy}: {t.name}: got {t.result} ({t.message}), "
            f"expected {want(t)}" for t in tests if t.result != want(t)]


# ------------------------------------------------------------------ upstream expectations
def era_verdict(t: Row) -> str:
    """What the preset's own rule must give: upstream's verdict, or the simulator's where a
    known divergence says so."""
    d = divergence_for(t.preset, t.family, t.variant)
    if d is not None:
        return d.sim
    if t.result == "skip" and t.message == "need more free huge pages":
        return "skip"  # 1 GiB hugetlb variants without --hugetlb-1g
    return expected(t.preset, t.family, t.kind)[0]


@pytest.fixture(scope="module")
def fast_results() -> dict[str, SuiteResult]:
    return run_all(PRESETS, None)


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_gives_upstreams_verdicts_on_the_fast_subset(
    fast_results: dict[str, SuiteResult], preset: str,
) -> None:
    assert problems_against(rows({preset: fast_results[preset]}), era_verdict) == []
    assert {r.test.case.family for r in fast_results[preset].results} >= {
        c.family for c in ANON_CASES}


def test_the_detector_agrees_with_every_verdict_of_the_fast_subset(
    fast_results: dict[str, SuiteResult],
) -> None:
    """A leak case fails exactly when a ``leak`` violation was recorded, a pin case exactly
    when a ``pin_incoherent`` one was."""
    disagreements = [f"{p}: {r.test.name}: {r.disagreement}"
                     for p, s in fast_results.items() for r in s.disagreements()]
    assert disagreements == []
    assert all(r.agrees is not None for s in fast_results.values() for r in s.results
               if r.result in ("pass", "fail", "xfail"))


def test_the_cve_reproduces_on_v5_7_and_is_fixed_for_ptes_in_v5_9_and_for_swap_in_v5_18(
    fast_results: dict[str, SuiteResult],
) -> None:
    def verdict(preset: str, name: str) -> str:
        return next(r.result for r in fast_results[preset].results if r.test.name == name)

    base = "vmsplice() + unmap in child ... with base page"
    swap = "vmsplice() + unmap in child ... with swapped out base page"
    assert [verdict(p, base) for p in ("v5.7", "v5.8", "v5.9")] == ["fail", "pass", "pass"]
    assert [verdict(p, swap) for p in ("v5.7", "v5.9", "v5.18")] == ["fail", "fail", "pass"]


# ------------------------------------------------------------------ reference policies
def setup_divergence_verdict(t: Row) -> str | None:
    """Divergences in the memory setup (no policy involved): the simulator skips."""
    if t.family in COLLAPSE:
        return "skip"
    if t.preset == "v6.9" and t.variant in MTHP_SWAPPED:
        return "skip"
    if t.result == "skip" and t.message == "need more free huge pages":
        return "skip"
    return None


def oracle_verdict(t: Row) -> str:
    """The oracle reuses exactly the truly exclusive pages. It passes every case from v5.19
    on. Before v5.19 it cannot keep a pin coherent when the pin was taken on a page another
    process still maps at the time of the write: there is no unshare fault, so the write
    must copy (reusing would leak) and the pin keeps the old page. That is the R/O pin on a
    shared page on v5.7, v5.9..v5.12 and v5.18 (v5.8's GUP breaks COW before pinning), and fork()
    with an io_uring buffer on v5.7 and v5.8 (fork() shares the pinned page until
    70e806e4e645). hugetlb is never the policy's to decide (hugetlb_wp()), so its verdicts
    are the era's, XFAILs included."""
    skip = setup_divergence_verdict(t)
    if skip is not None:
        return skip
    preset, family, kind = t.preset, t.family, t.kind
    if kind == "hugetlb":
        return expected(preset, family, kind)[0]
    if family in RO_PIN_SHARED and preset in ("v5.7", "v5.9", "v5.11", "v5.12", "v5.18"):
        return "fail"
    if family in IOURING_FORK and preset in ("v5.7", "v5.8"):
        return "fail"
    return "pass"


def always_copy_verdict(t: Row) -> str:
    """Copying never leaks; it breaks a pin whenever the pinned page takes a write fault the
    policy decides: R/O-mapped io_uring buffer everywhere; fork() with it before v5.9 (from
    70e806e4e645 the child gets the copy and the parent's PTE stays writable); R/O pins
    except on v5.8 (its COW break copies before pinning) and except, from v6.11, a
    previously-shared page that was swapped out (swap-in maps it writable on the read
    fault, c18160dba5ff, so the write does not fault). hugetlb: the era's own verdicts."""
    skip = setup_divergence_verdict(t)
    if skip is not None:
        return skip
    preset, family, kind = t.preset, t.family, t.kind
    if kind == "hugetlb":
        return expected(preset, family, kind)[0]
    if family in LEAK_CASES:
        return "pass"
    if family in IOURING_RO:
        return "fail"
    if family in IOURING_FORK:
        return "fail" if preset in ("v5.7", "v5.8") else "pass"
    if preset == "v5.8":
        return "pass"
    if (family in ("ro-pin-previously-shared", "ro-fast-pin-previously-shared")
            and t.swapped and preset in ("v6.11", "v6.12", "v6.15")):
        return "pass"
    return "fail"


def always_reuse_verdict(t: Row) -> str:
    """Reusing never breaks a pin and leaks every page shared with another process: it
    fails every leak case and passes every pin case (hugetlb: the era's own verdicts)."""
    skip = setup_divergence_verdict(t)
    if skip is not None:
        return skip
    preset, family, kind = t.preset, t.family, t.kind
    if kind == "hugetlb":
        return expected(preset, family, kind)[0]
    return "fail" if family in LEAK_CASES else "pass"


VERDICTS = {"oracle": oracle_verdict, "always-copy": always_copy_verdict,
            "always-reuse": always_reuse_verdict}


@pytest.fixture(scope="module")
def fast_reference_results() -> dict[str, dict[str, SuiteResult]]:
    return {policy: run_all(PRESETS, policy) for policy in REFERENCE_POLICIES}


@pytest.mark.parametrize("policy", REFERENCE_POLICIES)
def test_reference_policies_fail_what_their_rule_predicts_on_the_fast_subset(
    fast_reference_results: dict[str, dict[str, SuiteResult]], policy: str,
) -> None:
    suites = fast_reference_results[policy]
    assert problems_against(rows(suites), VERDICTS[policy]) == []
    assert [r.test.name for s in suites.values() for r in s.disagreements()] == []


def test_always_reuse_passes_pin_cases_but_the_detector_sees_the_leak_cow_c_cannot(
    fast_reference_results: dict[str, dict[str, SuiteResult]],
) -> None:
    """cow.c's R/O pin case only reads through the pin; reusing the page the child still
    maps is a leak nonetheless, recorded by the detector and reported apart."""
    r = next(r for r in fast_reference_results["always-reuse"]["v5.19"].results
             if r.test.name == "R/O GUP pin on R/O-mapped shared page ... with base page")
    assert r.result == "pass" and r.agrees is True
    assert r.violations.get("leak", 0) > 0


# ------------------------------------------------------------------ the committed matrices
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "selftest"


def test_the_committed_presets_matrix_gives_upstreams_verdicts() -> None:
    """experiments/selftest/matrix.csv: every preset with its own rule, every test."""
    committed = csv_rows(EXPERIMENTS / "matrix.csv")
    assert len(committed) == 8 * 172 + 4 * 760
    assert {t.preset for t in committed} == set(PRESETS)
    assert problems_against(committed, era_verdict) == []


def test_the_committed_matrices_have_no_error_and_no_detector_disagreement() -> None:
    for path in (EXPERIMENTS / "matrix.csv", EXPERIMENTS / "policies-v6.15" / "matrix.csv"):
        with path.open(encoding="utf-8") as f:
            table = list(csv.DictReader(f))
        assert [d["name"] for d in table if d["result"] == "error"] == [], path
        assert [d["name"] for d in table if d["agrees"] == "false"] == [], path


def test_the_committed_policies_matrix_matches_the_reference_policies_rules() -> None:
    committed = csv_rows(EXPERIMENTS / "policies-v6.15" / "matrix.csv")
    assert {t.policy for t in committed} >= set(REFERENCE_POLICIES)
    for policy in REFERENCE_POLICIES:
        mine = [t for t in committed if t.policy == policy]
        assert len(mine) == 760
        assert problems_against(mine, VERDICTS[policy]) == []
    own = [t for t in committed if t.policy == "exact-mapcount"]
    assert problems_against(own, era_verdict) == []


# ------------------------------------------------------------------ the suite's shape
def test_the_suite_has_cow_c_s_tests_in_cow_c_s_order() -> None:
    old, new = suite(get_preset("v5.7")), suite(get_preset("v6.15"))
    # 14 anonymous cases x (2 base + 8 PMD THP + 2 hugetlb), + 4 collapse cases.
    assert len(old) == 14 * 12 + 4
    # v6.8+ adds 7 mTHP sizes x 6 variants.
    assert len(new) == 14 * (12 + 7 * 6) + 4
    names = [t.name for t in new]
    assert len(set(names)) == len(names)
    assert names[:3] == [
        "Basic COW after fork() ... with base page",
        "Basic COW after fork() ... with swapped out base page",
        "Basic COW after fork() ... with PTE-mapped THP (16 kB)",
    ]
    assert "R/O GUP pin on R/O-mapped shared page ... with THP (2048 kB)" in names
    assert "vmsplice() + unmap in child ... with swapped-out, PTE-mapped THP (1024 kB)" in names
    assert "fork() with an iouring fixed buffer ... with partially mremap()'ed THP (64 kB)" in names
    assert names[53] == "Basic COW after fork() ... with hugetlb (1048576 kB)"
    assert names[-4:] == [c.desc for c in ALL_CASES[-4:]]
    assert not any("(16 kB)" in t.name for t in old)


def test_filter_matches_names_and_ids_case_insensitively() -> None:
    tests = suite(get_preset("v5.19"))
    assert len(select(tests, "HUGETLB (2048")) == 14
    assert len(select(tests, "vmsplice-child/base")) == 2  # ids: family/variant
    assert select(tests, None) == tests


def test_a_1_gib_hugetlb_page_is_sampled_and_everything_else_touched_in_full() -> None:
    assert touched_pages(0, 512) == list(range(512))
    sample = touched_pages(1 << 18, 1 << 18)
    assert len(sample) == MAX_TOUCHED + 1 + 15  # every 2 MiB, the last, the pipe's 16
    assert sample[:17] == [(1 << 18) + i for i in range(16)] + [(1 << 18) + 512]
    assert sample[-1] == (1 << 19) - 1


def test_hugetlb_1g_skips_like_cow_c_without_reserved_pages() -> None:
    config = get_preset("v5.19")
    test = next(t for t in suite(config) if t.variant == Variant("hugetlb", 18))
    r = run_test(test, config, get_registry().make_policy("exclusive"), hugetlb_1g=False)
    assert (r.result, r.message, r.agrees) == ("skip", "need more free huge pages", None)


def test_a_leak_is_judged_by_content_and_reported_in_kselftest_style() -> None:
    config = get_preset("v5.7")
    tests = select(suite(config), "vmsplice() + unmap in child ... with base page")
    policy = get_registry().make_policy("legacy")
    r = run_test(tests[0], config, policy, number=3)
    assert (r.result, r.message) == ("fail", "Leak from parent into child")
    assert r.violations == {"leak": 1} and r.agrees is True
    assert tap_result(r) == [
        "# [RUN] vmsplice() + unmap in child ... with base page",
        "# Leak from parent into child",
        "not ok 3 vmsplice() + unmap in child ... with base page",
    ]


def test_tap_report_has_plan_skip_xfail_and_totals() -> None:
    config = get_preset("v5.19")
    policy = get_registry().make_policy("exclusive")
    tests = select(suite(config), "vmsplice() + unmap in child ... with hugetlb")
    results = [run_test(t, config, policy, number=i, hugetlb_1g=False)
               for i, t in enumerate(tests, 1)]
    text = format_tap(SuiteResult("v5.19", "exclusive", results, False))
    lines = text.splitlines()
    assert lines[:3] == ["TAP version 13", "# cowlab selftest: kernel v5.19, policy exclusive",
                         "1..2"]
    assert "ok 1 vmsplice() + unmap in child ... with hugetlb (2048 kB) # XFAIL Leak from " \
           "parent into child" in lines
    assert "ok 2 vmsplice() + unmap in child ... with hugetlb (1048576 kB) # SKIP need more " \
           "free huge pages" in lines
    assert lines[-1] == "# Totals: pass:0 fail:0 xfail:1 xpass:0 skip:1 error:0"


def test_every_case_observes_through_content_not_the_detector() -> None:
    """The procedures only read memory, pipes and pins: a policy that reuses everything
    fails every leak case on a base page by content, and the detector agrees."""
    config = get_preset("v6.15")
    policy = get_registry().make_policy("always-reuse")
    for test in select(suite(config), "... with base page"):
        r = run_test(test, config, policy)
        assert r.agrees is True, test.name
        assert (r.result == "fail") == (test.case.family in LEAK_CASES), test.name
        assert r.result != "fail" or r.message.startswith("Leak from")


def test_families_are_split_into_leak_and_pin_cases() -> None:
    for case in ALL_CASES:
        assert (case.kind == "leak") == (case.family in LEAK_CASES + COLLAPSE)
        assert (case.kind == "pin") == (case.family in PIN_CASES)
        assert case.xfail_hugetlb == (case.family in VMSPLICE)


# ------------------------------------------------------------------ the whole matrix (slow)
@pytest.fixture(scope="session")
def full_results() -> dict[str, SuiteResult]:
    """Every test on every preset with its own rule, 1 GiB hugetlb included (about a
    second each), kernel invariants checked, over the available CPUs."""
    return run_all(PRESETS, None, subset=None, hugetlb_1g=PRESETS, check_invariants=True,
                   workers=default_jobs())


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_gives_upstreams_verdict_on_every_case_and_variant(
    full_results: dict[str, SuiteResult], preset: str,
) -> None:
    assert problems_against(rows({preset: full_results[preset]}), era_verdict) == []


@pytest.mark.slow
def test_the_detector_agrees_on_every_case_variant_and_preset(
    full_results: dict[str, SuiteResult],
) -> None:
    results = [r for s in full_results.values() for r in s.results]
    assert [r.test.name for r in results if r.agrees is False] == []
    assert [f"{r.test.name}: {r.message}" for r in results if r.result == "error"] == []
    assert len(results) == 8 * 172 + 4 * 760


@pytest.mark.slow
def test_1g_hugetlb_behaves_like_2m_hugetlb(full_results: dict[str, SuiteResult]) -> None:
    for preset in PRESETS:
        verdicts: dict[str, dict[int, str]] = {}
        for r in full_results[preset].results:
            if r.test.variant.kind == "hugetlb":
                verdicts.setdefault(r.test.case.family, {})[r.test.variant.order] = r.result
        assert all(v[9] == v[18] for v in verdicts.values()), preset


@pytest.fixture(scope="session")
def oracle_pmd_results() -> dict[str, SuiteResult]:
    return run_all(PRESETS, "oracle", subset=pmd_and_fast_subset, workers=default_jobs())


@pytest.mark.slow
def test_the_oracle_fails_only_what_no_reuse_decision_can_fix_including_pmd_thp(
    oracle_pmd_results: dict[str, SuiteResult],
) -> None:
    assert problems_against(rows(oracle_pmd_results), oracle_verdict) == []
    assert [r.test.name for s in oracle_pmd_results.values() for r in s.disagreements()] == []


@pytest.mark.slow
def test_the_committed_presets_matrix_is_what_the_simulator_gives_now(
    full_results: dict[str, SuiteResult],
) -> None:
    """Regenerate with ``python experiments/selftest/make_matrix.py`` when this fails."""
    fresh = csv.DictReader(format_matrix_csv(
        [MatrixColumn(p, s) for p, s in full_results.items()]).splitlines())
    with (EXPERIMENTS / "matrix.csv").open(encoding="utf-8") as f:
        committed = {(d["kernel"], d["number"]): d for d in csv.DictReader(f)}
    assert {(d["kernel"], d["number"]): d for d in fresh} == committed
