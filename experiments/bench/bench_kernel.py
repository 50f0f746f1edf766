"""Benchmark of the cowlab kernel simulator: decision throughput, scaling, memory, fork.

Run from the repository root::

    python experiments/bench/bench_kernel.py            # full run, about 2-3 minutes
    python experiments/bench/bench_kernel.py --quick    # smoke run, well under 30 s
    python experiments/bench/bench_kernel.py --out experiments/bench/results/kernel.txt

It prints figures, not pass/fail verdicts (it is not a test). Every timed figure is
repeated and reported as the median with the min and max so that noise on a loaded
machine stays visible. The sections are:

1. Write faults per wall second on a scripted forceswap loop (``MADV_PAGEOUT``, then
   read and write every page) and the cost of one reuse decision on a pure write-fault
   loop (populate, fork, exit the child, write every page again), per policy.
2. Cost per decision against the size of the address space (should be flat).
3. Memory allocated per mapped and populated 4 KiB page (``tracemalloc``).
4. Time to fork (and exit the child of) a large populated address space.

See ``experiments/bench/README.md`` for what each figure means.
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
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cowlab
from cowlab.kernel import Kernel, Machine, get_preset
from cowlab.kernel.mm import MM
from cowlab.plugins import get_registry

#: The policies measured by default, each on the kernel preset of its era.
POLICY_PRESETS: dict[str, str] = {
    "legacy": "v5.8",
    "baseline": "v5.9",
    "patched": "v5.18",
    "patched-lru": "v5.18",
    "exclusive": "v5.19",
    "large-strict": "v6.9",
    "exact-mapcount": "v6.15",
    "oracle": "v5.19",
    "always-copy": "v5.19",
}

#: Reference policies: measured, but the throughput target is about the heuristics.
REFERENCE_POLICIES = frozenset({"oracle", "always-copy", "always-reuse", "random"})

#: Preset for a registered policy that is not in :data:`POLICY_PRESETS`.
DEFAULT_PRESET = "v5.19"

#: Policy and preset used by the scaling, memory and fork sections.
SCALE_POLICY = "exclusive"
SCALE_PRESET = "v5.19"

#: The issue's target for the heuristic policies, in write faults per second.
TARGET_FAULTS_PER_S = 100_000

#: The machine every benchmark kernel runs on (as in the forceswap scenario).
MACHINE = Machine(cpus=2, swap="pmem")

#: Counters that are bumped once per decision taken on the write-protect path.
DECISION_COUNTERS = (
    "anon_wp_reuse",
    "anon_wp_copy_early",
    "anon_wp_copy_lru",
    "anon_wp_copy_lock",
    "anon_wp_copy_writeback",
    "anon_wp_copy_swapcache",
    "anon_wp_copy_count",
    "anon_wp_copy_ksm",
    "anon_wp_copy_large",
    "anon_wp_copy_policy",
)


@dataclass(frozen=True)
class Sizes:
    """Workload sizes for one run mode (full or ``--quick``)."""

    repeats: int
    forceswap_pages: int
    forceswap_seconds: float  # wall time aimed at per policy, over all repeats
    decision_pages: int
    decisions: int
    scaling_pages: tuple[int, ...]
    scaling_decisions: int
    memory_pages: int
    fork_pages: int
    fork_repeats: int


FULL = Sizes(
    repeats=5,
    forceswap_pages=64,
    forceswap_seconds=1.0,
    decision_pages=10_000,
    decisions=10_000,
    scaling_pages=(1_000, 10_000, 100_000, 1_000_000),
    scaling_decisions=10_000,
    memory_pages=100_000,
    fork_pages=1_000_000,
    fork_repeats=3,
)

QUICK = Sizes(
    repeats=5,
    forceswap_pages=64,
    forceswap_seconds=0.15,
    decision_pages=2_000,
    decisions=2_000,
    scaling_pages=(1_000, 10_000, 100_000),
    scaling_decisions=2_000,
    memory_pages=10_000,
    fork_pages=100_000,
    fork_repeats=3,
)


# ======================================================================================
# reporting helpers
# ======================================================================================
class Report:
    """Prints lines as they are produced and keeps them for ``--out``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        """Print ``text`` (flushed, so progress is visible) and keep it."""
        print(text, flush=True)
        self.lines.append(text)

    def write(self, path: Path) -> None:
        """Write every kept line to ``path``, creating its directory."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Stat:
    """Median, min and max of repeated samples."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        """Summarise ``samples`` (at least one)."""
        return cls(statistics.median(samples), min(samples), max(samples))

    def fmt(self, spec: str, scale: float = 1.0) -> str:
        """``median [min..max]`` with every value multiplied by ``scale``."""
        return (
            f"{self.median * scale:{spec}} [{self.low * scale:{spec}}..{self.high * scale:{spec}}]"
        )


def rate_stat(count: int, seconds: Sequence[float]) -> Stat:
    """Per-second rates of ``count`` events for each elapsed time (the median of the
    rates is the rate of the median time; min and max swap places)."""
    rates = [count / s for s in seconds]
    return Stat.of(rates)


def error_text(exc: BaseException) -> str:
    """One-line description of an exception raised by the simulator."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        code = tb.tb_frame.f_code
        where = f" in {Path(code.co_filename).name}:{tb.tb_lineno} {code.co_name}()"
    return f"ERROR {type(exc).__name__}: {exc}{where}"


