"""Breadth-first explicit-state search with a visited set, on any cowlab executor.

Level by level: the frontier (every distinct state first reached at depth ``d``, in the
order it was reached) is cut into chunks of :data:`CHUNK` states; each chunk is one task
(:func:`expand_chunk`) that replays each state's steps and applies every op of the
alphabet to it, returning per successor its canonical hash, the violation it committed
(if any) and what the alphabet needs next. The coordinator consumes the chunks in chunk
order, whatever order the executor finishes them in, so the states counted, the states
kept and the counterexample are the same on every executor and with any number of
workers. The first violating transition in that order is a shortest counterexample
(breadth-first: every shorter sequence was explored before, up to state merging, which
only merges states with the same future).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cowlab.geometry import DEFAULT_GEOMETRY, Geometry
from cowlab.kernel.kernel import Machine
from cowlab.kernel.policy import Policy
from cowlab.kernel.presets import KernelConfig
from cowlab.verify.sim import (
    Problem,
    Sim,
    StepRefused,
    VerifyPolicyError,
    avoidable,
    freeze,
    replay,
    thaw,
)
from cowlab.verify.state import state_hash
from cowlab.verify.universe import Alphabet, Bounds, effective_ops, initial_steps, thp_order

#: States per task. Fixed (never derived from the worker count) so that chunking, and
#: with it every figure, is the same on every executor.
CHUNK = 24

#: Frozen steps after the initial state.
Prefix = tuple[tuple[tuple[str, Any], ...], ...]


@dataclass(frozen=True)
class Context:
    """What the op alphabet needs about a state besides the kernel."""

    live: tuple[str, ...]
    created: int
    gups: tuple[str, ...]
    next_gup: int

    def to_list(self) -> list[Any]:
        """JSON form."""
        return [list(self.live), self.created, list(self.gups), self.next_gup]

    @classmethod
    def from_list(cls, data: list[Any]) -> Context:
        """The reverse of :meth:`to_list`."""
        return cls(tuple(data[0]), int(data[1]), tuple(data[2]), int(data[3]))

    @classmethod
    def of(cls, sim: Sim, next_gup: int) -> Context:
        """The context of a Sim."""
        return cls(tuple(sim.live_mms()), sim.created, tuple(sim.gup_names()), next_gup)


@dataclass
class Setup:
    """A search's problem, alphabet and the spec workers rebuild them from."""

    problem: Problem
    alphabet: Alphabet
    bounds: Bounds
    ops: tuple[str, ...]
    spec: dict[str, Any]


_LOCAL: dict[str, Setup] = {}
_CACHE: dict[str, Setup] = {}


def make_setup(policy: Policy, policy_name: str | None, config: KernelConfig, bounds: Bounds,
               geometry: Geometry = DEFAULT_GEOMETRY) -> Setup:
    """The search setup; ``policy_name`` (a registry name) lets other processes rebuild
    the policy, without it only the in-process executor can run the search."""
    ops = effective_ops(bounds, config.mthp, geometry)
    order = thp_order(bounds, config.mthp, geometry)
    machine = Machine(cpus=bounds.cpus, swap=bounds.swap)
    init = tuple(freeze(s) for s in initial_steps(bounds, order))
    problem = Problem(config, machine, geometry, policy, init)
    alphabet = Alphabet(frozenset(ops), bounds.pages, bounds.cpus, bounds.mms)
    spec = {
        "policy": policy_name,
        "kernel": dataclasses.asdict(config),
        "geometry": {f.name: _jsonable(getattr(geometry, f.name))
                     for f in dataclasses.fields(geometry) if f.init},
        "bounds": bounds.to_dict(),
    }
    setup = Setup(problem, alphabet, bounds, ops, spec)
    if policy_name is None:
        token = f"local-{id(setup)}"
        spec["local"] = token
        _LOCAL[token] = setup
    return setup


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _setup_from_spec(spec: dict[str, Any]) -> Setup:
    token = spec.get("local")
    if token is not None:
        return _LOCAL[token]
    key = repr(sorted((k, repr(v)) for k, v in spec.items()))
    setup = _CACHE.get(key)
    if setup is None:
        from cowlab.plugins import get_registry

        policy = get_registry().make_policy(spec["policy"], where="--policy")
        config = KernelConfig(**spec["kernel"])
        geo: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                               for k, v in spec["geometry"].items()}
        geometry = Geometry(**geo)
        setup = make_setup(policy, spec["policy"], config, Bounds.from_dict(spec["bounds"]),
                           geometry)
        _CACHE.clear()
        _CACHE[key] = setup
    return setup


