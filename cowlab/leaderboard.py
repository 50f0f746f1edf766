"""The leaderboard: run (or reuse) a benchmark suite's records and write one board per preset.

A *suite* (``configs/suites/cowlab-bench-v2.yaml``) fixes the kernel presets, workloads,
seeds and budget; a *leaderboard config* (``configs/leaderboard/cowlab-bench-v2.yaml``)
names a suite, the entries (policies, with parameters if any) to rank, where records and
outputs go, and the executor. ``cowlab leaderboard CONFIG [key=value ...]`` sweeps every
(entry, preset, workload, seed) plus each preset's own kernel rule (records already in
the records file are reused), then writes, for every preset, a board of its own
(Markdown section, CSV, LaTeX booktabs tables, PNG and PDF figures) and a short
cross-preset summary.

Each preset's board is ranked against that preset's kernel rule (its
``default_policy``: ``baseline`` on v5.9, ``exclusive`` on v5.19, ...), never against a
rule from another era. The primary score is a run's reuse rate over truly reusable
faults (the oracle reuses all of them: 1; copying everything: 0), aggregated as the
interquartile mean over workloads x seeds with a stratified-bootstrap confidence
interval, plus the probability of improvement over the kernel rule. Statistics are in
:mod:`cowlab.stats`; docs/leaderboard.md explains them.

Every output is a deterministic function of the records: sums are exact
(:func:`math.fsum`, independent of order), the bootstrap draws from a generator seeded by
``seed``, and every number written to CSV/JSON is rounded to :data:`DIGITS` decimals, so
regenerating a board from the same records gives the same bytes.

Safety is lexicographic: an entry with any violation ranks below every entry without
one, whatever its score.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cowlab.atomicio import write_text_atomic
from cowlab.config import WorkloadEntry
from cowlab.probe import ABSENT_FACILITIES
from cowlab.records import RunSpec
from cowlab.stats import (
    iqm,
    performance_profile,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)
from cowlab.yamlfile import YamlFileError, read_yaml

__all__ = [
    "KERNEL_REFERENCE",
    "Board",
    "Entry",
    "EntryRow",
    "Leaderboard",
    "LeaderboardConfig",
    "LeaderboardError",
    "SuiteConfig",
    "analyze",
    "kernel_rule",
    "load_leaderboard_config",
    "load_suite",
    "resolve_entries",
    "run_leaderboard",
    "suite_specs",
    "write_outputs",
]

#: Decimals of every number in the CSV and JSON outputs (the tables print fewer).
DIGITS = 6
#: Executor names of a leaderboard config (``cowlab eval --executor`` takes the same).
EXECUTOR_NAMES = ("inprocess", "process", "ray")

#: ``reference: kernel`` (the default): each preset's board is ranked against that
#: preset's own kernel rule (its ``default_policy``).
KERNEL_REFERENCE = "kernel"
#: Thresholds of the performance profile (reuse rates).
PROFILE_TAUS = [round(float(t), 4) for t in np.linspace(0.0, 1.0, 51)]


class LeaderboardError(ValueError):
    """A bad suite or leaderboard config (the message names the file and key)."""


@dataclass
class SuiteConfig:
    """A versioned benchmark suite: workloads x kernel presets x seeds, fixed."""

    #: Suite id with its version (``cowlab-bench-v2``); a change gets a new version.
    name: str = MISSING
    #: One paragraph on what the suite measures.
    description: str = ""
    #: Kernel presets; each gets a board of its own.
    kernels: list[str] = field(default_factory=lambda: ["v5.19"])
    #: Workloads with their parameters (weights unused).
    workloads: list[WorkloadEntry] = field(default_factory=list)
    #: Workload seeds.
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    #: Policy decisions per run.
    max_decisions: int = 500
    #: Machine fields over the defaults (cpus, swap, ...).
    machine: dict[str, Any] = field(default_factory=dict)


@dataclass
class LeaderboardConfig:
    """``cowlab leaderboard CONFIG``: a suite, the entries to rank, outputs, executor."""

    #: Leaderboard name (titles).
    name: str = "leaderboard"
    #: The suite file (a relative path is relative to the leaderboard config's directory).
    suite: str = MISSING
    #: Policies to rank: a policy spec (a registered name, ``random:p_reuse=0.3``,
    #: ``sb3:PATH``; docs/policy-api.md) or a mapping ``{policy: SPEC, label: SHORT}``;
    #: the label is the entry's name in every table and figure (default: the spec).
    entries: list[Any] = field(default_factory=list)
    #: Display labels by policy spec (filled from the entries' ``label:``).
    labels: dict[str, str] = field(default_factory=dict)
    #: Parameters of entries, by spec (an alternative to inline ``NAME:KEY=VALUE``).
    policy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What each preset's board is ranked against: ``kernel`` (that preset's own rule,
    #: the default) or a policy spec used on every preset.
    reference: str = KERNEL_REFERENCE
    #: Output directory (tables, figures).
    output: str = "leaderboard"
    #: The records file (reused and extended).
    records: str = "${output}/records.jsonl"
    #: ``process`` (default), ``inprocess`` or ``ray``.
    executor: str = "process"
    #: Worker processes (null: one per CPU).
    workers: int | None = None
    #: Ray cluster address (null: start a local instance).
    address: str | None = None
    #: Bootstrap replicates (of the IQM's and of the probability of improvement's CI).
    bootstrap_reps: int = 2000
    #: Confidence of the intervals.
    confidence: float = 0.95
    #: Seed of the bootstrap's random generator (tables are reproducible).
    seed: int = 0


def _load(schema: type[Any], path: str | Path | None, overrides: Sequence[str],
          what: str = "leaderboard config") -> Any:
    where = str(path) if path else "<overrides>"
    try:
        node = OmegaConf.structured(schema)
        if path is not None:
            try:
                data = read_yaml(path, what=what) or {}
            except YamlFileError as exc:
                raise LeaderboardError(str(exc)) from None
            if not isinstance(data, dict):
                raise LeaderboardError(f"{where}: expected a mapping at the top level")
            node = OmegaConf.merge(node, data)
        if overrides:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(node)
    except LeaderboardError:
        raise
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "?"
        reason = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise LeaderboardError(f"{where}: {key}: {reason}") from None
    except (TypeError, ValueError) as exc:  # e.g. a list merged over a mapping
        raise LeaderboardError(f"{where}: {str(exc).splitlines()[0]}") from None
    except yaml.YAMLError as exc:  # an override that is not a YAML value
        problem = getattr(exc, "problem", None) or str(exc)
        raise LeaderboardError(f"{where}: override not a YAML value: {problem}") from None


def load_suite(path: str | Path) -> SuiteConfig:
    """Load a suite file (checked against :class:`SuiteConfig`)."""
    suite: SuiteConfig = _load(SuiteConfig, path, [], what="suite")
    if not suite.workloads or not suite.kernels or not suite.seeds:
        raise LeaderboardError(f"{path}: a suite needs workloads, kernels and seeds")
    dup = sorted({k for k in suite.kernels if suite.kernels.count(k) > 1})
    if dup:
        raise LeaderboardError(f"{path}: kernels: {', '.join(dup)} listed twice")
    return suite


def load_leaderboard_config(path: str | Path | None, overrides: Sequence[str] = ()
                            ) -> LeaderboardConfig:
    """Schema <- YAML <- ``key=value`` overrides."""
    cfg: LeaderboardConfig = _load(LeaderboardConfig, path, overrides)
    where = str(path) if path is not None else "<overrides>"
    if not cfg.entries:
        raise LeaderboardError(f"{where}: entries: list at least one policy")
    names: list[str] = []
    for i, item in enumerate(cfg.entries):
        if isinstance(item, str) and item:
            names.append(item)
            continue
        if isinstance(item, Mapping) and set(item) <= {"policy", "label"} and isinstance(
                item.get("policy"), str) and item["policy"]:
            names.append(item["policy"])
            if item.get("label") is not None:
                if not isinstance(item["label"], str) or not item["label"]:
                    raise LeaderboardError(f"{where}: entries[{i}].label: expected a string")
                cfg.labels[item["policy"]] = item["label"]
            continue
        raise LeaderboardError(f"{where}: entries[{i}]: expected a policy spec or "
                               f"{{policy: SPEC, label: SHORT}}, got {item!r}")
    cfg.entries = names
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LeaderboardError(f"{where}: entries: {', '.join(dup)} listed twice")
    for key in cfg.labels:
        if key not in names:
            raise LeaderboardError(f"{where}: labels.{key}: not an entry")
    shown = [cfg.labels.get(n, n) for n in names]
    dup = sorted({x for x in shown if shown.count(x) > 1})
    if dup:
        raise LeaderboardError(f"{where}: entries: the label(s) {', '.join(dup)} name "
                               "more than one entry")
    if not isinstance(cfg.reference, str) or not cfg.reference:
        raise LeaderboardError(f"{where}: reference: expected '{KERNEL_REFERENCE}' (each "
                               f"preset's own rule) or a policy spec, got {cfg.reference!r}")
    if cfg.executor == "local":
        warnings.warn(f"{where}: executor: 'local' is deprecated, use 'process'",
                      DeprecationWarning, stacklevel=2)
        cfg.executor = "process"
    if cfg.executor not in EXECUTOR_NAMES:
        raise LeaderboardError(f"{where}: executor: expected one of "
                               f"{', '.join(EXECUTOR_NAMES)}, got {cfg.executor!r}")
    if cfg.bootstrap_reps < 1:
        raise LeaderboardError(f"{where}: bootstrap_reps: must be at least 1, "
                               f"got {cfg.bootstrap_reps}")
    if not 0.0 < cfg.confidence < 1.0:
        raise LeaderboardError(f"{where}: confidence: must be between 0 and 1 "
                               f"(exclusive), got {cfg.confidence}")
    if cfg.seed < 0:
        raise LeaderboardError(f"{where}: seed: must not be negative, got {cfg.seed}")
    if cfg.workers is not None and cfg.workers < 1:
        raise LeaderboardError(f"{where}: workers: must be at least 1, got {cfg.workers}")
    suite_override = any(o.partition("=")[0].strip() == "suite" for o in overrides)
    if path is not None and not suite_override and not Path(cfg.suite).is_absolute():
        cfg.suite = os.path.normpath(Path(path).parent / cfg.suite)
    return cfg


# ------------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class Entry:
    """One ranked policy: its spec as written, and the run config a record stores."""

    #: The spec as the config wrote it (``random:p_reuse=0.3``): the entry's identity.
    spec: str
    #: The record's ``config.policy`` (``random``; ``sb3:PATH`` keeps its path).
    policy: str
    #: The record's ``config.policy_params`` (checked and converted).
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Display name in tables and figures.
    label: str = ""

    @property
    def shown(self) -> str:
        """The label, or the spec."""
        return self.label or self.spec

    @property
    def identity(self) -> str:
        """Two entries with the same identity are the same runs."""
        return json.dumps([self.policy, dict(self.params)], sort_keys=True, default=str)


def _entry(spec: str, params: Mapping[str, Any] | None = None, label: str = "",
           where: str = "") -> Entry:
    """``spec`` resolved to the (policy, params) its records carry.

    A spec with ``:`` or parameters is resolved through the plugin registry (checked
    against the registration's params dataclass); a plain name is taken as it is.
    """
    if ":" not in spec and not params:
        return Entry(spec, spec, {}, label)
    from cowlab.plugins import PluginError, get_registry

    try:
        policy, canon = get_registry().canonical_policy(spec, params, where=where)
    except PluginError as exc:
        raise LeaderboardError(str(exc)) from None
    return Entry(spec, policy, canon, label)


def kernel_rule(kernel: str) -> str:
    """The kernel preset's own reuse rule (its ``default_policy``)."""
    from cowlab.kernels import resolve_kernel

    try:
        return resolve_kernel(kernel).default_policy
    except ValueError as exc:
        raise LeaderboardError(str(exc)) from None


def resolve_entries(entries: Sequence[str | Entry], *,
                    policy_params: Mapping[str, Mapping[str, Any]] | None = None,
                    labels: Mapping[str, str] | None = None, where: str = "entries"
                    ) -> list[Entry]:
    """The entries of a config, each resolved (:class:`Entry`); two specs naming the
    same runs (``random:p_reuse=0.3`` and ``random:p_reuse=0.30``) are an error."""
    out: list[Entry] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(entries):
        if isinstance(item, Entry):
            entry = item
        else:
            entry = _entry(item, (policy_params or {}).get(item), (labels or {}).get(item, ""),
                           where=f"{where}[{i}]")
        if entry.identity in seen:
            raise LeaderboardError(f"{where}[{i}]: {entry.spec!r} names the same runs as "
                                   f"{seen[entry.identity]!r}")
        seen[entry.identity] = entry.spec
        out.append(entry)
    return out


def _reference_entry(reference: str, kernel: str, entries: Sequence[Entry]) -> Entry:
    """The entry a preset's board is ranked against (one of ``entries`` if listed)."""
    spec = kernel_rule(kernel) if reference == KERNEL_REFERENCE else reference
    ref = _entry(spec, where="reference")
    for e in entries:
        if e.identity == ref.identity:
            return e
    return ref


def _spec(entry: Entry, suite: SuiteConfig, kernel: str, w: WorkloadEntry, seed: int
          ) -> RunSpec:
    return RunSpec(policy=entry.policy, kernel=kernel, workload=w.name, seed=seed,
                   max_decisions=suite.max_decisions, policy_params=dict(entry.params),
                   workload_params=dict(w.params), machine=dict(suite.machine))


def suite_specs(suite: SuiteConfig, policies: Sequence[str | Entry],
                policy_params: Mapping[str, Mapping[str, Any]] | None = None,
                reference: str = KERNEL_REFERENCE) -> list[RunSpec]:
    """Every run of ``policies`` on the suite, plus each preset's reference (its kernel
    rule) on that preset."""
    entries = resolve_entries(policies, policy_params=policy_params)
    specs: dict[str, RunSpec] = {}
    for k in suite.kernels:
        ref = _reference_entry(reference, k, entries)
        for e in [*entries, ref]:
            for w in suite.workloads:
                for s in suite.seeds:
                    spec = _spec(e, suite, k, w, s)
                    specs.setdefault(spec.key, spec)
    return list(specs.values())


# ------------------------------------------------------------------------------ analysis


@dataclass
class EntryRow:
    """One entry's figures on one preset."""

    entry: str
    kind: str
    #: Runs (workloads x seeds).
    runs: int
    #: Runs with a reuse rate (at least one truly reusable fault); the others are
    #: excluded from the scores and counted in ``unscored``.
    scored: int
    #: IQM of the reuse rate over truly reusable faults, with its CI.
    iqm: float
    ci_low: float
    ci_high: float
    #: P(this entry's reuse rate > the reference's), with its CI.
    poi: float
    poi_low: float
    poi_high: float
    #: Mean reuse rate over the scored runs.
    reuse_rate: float
    violations: int
    violations_by_kind: dict[str, int]
    runs_with_violations: int
    mean_latency_us: float
    p99_latency_us: float
    extra_pages: float
    #: Unnecessary copies (copies of truly exclusive pages) by what blocked reuse.
    blockers: dict[str, int]
    #: Reuse rates by workload (the bootstrap's strata).
    scores: dict[str, list[float]]
    profile: list[float]
    per_workload: dict[str, dict[str, float]]
    #: Facilities this preset lacks that the policy read: ``{attribute: faults}``.
    absent_reads: dict[str, int] = field(default_factory=dict)
    #: Display name in tables and figures (the config's ``label:``, default the spec).
    label: str = ""
    #: The record's policy name and parameters.
    policy: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    #: This row is the board's reference (the preset's kernel rule by default).
    reference: bool = False

    @property
    def safe(self) -> bool:
        """No violation in any run."""
        return self.violations == 0

    @property
    def unscored(self) -> int:
        """Runs without a truly reusable fault (no reuse rate): excluded, counted."""
        return self.runs - self.scored

    @property
    def shown(self) -> str:
        """The display name."""
        return self.label or self.entry


@dataclass
class Board:
    """One preset's board: rows ranked, safe entries first, against its kernel rule."""

    name: str
    suite: SuiteConfig
    kernel: str
    #: The reference entry's spec (the preset's kernel rule by default).
    reference: str
    confidence: float
    rows: list[EntryRow]
    workloads: list[str]
    command: str = ""
    #: Display labels by spec (entries without one show their spec).
    labels: dict[str, str] = field(default_factory=dict)
    #: Bootstrap replicates behind the intervals.
    reps: int = 0
    #: The preset's own rule (its default policy).
    kernel_rule: str = ""

    def label(self, policy: str) -> str:
        """The display name of ``policy``."""
        return self.labels.get(policy, policy)

    @property
    def missing_facilities(self) -> list[str]:
        """The probed facilities (:data:`cowlab.probe.ABSENT_FACILITIES`) this preset
        lacks."""
        from cowlab.kernels import resolve_kernel

        config = resolve_kernel(self.kernel)
        return [attr for attr, (flag, *_rest) in ABSENT_FACILITIES.items()
                if not getattr(config, flag)]


@dataclass
class Leaderboard:
    """Every preset's board, in the suite's order, and what they share."""

    name: str
    suite: SuiteConfig
    boards: list[Board]
    confidence: float
    reps: int
    #: The entries' specs in config order (colours and markers follow this order).
    entries: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    command: str = ""

    def board(self, kernel: str) -> Board:
        """The board of ``kernel``."""
        for b in self.boards:
            if b.kernel == kernel:
                return b
        raise KeyError(kernel)

    def order(self) -> list[str]:
        """Entries in config order, then every preset's reference not among them."""
        out = list(self.entries)
        for b in self.boards:
            if b.reference not in out:
                out.append(b.reference)
        return out


def _label(entry: WorkloadEntry, suite: SuiteConfig) -> str:
    same = [w for w in suite.workloads if w.name == entry.name]
    if len(same) == 1 or not entry.params:
        return entry.name
    return entry.name + "(" + ",".join(f"{k}={v}" for k, v in sorted(entry.params.items())) + ")"


def _mean(values: Sequence[float]) -> float:
    """Exact mean (math.fsum): independent of the order of the values."""
    return math.fsum(values) / len(values) if values else math.nan


def _analyze_kernel(suite: SuiteConfig, kernel: str, entries: Sequence[Entry],
                    by_key: Mapping[str, Mapping[str, Any]], *, reference: str, reps: int,
                    confidence: float, seed: int, name: str) -> Board:
    ref = _reference_entry(reference, kernel, entries)
    rows: list[EntryRow] = []
    rates_of: dict[str, dict[str, list[float]]] = {}
    for entry in [*entries, *([] if ref in entries else [ref])]:
        scores: dict[str, list[float]] = defaultdict(list)
        per_wl: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        lat: list[float] = []
        p99: list[float] = []
        extra: list[float] = []
        viol: Counter[str] = Counter()
        blockers: Counter[str] = Counter()
        absent: Counter[str] = Counter()
        bad_runs = 0
        runs = 0
        kind = "kernel"
        for w in suite.workloads:
            label = _label(w, suite)
            for s in suite.seeds:
                spec = _spec(entry, suite, kernel, w, s)
                try:
                    r = by_key[spec.key]
                except KeyError:
                    raise LeaderboardError(
                        f"no record of {entry.spec} on {w.name} / {kernel} / seed {s}: "
                        "run the suite") from None
                runs += 1
                m = r["metrics"]
                kind = r["policy"]["kind"]
                rate = m["reuse_rate"]
                if rate is not None:
                    scores[label].append(float(rate))
                    per_wl[label]["reuse_rate"].append(float(rate))
                per_wl[label]["violations"].append(m["violations_total"])
                per_wl[label]["unnecessary_copies"].append(m["unnecessary_copies"])
                lat.append(m["mean_latency_ns"] / 1000)
                p99.append(m["p99_latency_ns"] / 1000)
                extra.append(m["extra_pages"])
                viol.update(m["violations"])
                bad_runs += m["violations_total"] > 0
                blockers.update(m["unnecessary_copies_by_blocker"])
                absent.update(r.get("absent_facility_reads") or {})
        rates_of[entry.spec] = dict(scores)
        point, low, high = stratified_bootstrap_ci(scores, iqm, reps=reps,
                                                   confidence=confidence, seed=seed)
        rows.append(EntryRow(
            label=entry.label, entry=entry.spec, policy=entry.policy, params=dict(entry.params),
            kind=kind, runs=runs, scored=sum(len(v) for v in scores.values()),
            iqm=point, ci_low=low, ci_high=high,
            poi=math.nan, poi_low=math.nan, poi_high=math.nan,
            reuse_rate=_mean([x for v in scores.values() for x in v]),
            violations=sum(viol.values()),
            violations_by_kind={k: v for k, v in sorted(viol.items()) if v},
            runs_with_violations=bad_runs, mean_latency_us=_mean(lat),
            p99_latency_us=_mean(p99), extra_pages=_mean(extra),
            blockers=dict(sorted(blockers.items())), scores=dict(scores),
            profile=performance_profile(scores, PROFILE_TAUS),
            absent_reads={k: v for k, v in sorted(absent.items()) if v},
            reference=entry.identity == ref.identity,
            per_workload={
                wl: {
                    "reuse_rate": _mean(v["reuse_rate"]),
                    "violations": float(sum(v["violations"])),
                    "unnecessary_copies": _mean(v["unnecessary_copies"]),
                }
                for wl, v in per_wl.items()
            },
        ))
    for row in rows:
        row.poi, row.poi_low, row.poi_high = probability_of_improvement_ci(
            row.scores, rates_of[ref.spec], reps=reps, confidence=confidence, seed=seed)
    # Safety first; then the IQM; IQMs tie at 1 when fewer than a quarter of the runs
    # miss reusable faults, so the mean reuse rate breaks ties, then the name.
    rows.sort(key=lambda r: (not r.safe, -r.iqm if not math.isnan(r.iqm) else math.inf,
                             -r.reuse_rate if not math.isnan(r.reuse_rate) else math.inf,
                             r.shown))
    labels = {e.spec: e.label for e in [*entries, ref] if e.label}
    return Board(name=f"{name} on {kernel}", suite=suite, kernel=kernel, reference=ref.spec,
                 confidence=confidence, rows=rows,
                 workloads=[_label(w, suite) for w in suite.workloads], labels=labels,
                 reps=reps, kernel_rule=kernel_rule(kernel))


def analyze(suite: SuiteConfig, entries: Sequence[str | Entry],
            records: Sequence[Mapping[str, Any]], *, reference: str = KERNEL_REFERENCE,
            reps: int = 2000, confidence: float = 0.95, seed: int = 0,
            policy_params: Mapping[str, Mapping[str, Any]] | None = None,
            name: str = "leaderboard", labels: Mapping[str, str] | None = None
            ) -> Leaderboard:
    """One board per preset of the suite: scores, intervals and the safety-first ranking
    of ``entries`` against that preset's reference (its kernel rule by default).

    Raises:
        LeaderboardError: A run of the suite (an entry's or a reference's) has no record.
    """
    resolved = resolve_entries(entries, policy_params=policy_params, labels=labels)
    by_key = {RunSpec.from_dict(r["config"]).key: r for r in records}
    boards = [_analyze_kernel(suite, k, resolved, by_key, reference=reference, reps=reps,
                              confidence=confidence, seed=seed, name=name)
              for k in suite.kernels]
    return Leaderboard(name=name, suite=suite, boards=boards, confidence=confidence, reps=reps,
                       entries=[e.spec for e in resolved],
                       labels={e.spec: e.label for e in resolved if e.label})


# ------------------------------------------------------------------------------- outputs

MAIN_COLUMNS = ["rank", "entry", "policy", "policy_params", "kind", "reference", "safe",
                "reuse_rate_iqm", "ci_low", "ci_high", "p_improve", "p_improve_low",
                "p_improve_high", "reuse_rate_mean", "runs", "runs_scored", "violations",
                "runs_with_violations", "absent_facilities_read", "mean_latency_us",
                "p99_latency_us", "extra_pages"]


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _violations_text(row: EntryRow) -> str:
    if row.safe:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in row.violations_by_kind.items())
    return f"{row.violations} ({kinds}; {row.runs_with_violations}/{row.runs} runs)"


