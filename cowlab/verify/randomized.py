"""``cowlab verify --random``: seeded random deep sequences beyond the exhaustive bound.

Each sequence starts from the search's initial state and applies up to ``max_steps``
ops drawn uniformly from the same alphabet (cowlab/verify/universe.py) with a
``random.Random(seed)``; a step the kernel refuses is skipped (the state is rebuilt by
replaying the steps so far) and another is drawn. The first violation (an avoidable one
unless ``bounds.strict``) ends the run and is shrunk by delta debugging
(cowlab/verify/shrink.py) into a scenario. Which sequences run depends only on the seed;
the wall-clock budget decides only how many run, so a counterexample found within the
budget is the same on every machine. Hypothesis's stateful testing was not used: its
example database and health checks make runs depend on more than the seed, and this
generator already shares the exhaustive search's alphabet, replay and shrinker.

A random run samples: "no violation found" is never a proof, and the result says so.
"""

from __future__ import annotations

import random
import time
from typing import Any

from cowlab.verify.search import Context, Progress, Setup, VerifyResult, _earlier_violations
from cowlab.verify.shrink import shrink_counterexample
from cowlab.verify.sim import Sim, StepRefused, VerifyPolicyError, avoidable, replay


def random_search(setup: Setup, *, policy_label: str, seed: int = 0,
                  budget_s: float = 60.0, max_steps: int = 40,
                  max_sequences: int | None = None,
                  progress: Progress | None = None) -> VerifyResult:
    """Run seeded random sequences until a violation, the time budget or
    ``max_sequences``."""
    problem = setup.problem
    strict = setup.bounds.strict
    rng = random.Random(seed)
    start = time.perf_counter()
    sequences = steps_done = 0
    found: tuple[list[dict[str, Any]], dict[str, Any]] | None = None
    error: str | None = None
    while found is None and error is None:
        if max_sequences is not None and sequences >= max_sequences:
            break
        if time.perf_counter() - start >= budget_s:
            break
        sim = Sim(problem)
        ctx = Context.of(sim, 1)
        seq: list[dict[str, Any]] = []
        refused = 0
        while len(seq) < max_steps and refused < 50:
            offered = setup.alphabet.steps(list(ctx.live), ctx.created, list(ctx.gups),
                                           ctx.next_gup)
            if not offered:
                break
            step = rng.choice(offered)
            try:
                rec = sim.apply(step)
            except StepRefused:
                refused += 1
                sim = replay(problem, seq)
                continue
            except VerifyPolicyError as exc:
                error = str(exc)
                seq.append(step)
                break
            refused = 0
            seq.append(step)
            steps_done += 1
            ctx = Context.of(sim, ctx.next_gup + (1 if step["op"] == "gup" else 0))
            if rec is not None:
                avoid = avoidable(problem, seq, sim)
                if strict or avoid:
                    from cowlab.verify.search import _violation

                    found = (list(seq), {**_violation(rec), "avoidable": avoid})
                    break
        sequences += 1
        if progress is not None:
            progress({"depth": max_steps, "explored": steps_done, "distinct": sequences,
                      "elapsed": time.perf_counter() - start, "random": True})
    res = VerifyResult(
        policy=policy_label, kernel=problem.config.name, bounds=setup.bounds, ops=setup.ops,
        status="safe", depth_completed=0, explored=steps_done, distinct=0,
        seconds=time.perf_counter() - start, initial=problem.initial_steps(),
        mode="random", sequences=sequences, max_steps=max_steps, seed=seed,
    )
    if error is not None:
        res.status, res.error = "error", error
    elif found is not None:
        steps, v = found
        res.unshrunk_length = len(steps)
        shrunk, violation = shrink_counterexample(problem, steps, v["violation"],
                                                  strict=strict)
        violation["avoidable"] = v["avoidable"]
        res.status, res.counterexample, res.violation = "counterexample", shrunk, violation
        res.notes = _earlier_violations(problem, shrunk)
        res.seconds = time.perf_counter() - start
    return res
