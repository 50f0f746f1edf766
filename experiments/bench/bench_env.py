"""Benchmark of the Gymnasium environment cowlab/CowFault-v0 and of training.

Run from the repository root (prints figures; not a test)::

    python experiments/bench/bench_env.py            # about a minute
    python experiments/bench/bench_env.py --quick    # a few seconds

1. Environment steps per wall second with random (masked) actions, per action mode
   and workload, on ``CowFaultEnv`` itself (no wrappers), resets included; and the
   share of that time spent in the simulated kernel (the run greenlet) versus the
   env's own code (observation, reward, masks, switching).
2. A short PPO run of ``configs/exclusive.yaml``: steps per second and the share of the
   learning time spent in the environments versus the learner.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

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
    """(steps per second, share of the time in the kernel) with random masked actions."""
    env = CowFaultEnv(kernel="v5.19", workload=workload, action_mode=mode, max_decisions=256)
    rng = random.Random(0)
    env.reset(seed=0)
    glet_time = [0.0]
    switch = env._switch

    def timed_switch(value: object) -> Any:
        t = time.perf_counter()
        try:
            return switch(value)
        finally:
            glet_time[0] += time.perf_counter() - t

    env._switch = timed_switch  # type: ignore[method-assign]
    start = time.perf_counter()
    step_randomly(env, rng, steps)
    wall = time.perf_counter() - start
    return steps / wall, glet_time[0] / wall


def train_split(steps: int) -> str:
    from cowlab.config import load_config
    from cowlab.train import train

    out = Path("/tmp") / "cowlab-bench-train"
    cfg = load_config(ROOT / "configs" / "exclusive.yaml", [
        f"output.dir={out}", f"agent.total_timesteps={steps}", "eval.every_steps=0",
        "output.checkpoint_every=0", "output.progress=false", "eval.seeds=1",
        "eval.max_decisions=200", "eval.baselines=[exclusive]", "output.tensorboard=false"])
    r = train(cfg, stdout=open("/dev/null", "w"))  # noqa: SIM115
    return (f"{r.num_timesteps} steps in {r.train_s:.1f} s: {r.steps_per_s:.0f} steps/s; "
            f"environments {r.env_share:.0%} of the learning time, learner (PPO rollout "
            f"bookkeeping, forward passes, updates) {1 - r.env_share:.0%}")


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
    print("  " + train_split(4_096 if args.quick else 20_480))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