def _absent_text(row: EntryRow, *, short: bool = False) -> str:
    """The facilities the preset lacks that the entry read, e.g.
    ``PageAnonExclusive (v5.19+) at 3000 faults``; ``-`` for none."""
    if not row.absent_reads:
        return "-"
    parts = []
    for attr, n in row.absent_reads.items():
        _flag, what, since, _commit = ABSENT_FACILITIES.get(attr, (attr, attr, "?", ""))
        parts.append(what if short else f"{what} ({since}+) at {n} faults")
    return "; ".join(parts)


def _absent_csv(row: EntryRow) -> str:
    return ";".join(f"{k}:{v}" for k, v in row.absent_reads.items())


def _role(board: Board, row: EntryRow) -> str:
    if not row.reference:
        return ""
    return " (kernel rule)" if row.entry == board.kernel_rule else " (reference)"


def _rank(i: int, row: EntryRow) -> str:
    return str(i) if row.safe else f"{i} (unsafe)"


def main_header(board: Board) -> list[str]:
    """Column titles of a preset's main table."""
    pct = round(100 * board.confidence)
    return ["rank", "entry", "kind", f"reuse rate IQM [{pct}% CI]",
            f"P(> {board.label(board.reference)}) [{pct}% CI]", "mean reuse rate",
            "violations", "absent facility read", "mean latency (us)", "p99 latency (us)",
            "extra pages / run", "runs scored"]


