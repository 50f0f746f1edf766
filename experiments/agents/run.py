"""Train the learned agents of docs/results.md and tabulate them against the kernel's rules.

For each training config and each training seed this runs ``cowlab train CONFIG
seed=S`` in its own process (a fresh interpreter: nothing carries over between runs)
into ``--runs/<config>-seed<S>/``, then reads the run's ``eval.json`` (the agent and
the config's baselines on the evaluation seeds, disjoint from training and validation)
and writes ``results.md`` and ``results.json`` beside this script, atomically.

Run from the repository root::

    python experiments/agents/run.py                       # 2 configs x 3 seeds
    python experiments/agents/run.py --configs configs/exclusive.yaml --seeds 0
    python experiments/agents/run.py --publish             # also copy exclusive seed 0
                                                           # to experiments/leaderboard/agent

A run that fails, or whose agent was not safe on validation (the trainer then keeps
its last model and says so), is reported as such in the table, never dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cowlab.atomicio import write_text_atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIGS = ("configs/exclusive.yaml", "configs/baseline.yaml")
#: Files of a run directory that make up a published agent (experiments/leaderboard/agent).
AGENT_FILES = ("model.zip", "model.zip.json", "best.zip", "best.zip.json", "config.yaml",
               "eval.json", "eval.txt", "log.jsonl", "versions.json")


def train_one(config: str, seed: int, runs: Path) -> dict[str, Any]:
    """Train one agent in a subprocess; return its eval.json with the run's outcome."""
    name = Path(config).stem
    out = runs / f"{name}-seed{seed}"
    try:  # relative to the repository root, so run files name no machine's paths
        shown = out.resolve().relative_to(ROOT)
    except ValueError:
        shown = out.resolve()
    cmd = [sys.executable, "-m", "cowlab.cli", "train", config, f"seed={seed}",
           f"output.dir={shown}", "output.progress=false", "output.tensorboard=false",
           "--overwrite"]
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        print(f"  FAILED (exit {proc.returncode}): {' / '.join(tail)}", flush=True)
        return {"config": config, "seed": seed, "run_dir": str(shown), "failed": True,
                "exit": proc.returncode, "error": "\n".join(tail), "wall_s": wall}
    data = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    data.update(config=config, seed=seed, run_dir=str(shown), failed=False,
                command_wall_s=wall)
    print(f"  done in {wall:.0f} s: {data['selected']}", flush=True)
    data["verify"] = verify_agent(f"{shown}/model.zip", kernel_of(data))
    return data


def kernel_of(data: dict[str, Any]) -> str:
    """The preset the run trained and evaluated on."""
    return str(data["evaluations"][0]["runs"][0]["kernel"])


def verify_agent(model: str, kernel: str) -> dict[str, Any]:
    """``cowlab verify`` of the agent at the default bound, every op family but FOLL_GET
    (the bound under which the kernel's own v5.19+ rule is safe: docs/verify.md)."""
    from cowlab.verify import Bounds, verify
    from cowlab.verify.universe import DEFAULT_OPS

    ops = tuple(op for op in DEFAULT_OPS if op != "gup-get")
    t0 = time.perf_counter()
    r = verify(f"sb3:{model}", kernel, Bounds(ops=ops))
    out: dict[str, Any] = {"status": r.status, "depth": r.bounds.depth,
                           "depth_completed": r.depth_completed, "explored": r.explored,
                           "ops": "all but gup-get", "seconds": round(time.perf_counter() - t0, 1)}
    if r.counterexample is not None:
        out["steps"] = r.counterexample
        out["violation"] = (r.violation or {}).get("violation")
    print(f"  verify on {kernel}: {r.status}"
          + (f", {len(r.counterexample)} steps" if r.counterexample is not None else ""),
          flush=True)
    return out


def _verdict(v: dict[str, Any]) -> str:
    if v["status"] == "safe":
        return f"safe to depth {v['depth']}"
    if v["status"] == "counterexample":
        steps = "; ".join(
            f"{s['op']}({', '.join(f'{k}={x}' for k, x in s.items() if k != 'op')})"
            for s in v["steps"])
        return f"{v['violation']} in {len(v['steps'])} steps: {steps}"
    return v["status"]


