"""Benchmark: fork and write of a 1 GiB region backed by PMD THP, by 64 KiB mTHP and by
base pages (issue: large folios). Prints wall time and traced memory; not a test.

    python experiments/bench/bench_thp.py [--quick] [--out FILE]

Each case maps the region, writes every page (populating it), forks, then writes one
page per folio in the parent (each a COW fault: a PMD split + 4 KiB copy for THP, a
4 KiB copy for mTHP and base pages), and exits the child. Times are the median of the
repeats; memory is the peak tracemalloc saw in one more run (traced separately because
tracing slows allocation down many times over).
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from cowlab.kernel import Kernel, Machine, get_preset
from cowlab.plugins import get_registry

GIB_PAGES = 1 << 18  # 1 GiB in 4 KiB pages


def run_case(thp: str, pages: int, preset: str) -> dict[str, float]:
    """One full case; returns its phase timings (s) and peak traced memory (bytes)."""
    policy = get_registry().make_policy(get_preset(preset).default_policy)
    k = Kernel(get_preset(preset), policy, machine=Machine(cpus=2), keep_records=False)
    mm = k.create_mm("app")
    k.mmap(mm, 0, pages, thp=thp)
    step = {"none": 1, "pmd": 512}.get(thp, 1 << int(thp.rsplit("-", 1)[-1]) if "-" in thp else 1)
    out: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        t = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t

    timed("populate", lambda: [k.write(mm, p) for p in range(pages)])
    child_box: list[object] = []
    timed("fork", lambda: child_box.append(k.fork(mm, "child")))
    timed("cow", lambda: [k.write(mm, p) for p in range(0, pages, step)])
    timed("exit", lambda: k.exit_mm(child_box[0]))  # type: ignore[arg-type]
    out["frames"] = len(k.frames)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 64 MiB region, 1 repeat")
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--preset", default="v6.9")
    args = parser.parse_args()
    pages = GIB_PAGES // 16 if args.quick else GIB_PAGES
    repeats = 1 if args.quick else 3
    lines = [
        "cowlab large-folio benchmark",
        f"python {platform.python_version()} on {platform.platform()}; preset {args.preset}",
        f"region: {pages * 4 // 1024} MiB ({pages} pages); median of {repeats} repeat(s)",
        "",
        f"{'backing':<10} {'populate s':>11} {'fork s':>8} {'cow s':>8} {'exit s':>8} "
        f"{'peak MiB':>9} {'frames':>8}",
    ]
    for thp in ("none", "mthp-4", "pmd"):
        results = []
        for _ in range(repeats):
            gc.collect()
            results.append(run_case(thp, pages, args.preset))
        # Memory in a separate run: tracemalloc slows every allocation down a lot.
        gc.collect()
        tracemalloc.start()
        run_case(thp, pages, args.preset)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        for res in results:
            res["peak"] = peak

        def med(key: str, rs: list[dict[str, float]] = results) -> float:
            return statistics.median(r[key] for r in rs)

        label = {"none": "base 4K", "mthp-4": "mTHP 64K", "pmd": "THP 2M"}[thp]
        lines.append(
            f"{label:<10} {med('populate'):>11.2f} {med('fork'):>8.2f} {med('cow'):>8.2f} "
            f"{med('exit'):>8.2f} {med('peak') / 2**20:>9.1f} {int(med('frames')):>8}"
        )
    report = "\n".join(lines)
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(report + "\n")


if __name__ == "__main__":
    sys.exit(main())
