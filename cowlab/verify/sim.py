"""One simulated system of the search, driven one scenario step at a time.

A :class:`Sim` is a :class:`cowlab.scenario.ScenarioRunner` whose steps are applied
one by one (each as its own thread on the engine, started when the previous one has
finished, which is exactly when the runner's single thread would start it), so a
sequence found here replays to the same kernel state under ``cowlab scenario run``.

Two ways to get the state after ``prefix + [op]`` given the state after ``prefix``:
``copy.deepcopy`` of the Sim (:func:`deep_copy`), or replaying ``prefix + [op]`` from a
fresh kernel (:func:`replay`). The kernel is deterministic, so both give the same
state. The search replays: it measured faster at every depth the default bounds reach
(experiments/verify/copy_vs_replay.py, docs/verify.md), needs nothing but the step
list to move a state to another process, and is right even with pending clock events,
whose callbacks are closures a deep copy would leave pointing at the original folios.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from cowlab import _build
from cowlab.geometry import Geometry, GeometryError
from cowlab.kernel.decision import Decision
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import FaultRecord, PolicyError
from cowlab.kernel.kernel import Machine
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.scenario import Scenario, ScenarioError, ScenarioRunner, _parse_step


class StepRefused(Exception):
    """The kernel refused the step in this state (unknown mm, SIGSEGV, EINVAL, ...):
    the op is not enabled here."""


class VerifyPolicyError(RuntimeError):
    """The policy raised or returned a non-decision: reported, never explored past."""


@dataclass(frozen=True)
class Problem:
    """Everything that is the same for every state of one search."""

    config: KernelConfig
    machine: Machine
    geometry: Geometry
    policy: Policy  # a template: every Sim gets its own deep copy
    init: tuple[tuple[tuple[str, Any], ...], ...]  # the initial steps, frozen

    def initial_steps(self) -> list[dict[str, Any]]:
        """The initial steps as step mappings."""
        return [_thaw(s) for s in self.init]


def freeze(step: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable, order-fixed form of a step mapping."""
    return tuple((k, _freeze_value(v)) for k, v in step.items())


def _freeze_value(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze_value(x) for x in v)
    if isinstance(v, dict):
        return ("__dict__", tuple((k, _freeze_value(x)) for k, x in v.items()))
    return v


