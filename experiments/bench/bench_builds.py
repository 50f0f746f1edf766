"""The figures of issue 15's table for several builds of cowlab, side by side in one run.

Run from the repository root, with cowlab installed (``pip install -e .``)::

    python experiments/bench/bench_builds.py --quick                      # a few minutes
    python experiments/bench/bench_builds.py --baseline d741e66 \\
        --out experiments/bench/results/builds.txt                          # full run

Each figure is measured in a fresh subprocess per build, the builds one after the
other, in ``--rounds`` rounds (3 by default), so that they share the machine's load as
closely as possible (on the shared 2-vCPU machine a whole process can run 30-50%
slower or faster than the next one, so one process per build would decide nothing):

* ``today``: the code of git revision ``--baseline`` (extracted to a temporary
  directory and imported from there), the reference the ratios are taken to;
* ``pure``: this checkout with ``COWLAB_PURE=1`` (the kernel's ``.py`` sources);
* ``compiled``: this checkout as installed (the mypyc-compiled kernel, if it was built;
  the row says which build each subprocess really ran).

Figures (medians of every repeat of every round, min and max in brackets):

1. pure decision loop, ``exclusive`` on v5.19 (bench_kernel.py 1b): decisions/s, and
   separately the time spent inside the policy's ``decide()`` (a plain Python plugin
   in every build), measured in its own run with a timer around each call;
2. forceswap loop, ``exclusive`` on v5.19 (bench_kernel.py 1a): writes/s;
3. memory per mapped and written 4 KiB page (tracemalloc, bench_kernel.py section 3);
4. fork of a populated address space of 10^6 pages (bench_kernel.py section 4);
5. env steps/s on the default training mix (configs/exclusive.yaml's workloads, by
   weight, random masked actions, resets included);
6. the share of ``cowlab train`` learning time spent in the environments (a short PPO
   run of configs/exclusive.yaml, as bench_env.py section 2).

It prints figures, never pass/fail verdicts; it is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: name, label, unit, higher is better, format
FIGURES: list[tuple[str, str, str, bool, str]] = [
    ("decisions", "pure decision loop, exclusive on v5.19 (1b)", "decisions/s", True, ",.0f"),
    ("decide_us", "  of which in the policy's decide() (plugin)", "us/decision", False, ".2f"),
    ("forceswap", "forceswap loop, exclusive on v5.19 (1a)", "writes/s", True, ",.0f"),
    ("memory", "memory per mapped 4 KiB page", "bytes/page", False, ",.0f"),
    ("fork", "fork of populated pages", "s", False, ".3f"),
    ("env", "env steps/s, default training mix", "steps/s", True, ",.0f"),
    ("train", "env share of cowlab train time", "share", False, ".1%"),
]


# ======================================================================================
# workers: one figure, in this process, printed as JSON
# ======================================================================================
def _kernel_bench() -> Any:
    sys.path.insert(0, str(HERE))
    import bench_kernel

    return bench_kernel


def work_decisions(quick: bool) -> dict[str, Any]:
    bk = _kernel_bench()
    pages = decisions = 2_000 if quick else 10_000
    rig = bk.DecisionRig(bk.make_kernel("exclusive", "v5.19"), pages)
    samples = bk.timed_decisions(rig, decisions, 5)
    return {"samples": [decisions / s for s in samples]}


def work_decide_us(quick: bool) -> dict[str, Any]:
    """Time inside decide() per decision: a perf_counter pair around each call."""
    bk = _kernel_bench()
    pages = decisions = 2_000 if quick else 10_000
    rig = bk.DecisionRig(bk.make_kernel("exclusive", "v5.19"), pages)
    kernel = rig.kernel
    decide = kernel._decide
    spent = [0.0]
    clock = time.perf_counter

    def timed_decide(view: Any) -> Any:
        t0 = clock()
        try:
            return decide(view)
        finally:
            spent[0] += clock() - t0

    kernel._decide = timed_decide
    samples = []
    for _ in range(5):
        spent[0] = 0.0
        before = bk.decisions_taken(kernel)
        rig.timed(decisions)
        taken = bk.decisions_taken(kernel) - before
        samples.append(spent[0] / taken * 1e6)
    return {"samples": samples}


def work_forceswap(quick: bool) -> dict[str, Any]:
    bk = _kernel_bench()
    pages = 64
    iterations = 20 if quick else 100
    kernel = bk.make_kernel("exclusive", "v5.19")
    mm = bk.populate(kernel, "forceswap", pages)
    kernel.read(mm, 0, 1)
    tally: dict[str, int] = {}
    bk.forceswap_iteration(kernel, mm, pages, tally)
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(iterations):
            bk.forceswap_iteration(kernel, mm, pages, tally)
        samples.append(iterations * pages / (time.perf_counter() - t0))
    return {"samples": samples, "outcomes": tally}


def work_memory(quick: bool) -> dict[str, Any]:
    import gc
    import tracemalloc

    bk = _kernel_bench()
    pages = 10_000 if quick else 100_000
    kernel = bk.make_kernel("exclusive", "v5.19")
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    mm = bk.populate(kernel, "memory", pages)
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(mm.pt) == pages
    return {"samples": [(current - base) / pages], "pages": pages}


def work_fork(quick: bool) -> dict[str, Any]:
    import gc

    bk = _kernel_bench()
    pages = 100_000 if quick else 1_000_000
    kernel = bk.make_kernel("exclusive", "v5.19")
    t0 = time.perf_counter()
    mm = bk.populate(kernel, "parent", pages)
    populate_s = time.perf_counter() - t0
    samples = []
    for i in range(3):
        gc.collect()
        t0 = time.perf_counter()
        child = kernel.fork(mm, f"child{i}", 0)
        samples.append(time.perf_counter() - t0)
        kernel.exit_mm(child)
        del child
    return {"samples": samples, "pages": pages, "populate_s": populate_s}


def _training_mix() -> list[tuple[dict[str, Any], int]]:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "exclusive.yaml").read_text(encoding="utf-8"))
    return [({"name": w["name"], "params": w.get("params", {})}, int(w.get("weight", 1)))
            for w in cfg["workload"]["mix"]]


def work_env(quick: bool) -> dict[str, Any]:
    """Steps per second over the training mix: each workload runs ``weight`` x N steps;
    the rate is all steps over all the time (what a training run's mix costs)."""
    import random

    from cowlab.env import CowFaultEnv

    sys.path.insert(0, str(HERE))
    from bench_env import step_randomly

    per_weight = 500 if quick else 3_000
    samples = []
    for _ in range(3):
        steps = 0
        elapsed = 0.0
        for workload, weight in _training_mix():
            env = CowFaultEnv(kernel="v5.19", workload=workload, action_mode="decision",
                              max_decisions=256)
            rng = random.Random(0)
            env.reset(seed=0)
            want = weight * per_weight
            t0 = time.perf_counter()
            step_randomly(env, rng, want)
            elapsed += time.perf_counter() - t0
            steps += want
        samples.append(steps / elapsed)
    return {"samples": samples}


def work_train(quick: bool) -> dict[str, Any]:
    from cowlab.train import train

    sys.path.insert(0, str(HERE))
    from bench_env import short_training

    steps = 4_096 if quick else 20_480
    with tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as null:
        r = train(short_training(out, steps), stdout=null)
    return {"samples": [r.env_share], "steps_per_s": r.steps_per_s}


WORKERS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "decisions": work_decisions,
    "decide_us": work_decide_us,
    "forceswap": work_forceswap,
    "memory": work_memory,
    "fork": work_fork,
    "env": work_env,
    "train": work_train,
}