def main_rows(board: Board) -> list[list[str]]:
    """A preset's main table's cells, ranked (strings, for every format)."""
    out = []
    for i, r in enumerate(board.rows, start=1):
        poi = ("reference" if r.reference else
               f"{_f(r.poi, 2)} [{_f(r.poi_low, 2)}, {_f(r.poi_high, 2)}]")
        out.append([
            _rank(i, r), r.shown + _role(board, r), r.kind,
            f"{_f(r.iqm)} [{_f(r.ci_low)}, {_f(r.ci_high)}]", poi, _f(r.reuse_rate, 4),
            _violations_text(r), _absent_text(r), _f(r.mean_latency_us, 2),
            _f(r.p99_latency_us, 2), _f(r.extra_pages, 1), f"{r.scored}/{r.runs}",
        ])
    return out


def per_workload_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a preset's per-workload table (mean reuse rate / violations)."""
    header = ["entry", *board.workloads]
    rows = []
    for r in board.rows:
        cells = [r.shown + _role(board, r)]
        for wl in board.workloads:
            d = r.per_workload.get(wl, {})
            cells.append(f"{_f(d.get('reuse_rate', math.nan))} / {int(d.get('violations', 0))}")
        rows.append(cells)
    return header, rows


def _blocker_names(board: Board) -> list[str]:
    return sorted({b for r in board.rows for b in r.blockers})