# ======================================================================================
# kernel set-up
# ======================================================================================
def make_kernel(policy: str, preset: str) -> Kernel:
    """A fresh kernel on :data:`MACHINE` with records off (the benchmark reads none)."""
    return Kernel(
        get_preset(preset),
        get_registry().make_policy(policy),
        machine=MACHINE,
        keep_records=False,
    )


def populate(kernel: Kernel, name: str, pages: int) -> MM:
    """Map ``pages`` anonymous pages at page 0 of a new mm and write each once."""
    mm = kernel.create_mm(name)
    kernel.mmap(mm, 0, pages)
    write = kernel.write
    for page in range(pages):
        write(mm, page, 0)
    return mm


def decisions_taken(kernel: Kernel) -> int:
    """Reuse decisions taken so far on the write-protect path (from the counters)."""
    counters = kernel.counters
    return sum(counters[name] for name in DECISION_COUNTERS)


class DecisionRig:
    """A populated address space whose pages are write-protected by fork + exit.

    After :meth:`arm` every page is mapped read-only by a single mm, so the next write
    to each page is a write-protect fault that asks the policy. :meth:`timed` writes
    the next ``count`` armed pages, re-arming (outside the timed region) whenever every
    page has been written, and returns only the time spent in ``Kernel.write``.
    """

    def __init__(self, kernel: Kernel, pages: int) -> None:
        self.kernel = kernel
        self.pages = pages
        self.mm = populate(kernel, "bench", pages)
        self.cursor = pages  # nothing armed yet
        self.arms = 0

    def arm(self) -> None:
        """Fork a child and exit it at once: every page becomes write-protected."""
        child = self.kernel.fork(self.mm, f"child{self.arms}", 0)
        self.kernel.exit_mm(child)
        self.arms += 1
        self.cursor = 0

    def timed(self, count: int) -> float:
        """Seconds spent in ``count`` write faults that each take a decision."""
        write = self.kernel.write
        mm = self.mm
        elapsed = 0.0
        left = count
        while left:
            if self.cursor == self.pages:
                self.arm()
            start = self.cursor
            stop = min(self.pages, start + left)
            t0 = time.perf_counter()
            for page in range(start, stop):
                write(mm, page, 0)
            elapsed += time.perf_counter() - t0
            left -= stop - start
            self.cursor = stop
        return elapsed


def timed_decisions(rig: DecisionRig, count: int, repeats: int) -> list[float]:
    """``repeats`` samples of the time for ``count`` decisions; checks they were taken."""
    samples = []
    for _ in range(repeats):
        gc.collect()
        before = decisions_taken(rig.kernel)
        samples.append(rig.timed(count))
        taken = decisions_taken(rig.kernel) - before
        if taken != count:
            raise RuntimeError(f"expected {count} decisions, the counters show {taken}")
    return samples


# ======================================================================================
# section 1: forceswap loop and pure decision loop, per policy
# ======================================================================================
@dataclass
class ForceswapResult:
    """Outcome of the forceswap loop for one policy."""

    iterations: int
    writes: int
    seconds: list[float]
    outcomes: dict[str, int]


