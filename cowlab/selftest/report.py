"""Output of ``cowlab selftest``: kselftest TAP, JSON, and the pass/fail matrix.

TAP follows kselftest (tools/testing/selftests/kselftest.h): ``TAP version 13``, the plan
``1..N``, ``#`` lines for information, ``ok N <name>`` for a pass, the failure message as
a ``#`` line followed by ``not ok N <name>`` for a failure, ``ok N <name> # SKIP <why>``,
``ok N <name> # XFAIL <message>``, and the totals line
``# Totals: pass:X fail:Y xfail:Z xpass:0 skip:S error:E``. The test name is cow.c's
``[RUN]`` text; the message is the text cow.c passes to ksft_test_result*() (for cases
reported with ksft_test_result(cond, msg) that is the same text whether the case
passed or failed: ``# Longterm R/O pin is reliable`` above a ``not ok`` line means it
was not).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cowlab.selftest.divergences import KNOWN_DIVERGENCES
from cowlab.selftest.runner import RESULTS, SelftestResult, SuiteResult
from cowlab.selftest.variants import KINDS


def tap_header(kernel: str, policy: str, count: int, *, info: Iterable[str] = ()) -> list[str]:
    """The lines printed before the first test."""
    lines = ["TAP version 13", f"# cowlab selftest: kernel {kernel}, policy {policy}"]
    lines += [f"# [INFO] {line}" for line in info]
    lines.append(f"1..{count}")
    return lines


def tap_result(r: SelftestResult) -> list[str]:
    """The lines of one test: its ``[RUN]`` line, then the verdict."""
    lines = [f"# [RUN] {r.test.name}"]
    if r.result == "pass":
        lines.append(f"ok {r.number} {r.test.name}")
    elif r.result == "xfail":
        lines.append(f"ok {r.number} {r.test.name} # XFAIL {r.message}")
    elif r.result == "skip":
        lines.append(f"ok {r.number} {r.test.name} # SKIP {r.message}")
    elif r.result == "error":
        lines.append(f"# {r.message}")
        lines.append(f"not ok {r.number} {r.test.name} # error")
    else:
        lines.append(f"# {r.message}")
        lines.append(f"not ok {r.number} {r.test.name}")
    if r.divergence is not None:
        d = DIVERGENCES[r.divergence]
        lines.append(f"# [NOTE] known simulator divergence '{d.id}': upstream Linux gives "
                     f"{d.upstream.upper()} here (docs/selftest.md)")
    if r.agrees is False:
        lines.append(f"# [WARN] violation detector disagrees: {r.disagreement}")
    return lines


def tap_totals(suite: SuiteResult) -> list[str]:
    """The closing lines: detector disagreements (if any) and kselftest's totals."""
    t = suite.totals()
    lines = []
    disagreements = suite.disagreements()
    if disagreements:
        lines.append(f"# [WARN] {len(disagreements)} verdict(s) contradicted by the violation "
                     "detector (a simulator bug): " + ", ".join(str(r.number)
                                                                for r in disagreements))
    lines.append(f"# Totals: pass:{t['pass']} fail:{t['fail']} xfail:{t['xfail']} "
                 f"xpass:{t['xpass']} skip:{t['skip']} error:{t['error']}")
    return lines


def format_tap(suite: SuiteResult, *, info: Iterable[str] = ()) -> str:
    """The whole TAP report of ``suite``."""
    lines = tap_header(suite.kernel, suite.policy, len(suite.results), info=info)
    for r in suite.results:
        lines += tap_result(r)
    lines += tap_totals(suite)
    return "\n".join(lines)


# ------------------------------------------------------------------------------ matrix
@dataclass(frozen=True)
class MatrixColumn:
    """One column of the matrix: a suite run labelled by preset or policy."""

    label: str
    suite: SuiteResult


def _row_key(r: SelftestResult) -> tuple[str, str]:
    return r.test.case.desc, r.test.variant.family


