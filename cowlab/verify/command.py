"""The ``cowlab verify`` verb: argument parsing, progress, summary, exit status.

``cowlab/cli.py`` registers the verb with :func:`add_parser` and calls :func:`run`;
bad input raises :class:`VerifyUsageError`, which the CLI prints as one line with exit
status 2. Exit 1: a counterexample; 0: the bound was exhausted without one (or the
random budget ran out without one).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, TextIO

from cowlab.verify.universe import DEFAULT_OPS, FAMILIES, Bounds, UniverseError

#: The default bound: one default run (a safe policy, every op family, 2 mms, 1 page,
#: 2 CPUs) explores ~20 000 states in well under a minute on one core; depth 5 takes
#: ~7 minutes on two (experiments/verify/results.md).
DEFAULT_DEPTH = 4
DEFAULT_MMS = 2
DEFAULT_PAGES = 1
DEFAULT_CPUS = 2


class VerifyUsageError(Exception):
    """Bad input to ``cowlab verify``: one line, exit status 2."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               handler: object) -> argparse.ArgumentParser:
    """Add the ``verify`` verb to the ``cowlab`` parser."""
    p = sub.add_parser(
        "verify",
        help="prove a policy safe up to a bound, or find a shortest breaking scenario",
        description=(
            "Explore every sequence of scenario ops up to --depth over a small universe "
            "(--mms processes created by fork, --pages pages, --cpus CPUs, the op families "
            "of --ops), breadth-first over canonical kernel states, checking the ground "
            "truth at every write. Exit 1 with a shortest counterexample (shrunk, written "
            "as a scenario with --out), 0 when the bound is exhausted: safe up to that "
            "depth over that universe, which is not a proof of safety beyond it."
        ),
    )
    p.add_argument("--policy", default=None, metavar="SPEC",
                   help="reuse policy: NAME or NAME:KEY=VALUE,... (docs/policy-api.md; "
                   "default: the preset's own rule)")
    p.add_argument("--kernel", default="v5.19", metavar="PRESET",
                   help="kernel preset (default v5.19)")
    p.add_argument("--depth", type=int, default=DEFAULT_DEPTH,
                   help=f"steps after the initial state (default {DEFAULT_DEPTH})")
    p.add_argument("--mms", type=int, default=DEFAULT_MMS,
                   help=f"processes, the initial one included (default {DEFAULT_MMS})")
    p.add_argument("--pages", type=int, default=DEFAULT_PAGES,
                   help=f"pages of the initial mapping (default {DEFAULT_PAGES})")
    p.add_argument("--cpus", type=int, default=DEFAULT_CPUS,
                   help=f"CPUs (default {DEFAULT_CPUS})")
    p.add_argument("--ops", default=None, metavar="LIST",
                   help="comma-separated op families (default all): " + ", ".join(FAMILIES))
    p.add_argument("--swap", default="zram", help="swap device (default zram)")
    p.add_argument("--strict", action="store_true",
                   help="stop at any violation, also one no decision could have avoided "
                   "(by default those are counted and reported apart)")
    p.add_argument("--no-symmetry", action="store_true",
                   help="do not merge states that differ by a renaming of mms or CPUs")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the counterexample as a scenario YAML file")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--progress", action="store_true",
                   help="progress bar on stderr even when it is not a terminal")
    p.add_argument("--executor", choices=["inprocess", "process", "ray"], default="inprocess",
                   help="where frontier chunks are expanded (default inprocess; the result "
                   "is the same on every executor)")
    p.add_argument("--workers", type=int, default=None, help="worker processes")
    p.add_argument("--address", default=None, help="Ray cluster address")
    p.add_argument("--random", action="store_true",
                   help="run seeded random sequences instead (beyond the bound; a sample, "
                   "not a proof)")
    p.add_argument("--budget", default="60s", metavar="TIME",
                   help="--random: wall-clock budget, e.g. 30s, 10m, 1h (default 60s)")
    p.add_argument("--steps", type=int, default=40,
                   help="--random: steps per sequence (default 40)")
    p.add_argument("--sequences", type=int, default=None,
                   help="--random: stop after this many sequences")
    p.add_argument("--seed", type=int, default=0, help="--random: seed (default 0)")
    p.set_defaults(handler=handler)
    return p


