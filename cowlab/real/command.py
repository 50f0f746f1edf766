"""The ``cowlab real`` verb: run, emit, import, suite, calibrate.

``cowlab/cli.py`` registers it with :func:`add_parser` and calls :func:`run`; input
errors and host refusals raise :class:`RealUsageError` (one line, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys

from cowlab.plugins import get_registry
from cowlab.real.compare import format_comparison
from cowlab.real.harness import emit
from cowlab.real.host import parse_size
from cowlab.real.run import USAGE_ERRORS, import_result, run_real
from cowlab.real.script import DEFAULT_TIMEOUT_S, translate
from cowlab.scenario import Scenario, ScenarioRunner


class RealUsageError(Exception):
    """Bad input or a host that cannot run the harness: exit status 2."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               handler: object) -> argparse.ArgumentParser:
    """Add the ``real`` verb and its sub-verbs to the ``cowlab`` parser."""
    p = sub.add_parser(
        "real", help="run scenarios on the host's real Linux kernel and compare with the "
        "simulator (docs/real.md)")
    rsub = p.add_subparsers(dest="real_cmd", metavar="{run,emit,import,suite,calibrate}")
    run = rsub.add_parser("run", help="run a scenario on this kernel and in the simulator, "
                          "compare write by write (exit 1 when one differs)")
    run.add_argument("file")
    run.add_argument("--kernel", default=None, metavar="PRESET",
                     help="simulator preset (default: the newest preset at or below the host "
                     "kernel's version)")
    run.add_argument("--policy", default=None, metavar="NAME",
                     help="simulator policy (default: the preset's own rule)")
    run.add_argument("--swapfile", default=None, metavar="SIZE",
                     help="create and enable a swapfile of SIZE (e.g. 256M) for the run; it "
                     "is disabled and deleted afterwards")
    run.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT_S, metavar="S",
                     help=f"kill the harness after S seconds (default {DEFAULT_TIMEOUT_S})")
    run.add_argument("--json", action="store_true", help="print the comparison as JSON")
    em = rsub.add_parser("emit", help="print a standalone C harness for a scenario (for a "
                         "machine without Python)")
    em.add_argument("file")
    imp = rsub.add_parser("import", help="compare a result printed by an emitted harness")
    imp.add_argument("result")
    imp.add_argument("file")
    imp.add_argument("--kernel", default=None, metavar="PRESET",
                     help="simulator preset (default: from the result's kernel version)")
    imp.add_argument("--policy", default=None, metavar="NAME")
    imp.add_argument("--json", action="store_true")
    from cowlab.real.suite import add_suite_parser

    add_suite_parser(rsub)
    from cowlab.real.calibrate import add_calibrate_parser

    add_calibrate_parser(rsub)
    p.set_defaults(handler=handler)
    return p


def run(args: argparse.Namespace) -> int:
    """Dispatch a ``cowlab real`` sub-verb."""
    cmd = getattr(args, "real_cmd", None)
    try:
        if cmd == "run":
            log: list[str] = []
            size = parse_size(args.swapfile) if args.swapfile else None
            if not 1 <= args.timeout <= 86400:
                raise RealUsageError(f"--timeout: expected 1..86400 seconds, got {args.timeout}")
            comp = run_real(args.file, kernel=args.kernel, swapfile=size, policy=args.policy,
                            log=log, timeout_s=args.timeout)
            for line in log:
                print(f"cowlab real: {line}", file=sys.stderr)
            print(json.dumps(comp.to_dict(), indent=2) if args.json else format_comparison(comp))
            return comp.exit_status
        if cmd == "emit":
            scenario = Scenario.load(args.file)
            # Refuse what the simulator refuses when the step is reached, too.
            ScenarioRunner(scenario, get_registry().make_policy(
                scenario.kernel.default_policy)).run()
            sys.stdout.write(emit(translate(scenario)))
            return 0
        if cmd == "import":
            comp = import_result(args.result, args.file, kernel=args.kernel, policy=args.policy)
            print(json.dumps(comp.to_dict(), indent=2) if args.json else format_comparison(comp))
            return comp.exit_status
        if cmd == "suite":
            from cowlab.real.suite import run_suite_command

            return run_suite_command(args)
        if cmd == "calibrate":
            from cowlab.real.calibrate import run_calibrate_command

            return run_calibrate_command(args)
    except USAGE_ERRORS as exc:
        raise RealUsageError(str(exc)) from None
    raise RealUsageError("cowlab real: choose one of run, emit, import, suite, calibrate")