def _row_order(columns: Sequence[MatrixColumn]) -> list[tuple[str, str]]:
    order: dict[tuple[str, str], None] = {}
    family_rank = {family: i for i, family in enumerate(KINDS.values())}
    for column in columns:
        for r in column.suite.results:
            order.setdefault(_row_key(r), None)
    cases: list[str] = list(dict.fromkeys(key[0] for key in order))
    return sorted(order, key=lambda key: (cases.index(key[0]), family_rank.get(key[1], -1)))


def _counts(results: Iterable[SelftestResult]) -> dict[str, int]:
    counts = dict.fromkeys(RESULTS, 0)
    for r in results:
        counts[r.result] += 1
    return counts


DIVERGENCES = {d.id: d for d in KNOWN_DIVERGENCES}
_TAGS = (("fail", "F"), ("xfail", "X"), ("skip", "S"), ("error", "E"))


def cell(counts: dict[str, int]) -> str:
    """``passed/run`` plus ``F:n X:n S:n E:n`` for fail, xfail, skip and error; bold when
    anything failed; ``-`` when the variant does not exist on that kernel."""
    total = sum(counts.values())
    if not total:
        return "-"
    text = f"{counts['pass']}/{total}"
    tags = [f"{tag}:{counts[name]}" for name, tag in _TAGS if counts[name]]
    if tags:
        text += " " + " ".join(tags)
    if counts["fail"] or counts["error"]:
        text = f"**{text}**"
    return text


def format_matrix_md(columns: Sequence[MatrixColumn], *, title: str,
                     notes: Iterable[str] = ()) -> str:
    """A Markdown table: a row per case and variant (THP sizes pooled), a column per run."""
    rows = _row_order(columns)
    grouped = [
        {key: [r for r in c.suite.results if _row_key(r) == key] for key in rows}
        for c in columns
    ]
    lines = [f"# {title}", ""]
    lines += list(notes)
    seen = sorted({r.divergence for c in columns for r in c.suite.results if r.divergence})
    if seen:
        lines += ["", "Known simulator divergences in this table (docs/selftest.md explains "
                  "them; the tests assert both verdicts):", ""]
        for name in seen:
            d = DIVERGENCES[name]
            affected = sum(1 for c in columns for r in c.suite.results if r.divergence == name)
            lines.append(f"- `{d.id}` ({affected} tests): the simulator gives {d.sim.upper()} "
                         f"where upstream gives {d.upstream.upper()}; {d.where}.")
    lines += [
        "",
        "Each cell: tests passed / tests run, then `F` failed, `X` expected failures "
        "(cow.c's hugetlb vmsplice XFAIL), `S` skipped, `E` errors; `-` where the variant "
        "does not exist on that kernel. THP variants pool every THP size the kernel "
        "supports (mTHP 16..1024 kB from v6.8, and 2048 kB); `matrix.csv` has one row "
        "per test.",
        "",
        "| case | variant | " + " | ".join(c.label for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for key in rows:
        cells = [cell(_counts(g[key])) for g in grouped]
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    totals = []
    for c in columns:
        t = c.suite.totals()
        totals.append(f"pass:{t['pass']} fail:{t['fail']} xfail:{t['xfail']} "
                      f"skip:{t['skip']} error:{t['error']}")
    lines.append("| **totals** | | " + " | ".join(totals) + " |")
    disagreements = [len(c.suite.disagreements()) for c in columns]
    lines.append("| **detector disagreements** | | "
                 + " | ".join(str(d) for d in disagreements) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("kernel", "policy", "number", "id", "name", "case", "variant", "size_kb", "result",
              "message", "leak", "pin_incoherent", "agrees", "divergence")


def format_matrix_csv(columns: Sequence[MatrixColumn]) -> str:
    """One CSV row per test of every run."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for c in columns:
        for r in c.suite.results:
            d = r.to_dict()
            writer.writerow([
                c.suite.kernel, c.suite.policy, r.number, r.test.id, r.test.name, r.test.case.desc,
                d["variant"], "" if d["size_kb"] is None else d["size_kb"], r.result,
                r.message, r.violations.get("leak", 0), r.violations.get("pin_incoherent", 0),
                "" if r.agrees is None else str(r.agrees).lower(), r.divergence or "",
            ])
    return out.getvalue()