def successors(setup: Setup, prefix: list[dict[str, Any]], ctx: Context
               ) -> list[dict[str, Any]]:
    """Every enabled successor of the state after ``prefix``: for each op in alphabet
    order, its step, state hash, violation (or None) and context."""
    out: list[dict[str, Any]] = []
    symmetry = setup.bounds.symmetry
    for step in setup.alphabet.steps(list(ctx.live), ctx.created, list(ctx.gups),
                                     ctx.next_gup):
        try:
            sim = replay(setup.problem, [*prefix, step])
        except StepRefused:
            continue
        except VerifyPolicyError as exc:
            return [{"step": step, "policy_error": str(exc)}]
        rec = sim.last_violation
        avoid = None
        if rec is not None:
            avoid = avoidable(setup.problem, [*prefix, step], sim)
        next_gup = ctx.next_gup + (1 if step["op"] == "gup" else 0)
        out.append({
            "step": step,
            "hash": state_hash(sim.runner, sim.created, symmetry=symmetry).hex(),
            "violation": None if rec is None else {**_violation(rec), "avoidable": avoid},
            "ctx": Context.of(sim, next_gup).to_list(),
        })
    return out


def _earlier_violations(problem: Problem, steps: list[dict[str, Any]]) -> dict[int, str]:
    """Violations the counterexample commits before its last step (unavoidable ones:
    the search does not stop at those), by step index."""
    from cowlab.verify.sim import avoidable as is_avoidable

    notes: dict[int, str] = {}
    sim = Sim(problem)
    for i, step in enumerate(steps[:-1]):
        rec = sim.apply(step)
        if rec is not None:
            how = ("avoidable" if is_avoidable(problem, steps[:i + 1], sim)
                   else "unavoidable: the other answer violates too")
            notes[i] = f"{rec.violation} ({how}), the policy decided {rec.outcome}"
    return notes


def _violation(rec: Any) -> dict[str, Any]:
    return {"violation": rec.violation, "outcome": rec.outcome, "reason": rec.reason,
            "mm": rec.mm, "page": rec.page, "fault": rec.fault, "cpu": rec.cpu,
            "step": rec.step}


def expand_chunk(spec: dict[str, Any]) -> dict[str, Any]:
    """The executor task: the successors of every state of one frontier chunk."""
    setup = _setup_from_spec(spec["setup"])
    return {"states": [successors(setup, [thaw(s) for s in prefix], Context.from_list(ctx))
                       for prefix, ctx in spec["states"]]}