def parse_budget(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise VerifyUsageError(f"--budget: expected a duration like 30s, 10m or 1h, got {text!r}")
    value = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if value <= 0:
        raise VerifyUsageError("--budget: must be positive")
    return value


def bounds_from_args(args: argparse.Namespace) -> Bounds:
    """The :class:`Bounds` the arguments ask for (checked)."""
    if args.ops is None or args.ops.strip() == "all":
        ops, explicit = DEFAULT_OPS, False
    else:
        ops = tuple(o.strip() for o in args.ops.split(",") if o.strip())
        explicit = True
    b = Bounds(depth=args.depth, mms=args.mms, pages=args.pages, cpus=args.cpus, ops=ops,
               swap=args.swap, symmetry=not args.no_symmetry, strict=args.strict,
               explicit_ops=explicit)
    try:
        b.check()
    except UniverseError as exc:
        raise VerifyUsageError(str(exc)) from None
    return b


class ProgressBar:
    """``depth 4/5 [#####.....] 12345 explored, 4567 distinct, 2100 states/s`` on stderr."""

    def __init__(self, stream: TextIO, depth: int) -> None:
        self.stream = stream
        self.depth = depth
        self.last = 0.0

    def __call__(self, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if now - self.last < 0.2:
            return
        self.last = now
        rate = info["explored"] / info["elapsed"] if info["elapsed"] > 0 else 0.0
        if info.get("random"):
            line = (f"random: {info['distinct']} sequences, {info['explored']} steps, "
                    f"{rate:.0f} steps/s, {info['elapsed']:.0f} s")
        else:
            frac = info["chunks_done"] / max(1, info["chunks"])
            bar = "#" * int(frac * 20)
            line = (f"depth {info['depth']}/{self.depth} [{bar:<20}] {info['explored']} "
                    f"explored, {info['distinct']} distinct, {rate:.0f} states/s")
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def finish(self) -> None:
        """End the progress line."""
        if self.last:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """Run the verb; returns the exit status."""
    from cowlab.executors import ExecutorError, make_executor
    from cowlab.verify import resolve, to_scenario, write_scenario
    from cowlab.verify.randomized import random_search
    from cowlab.verify.search import make_setup, search

    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    bounds = bounds_from_args(args)
    budget = parse_budget(args.budget) if args.random else 0.0
    if args.steps < 1:
        raise VerifyUsageError(f"--steps: expected a positive number, got {args.steps}")
    if args.workers is not None and args.workers < 1:
        raise VerifyUsageError(f"--workers: expected a positive number, got {args.workers}")
    policy_name = args.policy
    if policy_name is None:
        from cowlab.kernel.presets import PresetError
        from cowlab.kernels import resolve_kernel

        try:
            policy_name = resolve_kernel(args.kernel, where="--kernel").default_policy
        except PresetError as exc:
            raise VerifyUsageError(str(exc)) from None
    try:
        obj, name, label, config = resolve(policy_name, args.kernel, bounds)
    except UniverseError as exc:
        raise VerifyUsageError(str(exc)) from None
    setup = make_setup(obj, name, config, bounds)
    show = args.progress or stderr.isatty()
    bar = ProgressBar(stderr, bounds.depth) if show else None
    if args.random:
        result = random_search(setup, policy_label=label, seed=args.seed, budget_s=budget,
                               max_steps=args.steps, max_sequences=args.sequences,
                               progress=bar)
    else:
        try:
            executor = make_executor(args.executor, workers=args.workers,
                                     address=args.address)
        except ExecutorError as exc:
            raise VerifyUsageError(str(exc)) from None
        try:
            result = search(setup, policy_label=label, executor=executor, progress=bar)
        finally:
            executor.close()
    if bar is not None:
        bar.finish()
    if result.counterexample is not None and args.out and result.status == "counterexample":
        try:
            write_scenario(args.out, to_scenario(result, config=config))
        except OSError as exc:
            raise VerifyUsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    if args.json:
        doc = result.to_dict()
        doc["out"] = args.out if result.status == "counterexample" else None
        print(json.dumps(doc, indent=2), file=stdout)
    else:
        print(format_summary(result, args.out), file=stdout)
    if result.status == "error":
        return 2
    return 1 if result.status == "counterexample" else 0


def format_summary(result: Any, out: str | None) -> str:
    """The human-readable summary (always printed)."""
    lines = [f"cowlab verify: policy {result.policy}, kernel {result.kernel}"]
    lines.append(f"universe: {result.universe()}")
    if result.mode == "exhaustive":
        lines.append(
            f"depth completed {result.depth_completed}/{result.bounds.depth}, "
            f"{result.explored} states explored, {result.distinct} distinct, "
            f"{result.states_per_s:.0f} states/s, {result.seconds:.1f} s")
    if result.unavoidable:
        first = result.first_unavoidable or {}
        v = first.get("violation", {})
        lines.append(
            f"{result.unavoidable} transitions committed a violation no decision could "
            f"have avoided (counted, not stopped at; --strict stops at them); the first: "
            f"{v.get('violation')} after " + "; ".join(
                _brief(s) for s in first.get("steps", [])))
    lines.append(result.headline())
    if result.counterexample is not None:
        for i, step in enumerate(result.counterexample, 1):
            lines.append(f"  {i}. {_brief(step)}")
        if result.unshrunk_length is not None and result.unshrunk_length != len(
                result.counterexample):
            lines.append(f"  (shrunk from {result.unshrunk_length} steps)")
        if out and result.status == "counterexample":
            lines.append(f"scenario written to {out} (cowlab scenario run {out} "
                         f"--policy {result.policy})")
    return "\n".join(lines)


def _brief(step: dict[str, Any]) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in step.items() if k != "op")
    return f"{step['op']}({rest})"
