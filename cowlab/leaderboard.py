"""The leaderboard: run (or reuse) a benchmark suite's records and write the tables.

A *suite* (``configs/suites/cowlab-bench-v1.yaml``) fixes the kernel presets, workloads,
seeds and budget; a *leaderboard config* (``configs/leaderboard/cowlab-bench-v1.yaml``)
names a suite, the entries (policies) to rank, the reference for the probability of
improvement, where records and outputs go, and the executor.
``cowlab leaderboard CONFIG [key=value ...]`` sweeps every (entry, kernel, workload,
seed) plus the ``baseline`` and ``oracle`` runs that anchor the normalized score (records
already in the records file are reused), then writes Markdown, CSV, LaTeX (booktabs) and
PNG figures. Statistics are in :mod:`cowlab.stats`; docs/leaderboard.md explains them.

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

from cowlab.config import WorkloadEntry
from cowlab.records import RunSpec
from cowlab.stats import (
    iqm,
    normalized_score,
    performance_profile,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)
from cowlab.yamlfile import YamlFileError, read_yaml

__all__ = [
    "ANCHORS",
    "Board",
    "EntryRow",
    "LeaderboardConfig",
    "LeaderboardError",
    "SuiteConfig",
    "analyze",
    "load_leaderboard_config",
    "load_suite",
    "run_leaderboard",
    "suite_specs",
    "write_outputs",
]

#: Decimals of every number in the CSV and JSON outputs (the tables print fewer).
DIGITS = 6
#: Executor names of a leaderboard config (``cowlab eval --executor`` takes the same).
EXECUTOR_NAMES = ("inprocess", "process", "ray")

#: The policies every suite also runs: the two ends of the normalized score.
ANCHORS = ("baseline", "oracle")
#: Thresholds of the performance profile.
PROFILE_TAUS = [round(float(t), 4) for t in np.linspace(-0.25, 1.25, 61)]


class LeaderboardError(ValueError):
    """A bad suite or leaderboard config (the message names the file and key)."""


@dataclass
class SuiteConfig:
    """A versioned benchmark suite: workloads x kernel presets x seeds, fixed."""

    #: Suite id with its version (``cowlab-bench-v1``); a change gets a new version.
    name: str = MISSING
    #: One paragraph on what the suite measures.
    description: str = ""
    #: Kernel presets.
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
    #: Policies to rank: a name (any registered name, ``sb3:PATH``) or a mapping
    #: ``{policy: NAME, label: SHORT}``; the label is the entry's name in every table and
    #: figure (default: the policy name).
    entries: list[Any] = field(default_factory=list)
    #: Display labels by policy name (filled from the entries' ``label:``).
    labels: dict[str, str] = field(default_factory=dict)
    #: Parameters of entries, by name.
    policy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Reference entry of the probability-of-improvement column.
    reference: str = "exclusive"
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
    #: Bootstrap replicates.
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
        raise LeaderboardError(f"{where}: entries[{i}]: expected a policy name or "
                               f"{{policy: NAME, label: SHORT}}, got {item!r}")
    cfg.entries = names
    for key in cfg.labels:
        if key not in names and key != cfg.reference:
            raise LeaderboardError(f"{where}: labels.{key}: not an entry")
    shown = [cfg.labels.get(n, n) for n in names]
    dup = sorted({x for x in shown if shown.count(x) > 1})
    if dup:
        raise LeaderboardError(f"{where}: entries: the label(s) {', '.join(dup)} name "
                               "more than one entry")
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


def suite_specs(suite: SuiteConfig, policies: Sequence[str],
                policy_params: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunSpec]:
    """Every run of ``policies`` (and the anchors) on the suite."""
    names = list(dict.fromkeys([*policies, *ANCHORS]))
    params = policy_params or {}
    return [
        RunSpec(policy=p, kernel=k, workload=w.name, seed=s,
                max_decisions=suite.max_decisions, policy_params=dict(params.get(p, {})),
                workload_params=dict(w.params), machine=dict(suite.machine))
        for p in names for k in suite.kernels for w in suite.workloads for s in suite.seeds
    ]


# ------------------------------------------------------------------------------ analysis


@dataclass
class EntryRow:
    """One leaderboard entry's figures."""

    entry: str
    kind: str
    runs: int
    iqm: float
    ci_low: float
    ci_high: float
    poi: float
    poi_low: float
    poi_high: float
    reuse_rate: float
    violations: int
    violations_by_kind: dict[str, int]
    runs_with_violations: int
    mean_latency_us: float
    p99_latency_us: float
    extra_pages: float
    blockers: dict[str, int]
    scores: dict[str, list[float]]
    profile: list[float]
    per_workload: dict[str, dict[str, float]]
    #: Display name in tables and figures (the config's ``label:``, default the entry).
    label: str = ""

    @property
    def safe(self) -> bool:
        """No violation in any run."""
        return self.violations == 0