def blocker_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a preset's per-blocker table: unnecessary copies per run (copies
    of truly exclusive pages) by what blocked reuse."""
    names = _blocker_names(board)
    header = ["entry", *names, "total"]
    rows = []
    for r in board.rows:
        cells = [r.shown + _role(board, r)]
        cells += [_f(r.blockers.get(b, 0) / r.runs, 2) for b in names]
        cells.append(_f(sum(r.blockers.values()) / r.runs, 2))
        rows.append(cells)
    return header, rows


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters.

        >>> latex_escape("sb3:a_b/model.zip 50%")
        'sb3:a\\\\_b/model.zip 50\\\\%'
    """
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


_MINUS = re.compile(r"(?<![\w.])-(?=\d)")


def _breakable(text: str) -> str:
    """Let LaTeX break a line after ``/`` and ``_`` (long paths in captions)."""
    return text.replace("/", "/\\allowbreak{}").replace("\\_", "\\_\\allowbreak{}")


def _latex_number(cell: str) -> str:
    """A numeric cell in LaTeX: escaped, with a math-mode minus sign."""
    return _MINUS.sub("$-$", latex_escape(cell))


def _latex_table(header: Sequence[str], rows: Sequence[Sequence[str]], *,
                 numeric: Sequence[bool], caption: str, label: str,
                 fit: str | None = "\\columnwidth", wide: bool = False,
                 size: str = "\\small", colsep: str | None = None) -> str:
    """A booktabs table: text columns left-aligned, numeric ones right-aligned.

    ``header`` cells are LaTeX already (math-mode symbols); body cells are escaped.
    ``fit`` shrinks the tabular to that width when it is wider (``\\resizebox``,
    needs graphicx), so it never overflows; ``wide`` makes a ``table*`` spanning both
    columns of a two-column page.
    """
    cols = "".join("r" if n else "l" for n in numeric)
    env = "table*" if wide else "table"
    lines = [
        "% Generated by cowlab leaderboard; needs \\usepackage{booktabs}"
        + (" and \\usepackage{graphicx}." if fit else "."),
        f"\\begin{{{env}}}[t]", "\\centering", size,
        f"\\caption{{{_breakable(latex_escape(caption))}}}", f"\\label{{{label}}}",
    ]
    if colsep:
        lines.append(f"\\setlength{{\\tabcolsep}}{{{colsep}}}")
    if fit:
        # shrink to ``fit`` only when wider (never blow a small table up)
        lines.append(f"\\resizebox{{\\ifdim\\width>{fit}{fit}\\else\\width\\fi}}{{!}}{{%")
    lines += [f"\\begin{{tabular}}{{@{{}}{cols}@{{}}}}", "\\toprule",
              " & ".join(header) + " \\\\", "\\midrule"]
    lines += [" & ".join(_latex_number(c) if n else latex_escape(c)
                         for c, n in zip(row, numeric, strict=True)) + " \\\\"
              for row in rows]
    lines += ["\\bottomrule", "\\end{tabular}" + ("}" if fit else ""), f"\\end{{{env}}}", ""]
    return "\n".join(lines)