def forceswap_iteration(kernel: Kernel, mm: MM, pages: int, tally: dict[str, int]) -> None:
    """One round of the loop: page everything out, then read and write every page."""
    kernel.madvise(mm, 0, pages, "pageout", 0)
    read = kernel.read
    write = kernel.write
    for page in range(pages):
        read(mm, page, 0)
        outcome = write(mm, page, 0).outcome
        tally[outcome] = tally.get(outcome, 0) + 1


def run_forceswap(policy: str, preset: str, sizes: Sizes) -> ForceswapResult:
    """Calibrate the iteration count to the time budget, then time ``repeats`` runs."""
    pages = sizes.forceswap_pages
    kernel = make_kernel(policy, preset)
    mm = populate(kernel, "forceswap", pages)
    kernel.read(mm, 0, 1)  # the helper thread: the mm has run on CPU 1 too
    scratch: dict[str, int] = {}
    t0 = time.perf_counter()
    forceswap_iteration(kernel, mm, pages, scratch)
    forceswap_iteration(kernel, mm, pages, scratch)
    per_iteration = (time.perf_counter() - t0) / 2
    budget = sizes.forceswap_seconds / sizes.repeats
    iterations = max(1, round(budget / per_iteration))
    tally: dict[str, int] = {}
    seconds = []
    for _ in range(sizes.repeats):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(iterations):
            forceswap_iteration(kernel, mm, pages, tally)
        seconds.append(time.perf_counter() - t0)
    return ForceswapResult(iterations, iterations * pages, seconds, tally)


def section_policies(report: Report, policies: Sequence[str], sizes: Sizes) -> None:
    """Section 1: the forceswap loop and the pure decision loop for each policy."""
    report.line("== 1. Write faults per second, per policy ==")
    report.line()
    report.line(
        f"1a. forceswap loop, {sizes.forceswap_pages} pages (pmem swap, 2 CPUs). Per iteration:"
    )
    report.line("    MADV_PAGEOUT of every page, then read + write each page (the write is timed")
    report.line(
        "    as part of the loop). writes/s = writes / wall time of the whole loop, swap-in"
    )
    report.line("    included; 'writes' is per repeat, outcomes are summed over all repeats.")
    report.line()
    header = (
        f"{'policy':<15} {'kernel':<7} {'iters':>6} {'writes':>7}  "
        f"{'writes/s median [min..max]':<30}  outcomes"
    )
    report.line(header)
    report.line("-" * len(header))
    for policy in policies:
        preset = preset_of(policy)
        try:
            res = run_forceswap(policy, preset, sizes)
        except Exception as exc:  # a simulator failure is a figure too: report it
            report.line(f"{policy:<15} {preset:<7} {error_text(exc)}")
            continue
        rates = rate_stat(res.writes, res.seconds)
        outcomes = " ".join(f"{k}={v}" for k, v in sorted(res.outcomes.items()))
        report.line(
            f"{policy:<15} {preset:<7} {res.iterations:>6} {res.writes:>7}  "
            f"{rates.fmt(',.0f'):<30}  {outcomes}"
        )
    report.line()
    report.line(
        f"1b. pure decision loop: {sizes.decision_pages:,} pages populated, fork + exit a child,"
    )
    report.line(f"    then {sizes.decisions:,} timed writes, each a wp fault that asks the policy.")
    report.line(
        f"    target: >= {TARGET_FAULTS_PER_S:,} decisions/s (median) for the heuristic policies;"
    )
    report.line("    (ref) marks reference policies, measured for comparison only.")
    report.line()
    header = (
        f"{'policy':<15} {'kernel':<7} {'us/decision median [min..max]':<30}  "
        f"{'decisions/s median [min..max]':<32}  target"
    )
    report.line(header)
    report.line("-" * len(header))
    for policy in policies:
        preset = preset_of(policy)
        try:
            rig = DecisionRig(make_kernel(policy, preset), sizes.decision_pages)
            samples = timed_decisions(rig, sizes.decisions, sizes.repeats)
        except Exception as exc:
            report.line(f"{policy:<15} {preset:<7} {error_text(exc)}")
            continue
        per = Stat.of([s / sizes.decisions for s in samples])
        rates = rate_stat(sizes.decisions, samples)
        meets = "yes" if rates.median >= TARGET_FAULTS_PER_S else "NO"
        if policy in REFERENCE_POLICIES:
            meets += " (ref)"
        report.line(
            f"{policy:<15} {preset:<7} {per.fmt('.2f', 1e6):<30}  {rates.fmt(',.0f'):<32}  {meets}"
        )
    report.line()


