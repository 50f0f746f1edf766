"""Enumerate cow.c's tests for a kernel preset, run them, and check the detector agrees.

A :class:`SelfTest` is one line of cow.c's TAP output: a case over a memory variant.
:func:`run_test` runs it on a fresh :class:`~cowlab.kernel.Kernel` and returns a
:class:`SelftestResult`: the verdict cow.c would print (pass, fail, xfail, skip, error),
judged by what the observers read, and, beside it, what the simulator's violation
detector recorded while the case ran. The two must agree: a "leak" case fails exactly
when a ``leak`` violation was recorded, a "pin" case exactly when a ``pin_incoherent``
one was (:attr:`SelftestResult.agrees`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from cowlab.geometry import DEFAULT_GEOMETRY, HPAGE_PMD_ORDER, Geometry
from cowlab.kernel import Kernel, KernelConfig, KernelError, Machine, PolicyError
from cowlab.kernel.policy import Policy
from cowlab.selftest.cases import ANON_CASES, THP_CASES, Case
from cowlab.selftest.divergences import divergence_for
from cowlab.selftest.variants import Skip, Variant, setup, variants_for

#: cow.c's verdicts (kselftest's counters).
RESULTS = ("pass", "fail", "xfail", "xpass", "skip", "error")
#: The violation each kind of case observes.
DETECTOR_KIND = {"leak": "leak", "pin": "pin_incoherent"}
#: cow.c's skip message when no huge page of a size is free (no 1 GiB pages reserved).
NO_HUGEPAGES = "need more free huge pages"
HUGETLB_1G_ORDER = 18


@dataclass(frozen=True)
class SelfTest:
    """One test of the suite: a case of cow.c over one memory variant."""

    case: Case
    variant: Variant

    @property
    def name(self) -> str:
        """cow.c's ``[RUN]`` text, e.g. ``Basic COW after fork() ... with base page``."""
        if self.case.thp_only:
            return self.case.desc
        return f"{self.case.desc} ... with {self.variant.label}"

    @property
    def id(self) -> str:
        """A short stable identifier: ``<case family>/<variant id>``."""
        return f"{self.case.family}/{self.variant.id}"

    @property
    def xfail(self) -> bool:
        """cow.c reports a failure of this test as an expected failure."""
        return self.case.xfail_hugetlb and self.variant.is_hugetlb


@dataclass
class SelftestResult:
    """The verdict of one test and what the violation detector recorded meanwhile."""

    number: int
    test: SelfTest
    result: str
    message: str
    #: Violations recorded while the case ran (setup excluded), by kind.
    violations: dict[str, int] = field(default_factory=dict)
    #: Violations recorded while the memory variant was being set up.
    setup_violations: dict[str, int] = field(default_factory=dict)
    #: Write and unshare faults of the case by outcome (reuse, copy).
    decisions: dict[str, int] = field(default_factory=dict)
    #: The id of the known simulator divergence that affects this test, if any.
    divergence: str | None = None

    @property
    def failed(self) -> bool:
        """The observers saw the bug (a fail or an expected failure)."""
        return self.result in ("fail", "xfail")

    @property
    def agrees(self) -> bool | None:
        """The detector recorded the violation the case observes exactly when the case
        failed; None when the case did not run to a verdict (skip, error)."""
        if self.result not in ("pass", "fail", "xfail"):
            return None
        detected = self.violations.get(DETECTOR_KIND[self.test.case.kind], 0) > 0
        return detected == self.failed

    @property
    def disagreement(self) -> str | None:
        """A one-line description of a disagreement, or None."""
        if self.agrees is not False:
            return None
        kind = DETECTOR_KIND[self.test.case.kind]
        if self.failed:
            return f"the case failed but the detector recorded no {kind} violation"
        return f"the case passed but the detector recorded {self.violations[kind]} {kind}"

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "number": self.number,
            "name": self.test.name,
            "id": self.test.id,
            "case": self.test.case.desc,
            "variant": self.test.variant.family,
            "size_kb": None if self.test.variant.kind in ("base", "base_swap")
            else 4 << self.test.variant.order,
            "kind": self.test.case.kind,
            "result": self.result,
            "message": self.message,
            "violations": dict(self.violations),
            "setup_violations": dict(self.setup_violations),
            "decisions": dict(self.decisions),
            "agrees": self.agrees,
            "divergence": self.divergence,
        }