def _latex_violations(row: EntryRow) -> str:
    return "0" if row.safe else f"{row.violations} in {row.runs_with_violations}/{row.runs} runs"


def _tex_label(board: Board, what: str) -> str:
    return f"tab:leaderboard-{what}-{re.sub(r'[^A-Za-z0-9.-]', '-', board.kernel)}"


def main_latex(board: Board) -> str:
    """A preset's main table in LaTeX, scaled to one column of a two-column page."""
    pct = round(100 * board.confidence)
    ref = latex_escape(board.label(board.reference))
    header = ["Rank", "Entry", "Kind", f"Reuse rate IQM [{pct}\\% CI]",
              f"$P(>$\\,{ref}$)$", "Mean reuse", "Violations", "Absent facility read",
              "Mean lat.\\ ($\\mu$s)", "p99 lat.\\ ($\\mu$s)", "Extra pages"]
    rows = []
    for i, r in enumerate(board.rows, start=1):
        cells = main_rows(board)[i - 1]
        rows.append([str(i) if r.safe else f"{i}*", cells[1], cells[2], cells[3],
                     "ref." if r.reference else _f(r.poi, 2), cells[5],
                     _latex_violations(r), _absent_text(r, short=True), cells[8], cells[9],
                     cells[10]])
    numeric = [True, False, False, True, True, True, True, False, True, True, True]
    return _latex_table(header, rows, numeric=numeric, caption=_main_caption(board),
                        label=_tex_label(board, "main"))


def main_narrow_latex(board: Board) -> str:
    """A narrow main table (rank, entry, IQM, CI, P(>ref), violations) for one column
    (natural size with short labels; shrunk to the column if still wider)."""
    pct = round(100 * board.confidence)
    ref = board.label(board.reference)
    header = ["Rank", "Entry", "IQM", f"{pct}\\% CI", "$P(>$ref.$)$", "Viol."]
    rows = [[str(i) if r.safe else f"{i}*",
             r.shown + (" (+)" if r.absent_reads else ""),
             _f(r.iqm, 2), f"[{_f(r.ci_low, 2)}, {_f(r.ci_high, 2)}]",
             "ref." if r.reference else _f(r.poi, 2), str(r.violations)]
            for i, r in enumerate(board.rows, start=1)]
    caption = (f"{_main_caption(board)} P(>ref.): probability of improvement over {ref}; "
               "Viol.: violations; (+): read a facility this preset lacks.")
    return _latex_table(header, rows, numeric=[True, False, True, True, True, True],
                        caption=caption, label=_tex_label(board, "narrow"),
                        size="\\footnotesize", colsep="4pt")


def per_workload_latex(board: Board) -> str:
    """A preset's per-workload table in LaTeX, spanning both columns (``table*``)."""
    header, rows = per_workload_rows(board)
    tex_header = ["Entry", *(latex_escape(h) for h in header[1:])]
    return _latex_table(
        tex_header, rows, numeric=[False] + [True] * (len(header) - 1),
        caption=f"{board.name} per workload: mean reuse rate over truly reusable faults / "
                "violations (over seeds).",
        label=_tex_label(board, "workloads"), fit="\\textwidth", wide=True)


def _main_caption(board: Board) -> str:
    pct = round(100 * board.confidence)
    return (f"{board.name} (kernel rule: {board.kernel_rule}): reuse rate over truly "
            f"reusable faults (oracle 1, always-copy 0), IQM over workloads x seeds with "
            f"{pct}% stratified-bootstrap CI. *: unsafe. {SAFETY_NOTE}")


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _suite_text(suite: SuiteConfig) -> str:
    s = suite
    wl = ", ".join(
        f"{w.name}" + (f" ({', '.join(f'{k}={v}' for k, v in w.params.items())})"
                       if w.params else "") for w in s.workloads)
    return (f"Suite `{s.name}`: kernel presets {', '.join(s.kernels)}; workloads {wl}; "
            f"seeds {s.seeds[0]}..{s.seeds[-1]} ({len(s.seeds)}); "
            f"{s.max_decisions} decisions per run.")


