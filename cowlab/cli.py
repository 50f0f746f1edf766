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

import yaml

from cowlab import __version__, _build
from cowlab.kernel.errors import StallError
from cowlab.kernel.presets import PRESETS, PresetError, get_preset
from cowlab.plugins import PluginError, format_plugins, get_registry, warn_load_problems
from cowlab.records import RunError, run_guard
from cowlab.scenario import (
    MAX_PAGES,
    Scenario,
    ScenarioError,
    ScenarioRunner,
    format_result,
)
from cowlab.workloads import Budget, Workload, WorkloadResult, run_workload
from cowlab.yamlfile import load_yaml_text

EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2 (``status`` if given)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


#: Help of every ``--policy``: the spec grammar is in docs/policy-api.md.
POLICY_HELP = ("policy spec: NAME, NAME:KEY=VALUE,... (random:p_reuse=0.3) or NAME:PATH "
               "(sb3:runs/x/model.zip); default: the kernel preset's own rule")

#: Exit status of a run the engine refused as stalled (StallError): not a usage error.
EXIT_STALLED = 3


def _resolve_policy(name: str | None, kernel_default: str, where: str = "--policy") -> object:
    registry = get_registry()
    try:
        return registry.make_policy(name or kernel_default, where=where)
    except PluginError as exc:
        raise CliError(str(exc)) from None