@dataclass
class Board:
    """The analysed leaderboard: rows ranked, safe entries first."""

    name: str
    suite: SuiteConfig
    reference: str
    confidence: float
    rows: list[EntryRow]
    workloads: list[str]
    command: str = ""
    #: Display labels by policy name (entries without one show their name).
    labels: dict[str, str] = field(default_factory=dict)

    def label(self, policy: str) -> str:
        """The display name of ``policy``."""
        return self.labels.get(policy, policy)


def _label(entry: WorkloadEntry, suite: SuiteConfig) -> str:
    same = [w for w in suite.workloads if w.name == entry.name]
    if len(same) == 1 or not entry.params:
        return entry.name
    return entry.name + "(" + ",".join(f"{k}={v}" for k, v in sorted(entry.params.items())) + ")"


def _mean(values: Sequence[float]) -> float:
    """Exact mean (math.fsum): independent of the order of the values."""
    return math.fsum(values) / len(values) if values else math.nan


def analyze(suite: SuiteConfig, entries: Sequence[str], records: Sequence[Mapping[str, Any]],
            *, reference: str = "exclusive", reps: int = 2000, confidence: float = 0.95,
            seed: int = 0, policy_params: Mapping[str, Mapping[str, Any]] | None = None,
            name: str = "leaderboard", labels: Mapping[str, str] | None = None) -> Board:
    """Scores, intervals and the safety-first ranking of ``entries`` on the suite.

    Raises:
        LeaderboardError: A run of the suite (an entry's or an anchor's) has no record.
    """
    by_key = {RunSpec.from_dict(r["config"]).key: r for r in records}
    params = policy_params or {}
    cells = [(w, k, s) for k in suite.kernels for w in suite.workloads for s in suite.seeds]

    def rec(policy: str, w: WorkloadEntry, k: str, s: int) -> Mapping[str, Any]:
        spec = RunSpec(policy=policy, kernel=k, workload=w.name, seed=s,
                       max_decisions=suite.max_decisions,
                       policy_params=dict(params.get(policy, {})),
                       workload_params=dict(w.params), machine=dict(suite.machine))
        try:
            return by_key[spec.key]
        except KeyError:
            raise LeaderboardError(
                f"no record of {policy} on {w.name} / {k} / seed {s}: run the suite"
            ) from None

    all_scores: dict[str, dict[str, list[float]]] = {}
    rows: list[EntryRow] = []
    for entry in dict.fromkeys([*entries, reference]):
        scores: dict[str, list[float]] = defaultdict(list)
        per_wl: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        rates: list[float] = []
        lat: list[float] = []
        p99: list[float] = []
        extra: list[float] = []
        viol: Counter[str] = Counter()
        blockers: Counter[str] = Counter()
        bad_runs = 0
        kind = "kernel"
        for w, k, s in cells:
            r = rec(entry, w, k, s)
            m = r["metrics"]
            kind = r["policy"]["kind"]
            score = normalized_score(m["reuse_rate"], rec("baseline", w, k, s)["metrics"][
                "reuse_rate"], rec("oracle", w, k, s)["metrics"]["reuse_rate"])
            label = _label(w, suite)
            if score is not None:
                scores[f"{label}@{k}"].append(score)
                per_wl[label]["score"].append(score)
            if m["reuse_rate"] is not None:
                rates.append(m["reuse_rate"])
                per_wl[label]["reuse_rate"].append(m["reuse_rate"])
            per_wl[label]["violations"].append(m["violations_total"])
            per_wl[label]["unnecessary_copies"].append(m["unnecessary_copies"])
            lat.append(m["mean_latency_ns"] / 1000)
            p99.append(m["p99_latency_ns"] / 1000)
            extra.append(m["extra_pages"])
            viol.update(m["violations"])
            bad_runs += m["violations_total"] > 0
            blockers.update(m["unnecessary_copies_by_blocker"])
        all_scores[entry] = dict(scores)
        point, low, high = stratified_bootstrap_ci(scores, iqm, reps=reps,
                                                   confidence=confidence, seed=seed)
        rows.append(EntryRow(
            label=(labels or {}).get(entry, entry), entry=entry, kind=kind, runs=len(cells),
            iqm=point, ci_low=low, ci_high=high,
            poi=math.nan, poi_low=math.nan, poi_high=math.nan,
            reuse_rate=_mean(rates), violations=sum(viol.values()),
            violations_by_kind={k: v for k, v in sorted(viol.items()) if v},
            runs_with_violations=bad_runs, mean_latency_us=_mean(lat),
            p99_latency_us=_mean(p99), extra_pages=_mean(extra),
            blockers=dict(sorted(blockers.items())), scores=dict(scores),
            profile=performance_profile(scores, PROFILE_TAUS),
            per_workload={
                wl: {
                    "score": _mean(v["score"]),
                    "reuse_rate": _mean(v["reuse_rate"]),
                    "violations": float(sum(v["violations"])),
                    "unnecessary_copies": _mean(v["unnecessary_copies"]),
                }
                for wl, v in per_wl.items()
            },
        ))
    for row in rows:
        row.poi, row.poi_low, row.poi_high = probability_of_improvement_ci(
            row.scores, all_scores[reference], reps=max(1, reps // 4),
            confidence=confidence, seed=seed)
    rows = [r for r in rows if r.entry in entries]
    rows.sort(key=lambda r: (not r.safe, -r.iqm if not math.isnan(r.iqm) else math.inf,
                             r.entry))
    return Board(name=name, suite=suite, reference=reference, confidence=confidence,
                 rows=rows, workloads=[_label(w, suite) for w in suite.workloads],
                 labels=dict(labels or {}))


# ------------------------------------------------------------------------------- outputs

MAIN_COLUMNS = ["rank", "entry", "policy", "kind", "score_iqm", "ci_low", "ci_high", "p_improve",
                "reuse_rate", "violations", "mean_latency_us", "p99_latency_us", "extra_pages"]


def _f(x: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def _violations_text(row: EntryRow) -> str:
    if row.safe:
        return "0"
    kinds = ", ".join(f"{k} {v}" for k, v in row.violations_by_kind.items())
    return f"{row.violations} ({kinds}; {row.runs_with_violations}/{row.runs} runs)"


def main_rows(board: Board) -> list[list[str]]:
    """The main table's cells, ranked (strings, for every format)."""
    out = []
    for i, r in enumerate(board.rows, start=1):
        out.append([
            str(i) if r.safe else f"{i} (unsafe)", r.label or r.entry, r.kind,
            f"{_f(r.iqm)} [{_f(r.ci_low)}, {_f(r.ci_high)}]",
            _f(r.poi, 2), _f(r.reuse_rate, 4), _violations_text(r),
            _f(r.mean_latency_us, 2), _f(r.p99_latency_us, 2), _f(r.extra_pages, 1),
        ])
    return out


def main_header(board: Board) -> list[str]:
    """Column titles of the main table."""
    pct = round(100 * board.confidence)
    return ["rank", "entry", "kind", f"score IQM [{pct}% CI]",
            f"P(> {board.label(board.reference)})",
            "reuse rate", "violations", "mean latency (us)", "p99 latency (us)",
            "extra pages / run"]


def per_workload_rows(board: Board) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-workload table (mean score / reuse rate / violations)."""
    header = ["entry", *board.workloads]
    rows = []
    for r in board.rows:
        cells = [r.label or r.entry]
        for wl in board.workloads:
            d = r.per_workload.get(wl, {})
            cells.append(f"{_f(d.get('score', math.nan), 2)} / {_f(d.get('reuse_rate', math.nan))}"
                         f" / {int(d.get('violations', 0))}")
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


def main_latex(board: Board) -> str:
    """The main table in LaTeX, scaled to one column of a two-column page."""
    pct = round(100 * board.confidence)
    ref = latex_escape(board.label(board.reference))
    header = ["Rank", "Entry", "Kind", f"Score IQM [{pct}\\% CI]", f"$P(>$\\,{ref}$)$",
              "Reuse rate", "Violations", "Mean lat.\\ ($\\mu$s)", "p99 lat.\\ ($\\mu$s)",
              "Extra pages"]
    rows = [[cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], _latex_violations(r),
             cells[7], cells[8], cells[9]]
            for cells, r in zip(main_rows(board), board.rows, strict=True)]
    numeric = [True, False, False, True, True, True, True, True, True, True]
    return _latex_table(header, rows, numeric=numeric, caption=_main_caption(board),
                        label="tab:leaderboard-main")


def main_narrow_latex(board: Board) -> str:
    """A narrow main table (rank, entry, score, CI, P(>ref), violations) for one column
    (natural size with short labels; shrunk to the column if still wider)."""
    pct = round(100 * board.confidence)
    ref = board.label(board.reference)
    header = ["Rank", "Entry", "IQM", f"{pct}\\% CI", "$P(>$ref.$)$", "Viol."]
    rows = [[str(i), r.label or r.entry, _f(r.iqm, 2), f"[{_f(r.ci_low, 2)}, {_f(r.ci_high, 2)}]",
             _f(r.poi, 2), str(r.violations)] for i, r in enumerate(board.rows, start=1)]
    caption = (f"{_main_caption(board)} P(>ref.): probability of improvement over {ref}; "
               "Viol.: violations.")
    return _latex_table(header, rows, numeric=[True, False, True, True, True, True],
                        caption=caption, label="tab:leaderboard-narrow",
                        size="\\footnotesize", colsep="4pt")


def per_workload_latex(board: Board) -> str:
    """The per-workload table in LaTeX, spanning both columns (``table*``)."""
    header, rows = per_workload_rows(board)
    tex_header = ["Entry", *(latex_escape(h) for h in header[1:])]
    return _latex_table(
        tex_header, rows, numeric=[False] + [True] * (len(header) - 1),
        caption=f"{board.name} per workload: mean score / reuse rate / violations.",
        label="tab:leaderboard-workloads", fit="\\textwidth", wide=True)


def _main_caption(board: Board) -> str:
    pct = round(100 * board.confidence)
    return (f"{board.name}: normalized score (baseline 0, oracle 1), IQM with {pct}% "
            f"stratified-bootstrap CI. {SAFETY_NOTE}")


def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _suite_text(board: Board) -> str:
    s = board.suite
    wl = ", ".join(
        f"{w.name}" + (f" ({', '.join(f'{k}={v}' for k, v in w.params.items())})"
                       if w.params else "") for w in s.workloads)
    return (f"Suite `{s.name}`: kernels {', '.join(s.kernels)}; workloads {wl}; "
            f"seeds {s.seeds[0]}..{s.seeds[-1]} ({len(s.seeds)}); "
            f"{s.max_decisions} decisions per run.")


SAFETY_NOTE = ("Safety is lexicographic: an entry with any violation (leak or "
               "pin_incoherent) ranks below every entry without one, whatever its score.")


def have_matplotlib() -> bool:
    """Whether the figures can be drawn (matplotlib, the ``leaderboard`` extra)."""
    return importlib.util.find_spec("matplotlib") is not None


FIGURES_NEED = ("figures need matplotlib: pip install -c constraints.txt 'cowlab[leaderboard]'")


def markdown(board: Board, *, figures: bool = True) -> str:
    """The Markdown report (``figures``: link the PNGs, else say how to get them)."""
    pct = round(100 * board.confidence)
    header, rows = per_workload_rows(board)
    parts = [
        f"# {board.name}", "", _suite_text(board), "",
        f"Score: reuse rate normalized per (workload, kernel, seed) cell so that `baseline` "
        f"= 0 and `oracle` = 1; interquartile mean over workloads x kernels x seeds with "
        f"{pct}% stratified-bootstrap percentile intervals. P(> {board.reference}): "
        f"probability of improvement over `{board.reference}`. Latency and extra pages are "
        "means over runs.", "", f"**{SAFETY_NOTE}**", "",
        _markdown_table(main_header(board), main_rows(board)), "",
        "## Per workload", "",
        "Each cell: mean normalized score / mean reuse rate / violations "
        "(over kernels and seeds).", "",
        _markdown_table(header, rows), "",
        "## Figures", "",
        *(["![Unnecessary copies by blocker](blockers.png)", "",
           "![Performance profiles](profiles.png)", ""] if figures else
          [f"Not drawn: {FIGURES_NEED}.", ""]),
    ]
    if board.command:
        parts += ["## Regenerate", "", "```", board.command, "```", ""]
    return "\n".join(parts)


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
    """The main table as CSV (numbers rounded to :data:`DIGITS` decimals)."""
    rows: list[list[object]] = []
    for i, r in enumerate(board.rows, start=1):
        rows.append([i, r.label or r.entry, r.entry, r.kind, r.iqm, r.ci_low, r.ci_high, r.poi,
                     r.reuse_rate, r.violations, r.mean_latency_us, r.p99_latency_us,
                     r.extra_pages])
    return _csv(MAIN_COLUMNS, cast(list[list[object]], _round(rows)))


def per_workload_csv(board: Board) -> str:
    """The per-workload table as CSV (one row per entry and workload)."""
    rows: list[list[object]] = []
    for r in board.rows:
        for wl in board.workloads:
            d = r.per_workload.get(wl, {})
            rows.append([r.label or r.entry, wl, d.get("score"), d.get("reuse_rate"),
                         d.get("violations"), d.get("unnecessary_copies")])
    return _csv(["entry", "workload", "score_mean", "reuse_rate", "violations",
                 "unnecessary_copies_mean"], cast(list[list[object]], _round(rows)))


def _figures(board: Board, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = [r.label or r.entry for r in board.rows]
    blockers = sorted({b for r in board.rows for b in r.blockers})
    # The legend goes below the axes (never over a bar); the figure grows with the
    # number of entries and legend rows, and bbox_inches="tight" keeps the title and
    # the axis labels inside the image.
    legend_rows = math.ceil(len(blockers) / 4) if blockers else 0
    height = 0.35 * len(names) + 1.6 + 0.3 * legend_rows
    fig, ax = plt.subplots(figsize=(7.5, height))
    left = np.zeros(len(names))
    cmap = plt.get_cmap("tab10")
    for j, b in enumerate(blockers):
        vals = np.array([r.blockers.get(b, 0) / r.runs for r in board.rows], dtype=float)
        ax.barh(names, vals, left=left, label=b, color=cmap(j % 10))
        left += vals
    ax.invert_yaxis()
    ax.set_xlabel("unnecessary copies per run (copies of truly exclusive pages)")
    ax.set_ylabel("entry")
    ax.set_title(f"{board.name}: unnecessary copies by blocker")
    if blockers:
        ax.legend(title="blocker", fontsize=8, title_fontsize=8, loc="upper center",
                  bbox_to_anchor=(0.5, -0.55 / (0.75 * height)),
                  ncol=min(4, len(blockers)), frameon=False)
    path = out / "blockers.png"
    fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    styles = ["-", "--", "-.", ":"]
    for j, r in enumerate(board.rows):
        ax.plot(PROFILE_TAUS, r.profile, styles[j // 10 % 4], color=cmap(j % 10),
                label=(r.label or r.entry) + ("" if r.safe else " (unsafe)"))
    ax.set_xlabel("normalized score threshold tau (0 = baseline, 1 = oracle)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{board.name}: performance profiles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
              frameon=False)
    path = out / "profiles.png"
    fig.savefig(path, dpi=150, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    written.append(path)
    return written


def _no_nan(obj: object) -> object:
    """NaN -> None, recursively (strict JSON)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def _write_text(path: Path, text: str) -> None:
    """Write ``path`` atomically (temp file, then os.replace)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_outputs(board: Board, out: str | Path, *, figures: bool | None = None) -> list[Path]:
    """Write every output file; return their paths.

    Args:
        figures: Draw the PNG figures (default: when matplotlib is installed). Without
            them the tables are written and the Markdown says how to get the figures.
    """
    draw = have_matplotlib() if figures is None else figures
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "leaderboard.md": markdown(board, figures=draw),
        "main.csv": main_csv(board),
        "per_workload.csv": per_workload_csv(board),
        "main.tex": main_latex(board),
        "main-narrow.tex": main_narrow_latex(board),
        "per_workload.tex": per_workload_latex(board),
        "summary.json": json.dumps(_no_nan(_round({
            "name": board.name, "suite": board.suite.name, "reference": board.reference,
            "entries": [{k: v for k, v in r.__dict__.items() if k != "scores"}
                        for r in board.rows],
        })), indent=2, allow_nan=False) + "\n",
    }
    written = []
    for name, text in files.items():
        _write_text(d / name, text)
        written.append(d / name)
    if draw:
        written += _figures(board, d)
    return written


def check_names(cfg: LeaderboardConfig, suite: SuiteConfig, where: str) -> None:
    """Resolve every entry, the reference, the anchors, the suite's kernels and workloads
    in this process, so a bad name is one located error before any run is dispatched."""
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import PluginError, get_registry

    registry = get_registry()
    for key, names in (("entries", cfg.entries), ("reference", [cfg.reference]),
                       ("anchors", list(ANCHORS))):
        for i, name in enumerate(names):
            at = f"{where}: {key}[{i}]" if key == "entries" else f"{where}: {key}"
            try:
                registry.make_policy(name, dict(cfg.policy_params.get(name, {})), where=at)
            except PluginError as exc:
                raise LeaderboardError(str(exc)) from None
    for name in cfg.policy_params:
        if name not in cfg.entries and name != cfg.reference:
            raise LeaderboardError(f"{where}: policy_params.{name}: not an entry")
    for i, kernel in enumerate(suite.kernels):
        try:
            resolve_kernel(kernel, where=f"{cfg.suite}: kernels[{i}]")
        except (PluginError, ValueError) as exc:
            raise LeaderboardError(str(exc)) from None
    for i, w in enumerate(suite.workloads):
        try:
            registry.make("workload", w.name, dict(w.params),
                          where=f"{cfg.suite}: workloads[{i}]")
        except PluginError as exc:
            raise LeaderboardError(str(exc)) from None


def run_leaderboard(cfg: LeaderboardConfig, *, command: str = "", progress: bool = True,
                    where: str = "<config>", stream: Any = None,
                    ) -> tuple[Board, list[Path]]:
    """Sweep (reusing records), analyse and write the outputs of a leaderboard config.

    Every name is checked (:func:`check_names`) and matplotlib looked for before the
    sweep starts; without matplotlib the tables are written and a warning printed.
    """
    import sys

    from cowlab.evaluate import run_sweep
    from cowlab.executors import make_executor

    suite = load_suite(cfg.suite)
    check_names(cfg, suite, where)
    err = stream or sys.stderr
    draw = have_matplotlib()
    if not draw:
        print(f"cowlab: warning: {FIGURES_NEED}; writing the tables only", file=err)
    specs = suite_specs(suite, [*cfg.entries, cfg.reference], cfg.policy_params)
    executor = make_executor(cfg.executor, workers=cfg.workers, address=cfg.address)
    try:
        result = run_sweep(specs, cfg.records, executor=executor, progress=progress,
                           stream=stream)
    finally:
        executor.close()
    print(f"cowlab: records {cfg.records}: {result.describe()}", file=err)
    board = analyze(suite, cfg.entries, result.records, reference=cfg.reference,
                    reps=cfg.bootstrap_reps, confidence=cfg.confidence, seed=cfg.seed,
                    policy_params=cfg.policy_params, name=cfg.name, labels=cfg.labels)
    board.command = command
    return board, write_outputs(board, cfg.output, figures=draw)