def _thaw(frozen: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {k: _thaw_value(v) for k, v in frozen}


def _thaw_value(v: Any) -> Any:
    if isinstance(v, tuple):
        if len(v) == 2 and v[0] == "__dict__":
            return {k: _thaw_value(x) for k, x in v[1]}
        return [_thaw_value(x) for x in v]
    return v


def thaw(frozen: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The reverse of :func:`freeze`."""
    return _thaw(frozen)


class Sim:
    """A scenario runner advanced one step at a time."""

    __slots__ = ("created", "decisions", "flip_at", "last_violation", "problem", "runner",
                 "steps")

    created: int
    #: The first violation the last step committed (None if it committed none).
    last_violation: FaultRecord | None

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        scenario = Scenario("<verify>", problem.config, problem.geometry, problem.machine, [])
        self.runner = ScenarioRunner(scenario, copy.deepcopy(problem.policy), seed=0)
        k = self.runner.kernel
        k.keep_records = False  # output only; violations are kept
        #: Per policy decision so far: how many violations had been recorded when it
        #: was asked (which decision a violation came from) and what it answered.
        self.decisions: list[tuple[int, bool]] = []
        #: The decision (index) to answer the other way (the counterfactual replay).
        self.flip_at: int | None = None
        decide = k._decide

        def logged(view: Any) -> object:
            decision = decide(view)
            if isinstance(decision, Decision):
                if len(self.decisions) == self.flip_at:
                    decision = (Decision.COPY.because("policy") if decision.kind == "reuse"
                                else Decision.REUSE)
                self.decisions.append((len(k.violations), decision.kind == "reuse"))
            return decision

        k._decide = logged
        self.steps: list[dict[str, Any]] = []
        self.last_violation = None
        for step in problem.initial_steps():
            if self.apply(step) is not None:  # pragma: no cover - the initial writes fault anon
                raise RuntimeError("the initial state already commits a violation")
        self.created = 1  # m0

    @property
    def kernel(self) -> Any:
        """The simulated kernel."""
        return self.runner.kernel

    def live_mms(self) -> list[str]:
        """Names of the live processes, in creation order."""
        return sorted(self.runner.mms, key=lambda n: int(n[1:]))

    def gup_names(self) -> list[str]:
        """Names of the live GUP references, in the order they were taken."""
        return sorted(self.runner.kernel.gup_names, key=lambda n: int(n[1:]))

    def apply(self, raw: dict[str, Any]) -> FaultRecord | None:
        """Apply one step; returns the first violation it committed, or None.

        Raises :class:`StepRefused` when the kernel refuses the step (the Sim is then
        unusable) and :class:`VerifyPolicyError` when the policy misbehaves.
        """
        index = len(self.steps)
        try:
            step = _parse_step(index, raw, "<verify>")
        except ScenarioError as exc:  # pragma: no cover - the alphabet makes valid steps
            raise StepRefused(str(exc)) from None
        runner = self.runner
        k = runner.kernel
        before = len(k.violations)

        def body(thread: Thread) -> ThreadGen:
            runner._step = step
            yield from runner._apply(thread, step)

        engine = runner.engine
        engine.spawn("scenario", body)
        try:
            engine.run()
        except (KernelError, GeometryError) as exc:
            raise StepRefused(str(exc)) from None
        except PolicyError as exc:
            raise VerifyPolicyError(str(exc)) from None
        engine.threads.clear()  # finished threads (their generators cannot be copied)
        self.steps.append(raw)
        if raw["op"] == "fork":
            self.created += 1
        new = k.violations[before:]
        for rec in new:
            rec.step = index
        self.last_violation = new[0] if new else None
        return self.last_violation

    def has_pending_events(self) -> bool:
        """Whether the clock holds events (closures a deep copy cannot follow)."""
        return bool(self.runner.kernel.clock.pending)


def replay(problem: Problem, steps: list[dict[str, Any]], *, flip_at: int | None = None
           ) -> Sim:
    """A fresh Sim with ``steps`` applied after the initial state; ``flip_at`` answers
    that policy decision (counted from the first) the other way."""
    sim = Sim(problem)
    sim.flip_at = flip_at
    for s in steps:
        sim.apply(s)
    return sim


def violating_decision(sim: Sim) -> int:
    """The index of the decision whose fault committed the last step's first violation."""
    rec = sim.last_violation
    assert rec is not None
    at = sim.runner.kernel.violations.index(rec)
    return max(i for i, (before, _r) in enumerate(sim.decisions) if before == at)


def avoidable(problem: Problem, steps: list[dict[str, Any]], sim: Sim) -> bool:
    """Whether the last step's violation was the policy's doing: replayed with that one
    decision answered the other way, the step commits no violation. When it still does
    (a shared page under the writer's own pin or GUP reference: a reuse leaks, a copy
    breaks the reference), no rule could have avoided it: the kernel facilities let
    the state arise."""
    flip = violating_decision(sim)
    other = replay(problem, steps, flip_at=flip)
    return other.last_violation is None


def deep_copy(sim: Sim) -> Sim:
    """An independent Sim in the same state by ``copy.deepcopy`` (only valid while the
    clock holds no events; kept for the copy-versus-replay measurement)."""
    if sim.has_pending_events():
        raise ValueError("a Sim with pending clock events cannot be deep-copied")
    if _build.BUILD.compiled:
        # mypyc's native classes cannot be rebuilt by copy.deepcopy (their __init__ needs
        # arguments), and a copied bound method could still point at the original.
        raise ValueError("a Sim can be deep-copied only on the pure build: run with "
                         "COWLAB_PURE=1 (the compiled kernel's objects do not deep-copy)")
    p = sim.problem
    memo: dict[int, Any] = {id(p): p, id(p.config): p.config, id(p.machine): p.machine,
                            id(p.geometry): p.geometry,
                            id(sim.runner.scenario): sim.runner.scenario,
                            id(sim.runner.kernel.costs): sim.runner.kernel.costs}
    return copy.deepcopy(sim, memo)