def preset_of(policy: str) -> str:
    """The kernel preset a policy is measured on."""
    return POLICY_PRESETS.get(policy, DEFAULT_PRESET)


# ======================================================================================
# section 2: cost per decision against address-space size
# ======================================================================================
def scaling_point(pages: int, sizes: Sizes) -> tuple[float, list[float]]:
    """Populate ``pages`` pages (timed once) and time the decision loop on them."""
    kernel = make_kernel(SCALE_POLICY, SCALE_PRESET)
    t0 = time.perf_counter()
    rig = DecisionRig(kernel, pages)
    populate_s = time.perf_counter() - t0
    return populate_s, timed_decisions(rig, sizes.scaling_decisions, sizes.repeats)


def section_scaling(report: Report, sizes: Sizes) -> None:
    """Section 2: the pure decision loop with ever larger address spaces."""
    report.line("== 2. Cost per decision against address-space size ==")
    report.line()
    report.line(
        f"{SCALE_POLICY} on {SCALE_PRESET}; {sizes.scaling_decisions:,} decisions timed per "
        "repeat; populating and"
    )
    report.line(
        "fork + exit (which write-protect the pages) are not timed. The cost should be flat."
    )
    report.line()
    header = (
        f"{'pages':>10}  {'populate s':>10}  {'us/decision median [min..max]':<30}  "
        f"{'decisions/s median':>18}"
    )
    report.line(header)
    report.line("-" * len(header))
    for pages in sizes.scaling_pages:
        try:
            populate_s, samples = scaling_point(pages, sizes)
        except Exception as exc:
            report.line(f"{pages:>10,}  {error_text(exc)}")
            continue
        finally:
            gc.collect()  # the address space just measured is garbage now
        per = Stat.of([s / sizes.scaling_decisions for s in samples])
        report.line(
            f"{pages:>10,}  {populate_s:>10.2f}  {per.fmt('.2f', 1e6):<30}  "
            f"{1 / per.median:>18,.0f}"
        )
    report.line()


# ======================================================================================
# section 3: memory per page
# ======================================================================================
def section_memory(report: Report, sizes: Sizes) -> None:
    """Section 3: bytes allocated per mapped and populated 4 KiB page."""
    pages = sizes.memory_pages
    report.line("== 3. Memory per mapped 4 KiB page ==")
    report.line()
    kernel = make_kernel(SCALE_POLICY, SCALE_PRESET)
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        mm = populate(kernel, "memory", pages)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    net = current - base
    report.line(
        f"{SCALE_POLICY} on {SCALE_PRESET}: mmap + write {pages:,} pages "
        f"(tracemalloc, after the kernel was built)"
    )
    report.line(f"  retained: {net:>14,} bytes  = {net / pages:8.1f} bytes/page")
    report.line(f"  peak:     {peak - base:>14,} bytes  = {(peak - base) / pages:8.1f} bytes/page")
    report.line(f"  (page-table entries: {len(mm.pt):,}; frames: {len(kernel.frames):,})")
    report.line()


