"""Reproduce, in simulation, the forceswap experiment behind the seed patch.

Nadav Amit's reproducer (linux-mm, November 2021), run as ``forceswap 2 100000 1``:
two helper threads spin on other CPUs, and the main thread does 100,000 times
``MADV_PAGEOUT`` of one page, a read that swaps it back in, and a timed write. This
script runs ``forceswap-v1`` with those arguments for each kernel era's reuse rule,
on a synchronous (pmem) and an asynchronous (ssd) swap device, and prints (and writes
to ``results.md``) a Markdown table of the debug counters that explained the copies on
the mailing list, pgreuse, remote TLB flushes and simulated cycles per write.

Run from the repository root::

    python experiments/forceswap/run.py                 # ~40 s; writes results.md
    python experiments/forceswap/run.py --nops 2000 --out -   # quick look, print only

See README.md beside this script for what drives each number.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cowlab
from cowlab.kernel import Kernel, get_preset
from cowlab.kernel.costs import CostModel
from cowlab.plugins import get_registry
from cowlab.workloads import Budget, Run, machine_for

HERE = Path(__file__).resolve().parent

#: (policy, kernel preset): the eras of the mailing-list discussion. legacy / v5.8 is the
#: reference Nadav measured reuse on (~1606 cycles).
RUNS: tuple[tuple[str, str], ...] = (
    ("legacy", "v5.8"),
    ("baseline", "v5.9"),
    ("patched", "v5.18"),
    ("patched-lru", "v5.18"),
    ("exclusive", "v5.19"),
)
DEVICES = ("pmem", "ssd")
COPY_REASONS = ("early", "lru", "lock", "writeback", "swapcache", "count", "ksm")


@dataclass
class Row:
    """The figures of one run."""

    policy: str
    kernel: str
    swap: str
    writes: int
    faults: int
    counters: dict[str, int]
    cycles_per_fault: float
    cycles_per_write: float
    wall_s: float


def run_one(policy: str, preset: str, swap: str, nops: int) -> Row:
    """``forceswap 2 NOPS 1`` on ``swap`` under ``policy`` on ``preset``."""
    reg = get_registry()
    workload = reg.make("workload", "forceswap-v1",
                        {"nthreads": 2, "nops": nops, "npages": 1, "swap": swap})
    config = get_preset(preset)
    kernel = Kernel(config, reg.make_policy(policy),
                    machine=machine_for(workload, None), seed=0)  # type: ignore[arg-type]
    start = time.perf_counter()
    Run(workload, kernel, 0, Budget(max_decisions=2 * nops + 10)).execute()  # type: ignore[arg-type]
    wall = time.perf_counter() - start
    timed = kernel.records[1:]  # the first record is the write that populated the page
    faulted = [r.latency_ns for r in timed if r.fault != "none"]
    ghz = kernel.costs.cpu_ghz
    return Row(
        policy=policy,
        kernel=preset,
        swap=swap,
        writes=len(timed),
        faults=len(faulted),
        counters=dict(kernel.counters),
        cycles_per_fault=sum(faulted) / len(faulted) * ghz if faulted else 0.0,
        cycles_per_write=sum(faulted) / len(timed) * ghz if timed else 0.0,
        wall_s=wall,
    )


def table(rows: list[Row]) -> str:
    """The Markdown table of ``rows``."""
    head = ["policy", "kernel", "swap", "writes", "write faults", "anon_wp_reuse",
            *(f"copy_{r}" for r in COPY_REASONS), "swapin_reuse", "pgreuse",
            "nr_tlb_remote_flush", "cycles/fault", "cycles/write"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c = r.counters
        cells = [r.policy, r.kernel, r.swap, f"{r.writes:,}", f"{r.faults:,}",
                 f"{c['anon_wp_reuse']:,}",
                 *(f"{c['anon_wp_copy_' + reason]:,}" for reason in COPY_REASONS),
                 f"{c['swapin_reuse']:,}", f"{c['pgreuse']:,}",
                 f"{c['nr_tlb_remote_flush']:,}", f"{r.cycles_per_fault:,.0f}",
                 f"{r.cycles_per_write:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nops", type=int, default=100_000,
                        help="loop iterations per run (forceswap's second argument)")
    parser.add_argument("--out", default=str(HERE / "results.md"),
                        help="Markdown file to write ('-': print only)")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    start = time.perf_counter()
    for swap in DEVICES:
        for policy, preset in RUNS:
            row = run_one(policy, preset, swap, args.nops)
            rows.append(row)
            print(f"  {policy:12} {preset:6} {swap:5} {row.wall_s:6.1f} s", file=sys.stderr)
    total = time.perf_counter() - start
    text = "\n".join([
        f"# forceswap 2 {args.nops:,} 1, simulated",
        "",
        f"Made by `python experiments/forceswap/run.py --nops {args.nops}` "
        f"(cowlab {cowlab.__version__}, CPython {platform.python_version()}; "
        f"{total:.0f} s wall for all runs). Cycles at "
        f"{CostModel().cpu_ghz:g} GHz from the simulated fault latency "
        "(cowlab/kernel/costs.py). `cycles/fault` is the mean over the timed writes that "
        "faulted; `cycles/write` spreads the same time over every timed write (a write to "
        "a page that stayed writable costs no fault).",
        "",
        table(rows),
        "",
    ])
    print(text)
    if args.out != "-":
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
