"""The ``cowlab`` command line: a thin layer over the library.

Every verb reports bad input as one line on stderr naming where it came from
and exits with status 2; no traceback reaches the user for input errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from typing import cast

from cowlab import __version__
from cowlab.kernel.errors import KernelError
from cowlab.kernel.fault import PolicyError
from cowlab.kernel.presets import PRESETS, PresetError, get_preset
from cowlab.plugins import PluginError, format_plugins, get_registry
from cowlab.scenario import Scenario, ScenarioError, ScenarioRunner, format_result
from cowlab.workloads import Budget, Workload, WorkloadResult, run_workload

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _resolve_policy(name: str | None, kernel_default: str, where: str = "--policy") -> object:
    registry = get_registry()
    try:
        return registry.make_policy(name or kernel_default, where=where)
    except PluginError as exc:
        raise CliError(str(exc)) from None


def cmd_scenario_run(args: argparse.Namespace) -> int:
    """cowlab scenario run FILE [--policy NAME] [--kernel PRESET] [--json]"""
    try:
        scenario = Scenario.load(args.file, kernel=args.kernel)
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    policy = _resolve_policy(args.policy, scenario.kernel.default_policy)
    try:
        result = ScenarioRunner(scenario, policy, seed=args.seed).run()  # type: ignore[arg-type]
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_result(result))
    return 0


def _parse_params(pairs: Sequence[str], where: str = "--param") -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{where} {pair!r}: expected key=value")
        params[key.strip()] = value.strip()
    return params


def cmd_workload_run(args: argparse.Namespace) -> int:
    """cowlab workload run NAME [--param k=v ...] [--policy P] [--kernel K] [--seed N]"""
    registry = get_registry()
    try:
        config = get_preset(args.kernel, where="--kernel")
        params = _parse_params(args.param)
        workload = cast(
            Workload, registry.make("workload", args.name, params, where=f"workload {args.name}")
        )
        policy = registry.make_policy(args.policy or config.default_policy, where="--policy")
        budget = Budget(
            max_decisions=args.decisions,
            max_time_ns=int(args.time_ms * 1_000_000) if args.time_ms else None,
        )
    except (PluginError, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        result = run_workload(
            workload,
            config,
            policy,
            seed=args.seed,
            budget=budget,
            params=params,
        )
    except (KernelError, PolicyError) as exc:
        raise CliError(f"workload {args.name}: {exc}") from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_workload_result(result))
    return 0


def format_workload_result(result: WorkloadResult) -> str:
    """The human-readable report of ``cowlab workload run``."""
    m = result.metrics
    rate = m["reuse_rate"]
    lines = [
        f"workload {result.workload} {result.params or ''}".rstrip()
        + f": kernel {result.kernel}, policy {result.policy}, seed {result.seed}",
        f"  decisions {result.decisions}, simulated time {result.sim_time_ns / 1e6:.3f} ms",
        f"  reuse rate over truly reusable faults: "
        f"{'n/a' if rate is None else f'{rate:.4f}'} ({m['truly_reusable']} reusable)",
        f"  violations: {m['violations_total']} {m['violations']}",
        f"  unnecessary copies: {m['unnecessary_copies']} {m['unnecessary_copies_by_blocker']}",
        f"  fault latency: mean {m['mean_latency_ns'] / 1000:.3f} us, "
        f"p99 {m['p99_latency_ns'] / 1000:.3f} us; extra pages {m['extra_pages']}",
        "counters:",
    ]
    lines += [f"  {k:<24} {v}" for k, v in result.counters.items()]
    return "\n".join(lines)


def cmd_workloads(args: argparse.Namespace) -> int:
    """cowlab workloads: the registered workloads with their parameters."""
    registry = get_registry()
    for name in registry.names("workload"):
        reg = registry.get("workload", name)
        print(f"{name:<22} {reg.description}  [{registry.origin('workload', name)}]")
        if reg.params is not None:
            for f in dataclasses.fields(reg.params):
                print(f"    {f.name:<14} = {f.default!r}")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    """cowlab plugins [--json]"""
    registry = get_registry()
    if args.json:
        print(json.dumps(registry.describe(), indent=2, default=str))
    else:
        print(format_plugins(registry))
    return 0


def _list_kind(kind: str) -> int:
    registry = get_registry()
    for name in registry.names(kind):
        reg = registry.get(kind, name)
        print(f"{name:<18} {reg.description}  [{registry.origin(kind, name)}]")
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    """cowlab policies"""
    return _list_kind("policy")


def cmd_kernels(args: argparse.Namespace) -> int:
    """cowlab kernels [--facilities]"""
    for name, preset in PRESETS.items():
        print(
            f"{name:<7} era {preset.era}  default policy {preset.default_policy:<15} "
            f"{preset.description}"
        )
        if args.facilities:
            for key, value in preset.facilities().items():
                print(f"          {key} = {value}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """cowlab train CONFIG [KEY=VALUE ...] [--resume] [--trust-model]"""
    from cowlab.config import ConfigError, load_config
    from cowlab.train import TrainError, train

    try:
        cfg = load_config(args.config, args.overrides)
        result = train(cfg, resume=args.resume, trust_model=args.trust_model,
                       source=args.config)
    except (ConfigError, TrainError) as exc:
        raise CliError(str(exc)) from None
    return 130 if result.interrupted else 0


def cmd_selftest(args: argparse.Namespace) -> int:
    """cowlab selftest [--kernel PRESET] [--policy NAME] [--filter TEXT] [--format tap|json]
    [--matrix [--policy NAME ...] [--out DIR]] (see cowlab/selftest/command.py)"""
    from cowlab.selftest.command import SelftestUsageError, run

    try:
        return run(args)
    except SelftestUsageError as exc:
        raise CliError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="cowlab",
        description="Simulate, compare and learn the Linux kernel's copy-on-write reuse rule.",
    )
    parser.add_argument("--version", action="version", version=f"cowlab {__version__}")
    parser.add_argument(
        "--trust-model",
        dest="trust_models_global",
        action="store_true",
        help="load learned models (sb3:PATH) even without a matching sha256 sidecar "
        "(model files are pickles: only for files you trust)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    scenario = sub.add_parser("scenario", help="run scripted scenario files")
    ssub = scenario.add_subparsers(dest="scenario_command", metavar="ACTION")
    run = ssub.add_parser("run", help="run a scenario and print every write attempt")
    run.add_argument("file", help="scenario YAML file")
    run.add_argument("--policy", help="policy name (default: the kernel preset's own rule)")
    run.add_argument("--kernel", help="kernel preset, overriding the file's (e.g. v5.18)")
    run.add_argument("--seed", type=int, default=0, help="seed for randomized policies")
    run.add_argument("--json", action="store_true", help="print one JSON document")
    run.set_defaults(handler=cmd_scenario_run)
    scenario.set_defaults(handler=lambda a: _missing(scenario))

    workload = sub.add_parser("workload", help="run stochastic workloads")
    wsub = workload.add_subparsers(dest="workload_command", metavar="ACTION")
    wrun = wsub.add_parser("run", help="run one workload and print its metrics and counters")
    wrun.add_argument("name", help="workload id, e.g. forceswap-v1 (see: cowlab workloads)")
    wrun.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a workload parameter (repeatable)",
    )
    wrun.add_argument("--policy", help="policy name (default: the kernel preset's own rule)")
    wrun.add_argument("--kernel", default="v5.19", help="kernel preset (default v5.19)")
    wrun.add_argument("--seed", type=int, default=0)
    wrun.add_argument(
        "--decisions",
        type=int,
        default=2000,
        help="stop after this many policy decisions (default 2000)",
    )
    wrun.add_argument(
        "--time-ms", type=float, default=None, help="stop after this much simulated time"
    )
    wrun.add_argument("--json", action="store_true", help="print one JSON document")
    wrun.set_defaults(handler=cmd_workload_run)
    workload.set_defaults(handler=lambda a: _missing(workload))
    sub.add_parser("workloads", help="list workloads and their parameters").set_defaults(
        handler=cmd_workloads
    )

    plugins = sub.add_parser("plugins", help="list plugins and what they registered")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(handler=cmd_plugins)
    sub.add_parser("policies", help="list registered policies").set_defaults(handler=cmd_policies)
    trainp = sub.add_parser("train", help="train a learned reuse policy (stable-baselines3)")
    trainp.add_argument("config", help="training config YAML, e.g. configs/exclusive.yaml")
    trainp.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. seed=3 agent.total_timesteps=20000")
    trainp.add_argument("--resume", action="store_true",
                        help="continue from the run directory's last checkpoint")
    trainp.add_argument("--trust-model", action="store_true",
                        help="load the checkpoint even if its sha256 sidecar does not match")
    trainp.set_defaults(handler=cmd_train)
    kernels = sub.add_parser("kernels", help="list kernel presets")
    kernels.add_argument("--facilities", action="store_true", help="show every facility flag")
    kernels.set_defaults(handler=cmd_kernels)
    from cowlab.selftest.command import add_parser as add_selftest_parser

    add_selftest_parser(sub, cmd_selftest)
    return parser


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "trust_models_global", False):
        os.environ["COWLAB_TRUST_MODELS"] = "1"  # read by the sb3 policy when it loads
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except (CliError, PresetError) as exc:
        print(f"cowlab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cowlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
