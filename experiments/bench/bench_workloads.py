"""Benchmark of the workload generators on the engine: simulated work per wall second.

Run from the repository root::

    python experiments/bench/bench_workloads.py            # full run, about 3 minutes
    python experiments/bench/bench_workloads.py --quick    # smoke run, under 30 s
    python experiments/bench/bench_workloads.py --out experiments/bench/results/workloads.txt

It prints figures, not verdicts (it is not a test). Each timed figure is repeated and
shown as ``median [min..max]``. Sections:

1. Per registered workload (default parameters, run through ``run_workload`` with
   records kept, as the CLI and the environment run them): write faults per wall second
   (writes that faulted: first touch, write-protect, swap, unshare), policy decisions
   per wall second, and simulated seconds per wall second. Two heuristic policies:
   ``exclusive`` on v5.19 and ``patched-lru`` on v5.18. The issue's target, at least
   100,000 write faults per second on forceswap-v1, is marked.
2. Cost per write fault against the size of the address space: forceswap-v1 (one page,
   one helper) in an mm that also maps and populates a ballast region of 10^3..10^6
   pages (populating is not timed).
3. Cost per write fault against the number of CPUs: forceswap-v1 with 0..63 helper
   threads spinning on CPUs 1..63.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cowlab
from cowlab.kernel import Kernel, get_preset
from cowlab.plugins import get_registry
from cowlab.workloads import Budget, Run, Workload, machine_for, resolve_workload

#: Heuristic policies measured, each on its era's preset.
POLICIES = (("exclusive", "v5.19"), ("patched-lru", "v5.18"))
TARGET = 100_000


def fmt(values: Sequence[float], spec: str = ",.0f") -> str:
    """``median [min..max]``."""
    return (f"{statistics.median(values):{spec}} "
            f"[{min(values):{spec}}..{max(values):{spec}}]")


def timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Run ``fn`` ``repeats`` times; wall seconds of each, and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


# ==========================================================================================
# 1. per workload
# ==========================================================================================
def bench_workloads(out: Callable[[str], None], decisions: int, sim_ms: float,
                    repeats: int) -> None:
    reg = get_registry()
    out("== 1. Simulated work per wall second, per workload ==")
    out("")
    out(f"default parameters; budget: {decisions:,} decisions or {sim_ms:g} ms simulated;")
    out("records kept (as the CLI and env run). 'write faults' = writes that faulted;")
    out("'decisions' = times the policy was asked; 'kernel ops' = every operation the")
    out("threads performed (reads, writes that did not fault, madvise, fork ...). Setup")
    out("(mmap, Zipf tables) is timed too.")
    out("")
    header = (f"{'workload':22} {'policy':12} {'faults':>7} {'dec':>6} {'sim ms':>7}  "
              f"{'write faults/s':28} {'decisions/s':28} {'sim s / wall s':22} "
              f"{'kernel ops/s':22}")
    out(header)
    out("-" * len(header))
    for name in reg.names("workload"):
        for policy, preset in POLICIES:
            def once(name: str = name, policy: str = policy,
                     preset: str = preset) -> dict[str, int]:
                workload = resolve_workload(
                    reg.make("workload", name, {}), 0)  # type: ignore[arg-type]
                kernel = Kernel(get_preset(preset), reg.make_policy(policy),
                                machine=machine_for(workload, None), seed=0)
                budget = Budget(max_decisions=decisions, max_time_ns=int(sim_ms * 1e6))
                run = Run(workload, kernel, 0, budget)
                run.workload.setup(run)
                # Engine.run() moves the clock to until_ns even when stop() ended it:
                # note the time the budget was spent instead.
                spent: list[int] = []

                def stop() -> bool:
                    if run.done and not spent:
                        spent.append(kernel.clock.now)
                    return run.done

                run.engine.run(until_ns=budget.max_time_ns, stop=stop)
                sim = spent[0] if spent else kernel.clock.now
                return {"faults": sum(1 for r in kernel.records if r.fault != "none"),
                        "decisions": kernel.nr_decisions, "sim": sim,
                        "ops": sum(t.ops for t in run.engine.threads)}

            try:
                times, r = timed(once, repeats)
            except Exception as exc:  # keep going: one broken workload is a row
                out(f"{name:22} {policy:12} ERROR {type(exc).__name__}: {exc}")
                continue
            faults = r["faults"]
            mark = ""
            if name == "forceswap-v1":
                mark = "  target >= 100,000: " + (
                    "yes" if statistics.median([faults / t for t in times]) >= TARGET else "NO")
            out(f"{name:22} {policy:12} {faults:7,} {r['decisions']:6,} "
                f"{r['sim'] / 1e6:7.2f}  {fmt([faults / t for t in times]):28} "
                f"{fmt([r['decisions'] / t for t in times]):28} "
                f"{fmt([r['sim'] / 1e9 / t for t in times], ',.3f'):22} "
                f"{fmt([r['ops'] / t for t in times]):22}{mark}")
    out("")


# ==========================================================================================
# 2 and 3. scaling of forceswap
# ==========================================================================================
def forceswap_run(*, ballast: int, helpers: int, nops: int) -> tuple[Run, Callable[[], None]]:
    """A forceswap-v1 run whose mm also maps ``ballast`` populated pages; returns the run
    (set up, ballast populated) and the function that runs it to completion."""
    reg = get_registry()
    workload: Workload = reg.make(  # type: ignore[assignment]
        "workload", "forceswap-v1", {"nthreads": helpers, "nops": nops})
    config = get_preset("v5.19")
    kernel = Kernel(config, reg.make_policy("exclusive"), machine=machine_for(workload, None),
                    seed=0, keep_records=False)
    run = Run(workload, kernel, 0, Budget(max_decisions=nops + 1))
    if ballast:
        mm = run.mm("forceswap")
        base = 1 << 21
        kernel.mmap(mm, base, ballast, populate=True)
    run.workload.setup(run)

    def go() -> None:
        run.engine.run(stop=lambda: run.done)

    return run, go


def bench_scaling(out: Callable[[str], None], sizes: Sequence[int], cpus: Sequence[int],
                  nops: int, repeats: int) -> None:
    out("== 2. Cost per write fault against the address-space size ==")
    out("")
    out(f"forceswap-v1 (exclusive, v5.19, pmem, 1 helper), {nops:,} loop iterations per")
    out("repeat, in an mm that also maps a populated ballast region (not timed).")
    out("")
    out(f"{'ballast pages':>13} {'populate s':>10}  {'us/write fault':28} {'write faults/s':>15}")
    out("-" * 72)
    for size in sizes:
        samples: list[float] = []
        populate = 0.0
        for _ in range(repeats):
            gc.collect()
            t0 = time.perf_counter()
            run, go = forceswap_run(ballast=size, helpers=1, nops=nops)
            populate = time.perf_counter() - t0
            t1 = time.perf_counter()
            go()
            samples.append((time.perf_counter() - t1) / run.kernel.nr_decisions * 1e6)
            del run, go
        out(f"{size:13,} {populate:10.2f}  {fmt(samples, '.2f'):28} "
            f"{1e6 / statistics.median(samples):15,.0f}")
    out("")
    out("== 3. Cost per write fault against the number of CPUs ==")
    out("")
    out("forceswap-v1 (exclusive, v5.19, pmem) with CPUs-1 helper threads spinning on the")
    out(f"other CPUs (a remote TLB flush on every unmap), {nops:,} iterations per repeat.")
    out("")
    out(f"{'cpus':>5}  {'us/write fault':28} {'write faults/s':>15} {'engine steps/fault':>19}")
    out("-" * 72)
    for n in cpus:
        samples = []
        steps = 0.0
        for _ in range(repeats):
            gc.collect()
            run, go = forceswap_run(ballast=0, helpers=n - 1, nops=nops)
            t1 = time.perf_counter()
            go()
            samples.append((time.perf_counter() - t1) / run.kernel.nr_decisions * 1e6)
            steps = run.engine.steps / run.kernel.nr_decisions
        out(f"{n:5}  {fmt(samples, '.2f'):28} {1e6 / statistics.median(samples):15,.0f} "
            f"{steps:19.2f}")
    out("")


def profile_forceswap(out: Callable[[str], None], nops: int) -> None:
    out("== profile: forceswap-v1, exclusive on v5.19 (cProfile, by tottime) ==")
    _run, go = forceswap_run(ballast=0, helpers=2, nops=nops)
    prof = cProfile.Profile()
    prof.runcall(go)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
    out(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--profile", action="store_true", help="add a cProfile listing")
    args = parser.parse_args(argv)
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    start = time.perf_counter()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    out("cowlab workload benchmark")
    out(f"date:     {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    out(f"python:   {platform.python_implementation()} {platform.python_version()}")
    out(f"platform: {platform.platform()}")
    out(f"cpus:     {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in load)}")
    out(f"cowlab:   {cowlab.__version__}")
    out("repeats:  3 per figure (median [min..max]); timer time.perf_counter; gc enabled")
    out("")
    if args.quick:
        bench_workloads(out, decisions=1_000, sim_ms=20, repeats=3)
        bench_scaling(out, (1_000, 10_000), (1, 8), nops=2_000, repeats=3)
    else:
        bench_workloads(out, decisions=5_000, sim_ms=100, repeats=3)
        bench_scaling(out, (1_000, 10_000, 100_000, 1_000_000), (1, 2, 4, 8, 16, 32, 64),
                      nops=20_000, repeats=3)
    if args.profile:
        profile_forceswap(out, 5_000 if args.quick else 20_000)
    out(f"total benchmark wall time: {time.perf_counter() - start:.1f} s")
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