@dataclass
class VerifyResult:
    """What a bounded search found."""

    policy: str
    kernel: str
    bounds: Bounds
    ops: tuple[str, ...]
    #: "counterexample", "safe" (the bound was exhausted), "error" (the policy raised)
    #: or "budget" (a time budget ran out first).
    status: str
    depth_completed: int
    explored: int
    distinct: int
    seconds: float
    #: The violating steps after the initial state (shrunk), when status is
    #: "counterexample"; the initial steps are in :attr:`initial`.
    counterexample: list[dict[str, Any]] | None = None
    violation: dict[str, Any] | None = None
    initial: list[dict[str, Any]] = field(default_factory=list)
    #: True when no new state was found before the bound (every reachable state seen).
    closed: bool = False
    error: str | None = None
    per_depth: list[dict[str, int]] = field(default_factory=list)
    unshrunk_length: int | None = None
    #: Violating transitions no decision could have avoided (counted, not stopped at,
    #: unless ``bounds.strict``) and the first of them in BFS order.
    unavoidable: int = 0
    first_unavoidable: dict[str, Any] | None = None
    #: Step index (after the initial state) -> what an earlier violation there was.
    notes: dict[int, str] = field(default_factory=dict)
    #: "exhaustive" (the bounded search) or "random" (``--random``: seeded sequences).
    mode: str = "exhaustive"
    #: Random mode: sequences run, their length bound and the seed.
    sequences: int = 0
    max_steps: int = 0
    seed: int | None = None

    @property
    def safe(self) -> bool:
        """True when the bound was exhausted without a violation."""
        return self.status == "safe"

    @property
    def states_per_s(self) -> float:
        """Successor states computed per second of wall time."""
        return self.explored / self.seconds if self.seconds > 0 else 0.0

    def universe(self) -> str:
        """``2 mms, 1 pages, 2 cpus, ops write, read, ...``."""
        b = self.bounds
        return (f"{b.mms} mms, {b.pages} pages, {b.cpus} cpus, swap {b.swap}, "
                f"ops {', '.join(self.ops)}")

    def headline(self) -> str:
        """The one-line verdict."""
        if self.mode == "random" and self.status == "safe":
            return (f"random: no violation in {self.sequences} sequences of {self.max_steps} "
                    f"steps (seed {self.seed}, {self.explored} steps, "
                    f"{self.seconds:.0f} s) over this universe: {self.universe()}; "
                    "this is a sample, not a bound")
        if self.status == "safe":
            extra = (" (every reachable state was explored by depth "
                     f"{self.depth_completed})" if self.closed else "")
            return (f"safe up to depth {self.bounds.depth} over this universe: "
                    f"{self.universe()}{extra}")
        if self.status == "error":
            return f"error: {self.error}"
        if self.status == "budget":
            return (f"time budget spent: depth {self.depth_completed} completed over this "
                    f"universe: {self.universe()}")
        assert self.counterexample is not None and self.violation is not None
        v = self.violation
        what = "random: counterexample" if self.mode == "random" else "counterexample"
        return (f"{what} of {len(self.counterexample)} steps: {v['violation']} at the "
                f"write of mm {v['mm']} page {v['page']} ({v['fault']} fault, policy "
                f"decided {v['outcome']}{'/' + v['reason'] if v['reason'] else ''})")

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "policy": self.policy, "kernel": self.kernel, "bounds": self.bounds.to_dict(),
            "ops": list(self.ops), "status": self.status, "headline": self.headline(),
            "depth_completed": self.depth_completed, "explored": self.explored,
            "distinct": self.distinct, "seconds": round(self.seconds, 3),
            "states_per_s": round(self.states_per_s, 1), "closed": self.closed,
            "counterexample": self.counterexample, "violation": self.violation,
            "initial": self.initial, "unshrunk_length": self.unshrunk_length,
            "error": self.error, "per_depth": self.per_depth,
            "unavoidable": self.unavoidable, "first_unavoidable": self.first_unavoidable,
            "notes": {str(k): v for k, v in self.notes.items()}, "mode": self.mode,
            "sequences": self.sequences, "max_steps": self.max_steps, "seed": self.seed,
        }


Progress = Callable[[dict[str, Any]], None]