# ======================================================================================
# section 4: fork and exit of a large address space
# ======================================================================================
def section_fork(report: Report, sizes: Sizes) -> None:
    """Section 4: time to fork a populated address space, and to exit the child."""
    pages = sizes.fork_pages
    report.line("== 4. fork() of a populated address space ==")
    report.line()
    kernel = make_kernel(SCALE_POLICY, SCALE_PRESET)
    t0 = time.perf_counter()
    mm = populate(kernel, "parent", pages)
    populate_s = time.perf_counter() - t0
    fork_s: list[float] = []
    exit_s: list[float] = []
    for i in range(sizes.fork_repeats):
        gc.collect()
        t0 = time.perf_counter()
        child = kernel.fork(mm, f"child{i}", 0)
        t1 = time.perf_counter()
        kernel.exit_mm(child)
        t2 = time.perf_counter()
        fork_s.append(t1 - t0)
        exit_s.append(t2 - t1)
        del child
    report.line(
        f"{SCALE_POLICY} on {SCALE_PRESET}: {pages:,} populated pages "
        f"(populate took {populate_s:.2f} s); {sizes.fork_repeats} repeats"
    )
    fork = Stat.of(fork_s)
    exits = Stat.of(exit_s)
    report.line(f"  fork:       {fork.fmt('.3f')} s   = {fork.median / pages * 1e6:.2f} us/page")
    report.line(f"  exit child: {exits.fmt('.3f')} s   = {exits.median / pages * 1e6:.2f} us/page")
    report.line()


# ======================================================================================
# profiling (optional)
# ======================================================================================
def profile_decisions(report: Report, sizes: Sizes, top: int = 12) -> None:
    """Run the pure decision loop under cProfile and list the top functions by tottime."""
    rig = DecisionRig(make_kernel(SCALE_POLICY, SCALE_PRESET), sizes.decision_pages)
    rig.arm()
    profiler = cProfile.Profile()
    profiler.enable()
    rig.timed(sizes.decisions)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    report.line(
        f"== profile: {sizes.decisions:,} decisions, {SCALE_POLICY} on {SCALE_PRESET} "
        "(cProfile, sorted by tottime) =="
    )
    for text in out.getvalue().splitlines():
        if text.strip():
            report.line(text.rstrip())
    report.line()


# ======================================================================================
# entry point
# ======================================================================================
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark the cowlab kernel simulator (figures, not pass/fail)."
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes for a smoke run (well under 30 s)"
    )
    parser.add_argument("--out", type=Path, help="also write the printed report to this file")
    parser.add_argument(
        "--policies",
        help="comma-separated policies for section 1 (default: " + ",".join(POLICY_PRESETS) + ")",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the pure decision loop with cProfile (top functions by tottime)",
    )
    args = parser.parse_args(argv)
    if args.policies:
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        known = get_registry().names("policy")
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown policies: {', '.join(unknown)}; known: {', '.join(known)}")
        args.policies = names
    else:
        args.policies = list(POLICY_PRESETS)
    return args


def header(report: Report, sizes: Sizes, quick: bool) -> None:
    """Print what ran where and when."""
    now = datetime.now(timezone.utc).astimezone()
    report.line("cowlab kernel benchmark" + (" (--quick)" if quick else ""))
    report.line(f"date:     {now.isoformat(timespec='seconds')}")
    report.line(f"python:   {platform.python_implementation()} {platform.python_version()}")
    report.line(f"platform: {platform.platform()}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    load_text = f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else ""
    report.line(f"cpus:     {os.cpu_count()}{load_text}")
    report.line(f"cowlab:   {cowlab.__version__} ({Path(cowlab.__file__).parent})")
    try:
        from cowlab._build import describe
    except ImportError:  # a cowlab from before the compiled build
        build = "pure-Python kernel"
    else:
        build = describe()
    report.line(f"build:    {build} (COWLAB_PURE=1 runs the pure build)")
    report.line(
        f"repeats:  {sizes.repeats} per figure (median [min..max]); "
        f"timer time.perf_counter; gc enabled"
    )
    report.line()


def main(argv: Sequence[str] | None = None) -> None:
    """Run every section and print (and optionally save) the report."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    report = Report()
    header(report, sizes, args.quick)
    started = time.perf_counter()
    sections: list[Callable[[], None]] = [
        lambda: section_policies(report, args.policies, sizes),
        lambda: section_scaling(report, sizes),
        lambda: section_memory(report, sizes),
        lambda: section_fork(report, sizes),
    ]
    if args.profile:
        sections.append(lambda: profile_decisions(report, sizes))
    for section in sections:
        section()
        gc.collect()
    report.line(f"total benchmark wall time: {time.perf_counter() - started:.1f} s")
    if args.out is not None:
        report.write(args.out)
        print(f"report written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