def cmd_scenario_run(args: argparse.Namespace) -> int:
    """cowlab scenario run FILE [--policy NAME] [--kernel PRESET] [--json]"""
    try:
        if args.max_pages < 1:
            raise CliError(f"--max-pages: must be at least 1, got {args.max_pages}")
        scenario = Scenario.load(args.file, kernel=args.kernel, max_pages=args.max_pages)
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    policy = _resolve_policy(args.policy, scenario.kernel.default_policy)
    try:
        with run_guard(f"{args.file}", passthrough=(ScenarioError,)):
            runner = ScenarioRunner(scenario, policy, seed=args.seed,  # type: ignore[arg-type]
                                    progress=None if args.quiet else sys.stderr)
            result = runner.run()
    except (ScenarioError, RunError) as exc:
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
        with run_guard(f"workload {args.name}", passthrough=(StallError,)):
            result = run_workload(
                workload,
                config,
                policy,
                seed=args.seed,
                budget=budget,
                params=params,
            )
    except StallError as exc:
        # Never a result: a stalled run did not reach its workload's end.
        raise CliError(
            f"workload {args.name} (kernel {config.name}, policy {getattr(policy, 'name', '?')}, "
            f"seed {args.seed}): {exc}",
            EXIT_STALLED,
        ) from None
    except RunError as exc:
        raise CliError(str(exc)) from None
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
    """cowlab policies: each policy, where it comes from, and the parameters a spec
    ``NAME:KEY=VALUE,...`` may set (with their defaults)."""
    registry = get_registry()
    for name in registry.names("policy"):
        reg = registry.get("policy", name)
        line = f"{name:<18} {reg.description}  [{registry.origin('policy', name)}]"
        if reg.params is not None:
            fields = [f for f in dataclasses.fields(reg.params) if f.init]
            shown = [f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING
                     else f.name if f.default_factory is dataclasses.MISSING
                     else f"{f.name}=..." for f in fields]
            line += "  params: " + ", ".join(shown)
        print(line)
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    """cowlab kernels [--facilities]: shipped presets, then those plugins registered."""
    from cowlab.kernels import kernel_names, resolve_kernel

    presets = [(name, resolve_kernel(name)) for name in kernel_names()]
    for name, preset in presets:
        origin = "" if name in PRESETS else f"  [{get_registry().origin('kernel', name)}]"
        print(
            f"{name:<7} era {preset.era}  default policy {preset.default_policy:<15} "
            f"{preset.description}{origin}"
        )
    if args.facilities:
        # One row per facility, one column per preset: where each facility changes.
        def cell(value: object) -> str:
            if isinstance(value, bool):
                return "yes" if value else "-"
            return str(value)

        names = [name for name, _ in presets]
        keys = list(presets[0][1].facilities()) if presets else []
        key_width = max((len(k) for k in keys), default=8)
        widths = [max(len(n), 3) for n in names]
        print()
        print("facility".ljust(key_width) + "  " + "  ".join(
            n.rjust(w) for n, w in zip(names, widths, strict=True)))
        for key in keys:
            row = [cell(p.facilities()[key]) for _, p in presets]
            print(key.ljust(key_width) + "  " + "  ".join(
                c.rjust(w) for c, w in zip(row, widths, strict=True)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """cowlab train CONFIG [KEY=VALUE ...] [--resume [--force] | --overwrite] [--check]
    [--trust-model]"""
    from cowlab.config import ConfigError, load_config
    from cowlab.train import TrainError, check_training_config, train

    try:
        cfg = load_config(args.config, args.overrides)
        if args.check:
            hp = check_training_config(cfg, args.config)
            print(f"{args.config}: config OK: {cfg.agent.algo.name} with "
                  + ", ".join(f"{k}={v}" for k, v in sorted(hp.items()))
                  + f"; {cfg.agent.total_timesteps} steps -> {cfg.output.dir}")
            return 0
        result = train(cfg, resume=args.resume, trust_model=args.trust_model,
                       source=args.config, overwrite=args.overwrite, force=args.force)
    except (ConfigError, TrainError, RunError) as exc:
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


def cmd_real(args: argparse.Namespace) -> int:
    """cowlab real run|emit|import|suite|calibrate (see cowlab/real/command.py)"""
    from cowlab.real.command import RealUsageError, run

    try:
        return run(args)
    except RealUsageError as exc:
        raise CliError(str(exc)) from None


def cmd_verify(args: argparse.Namespace) -> int:
    """cowlab verify [--policy NAME] [--kernel PRESET] [--depth N] ... (see
    cowlab/verify/command.py)"""
    from cowlab.verify.command import VerifyUsageError, run

    try:
        return run(args)
    except VerifyUsageError as exc:
        raise CliError(str(exc)) from None


def _eval_specs(args: argparse.Namespace) -> tuple[list[object], str, str | None]:
    """The run specs of ``cowlab eval``, the executor kind and the Ray address."""
    from cowlab.records import RunSpec

    executor = args.executor
    address = args.address
    if args.decisions is not None and args.decisions < 1:
        raise CliError(f"--decisions: must be at least 1, got {args.decisions}")
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers: must be at least 1, got {args.workers}")
    if args.config:
        from cowlab.config import (
            ConfigError,
            eval_seeds,
            load_config,
            workload_entries,
        )

        try:
            cfg = load_config(args.config, args.overrides)
            entries = cfg.eval.workloads or [e for _, e in workload_entries(
                cfg.workload, where=args.config, prefix="workload")]
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        policies = args.policy or list(cfg.eval.baselines)
        seeds = (parse_seeds_arg(args.seeds) if args.seeds else eval_seeds(cfg.eval.seeds))
        machine = {"cpus": cfg.machine.cpus, "swap": cfg.machine.swap,
                   "stable_writes": cfg.machine.stable_writes,
                   "swap_slots": cfg.machine.swap_slots}
        geometry: dict[str, object] = {}
        if (cfg.geometry.paging_levels, cfg.geometry.high_user_addresses,
                cfg.geometry.mthp_orders) != (4, False, None):
            geometry = {"paging_levels": cfg.geometry.paging_levels,
                        "high_user_addresses": cfg.geometry.high_user_addresses}
            if cfg.geometry.mthp_orders is not None:
                geometry["mthp_orders"] = tuple(cfg.geometry.mthp_orders)
        kernels = args.kernel or [cfg.kernel.preset]
        where = "--policy" if args.policy else f"{args.config}: eval.baselines"
        resolved = [_canonical_policy(p, cfg.eval.policy_params.get(p), where)
                    for p in policies]
        specs: list[object] = [
            RunSpec(policy=p, kernel=k, workload=e.name, seed=s,
                    max_decisions=args.decisions or cfg.eval.max_decisions,
                    policy_params=dict(pp),
                    facilities=dict(cfg.kernel.facilities), workload_params=dict(e.params),
                    machine=machine, geometry=geometry)
            for p, pp in resolved for k in kernels for e in entries for s in seeds
        ]
        if executor is None:
            executor = cfg.executor.kind.name
            address = address or (cfg.executor.address if executor == "ray" else None)
        return specs, executor, address
    if args.overrides:
        raise CliError(f"key=value overrides need a CONFIG (got {' '.join(args.overrides)})")
    missing = [o for o, v in (("--policy", args.policy), ("--workload", args.workload))
               if not v]
    if missing:
        raise CliError(f"give a CONFIG, or {' and '.join(missing)}")
    # YAML scalars, so --param npages=4 is the same run as npages: 4 in a config.
    try:
        params = {k: load_yaml_text(v) if v else v for k, v in _parse_params(args.param).items()}
    except yaml.YAMLError as exc:
        raise CliError(f"--param: not a YAML value: {str(exc).splitlines()[0]}") from None
    seeds = parse_seeds_arg(args.seeds or "0")
    resolved = [_canonical_policy(p, None, "--policy") for p in args.policy]
    specs = [
        RunSpec(policy=p, kernel=k, workload=w, seed=s, max_decisions=args.decisions or 2000,
                policy_params=dict(pp), workload_params=params)
        for p, pp in resolved for k in (args.kernel or ["v5.19"]) for w in args.workload
        for s in seeds
    ]
    return specs, executor or "process", address


def _canonical_policy(spec: str, params: object, where: str
                      ) -> tuple[str, dict[str, object]]:
    """``random:p_reuse=0.3`` -> ``("random", {"p_reuse": 0.3})``, the form records store
    (parameters checked against the policy's schema; a bad one is a usage error)."""
    try:
        return get_registry().canonical_policy(
            spec, cast("dict[str, object] | None", params), where=where)
    except PluginError as exc:
        raise CliError(str(exc)) from None


def parse_seeds_arg(text: str) -> list[int]:
    """``--seeds 0-9`` as a list, or a CliError."""
    from cowlab.evaluate import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise CliError(f"--seeds: {exc}") from None


def _check_specs(specs: Sequence[object]) -> None:
    """Resolve every policy, kernel and workload once, so bad names fail before the sweep."""
    from cowlab.kernels import resolve_kernel
    from cowlab.records import RunSpec

    registry = get_registry()
    seen: set[str] = set()
    for spec in cast("Sequence[RunSpec]", specs):
        pkey = f"{spec.policy}:{sorted(spec.policy_params.items())}"
        wkey = f"{spec.workload}:{sorted(spec.workload_params.items())}"
        try:
            if pkey not in seen:
                registry.make_policy(spec.policy, dict(spec.policy_params), where="--policy")
            if spec.kernel not in seen:
                resolve_kernel(spec.kernel, where="--kernel")
            if wkey not in seen:
                registry.make("workload", spec.workload, dict(spec.workload_params),
                              where="--workload")
        except PluginError as exc:
            raise CliError(str(exc)) from None
        seen.update((pkey, spec.kernel, wkey))


def cmd_eval(args: argparse.Namespace) -> int:
    """cowlab eval [CONFIG [KEY=VALUE ...]] [--policy P ...] [--workload W ...]
    [--kernel K ...] [--seeds 0-9] [--out FILE] [--executor KIND]"""
    from cowlab.evaluate import run_sweep
    from cowlab.executors import ExecutorError, make_executor
    from cowlab.records import RecordError, RunError

    specs, kind, address = _eval_specs(args)
    _check_specs(specs)
    try:
        executor = make_executor(kind, workers=args.workers, address=address)
    except ExecutorError as exc:
        raise CliError(str(exc)) from None
    try:
        result = run_sweep(specs, args.out, executor=executor, resume=not args.fresh,
                           progress=not args.quiet)
    except StallError as exc:
        raise CliError(f"eval: {exc} (no record written for this run)", EXIT_STALLED) from None
    except (RunError, RecordError) as exc:
        raise CliError(str(exc)) from None
    finally:
        executor.close()
    print(format_eval_summary(result.records))
    print(f"{len(result.records)} records in {args.out} ({result.describe()}) "
          f"in {result.wall_s:.1f} s on {kind}")
    return 0


def format_eval_summary(records: Sequence[dict[str, object]]) -> str:
    """One line per (policy, kernel, workload): runs, mean reuse rate, violations."""
    groups: dict[tuple[str, str, str], list[dict[str, object]]] = {}
    for rec in records:
        cfg = cast(dict[str, object], rec["config"])
        params = cast(dict[str, object], cfg.get("policy_params") or {})
        shown = str(cfg["policy"]) + (
            ":" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) if params else "")
        key = (shown, str(cfg["kernel"]), str(cfg["workload"]))
        groups.setdefault(key, []).append(rec)
    lines = [f"{'policy':<24} {'kernel':<7} {'workload':<24} {'runs':>4} "
             f"{'reuse rate':>10} {'violations':>10}"]
    for (pol, ker, wl), recs in groups.items():
        metrics = [cast(dict[str, object], r["metrics"]) for r in recs]
        rates = [float(cast(float, m["reuse_rate"])) for m in metrics
                 if m["reuse_rate"] is not None]
        rate = f"{sum(rates) / len(rates):.4f}" if rates else "n/a"
        viol = sum(int(cast(int, m["violations_total"])) for m in metrics)
        lines.append(f"{pol:<24} {ker:<7} {wl:<24} {len(recs):>4} {rate:>10} {viol:>10}")
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    """cowlab validate FILE... : replay every record; exit 1 on any mismatch."""
    from cowlab.records import RecordError, iter_files, validate_record

    for path in args.files:
        if not os.path.isfile(path):
            raise CliError(f"{path}: no such records file" if not os.path.exists(path)
                           else f"{path}: not a records file (a directory?)")
    total = bad = 0
    try:
        for path, line, rec in iter_files(args.files):
            total += 1
            cfg = rec.get("config")
            cfg = cfg if isinstance(cfg, dict) else {}
            pp = cfg.get("policy_params")
            shown = f"{cfg.get('policy')}" + (
                ":" + ",".join(f"{k}={v}" for k, v in sorted(pp.items()))
                if isinstance(pp, dict) and pp else "")
            what = (f"{path}:{line}: {shown} / {cfg.get('kernel')} / "
                    f"{cfg.get('workload')} / seed {cfg.get('seed')}")
            try:
                diffs = validate_record(rec)
            except Exception as exc:  # a mangled record: any failure of its replay
                diffs = [f"<replay failed: {type(exc).__name__}: {exc}>"]
            if diffs:
                bad += 1
                shown = ", ".join(diffs[:5]) + (f" (+{len(diffs) - 5} more)"
                                                 if len(diffs) > 5 else "")
                print(f"{what}: NOT reproduced: differs in {shown}")
            elif not args.quiet:
                print(f"{what}: reproduced")
    except (RecordError, OSError) as exc:
        raise CliError(str(exc)) from None
    if total == 0:
        print(f"cowlab: {' '.join(args.files)}: no records to validate", file=sys.stderr)
        return 1
    print(f"{total - bad}/{total} records reproduced" + (f", {bad} not" if bad else ""))
    return 1 if bad else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """cowlab leaderboard CONFIG [KEY=VALUE ...]"""
    from cowlab.executors import ExecutorError
    from cowlab.leaderboard import (
        LeaderboardError,
        load_leaderboard_config,
        main_header,
        main_rows,
        run_leaderboard,
    )
    from cowlab.records import RecordError

    try:
        cfg = load_leaderboard_config(args.config, args.overrides)
        command = " ".join(["cowlab leaderboard", args.config, *args.overrides])
        board, files = run_leaderboard(cfg, command=command, progress=not args.quiet,
                                       where=args.config)
    except (LeaderboardError, ExecutorError, RunError, RecordError) as exc:
        raise CliError(str(exc)) from None
    except PluginError as exc:
        raise CliError(f"{args.config}: {exc}") from None
    for one in board.boards:
        print(f"== {one.kernel} (kernel rule: {one.kernel_rule})")
        print("  ".join(main_header(one)[:5]))
        for row in main_rows(one):
            print("  ".join(row[:5]))
    print(f"wrote {len(files)} files in {cfg.output} (leaderboard.md, summary.*, one "
          f"directory per preset: {', '.join(b.kernel for b in board.boards)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every verb."""
    parser = argparse.ArgumentParser(
        prog="cowlab",
        description="Simulate, compare and learn the Linux kernel's copy-on-write reuse rule.",
    )
    parser.add_argument("--version", action="version",
                        version=f"cowlab {__version__}, {_build.describe()}")
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
    run.add_argument("--policy", help=POLICY_HELP)
    run.add_argument("--kernel", help="kernel preset, overriding the file's (e.g. v5.18)")
    run.add_argument("--seed", type=int, default=0, help="seed for randomized policies")
    run.add_argument("--json", action="store_true", help="print one JSON document")
    run.add_argument("--max-pages", type=int, default=MAX_PAGES, metavar="N",
                     help=f"most pages one step may cover (default {MAX_PAGES})")
    run.add_argument("--quiet", action="store_true",
                     help="no progress lines on stderr during long runs")
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
    wrun.add_argument("--policy", help=POLICY_HELP)
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
    trainp.add_argument("--overwrite", action="store_true",
                        help="delete an existing run directory first (a new run refuses "
                        "a non-empty one otherwise)")
    trainp.add_argument("--force", action="store_true",
                        help="with --resume: resume even though the config changes what "
                        "is learned (kernel, workload, env, algo, net_arch, ...)")
    trainp.add_argument("--check", action="store_true",
                        help="check the config and hyperparameters, then exit (no training)")
    trainp.add_argument("--trust-model", action="store_true",
                        help="load the checkpoint even if its sha256 sidecar does not match")
    trainp.set_defaults(handler=cmd_train)
    evalp = sub.add_parser("eval", help="evaluate policies on workloads x kernels x seeds "
                           "and append replayable records")
    evalp.add_argument("config", nargs="?", help="training config YAML (its eval group: "
                       "workloads, seeds, baselines)")
    evalp.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    evalp.add_argument("--policy", action="append", default=[],
                       help="policy spec, NAME or NAME:KEY=VALUE,... (repeatable; with "
                       "CONFIG: replaces eval.baselines)")
    evalp.add_argument("--workload", action="append", default=[], help="workload id (repeatable)")
    evalp.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="a workload parameter (repeatable)")
    evalp.add_argument("--kernel", action="append", default=[],
                       help="kernel preset (repeatable; default v5.19 or the config's)")
    evalp.add_argument("--seeds", help="seeds, e.g. 0-9 or 0,3,5-7 (default 0; with CONFIG: "
                       "the evaluation seeds)")
    evalp.add_argument("--decisions", type=int, default=None,
                       help="policy decisions per run (default 2000 or eval.max_decisions)")
    evalp.add_argument("--out", default="records.jsonl", help="records file (appended; "
                       "finished runs are skipped)")
    evalp.add_argument("--fresh", action="store_true", help="start a new records file")
    evalp.add_argument("--executor", choices=["inprocess", "process", "ray"], default=None,
                       help="where runs execute (default: a local process pool)")
    evalp.add_argument("--workers", type=int, default=None, help="worker processes")
    evalp.add_argument("--address", default=None, help="Ray cluster address")
    evalp.add_argument("--quiet", action="store_true", help="no progress lines")
    evalp.set_defaults(handler=cmd_eval)
    valp = sub.add_parser("validate", help="replay records and check them field by field")
    valp.add_argument("files", nargs="+", metavar="FILE", help="records files (JSON Lines)")
    valp.add_argument("--quiet", action="store_true", help="print only mismatches")
    valp.set_defaults(handler=cmd_validate)
    lbp = sub.add_parser("leaderboard", help="run a benchmark suite and write the leaderboard")
    lbp.add_argument("config", help="leaderboard config, e.g. "
                     "configs/leaderboard/cowlab-bench-v2.yaml")
    lbp.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="config overrides, e.g. executor=inprocess")
    lbp.add_argument("--quiet", action="store_true", help="no progress lines")
    lbp.set_defaults(handler=cmd_leaderboard)
    kernels = sub.add_parser("kernels", help="list kernel presets")
    kernels.add_argument("--facilities", action="store_true", help="show every facility flag")
    kernels.set_defaults(handler=cmd_kernels)
    from cowlab.selftest.command import add_parser as add_selftest_parser

    add_selftest_parser(sub, cmd_selftest)
    from cowlab.verify.command import add_parser as add_verify_parser

    add_verify_parser(sub, cmd_verify)
    from cowlab.real.command import add_parser as add_real_parser

    add_real_parser(sub, cmd_real)
    _add_plugin_commands(sub)
    return parser