def _row(policy: str, m: dict[str, Any]) -> str:
    rate = m["reuse_rate"]
    v = m["violations"]
    return (f"| {policy} | {'-' if rate is None else f'{rate:.4f}'} | {v.get('leak', 0)} | "
            f"{v.get('pin_incoherent', 0)} | {m['unnecessary_copies']} | "
            f"{m['mean_latency_ns'] / 1000:.3f} | {m['extra_pages']} |")


def render(results: list[dict[str, Any]], command: str) -> str:
    """results.md: per config, one agent row per seed, then the baselines (seed 0's run)."""
    lines = [
        "# Learned agents against the kernel's rules",
        "",
        f"Made by `{command}` on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()} ({time.strftime('%Y-%m-%d')}). Reuse rate is "
        "over truly reusable faults (oracle 1, always-copy 0), on the evaluation seeds "
        "(disjoint from training and validation); violations are counted, never "
        "traded against reuse.",
        "",
    ]
    for config in dict.fromkeys(r["config"] for r in results):
        runs = [r for r in results if r["config"] == config]
        lines += [f"## `{config}`", ""]
        ok = [r for r in runs if not r["failed"]]
        if ok:
            r0 = ok[0]
            kernel = r0["evaluations"][0]["runs"][0]["kernel"]
            workloads = ", ".join(w["name"] for w in r0["eval_workloads"])
            lines += [f"Kernel {kernel}; workloads {workloads}; {len(r0['eval_seeds'])} "
                      "evaluation seeds per workload.", ""]
        lines += [
            "| policy | reuse rate | leak | pin_incoherent | unnecessary copies "
            "| mean latency (us) | extra pages |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in runs:
            if r["failed"]:
                lines.append(f"| agent, seed {r['seed']} | FAILED (exit {r['exit']}) "
                             "| | | | | |")
                continue
            agent = r["evaluations"][0]
            lines.append(_row(f"**agent, seed {r['seed']}**", agent["metrics"]))
        if ok:
            for ev in ok[0]["evaluations"][1:]:
                lines.append(_row(ev["policy"], ev["metrics"]))
        lines += ["", "| seed | model kept | steps | learning (s) | steps/s | env share "
                  "| violations while training | wall (s) |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for r in ok:
            lines.append(
                f"| {r['seed']} | {r['selected']} | {r['num_timesteps']} | "
                f"{r['train_s_total']:.1f} | {r['steps_per_s']:.0f} | "
                f"{r['env_share']:.0%} | {r['training_violations']} | "
                f"{r['command_wall_s']:.0f} |"
            )
        lines += ["", "`cowlab verify` of each agent on its kernel at the default bound (depth 4, "
                  "2 mms, 1 page, 2 CPUs), every op family but `gup-get` (the bound under "
                  "which the v5.19+ kernel rule is safe; docs/verify.md):", ""]
        for r in ok:
            lines.append(f"- seed {r['seed']}: {_verdict(r['verify'])}")
        lines.append("")
    return "\n".join(lines)


def publish(result: dict[str, Any], dest: Path) -> None:
    """Copy a run's agent files to ``dest`` (the leaderboard's agent directory)."""
    src = ROOT / result["run_dir"]
    tmp = Path(tempfile.mkdtemp(prefix=".agent.", dir=dest.parent))
    for name in AGENT_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, tmp / name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    print(f"published {src} -> {dest}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "agents",
                    help="where the run directories go (default runs/agents)")
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--publish", action="store_true",
                    help="copy the first config's first seed to experiments/leaderboard/agent")
    args = ap.parse_args(argv)
    command = "python experiments/agents/run.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    results = [train_one(c, s, args.runs) for c in args.configs for s in args.seeds]
    write_text_atomic(args.out / "results.md", render(results, command))
    slim = [{k: v for k, v in r.items() if k != "evaluations"}
            | {"metrics": {e["policy"]: e["metrics"] for e in r.get("evaluations", [])}}
            for r in results]
    write_text_atomic(args.out / "results.json", json.dumps(slim, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out / 'results.md'}")
    if args.publish:
        first = results[0]
        if first["failed"]:
            print("not published: that run failed", file=sys.stderr)
            return 1
        publish(first, ROOT / "experiments" / "leaderboard" / "agent")
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
