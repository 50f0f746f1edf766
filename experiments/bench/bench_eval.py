"""Records per minute of the default suite: in-process vs the process pool vs Ray.

    python experiments/bench/bench_eval.py [--seeds 2] [--no-ray]

Runs the cowlab-bench-v1 suite (all kernels and workloads, the first ``--seeds`` seeds)
for the shipped kernel policies plus each preset's kernel rule, once per executor, into fresh
temporary records files, checks the records agree, and prints records per minute. Ray's
figure includes starting a local Ray instance (its overhead on one machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from cowlab.evaluate import run_sweep
from cowlab.executors import make_executor
from cowlab.leaderboard import load_suite, suite_specs
from cowlab.records import record_key

POLICIES = ["legacy", "patched", "patched-lru", "exclusive", "large-strict", "exact-mapcount"]


def _stable(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record_key(r["config"]): {k: v for k, v in r.items() if k != "wall_s"}
            for r in records}


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", default="configs/suites/cowlab-bench-v1.yaml")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    suite.seeds = suite.seeds[: args.seeds]
    specs = suite_specs(suite, POLICIES)
    kinds = ["inprocess", "process"] + ([] if args.no_ray else ["ray"])
    results: dict[str, float] = {}
    reference: dict[str, dict[str, Any]] | None = None
    for kind in kinds:
        start = time.perf_counter()
        executor = make_executor(kind)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                res = run_sweep(specs, Path(tmp) / "r.jsonl", executor=executor,
                                progress=False)
        finally:
            executor.close()
        wall = time.perf_counter() - start
        results[kind] = len(specs) / wall * 60
        stable = _stable(res.records)
        same = reference is None or stable == reference
        reference = reference or stable
        print(f"{kind:<10} {len(specs)} records in {wall:6.1f} s: "
              f"{results[kind]:6.0f} records/min (records identical: {same})", flush=True)
    if "process" in results:
        print(f"process pool speed-up over in-process: "
              f"{results['process'] / results['inprocess']:.2f}x")
    if "ray" in results:
        print(f"ray overhead vs the process pool on one machine: "
              f"{results['process'] / results['ray']:.2f}x the time")


if __name__ == "__main__":
    main()