def search(setup: Setup, *, policy_label: str, executor: Any = None,
           progress: Progress | None = None, shrink: bool = True,
           time_budget_s: float | None = None) -> VerifyResult:
    """Run the bounded breadth-first search of ``setup`` on ``executor``
    (default: in process). With ``time_budget_s`` the search stops after the chunk
    that passes the budget (status "budget"; ``depth_completed`` is the last level
    finished): the scaling measurement's mode, not a verdict."""
    from cowlab.executors import InProcessExecutor
    from cowlab.verify.shrink import shrink_counterexample

    ex = executor or InProcessExecutor()
    bounds = setup.bounds
    start = time.perf_counter()
    root = Sim(setup.problem)
    visited = {state_hash(root.runner, root.created, symmetry=bounds.symmetry)}
    frontier: list[tuple[Prefix, Context]] = [((), Context.of(root, 1))]
    explored = 0
    unavoidable = 0
    first_unavoidable: dict[str, Any] | None = None
    depth_done = 0
    per_depth: list[dict[str, int]] = []
    result_kw: dict[str, Any] = {}
    for depth in range(1, bounds.depth + 1):
        nxt: list[tuple[Prefix, Context]] = []
        chunks = [frontier[i:i + CHUNK] for i in range(0, len(frontier), CHUNK)]
        specs = [{"call": "verify.expand", "setup": setup.spec,
                  "states": [[list(p), c.to_list()] for p, c in chunk]} for chunk in chunks]
        done: dict[int, dict[str, Any]] = {}
        want = 0
        found = False
        level_explored = 0
        stream = ex.map_unordered(specs)
        try:
            for index, out in stream:
                done[index] = out
                while want in done and not found:
                    chunk_out = done.pop(want)
                    for (prefix, _ctx), succ in zip(chunks[want], chunk_out["states"],
                                                    strict=True):
                        for s in succ:
                            if "policy_error" in s:
                                result_kw = {"status": "error", "error": s["policy_error"],
                                             "counterexample": [thaw(x) for x in prefix]
                                             + [s["step"]]}
                                found = True
                                break
                            explored += 1
                            level_explored += 1
                            v = s["violation"]
                            if v is not None and not (v["avoidable"] or bounds.strict):
                                unavoidable += 1
                                if first_unavoidable is None:
                                    first_unavoidable = {
                                        "steps": [thaw(x) for x in prefix] + [s["step"]],
                                        "violation": v}
                            elif v is not None:
                                result_kw = {"status": "counterexample",
                                             "counterexample": [thaw(x) for x in prefix]
                                             + [s["step"]],
                                             "violation": s["violation"]}
                                found = True
                                break
                            h = bytes.fromhex(s["hash"])
                            if h not in visited:
                                visited.add(h)
                                nxt.append(((*prefix, freeze(s["step"])),
                                            Context.from_list(s["ctx"])))
                        if found:
                            break
                    want += 1
                    if progress is not None:
                        progress({"depth": depth, "explored": explored,
                                  "distinct": len(visited),
                                  "elapsed": time.perf_counter() - start,
                                  "chunks_done": want, "chunks": len(chunks)})
                if found:
                    break
                if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                    result_kw = {"status": "budget"}
                    found = True
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        per_depth.append({"depth": depth, "frontier": len(frontier),
                          "explored": level_explored, "new": len(nxt)})
        if found:
            break
        depth_done = depth
        frontier = nxt
        if not frontier:
            break
    closed = not frontier and not result_kw
    seconds = time.perf_counter() - start
    res = VerifyResult(
        policy=policy_label, kernel=setup.problem.config.name, bounds=bounds, ops=setup.ops,
        status=result_kw.get("status", "safe"), depth_completed=depth_done,
        explored=explored, distinct=len(visited), seconds=seconds,
        initial=setup.problem.initial_steps(), closed=closed, per_depth=per_depth,
        error=result_kw.get("error"), counterexample=result_kw.get("counterexample"),
        violation=result_kw.get("violation"), unavoidable=unavoidable,
        first_unavoidable=first_unavoidable,
    )
    if res.status == "counterexample" and shrink:
        assert res.counterexample is not None and res.violation is not None
        res.unshrunk_length = len(res.counterexample)
        steps, violation = shrink_counterexample(setup.problem, res.counterexample,
                                                 res.violation["violation"],
                                                 strict=bounds.strict)
        violation["avoidable"] = res.violation["avoidable"]
        res.notes = _earlier_violations(setup.problem, steps)
        res.counterexample, res.violation = steps, violation
        res.seconds = time.perf_counter() - start
    return res