class _CommandHost:
    """What ``cowlab_register_commands(cli)`` receives: ``cli.add_command(name, help=)``."""

    def __init__(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        self._sub = sub
        self._taken = set(sub.choices)

    def add_command(self, name: str, *, help: str) -> argparse.ArgumentParser:
        """A new sub-command; the plugin adds arguments and ``set_defaults(handler=fn)``."""
        if name in self._taken:
            raise ValueError(f"the command {name!r} already exists")
        self._taken.add(name)
        return self._sub.add_parser(name, help=help)


def _add_plugin_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let plugins add sub-commands (one plugin failing does not break the CLI)."""
    from cowlab.plugins import call_lifecycle

    call_lifecycle(get_registry(), "cowlab_register_commands", cli=_CommandHost(sub))


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowlab`` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # KEY=VALUE overrides given after an option (`cowlab train CFG --resume seed=3`):
        # argparse stops filling a positional list at the first option.
        if isinstance(getattr(args, "overrides", None), list) and all(
                "=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command != "plugins":  # `cowlab plugins` lists the problems itself
        # A policy missing because its plugin broke must not look like a typo.
        warn_load_problems()
    trust = getattr(args, "trust_models_global", False)
    saved = os.environ.get("COWLAB_TRUST_MODELS")
    if trust:
        # Read by the sb3 policy when it loads; only for this command (main() may be
        # called again in the same process, e.g. by tests or plugins).
        os.environ["COWLAB_TRUST_MODELS"] = "1"
    try:
        return int(handler(args))
    except (CliError, PresetError) as exc:
        print(f"cowlab: error: {exc}", file=sys.stderr)
        return exc.status if isinstance(exc, CliError) else EXIT_USAGE
    except KeyboardInterrupt:
        print("cowlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`cowlab plugins | head`): not an error of ours.
        sys.stderr.close()
        return 0
    finally:
        if trust:
            if saved is None:
                os.environ.pop("COWLAB_TRUST_MODELS", None)
            else:
                os.environ["COWLAB_TRUST_MODELS"] = saved


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
