"""The ``cowlab selftest`` verb: argument parsing and the two modes (one run, matrix).

``cowlab/cli.py`` registers the verb with :func:`add_parser` and calls :func:`run`;
input errors raise :class:`SelftestUsageError`, which the CLI prints as one line with
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from cowlab.geometry import DEFAULT_GEOMETRY, HPAGE_PMD_ORDER
from cowlab.kernel.presets import PRESETS, KernelConfig, PresetError, get_preset
from cowlab.selftest.report import (
    MatrixColumn,
    format_matrix_csv,
    format_matrix_md,
    tap_header,
    tap_result,
    tap_totals,
)
from cowlab.selftest.runner import (
    SelftestResult,
    SuiteResult,
    default_jobs,
    run_matrix,
    run_suite,
    select,
    suite,
)
from cowlab.selftest.variants import size_kb

#: Why v5.19 is the default kernel (also the help text).
DEFAULT_KERNEL = "v5.19"
DEFAULT_KERNEL_WHY = (
    "v5.19 is the first release whose own rule passes every anonymous case cow.c checks, "
    "the hugetlb vmsplice() cases cow.c itself marks XFAIL aside (PageAnonExclusive, "
    "6c287605fd56, and GUP-triggered unsharing, c89357e27f20); later presets pass them too "
    "and add mTHP sizes, so v5.19 is the oldest kernel with the fixed behaviour, the "
    "baseline to compare a policy against, and the preset the rest of cowlab defaults to"
)
FORMATS_ONE = ("tap", "json")
FORMATS_MATRIX = ("md", "csv", "json")


class SelftestUsageError(Exception):
    """Bad input to ``cowlab selftest``: one line, exit status 2."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               handler: object) -> argparse.ArgumentParser:
    """Add the ``selftest`` verb to the ``cowlab`` parser."""
    p = sub.add_parser(
        "selftest",
        help="run the kernel's mm/cow.c selftest against a kernel preset and policy",
        description=(
            "Run every anonymous case of the kernel's tools/testing/selftests/mm/cow.c over "
            "every memory variant (and the THP collapse cases) on the simulated kernel, "
            "judged by what the processes, pipes and pins read; prints kselftest TAP. "
            "Exit status 1 when a case fails that cow.c does not expect to fail."
        ),
    )
    p.add_argument("--kernel", default=None, metavar="PRESET",
                   help=f"kernel preset (default {DEFAULT_KERNEL}: {DEFAULT_KERNEL_WHY}); "
                   f"with --matrix and no --policy, every preset is run. Known: "
                   f"{', '.join(PRESETS)}")
    p.add_argument("--policy", action="append", default=None, metavar="SPEC",
                   help="reuse policy: NAME or NAME:KEY=VALUE,... (docs/policy-api.md; "
                   "default: the preset's own rule); with --matrix it may "
                   "be repeated, one column per policy on --kernel")
    p.add_argument("--filter", default=None, metavar="TEXT",
                   help="run only the tests whose name contains TEXT (case-insensitive), "
                   "e.g. 'vmsplice', 'swapped-out THP', 'hugetlb (2048 kB)'")
    p.add_argument("--format", default=None, choices=(*FORMATS_ONE, "md", "csv"),
                   help="output: tap (default) or json for one run; md (default), csv or json "
                   "with --matrix")
    p.add_argument("--matrix", action="store_true",
                   help="run the suite on every preset (or every --policy on --kernel) and "
                   "print a pass/fail table per case and variant")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="with --matrix: write DIR/matrix.md and DIR/matrix.csv")
    p.add_argument("--hugetlb-1g", action="store_true",
                   help="reserve 1 GiB hugetlb pages; without it the 1048576 kB variants "
                   "SKIP as cow.c does when none are free (they take seconds each here)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="worker processes (default 1 for one run, every available CPU for "
                   "--matrix)")
    p.set_defaults(handler=handler)
    return p


def _preset(name: str) -> KernelConfig:
    try:
        return get_preset(name, where="--kernel")
    except PresetError as exc:
        raise SelftestUsageError(str(exc)) from None


def _check_policies(names: Sequence[str]) -> None:
    from cowlab.plugins import PluginError, get_registry

    registry = get_registry()
    for name in names:
        try:
            registry.make_policy(name, where="--policy")
        except PluginError as exc:
            raise SelftestUsageError(str(exc)) from None


def _jobs(args: argparse.Namespace, default: int) -> int:
    if args.jobs is None:
        return default
    if args.jobs < 1:
        raise SelftestUsageError(f"--jobs: expected a positive number, got {args.jobs}")
    return int(args.jobs)


def info_lines(config: KernelConfig, hugetlb_1g: bool) -> list[str]:
    """cow.c's ``[INFO]`` lines about the sizes it detected."""
    lines = [f"detected PMD size: {size_kb(HPAGE_PMD_ORDER)} KiB"]
    orders = [o for o in DEFAULT_GEOMETRY.mthp_orders if o < HPAGE_PMD_ORDER] \
        if config.mthp else []
    for order in [*orders, HPAGE_PMD_ORDER]:
        lines.append(f"detected THP size: {size_kb(order)} KiB")
    lines.append("detected hugetlb page size: 2048 KiB")
    lines.append("detected hugetlb page size: 1048576 KiB"
                 + ("" if hugetlb_1g else " (none reserved: pass --hugetlb-1g to run them)"))
    return lines


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the verb; returns the exit status."""
    stream = sys.stdout if out is None else out
    try:
        return _run(args, stream)
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as kselftest runners expect.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stream
        return 1


def _run(args: argparse.Namespace, out: TextIO) -> int:
    if args.format is not None:
        allowed = FORMATS_MATRIX if args.matrix else FORMATS_ONE
        if args.format not in allowed:
            mode = "--matrix" if args.matrix else "a single run"
            raise SelftestUsageError(
                f"--format {args.format}: not available for {mode} (use {', '.join(allowed)})")
    if args.matrix:
        return _run_matrix(args, out)
    if args.out is not None:
        raise SelftestUsageError("--out needs --matrix")
    policies = args.policy or []
    if len(policies) > 1:
        raise SelftestUsageError("--policy: give one policy (several only with --matrix)")
    config = _preset(args.kernel or DEFAULT_KERNEL)
    policy = policies[0] if policies else config.default_policy
    _check_policies([policy])
    tests = select(suite(config), args.filter)
    if not tests:
        raise SelftestUsageError(f"--filter {args.filter!r}: no test matches")
    workers = _jobs(args, 1)
    fmt = args.format or "tap"
    if fmt == "json":
        result = run_suite(config, policy, tests=tests, hugetlb_1g=args.hugetlb_1g,
                           workers=workers)
        print(json.dumps(result.to_dict(), indent=2), file=out)
        return 0 if result.ok else 1
    for line in tap_header(config.name, policy, len(tests),
                           info=info_lines(config, args.hugetlb_1g)):
        print(line, file=out)
    groups = {"anon": False, "thp": False}

    def emit(r: SelftestResult) -> None:
        group = "thp" if r.test.case.thp_only else "anon"
        if not groups[group]:
            groups[group] = True
            text = ("Anonymous THP tests" if group == "thp"
                    else "Anonymous memory tests in private mappings")
            print(f"# [INFO] {text}", file=out)
        for line in tap_result(r):
            print(line, file=out)
        out.flush()

    result = run_suite(config, policy, tests=tests, hugetlb_1g=args.hugetlb_1g,
                       workers=workers, on_result=emit)
    for line in tap_totals(result):
        print(line, file=out)
    return 0 if result.ok else 1


def _run_matrix(args: argparse.Namespace, out: TextIO) -> int:
    policies = args.policy or []
    if policies:
        config = _preset(args.kernel or DEFAULT_KERNEL)
        _check_policies(policies)
        targets = [(config, p) for p in policies]
        labels = list(policies)
        title = f"cow.c selftest on kernel {config.name}, by policy"
    else:
        if args.kernel is not None:
            raise SelftestUsageError(
                "--matrix without --policy runs every preset; give --policy NAME (repeatable) "
                "to compare policies on --kernel")
        targets = [(config, config.default_policy) for config in PRESETS.values()]
        labels = [f"{c.name} ({p})" for c, p in targets]
        title = "cow.c selftest on every kernel preset, each with its own rule"
    suites = run_matrix(targets, text=args.filter, hugetlb_1g=args.hugetlb_1g,
                        workers=_jobs(args, default_jobs()))
    if not any(s.results for s in suites):
        raise SelftestUsageError(f"--filter {args.filter!r}: no test matches")
    columns = [MatrixColumn(label, s) for label, s in zip(labels, suites, strict=True)]
    command = "cowlab selftest --matrix" + "".join(f" --policy {p}" for p in policies)
    if policies:
        command += f" --kernel {targets[0][0].name}"
    if args.filter:
        command += f" --filter '{args.filter}'"
    if args.hugetlb_1g:
        command += " --hugetlb-1g"
    notes = [f"Made by `{command}`."]
    md = format_matrix_md(columns, title=title, notes=notes)
    csv_text = format_matrix_csv(columns)
    if args.out is not None:
        directory = Path(args.out)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "matrix.md").write_text(md, encoding="utf-8")
            (directory / "matrix.csv").write_text(csv_text, encoding="utf-8")
        except OSError as exc:
            raise SelftestUsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    fmt = args.format or "md"
    if fmt == "md":
        print(md, end="", file=out)
    elif fmt == "csv":
        print(csv_text, end="", file=out)
    else:
        print(json.dumps({"matrix": [s.to_dict() for s in suites]}, indent=2), file=out)
    return 1 if _broken(suites) else 0


def _broken(suites: Sequence[SuiteResult]) -> bool:
    """A matrix run fails only on a simulator problem: an error or a detector
    disagreement (failing cases are what the matrix is there to show)."""
    return any(s.totals()["error"] or s.disagreements() for s in suites)