def suite(
    config: KernelConfig, *, geometry: Geometry = DEFAULT_GEOMETRY
) -> list[SelfTest]:
    """Every test cow.c runs on a kernel of ``config``, in cow.c's order: each anonymous
    case over every variant (mTHP sizes only where the kernel has multi-size THP), then
    the THP collapse cases on a PMD-sized THP."""
    variants = variants_for(config.mthp, geometry.mthp_orders)
    tests = [SelfTest(case, v) for case in ANON_CASES for v in variants]
    tests += [SelfTest(case, Variant("thp", HPAGE_PMD_ORDER)) for case in THP_CASES]
    return tests


def select(tests: Sequence[SelfTest], text: str | None) -> list[SelfTest]:
    """The tests whose name (or id) contains ``text``, case-insensitively."""
    if not text:
        return list(tests)
    needle = text.lower()
    return [t for t in tests if needle in t.name.lower() or needle in t.id.lower()]


def _tally(records: Iterable[object], start: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for rec in list(records)[start:]:
        kind = getattr(rec, "violation", None)
        if kind:
            out[kind] = out.get(kind, 0) + 1
    return out


def run_test(
    test: SelfTest,
    config: KernelConfig,
    policy: Policy,
    *,
    number: int = 1,
    seed: int = 0,
    machine: Machine | None = None,
    geometry: Geometry = DEFAULT_GEOMETRY,
    hugetlb_1g: bool = True,
    check_invariants: bool = False,
) -> SelftestResult:
    """Run one test on a fresh kernel and return its verdict.

    ``hugetlb_1g`` False reports the 1 GiB hugetlb variants as cow.c does on a machine
    with no 1 GiB page reserved (SKIP, "need more free huge pages"); they are the slow
    ones in Python. ``check_invariants`` turns any broken kernel invariant into an error.
    """
    result = _run_test(test, config, policy, number=number, seed=seed, machine=machine,
                       geometry=geometry, hugetlb_1g=hugetlb_1g,
                       check_invariants=check_invariants)
    known = divergence_for(config.name, test.case.family, test.variant.id)
    if known is not None and result.result == known.sim:
        result.divergence = known.id
    return result


def _run_test(
    test: SelfTest,
    config: KernelConfig,
    policy: Policy,
    *,
    number: int,
    seed: int,
    machine: Machine | None,
    geometry: Geometry,
    hugetlb_1g: bool,
    check_invariants: bool,
) -> SelftestResult:
    variant = test.variant
    if variant.is_hugetlb and variant.order == HUGETLB_1G_ORDER and not hugetlb_1g:
        return SelftestResult(number, test, "skip", NO_HUGEPAGES)
    k = Kernel(config, policy, geometry=geometry, machine=machine or Machine(), seed=seed)
    try:
        made = setup(k, variant)
        setup_violations = _tally(k.violations, 0)
        if isinstance(made, Skip):
            return SelftestResult(number, test, "skip", made.reason,
                                  setup_violations=setup_violations)
        first_violation, first_record = len(k.violations), len(k.records)
        outcome = test.case.run(made)
    except (KernelError, PolicyError) as exc:
        return SelftestResult(number, test, "error", f"{type(exc).__name__}: {exc}")
    violations = _tally(k.violations, first_violation)
    decisions: dict[str, int] = {}
    for rec in k.records[first_record:]:
        if rec.outcome in ("reuse", "copy"):
            decisions[rec.outcome] = decisions.get(rec.outcome, 0) + 1
    if outcome.skip is not None:
        result, message = "skip", outcome.skip
    elif outcome.ok:
        result, message = "pass", outcome.message
    else:
        result, message = ("xfail" if test.xfail else "fail"), outcome.message
    if check_invariants:
        problems = k.check_invariants()
        if problems:
            result, message = "error", "kernel invariant broken: " + problems[0]
    return SelftestResult(number, test, result, message, violations, setup_violations, decisions)


@dataclass
class SuiteResult:
    """The results of one run of the suite on one kernel with one policy."""

    kernel: str
    policy: str
    results: list[SelftestResult]
    hugetlb_1g: bool = True

    def totals(self) -> dict[str, int]:
        """kselftest's counters: pass, fail, xfail, xpass, skip, error."""
        counts = dict.fromkeys(RESULTS, 0)
        for r in self.results:
            counts[r.result] += 1
        return counts

    @property
    def ok(self) -> bool:
        """No failure that is not expected and no error (cow.c's exit status 0)."""
        totals = self.totals()
        return totals["fail"] == 0 and totals["error"] == 0

    def disagreements(self) -> list[SelftestResult]:
        """Tests whose verdict the violation detector contradicts."""
        return [r for r in self.results if r.agrees is False]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping."""
        return {
            "kernel": self.kernel,
            "policy": self.policy,
            "hugetlb_1g": self.hugetlb_1g,
            "totals": self.totals(),
            "disagreements": len(self.disagreements()),
            "results": [r.to_dict() for r in self.results],
        }


def _make_policy(name: str) -> Policy:
    from cowlab.plugins import get_registry  # the registry loads plugins: import late

    return get_registry().make_policy(name, where="--policy")


#: Policies built in this process, by name (worker processes build each one once).
_POLICY_CACHE: dict[str, Policy] = {}


@dataclass(frozen=True)
class Job:
    """One test to run: everything a worker process needs."""

    number: int
    test: SelfTest
    config: KernelConfig
    policy: str
    hugetlb_1g: bool = True
    check_invariants: bool = False


def _run_job(job: Job) -> SelftestResult:
    policy = _POLICY_CACHE.get(job.policy)
    if policy is None:
        policy = _POLICY_CACHE[job.policy] = _make_policy(job.policy)
    return run_test(job.test, job.config, policy, number=job.number,
                    hugetlb_1g=job.hugetlb_1g, check_invariants=job.check_invariants)


def run_jobs(jobs: Sequence[Job], *, workers: int = 1,
             on_result: Callable[[SelftestResult], None] | None = None) -> list[SelftestResult]:
    """Run ``jobs`` in order (``workers`` > 1: in worker processes, results still in
    order); ``on_result`` sees each result as soon as it and all before it are done."""
    results: list[SelftestResult] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for result in pool.map(_run_job, jobs, chunksize=1):
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results
    for job in jobs:
        result = _run_job(job)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def run_suite(
    config: KernelConfig,
    policy: str,
    *,
    tests: Sequence[SelfTest] | None = None,
    hugetlb_1g: bool = True,
    workers: int = 1,
    check_invariants: bool = False,
    on_result: Callable[[SelftestResult], None] | None = None,
) -> SuiteResult:
    """Run ``tests`` (default: the whole suite) on ``config`` with the policy registered
    as ``policy``, numbered from 1 in order."""
    chosen = list(suite(config) if tests is None else tests)
    jobs = [Job(i, t, config, policy, hugetlb_1g, check_invariants)
            for i, t in enumerate(chosen, 1)]
    results = run_jobs(jobs, workers=workers, on_result=on_result)
    return SuiteResult(config.name, policy, results, hugetlb_1g)


def run_matrix(
    targets: Sequence[tuple[KernelConfig, str]],
    *,
    text: str | None = None,
    hugetlb_1g: bool = True,
    workers: int = 1,
) -> list[SuiteResult]:
    """Run the suite (filtered by ``text``) once per ``(kernel config, policy name)``,
    spreading every test of every run over ``workers`` processes."""
    jobs: list[Job] = []
    spans: list[tuple[int, int]] = []
    for config, policy in targets:
        chosen = select(suite(config), text)
        spans.append((len(jobs), len(jobs) + len(chosen)))
        jobs += [Job(i, t, config, policy, hugetlb_1g) for i, t in enumerate(chosen, 1)]
    results = run_jobs(jobs, workers=workers)
    return [SuiteResult(config.name, policy, results[a:b], hugetlb_1g)
            for (config, policy), (a, b) in zip(targets, spans, strict=True)]


def default_jobs() -> int:
    """Worker processes for a matrix run: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


__all__ = [
    "Job",
    "SelfTest",
    "SelftestResult",
    "SuiteResult",
    "run_jobs",
    "run_matrix",
    "run_suite",
    "run_test",
    "select",
    "suite",
]