def worker(figure: str, quick: bool) -> None:
    """Measure one figure and print it (with the build that ran) as one JSON line."""
    import cowlab
    import cowlab.kernel.kernel as kmod

    result = WORKERS[figure](quick)
    try:
        from cowlab._build import describe
    except ImportError:  # a revision from before the compiled build existed
        result["describe"] = "pure-Python kernel (no compiled build in this revision)"
    else:
        result["describe"] = describe()
    result["build"] = "pure" if str(kmod.__file__).endswith(".py") else "compiled"
    result["where"] = str(Path(cowlab.__file__).parent)
    print("RESULT " + json.dumps(result), flush=True)


# ======================================================================================
# the driver
# ======================================================================================
#: Environment variable naming the source tree a worker imports cowlab from.
SOURCE_TREE = "COWLAB_BENCH_SOURCE_TREE"


def use_source_tree(tree: Path) -> None:
    """Import cowlab and its shipped plugins from ``tree`` rather than from the
    installed (editable) checkout, whose import finder would otherwise win."""
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    sys.path[:0] = [str(tree), str(tree / "plugins")]


def extract(revision: str, into: Path) -> Path:
    """``git archive`` of ``revision`` into ``into`` (the ``today`` build's sources)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_worker(figure: str, quick: bool, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", figure]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            data: dict[str, Any] = json.loads(line[len("RESULT "):])
            return data
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def merge(row: dict[str, dict[str, Any]], build: str, data: dict[str, Any]) -> None:
    """Add one worker's result to the build's: samples pooled, an error kept."""
    have = row.get(build)
    if "steps_per_s" in data:
        data["steps_per_s"] = [data["steps_per_s"]]
    if have is None or "error" in data:
        if have is None or "error" not in have:
            row[build] = data
        return
    if "error" in have:
        return
    have["samples"] += data["samples"]
    if "steps_per_s" in data:
        have["steps_per_s"] += data["steps_per_s"]


def cell(data: dict[str, Any], spec: str) -> str:
    if "error" in data:
        return "ERROR"
    samples = data["samples"]
    med = statistics.median(samples)
    if len(samples) == 1:
        return f"{med:{spec}}"
    return f"{med:{spec}} [{min(samples):{spec}}..{max(samples):{spec}}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--baseline", help="git revision measured as 'today' (ratios to it)")
    parser.add_argument("--figures", help="comma-separated subset of: " + ",".join(WORKERS))
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--rounds", type=int, default=3,
                        help="worker processes per build and figure, the builds taking "
                             "turns (default 3)")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        tree = os.environ.get(SOURCE_TREE)
        if tree:
            use_source_tree(Path(tree))
        worker(args.worker, args.quick)
        return
    wanted = args.figures.split(",") if args.figures else list(WORKERS)
    unknown = [f for f in wanted if f not in WORKERS]
    if unknown:
        parser.error(f"unknown figures {unknown}; known: {', '.join(WORKERS)}")
    lines: list[str] = []

    def say(text: str = "") -> None:
        lines.append(text)
        print(text, flush=True)

    base_env = {k: v for k, v in os.environ.items() if k not in ("COWLAB_PURE", SOURCE_TREE)}
    builds: list[tuple[str, dict[str, str]]] = []
    tmp = tempfile.TemporaryDirectory()
    if args.baseline:
        src = extract(args.baseline, Path(tmp.name))
        builds.append((f"today ({args.baseline})", {**base_env, SOURCE_TREE: str(src)}))
    builds.append(("pure", {**base_env, "COWLAB_PURE": "1"}))
    builds.append(("compiled", dict(base_env)))

    load = os.getloadavg()
    say("cowlab builds benchmark (issue 15's table)" + (" (--quick)" if args.quick else ""))
    say(f"date:     {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    say(f"python:   {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.platform()}")
    say(f"cpus:     {os.cpu_count()}; load average at start {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (other jobs share the machine: compare builds within this run)")
    say("command:  python experiments/bench/bench_builds.py "
        + " ".join(a for a in (argv if argv is not None else sys.argv[1:])))
    say(f"figures:  median [min..max] of every repeat of {args.rounds} rounds; in a round each")
    say("          build runs in its own subprocess, the builds one after the other, so a")
    say("          slow spell of the shared machine falls on every build alike")
    say()
    started = time.perf_counter()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for figure in wanted:
        results[figure] = {}
        for _ in range(max(1, args.rounds)):
            for name, env in builds:
                merge(results[figure], name, run_worker(figure, args.quick, env))
    width = 34
    head = f"{'figure':<48} {'unit':<12}" + "".join(f" {n:<{width}}" for n, _ in builds)
    if args.baseline:
        head += "  compiled vs today"
    say(head)
    say("-" * len(head))
    for name, label, unit, higher, spec in FIGURES:
        if name not in results:
            continue
        row = results[name]
        text = f"{label:<48} {unit:<12}"
        text += "".join(f" {cell(row[b], spec):<{width}}" for b, _ in builds)
        first, last = builds[0][0], builds[-1][0]
        if args.baseline and "error" not in row[first] and "error" not in row[last]:
            a = statistics.median(row[first]["samples"])
            b = statistics.median(row[last]["samples"])
            ratio = (b / a if higher else a / b) if a and b else float("nan")
            text += f"  {ratio:.2f}x {'faster' if unit not in ('bytes/page', 'share') else 'less'}"
        say(text)
    say()
    for figure, row in results.items():
        for name, data in row.items():
            if "error" in data:
                say(f"{figure} / {name}: {data['error']}")
    fork_row = results.get("fork", {})
    any_fork = next((d for d in fork_row.values() if "pages" in d), None)
    if any_fork:
        say(f"fork: {any_fork['pages']:,} populated pages, 3 repeats per worker process")
    mem = next((d for d in results.get("memory", {}).values() if "pages" in d), None)
    if mem:
        say(f"memory: tracemalloc over mmap + write of {mem['pages']:,} pages")
    for name, _ in builds:
        ran = {d.get("describe") for r in results.values() for d in [r[name]] if "describe" in d}
        say(f"build '{name}' ran: {'; '.join(sorted(x for x in ran if x))}")
    train_row = results.get("train", {})
    for name, data in train_row.items():
        if "steps_per_s" in data:
            say(f"train '{name}': {statistics.median(data['steps_per_s']):,.0f} steps/s "
                f"(median of {len(data['steps_per_s'])} runs)")
    say(f"total wall time: {time.perf_counter() - started:.0f} s")
    tmp.cleanup()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        part = args.out.with_suffix(args.out.suffix + ".tmp")
        part.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(part, args.out)


if __name__ == "__main__":
    main()
