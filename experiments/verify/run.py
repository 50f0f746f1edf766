"""Regenerate experiments/verify/results.md and results.json (one command).

    PYTHONPATH=.:plugins python experiments/verify/run.py [--jobs 2] [--scale-budget 60]

1. Every shipped policy x every kernel preset at the default bound of ``cowlab
   verify``: the result (safe to depth N, or the length of the shortest counterexample
   and its scenario file under counterexamples/), states explored, distinct states,
   unavoidable violations seen, time.
2. Scaling: the oracle on v5.19 with a wall-clock budget per universe size: states/s
   and the depth completed within the budget (10 minutes is what the issue asks; the
   default budget is shorter and the table says which was used).
3. Copy versus replay: the cost of ``copy.deepcopy`` of a state against replaying its
   steps from a fresh kernel, by depth (why the search replays).

Policies that need parameters to exist (``sb3`` needs a model file) are listed as
skipped. Every file is written atomically.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from cowlab.atomicio import write_text_atomic

HERE = Path(__file__).resolve().parent


def shipped_policies() -> tuple[list[str], dict[str, str]]:
    """Registered policy names that build without parameters, and the skipped ones."""
    from cowlab.plugins import PluginError, get_registry

    reg = get_registry()
    ok, skipped = [], {}
    for name in reg.names("policy"):
        try:
            reg.make_policy(name)
        except PluginError as exc:
            skipped[name] = str(exc).splitlines()[0]
            continue
        ok.append(name)
    return ok, skipped


#: The two op sets of the table: every family (the default), and every family but
#: R/O and R/W FOLL_GET, whose known limitation (GUP-triggered unsharing covers FOLL_PIN
#: only, c89357e27f20) otherwise gives every rule the same short counterexample.
OPSETS = ("all", "no-foll-get")


def cell(policy: str, preset: str, opset: str = "all") -> dict[str, Any]:
    """One policy x preset at the default bound over one op set."""
    from cowlab.verify import Bounds, to_scenario, verify
    from cowlab.verify.command import (
        DEFAULT_CPUS,
        DEFAULT_DEPTH,
        DEFAULT_MMS,
        DEFAULT_PAGES,
    )
    from cowlab.verify.universe import DEFAULT_OPS

    ops = DEFAULT_OPS if opset == "all" else tuple(o for o in DEFAULT_OPS if o != "gup-get")
    bounds = Bounds(depth=DEFAULT_DEPTH, mms=DEFAULT_MMS, pages=DEFAULT_PAGES,
                    cpus=DEFAULT_CPUS, ops=ops)
    r = verify(policy, preset, bounds)
    row: dict[str, Any] = {
        "policy": policy, "kernel": preset, "ops": opset, "status": r.status,
        "depth": bounds.depth, "depth_completed": r.depth_completed,
        "explored": r.explored, "distinct": r.distinct, "seconds": round(r.seconds, 2),
        "unavoidable": r.unavoidable, "counterexample_length": None, "file": None,
        "violation": None, "steps": None,
    }
    if r.counterexample is not None and r.status == "counterexample":
        sub = "" if opset == "all" else f"{opset}/"
        rel = f"counterexamples/{sub}{policy}-{preset}.yaml"
        write_text_atomic(HERE / rel, to_scenario(r))
        row.update(counterexample_length=len(r.counterexample), file=rel,
                   violation=r.violation["violation"] if r.violation else None,
                   steps=r.counterexample)
    return row


def scale(mms: int, pages: int, cpus: int, budget: float) -> dict[str, Any]:
    """The oracle on v5.19 in one universe, for ``budget`` seconds of wall time."""
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import get_registry
    from cowlab.verify import Bounds
    from cowlab.verify.search import make_setup, search

    b = Bounds(depth=64, mms=mms, pages=pages, cpus=cpus)
    setup = make_setup(get_registry().make_policy("oracle"), "oracle",
                       resolve_kernel("v5.19"), b)
    r = search(setup, policy_label="oracle", time_budget_s=budget)
    return {"mms": mms, "pages": pages, "cpus": cpus, "budget_s": budget,
            "status": r.status, "depth_completed": r.depth_completed,
            "explored": r.explored, "distinct": r.distinct,
            "seconds": round(r.seconds, 1), "states_per_s": round(r.states_per_s),
            "per_depth": r.per_depth}


def copy_vs_replay() -> list[dict[str, Any]]:
    """Microseconds per deep copy and per replay of the same state, by depth."""
    from cowlab.geometry import DEFAULT_GEOMETRY
    from cowlab.kernel.kernel import Machine
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import get_registry
    from cowlab.verify.sim import Problem, deep_copy, freeze, replay
    from cowlab.verify.universe import Bounds, initial_steps

    problem = Problem(resolve_kernel("v5.19"), Machine(cpus=2), DEFAULT_GEOMETRY,
                      get_registry().make_policy("exclusive"),
                      tuple(freeze(s) for s in initial_steps(Bounds(pages=2), 0)))
    steps: list[dict[str, Any]] = [
        {"op": "fork", "mm": "m0", "child": "m1"},
        {"op": "write", "mm": "m1", "page": 0, "cpu": 1},
        {"op": "gup", "mm": "m0", "page": 1, "kind": "pin", "write": False,
         "longterm": False, "name": "g1"},
        {"op": "madvise", "mm": "m0", "page": 0, "advice": "pageout"},
        {"op": "read", "mm": "m0", "page": 0, "cpu": 0},
        {"op": "write", "mm": "m0", "page": 1, "cpu": 0},
        {"op": "lru_drain", "cpu": 1},
        {"op": "write", "mm": "m1", "page": 1, "cpu": 0},
    ]
    rows = []
    for d in range(len(steps) + 1):
        n = 200
        t = time.perf_counter()
        for _ in range(n):
            sim = replay(problem, steps[:d])
        tr = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n):
            deep_copy(sim)
        tc = (time.perf_counter() - t) / n
        rows.append({"depth": d, "replay_us": round(tr * 1e6), "deepcopy_us": round(tc * 1e6)})
    return rows


def _md(data: dict[str, Any]) -> str:
    from cowlab.verify.universe import FAMILIES

    b = data["bound"]
    out = [
        "# cowlab verify: every shipped policy x every preset",
        "",
        f"Made by `{data['command']}` on {data['machine']} ({data['date']}).",
        "",
        f"Default bound: depth {b['depth']}, {b['mms']} mms, {b['pages']} page, "
        f"{b['cpus']} CPUs, swap zram, op families: {', '.join(FAMILIES)} "
        "(thp only where the preset has mTHP and the mapping can hold one; with 1 page "
        "it cannot). A cell is either `safe to N` (every sequence of N steps explored, "
        "no avoidable violation) or the length of the shortest counterexample and its "
        "scenario file. *unavoid.* counts transitions whose violation no decision could "
        "have avoided (both answers violate: the state itself is broken); they are "
        "reported, not counterexamples (`--strict` makes them so).",
        "",
    ]
    for opset, title in (("all", "every op family"),
                         ("no-foll-get", "every op family but gup-get (no FOLL_GET)")):
        out += _table(data, [r for r in data["cells"] if r["ops"] == opset], title)
    if data["skipped"]:
        out += ["", "Skipped (need parameters): " + "; ".join(
            f"`{k}` ({v})" for k, v in data["skipped"].items())]
    jobs = data.get("scale_jobs", 2)
    load = data.get("scale_load")
    out += ["", "## Scaling (oracle on v5.19, every op family)", "",
            f"Made by `{data.get('scale_command', data['command'])}` "
            f"({data.get('scale_date', data['date'])}). Each universe ran for a wall-clock "
            f"budget of {data['scale_budget_s']:.0f} s on one core ("
            + ("one universe" if jobs == 1 else f"{jobs} universes") + " at a "
            "time; the search is single-threaded per worker, and with the process executor "
            "two workers do about twice the states/s on two free cores)"
            + (f"; load average {load:.2f} while it ran (other work shared the machine)"
               if load is not None else "")
            + (f"; {data['scale_build']} kernel" if data.get("scale_build") else "")
            + ". `depth completed` is the deepest level every sequence of which was "
            "explored within the budget.", "",
            "| mms | pages | cpus | states/s | depth completed | explored | distinct | "
            "per-depth new states |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in data["scaling"]:
        news = ", ".join(str(d["new"]) for d in s["per_depth"])
        out.append(f"| {s['mms']} | {s['pages']} | {s['cpus']} | {s['states_per_s']} | "
                   f"{s['depth_completed']} | {s['explored']} | {s['distinct']} | {news} |")
    out += ["", "## Copy versus replay", "",
            "Microseconds to get an independent copy of a state (v5.19, 2 pages) by "
            "`copy.deepcopy` and by replaying its steps from a fresh kernel. The search "
            "replays (faster at the depths the default bounds reach, and a step list is "
            "all a worker process needs).", "",
            "| depth | replay (us) | deepcopy (us) |", "|---:|---:|---:|"]
    for r in data["copy_vs_replay"]:
        out.append(f"| {r['depth']} | {r['replay_us']} | {r['deepcopy_us']} |")
    return "\n".join(out) + "\n"


def _table(data: dict[str, Any], cells: list[dict[str, Any]], title: str) -> list[str]:
    from cowlab.kernel.presets import PRESETS

    order = list(PRESETS)
    b = data["bound"]
    out = ["", f"## Ops: {title}", "",
           "| policy | kernel | result | violation | states explored | distinct | unavoid. | "
           "time (s) | file |",
           "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in cells:
        if r["status"] == "safe":
            res = f"safe to {r['depth']}"
        elif r["status"] == "counterexample":
            res = f"{r['counterexample_length']} steps"
        else:
            res = r["status"]
        out.append(f"| {r['policy']} | {r['kernel']} | {res} | {r['violation'] or '-'} | "
                   f"{r['explored']} | {r['distinct']} | {r['unavoidable']} | "
                   f"{r['seconds']} | {r['file'] or '-'} |")
    out += ["", f"Headline ({title}):", ""]
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for r in cells:
        by_policy.setdefault(r["policy"], []).append(r)
    for pol, rows in by_policy.items():
        safe = [r["kernel"] for r in rows if r["status"] == "safe"]
        bad = [r for r in rows if r["status"] == "counterexample"]
        text = f"- `{pol}`: safe to depth {b['depth']} on {', '.join(safe) or 'no preset'}"
        if bad:
            best = min(bad, key=lambda r: (r["counterexample_length"],
                                           order.index(r["kernel"])
                                           if r["kernel"] in order else 99))
            steps = "; ".join(_brief(s) for s in best["steps"])
            text += (f"; unsafe on {', '.join(r['kernel'] for r in bad)}, shortest "
                     f"counterexample {best['counterexample_length']} steps (first on "
                     f"{best['kernel']}, {best['violation']}): {steps}")
        out.append(text)
    return out


def _brief(step: dict[str, Any]) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in step.items() if k != "op")
    return f"{step['op']}({rest})"


#: The universes (mms, pages, cpus) of the scaling table.
UNIVERSES = ((2, 1, 1), (2, 1, 2), (2, 2, 2), (3, 1, 2))


def kernel_build() -> str:
    """Which build of the simulated kernel this process runs: compiled or pure Python."""
    import cowlab.kernel.kernel as k

    return "pure Python" if str(k.__file__).endswith(".py") else "compiled"


def only_scaling(budget: float, jobs: int) -> int:
    """Rerun the scaling table alone (e.g. with the 10-minute budget) into the results."""
    data = json.loads((HERE / "results.json").read_text(encoding="utf-8"))
    load0 = os.getloadavg()[0]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futs = [pool.submit(scale, m, p, c, budget) for m, p, c in UNIVERSES]
        data["scaling"] = [f.result() for f in futs]
    data.update(scale_budget_s=budget, scale_jobs=jobs, scale_build=kernel_build(),
                scale_load=round(max(load0, os.getloadavg()[0]), 2),
                scale_command="python experiments/verify/run.py --only-scaling "
                f"--scale-budget {budget:g} --jobs {jobs}",
                scale_date=time.strftime("%Y-%m-%d", time.gmtime()))
    write_text_atomic(HERE / "results.json", json.dumps(data, indent=2) + "\n")
    write_text_atomic(HERE / "results.md", _md(data))
    print(f"wrote the scaling table of {HERE / 'results.md'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run everything and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--scale-budget", type=float, default=60.0,
                    help="seconds per universe in the scaling table (default 60)")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--only-scaling", action="store_true",
                    help="rerun only the scaling table, keeping the committed cells")
    args = ap.parse_args(argv)
    if args.only_scaling:
        return only_scaling(args.scale_budget, args.jobs)
    from cowlab.kernel.presets import PRESETS
    from cowlab.verify.command import DEFAULT_CPUS, DEFAULT_DEPTH, DEFAULT_MMS, DEFAULT_PAGES

    policies, skipped = shipped_policies()
    pairs = [(p, k, o) for o in OPSETS for p in policies for k in PRESETS]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futs = {pool.submit(cell, p, k, o): (p, k, o) for p, k, o in pairs}
        cells = {}
        for fut in cf.as_completed(futs):
            cells[futs[fut]] = row = fut.result()
            print(f"{row['ops']:<12} {row['policy']:<15} {row['kernel']:<6} {row['status']:<15} "
                  f"{row['counterexample_length'] or '':>3} {row['explored']:>7} "
                  f"{row['seconds']:>7.1f}s", file=sys.stderr, flush=True)
        scaling = []
        if not args.skip_scaling:
            sfuts = [pool.submit(scale, m, p, c, args.scale_budget) for m, p, c in UNIVERSES]
            scaling = [f.result() for f in sfuts]
    data = {
        "command": "python experiments/verify/run.py"
        + (f" --jobs {args.jobs}" if args.jobs != 2 else "")
        + (f" --scale-budget {args.scale_budget:g}" if args.scale_budget != 60 else ""),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "bound": {"depth": DEFAULT_DEPTH, "mms": DEFAULT_MMS, "pages": DEFAULT_PAGES,
                  "cpus": DEFAULT_CPUS, "ops": "all"},
        "cells": [cells[pk] for pk in pairs],
        "skipped": skipped,
        "scale_budget_s": args.scale_budget,
        "scale_jobs": args.jobs,
        "scale_load": os.getloadavg()[0],
        "scaling": scaling,
        "copy_vs_replay": copy_vs_replay(),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    write_text_atomic(HERE / "results.json", json.dumps(data, indent=2) + "\n")
    write_text_atomic(HERE / "results.md", _md(data))
    print(f"wrote {HERE / 'results.md'} in {data['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