SAFETY_NOTE = ("Safety is lexicographic: an entry with any violation (leak or "
               "pin_incoherent) ranks below every entry without one, whatever its score.")


def have_matplotlib() -> bool:
    """Whether the figures can be drawn (matplotlib, the ``leaderboard`` extra)."""
    return importlib.util.find_spec("matplotlib") is not None


FIGURES_NEED = ("figures need matplotlib: pip install -c constraints.txt 'cowlab[leaderboard]'")


def _statistics_text(lb: Leaderboard) -> str:
    pct = round(100 * lb.confidence)
    return (
        "Score: each run's reuse rate over truly reusable faults (the oracle reuses all of "
        "them: 1; copying everything: 0; a run without a truly reusable fault has no "
        "score and is counted in `runs scored`). Per preset: interquartile mean (IQM) "
        f"over all its workloads x seeds, with a {pct}% percentile interval from "
        f"{lb.reps} stratified-bootstrap replicates (seeds resampled within each "
        "workload; generator seeded). P(> rule): probability that a run of the entry "
        "reuses more than a run of the preset's kernel rule on the same workload (ties "
        "count half), averaged over workloads, with its bootstrap interval. `absent "
        "facility read`: the entry read state this preset does not have (e.g. "
        "PageAnonExclusive before v5.19) and got none; it still ran. Latency, p99 and "
        "extra pages are means over runs. docs/leaderboard.md explains the statistics.")


def _board_markdown(board: Board, *, figures: bool, prefix: str) -> list[str]:
    header, rows = per_workload_rows(board)
    bheader, brows = blocker_rows(board)
    missing = board.missing_facilities
    lacks = (", ".join(ABSENT_FACILITIES[a][1] for a in missing) if missing else "none")
    parts = [
        f"## {board.kernel}", "",
        f"Kernel rule: `{board.kernel_rule}` (the preset's default policy); ranked against "
        f"`{board.label(board.reference)}`. Facilities this preset lacks that policies may "
        f"ask for: {lacks}.", "",
        _markdown_table(main_header(board), main_rows(board)), "",
        f"### {board.kernel}: per workload", "",
        "Each cell: mean reuse rate over truly reusable faults / violations (over seeds).", "",
        _markdown_table(header, rows), "",
        f"### {board.kernel}: what blocked reuse", "",
        "Unnecessary copies (copies of truly exclusive pages) per run, by the blocker the "
        "kernel's state showed.", "",
        _markdown_table(bheader, brows), "",
    ]
    if figures:
        parts += [f"![{board.kernel}: performance profiles]({prefix}profiles.png)", "",
                  f"![{board.kernel}: unnecessary copies by blocker]({prefix}blockers.png)", "",
                  f"Vector versions: `{prefix}profiles.pdf`, `{prefix}blockers.pdf`.", ""]
    return parts


