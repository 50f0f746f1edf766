"""Delta debugging of a counterexample: drop every step the violation does not need.

Zeller and Hildebrandt's ddmin over the steps after the initial state: try removing
chunks (halves, quarters, ... single steps); a candidate is kept when replaying it
(the same op layer as ``cowlab scenario run``) still commits a violation of the same
kind. A candidate whose steps the kernel refuses (a step naming an mm that no longer
exists, a put of a reference never taken) does not count, nor (unless strict) a
violation no decision could have avoided. The result is 1-minimal:
removing any single step loses the violation. It is cut right after the first step
that commits the violation.
"""

from __future__ import annotations

from typing import Any

from cowlab.verify.sim import Problem, Sim, StepRefused, VerifyPolicyError, avoidable


def first_violation(problem: Problem, steps: list[dict[str, Any]], kind: str | None,
                    *, strict: bool = True) -> tuple[int, Any] | None:
    """(index in ``steps``, record) of the first violation of ``kind`` (any kind if
    None) when replaying ``steps``, counting only avoidable ones unless ``strict``;
    None when there is none or a step is refused."""
    try:
        sim = Sim(problem)
        for i, step in enumerate(steps):
            rec = sim.apply(step)
            if rec is not None and (kind is None or rec.violation == kind) and (
                strict or avoidable(problem, steps[:i + 1], sim)
            ):
                return i, rec
    except (StepRefused, VerifyPolicyError):
        return None
    return None


def ddmin(steps: list[dict[str, Any]], fails: Any) -> list[dict[str, Any]]:
    """ddmin: a 1-minimal sub-sequence of ``steps`` on which ``fails`` holds."""
    n = 2
    while len(steps) >= 2:
        size = max(1, len(steps) // n)
        reduced = False
        for start in range(0, len(steps), size):
            candidate = steps[:start] + steps[start + size:]
            if candidate and fails(candidate):
                steps = candidate
                n = max(n - 1, 2)
                reduced = True
                break
        if not reduced:
            if size == 1:
                break
            n = min(len(steps), n * 2)
    return steps


def shrink_counterexample(problem: Problem, steps: list[dict[str, Any]], kind: str,
                          *, strict: bool = False
                          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The shrunk steps and the violation their last step commits (an avoidable one
    unless ``strict``)."""
    from cowlab.verify.search import _violation

    def fails(candidate: list[dict[str, Any]]) -> bool:
        return first_violation(problem, candidate, kind, strict=strict) is not None

    found = first_violation(problem, steps, kind, strict=strict)
    if found is None:
        raise RuntimeError("the counterexample does not replay to its violation")
    steps = steps[:found[0] + 1]
    steps = ddmin(list(steps), fails)
    found = first_violation(problem, steps, kind, strict=strict)
    assert found is not None
    return steps[:found[0] + 1], _violation(found[1])
