"""Benchmark of the Gymnasium environment cowlab/CowFault-v0 and of training.

Run from the repository root (prints figures; not a test)::

    python experiments/bench/bench_env.py            # about a minute
    python experiments/bench/bench_env.py --quick    # a few seconds

1. Environment steps per wall second with random (masked) actions, per action mode
   and workload, on ``CowFaultEnv`` itself (no wrappers), resets included; and the
   share of that time spent in the simulated kernel (the run greenlet) versus the
   env's own code (observation, reward, masks, switching).
2. A short PPO run of ``configs/exclusive.yaml``: steps per second and the share of the
   learning time spent in the environments versus the learner; then the very same
   environment calls (every step's action and every reset's seed, recorded during the
   run) replayed on fresh environments without the learner, to show how much of the
   environments' time in training is their own work and how much is the learner's
   effect on the caches (the replay checks that it reproduces every observation).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from greenlet import greenlet

import cowlab.env as env_module
from cowlab.env import CowFaultEnv

ROOT = Path(__file__).resolve().parents[2]

WORKLOADS: dict[str, dict[str, Any]] = {
    "forceswap-v1 (pmem, 4 pages)": {"name": "forceswap-v1",
                                     "params": {"swap": "pmem", "npages": 4}},
    "fork-snapshot-v1 (512 pages)": {"name": "fork-snapshot-v1", "params": {"pages": 512}},
    "pinned-io-v1": {"name": "pinned-io-v1", "params": {}},
}


def step_randomly(env: CowFaultEnv, rng: random.Random, steps: int) -> None:
    """``steps`` steps with random masked actions, resetting when an episode ends.

    The random agent is the benchmark's cost, not the env's, so it is kept small: a
    uniform choice among the allowed actions with ``random.random()`` costs about
    0.5 us a step, where numpy's ``rng.choice(np.flatnonzero(mask))`` cost 7 us and
    ``flatnonzero`` with ``rng.integers`` 3-4 us (measured on the 2-core machine).
    """
    random = rng.random
    for _ in range(steps):
        allowed = [i for i, ok in enumerate(env.action_masks().tolist()) if ok]
        action = allowed[int(random() * len(allowed))]
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()


def env_rate(workload: dict[str, Any], mode: str, steps: int) -> tuple[float, float]:
    """(steps per second, share of the time in the kernel) with random masked actions.

    The time in the kernel is the time the env waits in its switches into the run's
    greenlet (from a switch until the run hands back the next fault): the env's runs
    are made, for this measurement, in a greenlet class whose ``switch`` is timed.
    """
    glet_time = [0.0]

    class TimedRun(greenlet):  # type: ignore[misc]
        def switch(self, *args: Any) -> Any:
            t = time.perf_counter()
            try:
                return greenlet.switch(self, *args)
            finally:
                glet_time[0] += time.perf_counter() - t

    made = env_module.greenlet
    env_module.greenlet = TimedRun
    try:
        env = CowFaultEnv(kernel="v5.19", workload=workload, action_mode=mode,
                          max_decisions=256)
        rng = random.Random(0)
        env.reset(seed=0)
        glet_time[0] = 0.0
        start = time.perf_counter()
        step_randomly(env, rng, steps)
        wall = time.perf_counter() - start
        env.close()
    finally:
        env_module.greenlet = made
    return steps / wall, glet_time[0] / wall


def short_training(out: str, steps: int) -> Any:
    """configs/exclusive.yaml for a short timed run (this section's and bench_builds'):
    ``steps`` steps into ``out``; no validation, checkpoints, progress or TensorBoard; a
    one-seed final evaluation against ``exclusive``."""
    from cowlab.config import load_config

    return load_config(ROOT / "configs" / "exclusive.yaml", [
        f"output.dir={out}", f"agent.total_timesteps={steps}", "eval.every_steps=0",
        "output.checkpoint_every=0", "output.progress=false", "eval.seeds=1",
        "eval.max_decisions=200", "eval.baselines=[exclusive]", "output.tensorboard=false"])


#: One environment call recorded during training: (environment, "step" or "reset",
#: the action or the seed, seconds it took, CRC-32 of the observation it returned).
Call = tuple[int, str, Any, float, int]


@contextlib.contextmanager
def recording_env_calls() -> Iterator[list[Call]]:
    """Record every call that ``cowlab train``'s env timers (``cowlab.train._Timed``, the
    wrappers whose totals make the env share) time, with the duration the timer itself
    adds to its total. Benchmark instrumentation: the timer's methods are wrapped while the
    block runs."""
    import cowlab.train as training

    calls: list[Call] = []
    timed = training._Timed
    step, reset = timed.step, timed.reset
    index: dict[int, int] = {}

    def record(self: Any, kind: str, arg: Any, before: float, out: Any) -> Any:
        calls.append((index.setdefault(id(self), len(index)), kind, arg,
                      self.seconds - before, zlib.crc32(out[0].tobytes())))
        return out

    def timed_step(self: Any, action: Any) -> Any:
        before = self.seconds
        return record(self, "step", int(action), before, step(self, action))

    def timed_reset(self: Any, **kwargs: Any) -> Any:
        before = self.seconds
        return record(self, "reset", kwargs.get("seed"), before, reset(self, **kwargs))

    timed.step, timed.reset = timed_step, timed_reset  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        timed.step, timed.reset = step, reset  # type: ignore[method-assign]


def replay(calls: list[Call], kwargs: dict[str, Any]) -> list[float]:
    """Seconds each recorded call takes on fresh environments, replayed in the recorded
    order without the learner in between. Raises RuntimeError if an observation differs
    from the recorded one (the replay would not be the same work)."""
    import numpy as np

    from cowlab.env import CowFaultEnv

    envs: dict[int, Any] = {}
    took: list[float] = []
    clock = time.perf_counter
    for n, (i, kind, arg, _, crc) in enumerate(calls):
        env = envs.get(i)
        if env is None:
            env = envs[i] = CowFaultEnv(**kwargs)  # as cowlab train makes them
        t = clock()
        obs = env.reset(seed=arg)[0] if kind == "reset" else env.step(np.int64(arg))[0]
        took.append(clock() - t)
        if zlib.crc32(obs.tobytes()) != crc:
            raise RuntimeError(f"replay diverged at call {n} ({kind} of environment {i})")
    return took


def train_split(steps: int) -> list[str]:
    """Lines of section 2: the training run's split, then the replay's."""
    from cowlab.train import _frozen_heap, env_kwargs, train

    with (tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as null,
          recording_env_calls() as calls):
        cfg = short_training(out, steps)
        r = train(cfg, stdout=null)
    n = r.num_timesteps
    lines = [f"{n} steps in {r.train_s:.1f} s: {r.steps_per_s:.0f} steps/s; "
             f"environments {r.env_share:.0%} of the learning time, learner (PPO rollout "
             f"bookkeeping, forward passes, updates) {1 - r.env_share:.0%}"]
    # Under the trainer's collector settings: the learning run's heap (torch, the model)
    # is still here, and the default settings would rescan it during the resets.
    with _frozen_heap():
        alone = replay(calls, env_kwargs(cfg))

    def per_step(kind: str, seconds: list[float]) -> float:
        return sum(s for c, s in zip(calls, seconds, strict=True) if c[1] == kind) / n * 1e6

    during = [c[3] for c in calls]
    env_us = per_step("step", during) + per_step("reset", during)
    learner_us = r.train_s / n * 1e6 - env_us
    alone_us = per_step("step", alone) + per_step("reset", alone)
    lines.append(
        f"per step: environments {env_us:.1f} us (steps {per_step('step', during):.1f}, "
        f"resets {per_step('reset', during):.1f}), learner {learner_us:.1f} us")
    lines.append(
        f"the same {sum(c[1] == 'step' for c in calls)} steps and "
        f"{sum(c[1] == 'reset' for c in calls)} resets replayed without the learner: "
        f"{alone_us:.1f} us per step (steps {per_step('step', alone):.1f}, resets "
        f"{per_step('reset', alone):.1f}), {env_us / alone_us:.2f}x less; at that cost the "
        f"share would be {alone_us / (alone_us + learner_us):.0%}")
    steps_in_training = [c[3] for c in calls if c[1] == "step"]
    by_env = {i: statistics.median(c[3] for c in calls if c[1] == "step" and c[0] == i) * 1e6
              for i in sorted({c[0] for c in calls})}
    lines.append("median step in training by environment (stepped in this order after "
                 "each forward pass): " + ", ".join(f"{u:.1f} us" for u in by_env.values())
                 + f" (all: {statistics.median(steps_in_training) * 1e6:.1f} us)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    lines: list[str] = []

    def print(text: str = "") -> None:
        lines.append(text)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    steps = 3_000 if args.quick else 20_000
    from cowlab._build import describe

    print(f"cowlab env benchmark: Python {platform.python_version()} on {platform.machine()}, "
          f"{steps} steps per figure, median of 3; {describe()}")
    print("\n1. Env steps per second, random masked actions (resets included)")
    print(f"{'workload':<32} {'mode':<11} {'steps/s':>9} {'in kernel':>10}")
    for label, workload in WORKLOADS.items():
        for mode in ("decision", "primitives"):
            runs = [env_rate(workload, mode, steps) for _ in range(3)]
            rate = statistics.median(r[0] for r in runs)
            share = statistics.median(r[1] for r in runs)
            print(f"{label:<32} {mode:<11} {rate:>9,.0f} {share:>10.0%}")
    print("\n2. Training (configs/exclusive.yaml, PPO, 4 envs, 1 torch thread)")
    for line in train_split(4_096 if args.quick else 20_480):
        print("  " + line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