def summary_rows(lb: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """The cross-preset summary: each entry's IQM [CI] and rank on every preset."""
    header = ["entry", *(f"{b.kernel} (rule: {b.kernel_rule})" for b in lb.boards)]
    rows = []
    for spec in lb.order():
        cells = [lb.labels.get(spec, spec)]
        for b in lb.boards:
            found = [(i, r) for i, r in enumerate(b.rows, start=1) if r.entry == spec]
            if not found:
                cells.append("-")
                continue
            i, r = found[0]
            marks = ("" if r.safe else ", unsafe") + (", absent facility" if r.absent_reads
                                                     else "")
            role = " **rule**" if r.reference and r.entry == b.kernel_rule else ""
            cells.append(f"{_f(r.iqm)} [{_f(r.ci_low)}, {_f(r.ci_high)}] (#{i}{marks}){role}")
        rows.append(cells)
    return header, rows


def summary_csv(lb: Leaderboard) -> str:
    """Every entry on every preset, one row each (the cross-preset summary as CSV)."""
    rows: list[list[object]] = []
    for b in lb.boards:
        for i, r in enumerate(b.rows, start=1):
            rows.append([b.kernel, b.kernel_rule, i, r.shown, r.entry, r.reference, r.safe,
                         r.iqm, r.ci_low, r.ci_high, r.poi, r.violations, _absent_csv(r)])
    return _csv(["kernel", "kernel_rule", "rank", "entry", "policy_spec", "reference", "safe",
                 "reuse_rate_iqm", "ci_low", "ci_high", "p_improve", "violations",
                 "absent_facilities_read"], cast(list[list[object]], _round(rows)))


def markdown(lb: Leaderboard, *, figures: bool = True) -> str:
    """The Markdown report: the cross-preset summary, then one section per preset."""
    header, rows = summary_rows(lb)
    parts = [
        f"# {lb.name}", "", _suite_text(lb.suite), "", _statistics_text(lb), "",
        f"**{SAFETY_NOTE}**", "",
        "## Summary across presets", "",
        "Reuse rate IQM [CI] of each entry on each preset, its rank there, and whether it "
        "was unsafe or read a facility the preset lacks; **rule** marks the preset's own "
        "kernel rule, the reference of that preset's board.", "",
        _markdown_table(header, rows), "",
    ]
    if figures:
        parts += ["![Reuse rate IQM by preset](summary.png)", "",
                  "Vector version: `summary.pdf`.", ""]
    else:
        parts += [f"Figures not drawn: {FIGURES_NEED}.", ""]
    for b in lb.boards:
        parts += _board_markdown(b, figures=figures, prefix=f"{_dirname(b.kernel)}/")
    if lb.command:
        parts += ["## Regenerate", "", "```", lb.command, "```", ""]
    return "\n".join(parts)


def _dirname(kernel: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", kernel)


def _round(obj: object) -> object:
    """Floats rounded to :data:`DIGITS` decimals, recursively (NaN stays NaN)."""
    if isinstance(obj, float):
        return obj if math.isnan(obj) or math.isinf(obj) else round(obj, DIGITS) + 0.0
    if isinstance(obj, Mapping):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


def main_csv(board: Board) -> str:
    """A preset's main table as CSV (numbers rounded to :data:`DIGITS` decimals)."""
    rows: list[list[object]] = []
    for i, r in enumerate(board.rows, start=1):
        rows.append([i, r.shown, r.policy,
                     json.dumps(r.params, sort_keys=True, default=str) if r.params else "",
                     r.kind, r.reference, r.safe, r.iqm, r.ci_low, r.ci_high, r.poi,
                     r.poi_low, r.poi_high, r.reuse_rate, r.runs, r.scored, r.violations,
                     r.runs_with_violations, _absent_csv(r), r.mean_latency_us,
                     r.p99_latency_us, r.extra_pages])
    return _csv(MAIN_COLUMNS, cast(list[list[object]], _round(rows)))


def per_workload_csv(board: Board) -> str:
    """A preset's per-workload table as CSV (one row per entry and workload)."""
    rows: list[list[object]] = []
    for r in board.rows:
        for wl in board.workloads:
            d = r.per_workload.get(wl, {})
            rows.append([r.shown, wl, d.get("reuse_rate"), d.get("violations"),
                         d.get("unnecessary_copies")])
    return _csv(["entry", "workload", "reuse_rate_mean", "violations",
                 "unnecessary_copies_mean"], cast(list[list[object]], _round(rows)))


def blockers_csv(board: Board) -> str:
    """A preset's per-blocker table as CSV: unnecessary copies per run by blocker."""
    rows: list[list[object]] = []
    for r in board.rows:
        for b in _blocker_names(board):
            rows.append([r.shown, b, r.blockers.get(b, 0) / r.runs])
    return _csv(["entry", "blocker", "unnecessary_copies_per_run"],
                cast(list[list[object]], _round(rows)))


# ------------------------------------------------------------------------------- figures

#: Entry colours (colour-blind-friendly first, then distinct extras) and markers; an
#: entry keeps its colour and marker in every figure (by its place in the config).
_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C564B",
            "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#2CA02C", "#FF9896", "#393B79",
            "#AD494A"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p", "d", "8", "H", "1"]
#: The kernel rule's style in every figure: black, thick, star.
_RULE_COLOUR = "#000000"
_SAVE: dict[str, dict[str, Any]] = {"png": {"dpi": 150, "metadata": {"Software": None}},
         "pdf": {"metadata": {"Creator": None, "Producer": None, "CreationDate": None}}}


def _styles(lb: Leaderboard) -> dict[str, tuple[str, str]]:
    return {spec: (_COLOURS[i % len(_COLOURS)],
                   _MARKERS[(i + i // len(_COLOURS)) % len(_MARKERS)])
            for i, spec in enumerate(lb.order())}


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = []
    for ext, kwargs in _SAVE.items():
        path = out / f"{stem}.{ext}"
        tmp = out / f".{stem}.tmp.{ext}"
        fig.savefig(tmp, bbox_inches="tight", format=ext, **kwargs)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def _legend_name(board: Board, r: EntryRow) -> str:
    name = r.shown + _role(board, r)
    if not r.safe:
        name += " [UNSAFE]"
    if r.absent_reads:
        name += " [reads " + _absent_text(r, short=True) + "]"
    return name


def _profiles_figure(plt: Any, lb: Leaderboard, board: Board, out: Path) -> list[Path]:
    styles = _styles(lb)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for j, r in enumerate(board.rows):
        colour, marker = styles[r.entry]
        rule = r.reference
        ax.plot(PROFILE_TAUS, r.profile, linestyle="-" if r.safe else (0, (4, 2)),
                color=_RULE_COLOUR if rule else colour, marker="*" if rule else marker,
                markersize=11 if rule else 6, linewidth=3.0 if rule else 1.5,
                markevery=(j % 5, 5), zorder=10 if rule else 2,
                markerfacecolor="none" if not r.safe else (_RULE_COLOUR if rule else colour),
                label=_legend_name(board, r))
    ax.set_xlabel("reuse-rate threshold \u03c4 (fraction of truly reusable faults reused)")
    ax.set_ylabel("fraction of runs with reuse rate > \u03c4")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{board.kernel} (kernel rule: {board.kernel_rule}): performance profiles\n"
                 "dashed, hollow markers: unsafe; black stars: the kernel rule", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
              frameon=False)
    paths = _save(fig, out, "profiles")
    plt.close(fig)
    return paths


#: Blocker colours: no red (red marks unsafe entries in this figure).
_BLOCKER_COLOURS = ["#1F77B4", "#FF7F0E", "#2CA02C", "#9467BD", "#8C564B", "#E377C2",
                    "#7F7F7F", "#BCBD22", "#17BECF"]
_HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||"]


def _blockers_figure(plt: Any, board: Board, out: Path) -> list[Path]:
    names = [r.shown + _role(board, r) + ("" if r.safe else " [UNSAFE]") for r in board.rows]
    blockers = _blocker_names(board)
    legend_rows = math.ceil(len(blockers) / 4) if blockers else 0
    height = 0.38 * len(names) + 1.8 + 0.3 * legend_rows
    fig, ax = plt.subplots(figsize=(7.5, height))
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for j, b in enumerate(blockers):
        vals = np.array([r.blockers.get(b, 0) / r.runs for r in board.rows], dtype=float)
        ax.barh(y, vals, left=left, label=b, color=_BLOCKER_COLOURS[j % len(_BLOCKER_COLOURS)],
                hatch=_HATCHES[j % len(_HATCHES)], edgecolor="white", linewidth=0.5)
        left += vals
    ax.set_yticks(y, names)
    for tick, r in zip(ax.get_yticklabels(), board.rows, strict=True):
        if r.reference:
            tick.set_fontweight("bold")
        if not r.safe:
            tick.set_color("#B00020")
    ax.invert_yaxis()
    ax.set_xlabel("unnecessary copies per run (copies of truly exclusive pages), by blocker")
    ax.set_ylabel("entry (bold: kernel rule; red: unsafe)")
    ax.set_title(f"{board.kernel} (kernel rule: {board.kernel_rule}): what blocked reuse",
                 fontsize=10)
    if blockers:
        ax.legend(title="blocker", fontsize=8, title_fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.6 / (0.75 * height)),
                  ncol=min(4, len(blockers)), frameon=False)
    paths = _save(fig, out, "blockers")
    plt.close(fig)
    return paths


def _summary_figure(plt: Any, lb: Leaderboard, out: Path) -> list[Path]:
    styles = _styles(lb)
    order = lb.order()
    n = len(lb.boards)
    height = 0.36 * len(order) + 2.1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n + 2.4, height), sharey=True,
                             squeeze=False, layout="constrained")
    y = {spec: i for i, spec in enumerate(order)}
    pct = round(100 * lb.confidence)
    for ax, b in zip(axes[0], lb.boards, strict=True):
        for r in b.rows:
            colour, marker = styles[r.entry]
            yi = y[r.entry]
            if r.reference:
                ax.axhspan(yi - 0.45, yi + 0.45, color="#FFE08A", zorder=0)
            lo = max(0.0, r.iqm - r.ci_low) if not math.isnan(r.iqm) else 0.0
            hi = max(0.0, r.ci_high - r.iqm) if not math.isnan(r.iqm) else 0.0
            ax.errorbar([r.iqm], [yi], xerr=[[lo], [hi]], fmt=marker, color=colour,
                        markersize=7, capsize=3, elinewidth=1.4,
                        markerfacecolor=colour if r.safe else "white", markeredgewidth=1.5,
                        markeredgecolor=_RULE_COLOUR if r.reference else colour, zorder=3)
            if not r.safe:
                left = not math.isnan(r.iqm) and r.iqm > 0.6
                ax.annotate("unsafe", (r.iqm if not math.isnan(r.iqm) else 0.0, yi),
                            xytext=(-8 if left else 8, 0), textcoords="offset points",
                            ha="right" if left else "left", va="center", fontsize=6.5,
                            color="#B00020")
        ax.set_title(f"{b.kernel}\n(rule: {b.kernel_rule})", fontsize=9)
        ax.set_xlim(-0.04, 1.04)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlabel(f"reuse rate IQM\n[{pct}% CI]", fontsize=8)
    axes[0][0].set_yticks(range(len(order)), [lb.labels.get(s, s) for s in order])
    axes[0][0].set_ylabel("entry")
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{lb.name}: reuse rate over truly reusable faults (oracle 1, always-copy 0)"
                 "\nshaded row: the preset's kernel rule; hollow marker + 'unsafe': any "
                 "violation", fontsize=9)
    paths = _save(fig, out, "summary")
    plt.close(fig)
    return paths


def _no_nan(obj: object) -> object:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _board_json(board: Board) -> dict[str, Any]:
    return {"kernel": board.kernel, "kernel_rule": board.kernel_rule,
            "reference": board.reference,
            "missing_facilities": board.missing_facilities,
            "entries": [{**{k: v for k, v in r.__dict__.items() if k != "scores"},
                         "safe": r.safe, "unscored": r.unscored} for r in board.rows]}


def write_outputs(lb: Leaderboard, out: str | Path, *, figures: bool | None = None
                  ) -> list[Path]:
    """Write every output file; return their paths.

    ``OUT/leaderboard.md`` (summary and one section per preset), ``OUT/summary.csv`` and
    ``OUT/summary.json``, and per preset ``OUT/<preset>/``: ``main.csv``,
    ``per_workload.csv``, ``blockers.csv``, ``main.tex``, ``main-narrow.tex``,
    ``per_workload.tex``; with matplotlib also ``summary``, ``<preset>/profiles`` and
    ``<preset>/blockers`` as PNG and PDF.

    Args:
        figures: Draw the figures (default: when matplotlib is installed). Without them
            the tables are written and the Markdown says how to get the figures.
    """
    draw = have_matplotlib() if figures is None else figures
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files: dict[Path, str] = {
        d / "leaderboard.md": markdown(lb, figures=draw),
        d / "summary.csv": summary_csv(lb),
        d / "summary.json": json.dumps(_no_nan(_round({
            "name": lb.name, "suite": lb.suite.name, "confidence": lb.confidence,
            "bootstrap_reps": lb.reps, "boards": [_board_json(b) for b in lb.boards],
        })), indent=2, allow_nan=False) + "\n",
    }
    for b in lb.boards:
        sub = d / _dirname(b.kernel)
        sub.mkdir(exist_ok=True)
        files.update({
            sub / "main.csv": main_csv(b),
            sub / "per_workload.csv": per_workload_csv(b),
            sub / "blockers.csv": blockers_csv(b),
            sub / "main.tex": main_latex(b),
            sub / "main-narrow.tex": main_narrow_latex(b),
            sub / "per_workload.tex": per_workload_latex(b),
        })
    written = []
    for path, text in files.items():
        write_text_atomic(path, text)
        written.append(path)
    if draw:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        with plt.rc_context({"pdf.fonttype": 42}):
            written += _summary_figure(plt, lb, d)
            for b in lb.boards:
                sub = d / _dirname(b.kernel)
                written += _profiles_figure(plt, lb, b, sub)
                written += _blockers_figure(plt, b, sub)
    return written


def check_names(cfg: LeaderboardConfig, suite: SuiteConfig, where: str) -> list[Entry]:
    """Resolve every entry (with its parameters), every preset's reference, the suite's
    kernels and workloads in this process, so a bad name is one located error before any
    run is dispatched. Returns the resolved entries."""
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import PluginError, get_registry

    registry = get_registry()
    for name in cfg.policy_params:
        if name not in cfg.entries:
            raise LeaderboardError(f"{where}: policy_params.{name}: not an entry")
    entries = resolve_entries(cfg.entries, policy_params=cfg.policy_params, labels=cfg.labels,
                              where=f"{where}: entries")
    for i, kernel in enumerate(suite.kernels):
        try:
            resolve_kernel(kernel, where=f"{cfg.suite}: kernels[{i}]")
        except (PluginError, ValueError) as exc:
            raise LeaderboardError(str(exc)) from None
    checked: set[str] = set()
    for i, e in enumerate(entries):
        try:
            registry.make_policy(e.policy, dict(e.params), where=f"{where}: entries[{i}]")
        except PluginError as exc:
            raise LeaderboardError(str(exc)) from None
        checked.add(e.identity)
    for kernel in suite.kernels:
        at = (f"{where}: reference" if cfg.reference != KERNEL_REFERENCE
              else f"{cfg.suite}: kernels: {kernel}'s kernel rule")
        try:
            ref = _reference_entry(cfg.reference, kernel, entries)
        except LeaderboardError as exc:
            raise LeaderboardError(f"{at}: {exc}") from None
        if ref.identity in checked:
            continue
        try:
            registry.make_policy(ref.policy, dict(ref.params), where=at)
        except PluginError as exc:
            raise LeaderboardError(str(exc)) from None
        checked.add(ref.identity)
    for i, w in enumerate(suite.workloads):
        try:
            registry.make("workload", w.name, dict(w.params),
                          where=f"{cfg.suite}: workloads[{i}]")
        except PluginError as exc:
            raise LeaderboardError(str(exc)) from None
    return entries


def run_leaderboard(cfg: LeaderboardConfig, *, command: str = "", progress: bool = True,
                    where: str = "<config>", stream: Any = None,
                    ) -> tuple[Leaderboard, list[Path]]:
    """Sweep (reusing records), analyse and write the outputs of a leaderboard config.

    Every name is checked (:func:`check_names`) and matplotlib looked for before the
    sweep starts; without matplotlib the tables are written and a warning printed.
    """
    import sys

    from cowlab.evaluate import run_sweep
    from cowlab.executors import make_executor

    suite = load_suite(cfg.suite)
    entries = check_names(cfg, suite, where)
    err = stream or sys.stderr
    draw = have_matplotlib()
    if not draw:
        print(f"cowlab: warning: {FIGURES_NEED}; writing the tables only", file=err)
    specs = suite_specs(suite, entries, reference=cfg.reference)
    executor = make_executor(cfg.executor, workers=cfg.workers, address=cfg.address)
    try:
        result = run_sweep(specs, cfg.records, executor=executor, progress=progress,
                           stream=stream)
    finally:
        executor.close()
    print(f"cowlab: records {cfg.records}: {result.describe()}", file=err)
    lb = analyze(suite, entries, result.records, reference=cfg.reference,
                 reps=cfg.bootstrap_reps, confidence=cfg.confidence, seed=cfg.seed,
                 name=cfg.name)
    lb.command = command
    for b in lb.boards:
        b.command = command
    return lb, write_outputs(lb, cfg.output, figures=draw)
