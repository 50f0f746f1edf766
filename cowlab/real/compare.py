"""Write-by-write comparison of a simulator run with a real-kernel harness result.

Only stores are compared: the attempts of ``write`` steps, one per page, in order.
Attempts the simulator records for other steps (faults taken by ``gup``, ``mlock``,
``madvise unmergeable``) are counted as *not compared*. Three fields are compared,
the same the simulator prints: ``fault``, ``outcome`` and ``violation``. A field the
harness could not observe (``outcome: unknown`` for a swap-in read from the device,
where the frame is new either way) is left out of that write's comparison and the write
is marked ``partial``. Every write after the first step the harness skipped or failed
is *excluded* (the two kernels no longer ran the same sequence), and the reason is
printed with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cowlab.real.script import Script
from cowlab.scenario import ScenarioResult

FIELDS = ("fault", "outcome", "violation")


class ResultError(ValueError):
    """A harness result that does not fit the scenario (wrong file, damaged JSON)."""


@dataclass
class Row:
    """One store: what the simulator and the real kernel did."""

    step: int
    mm: str
    page: int
    sim: dict[str, Any]
    real: dict[str, Any] | None
    status: str  # agree | differ | excluded
    compared: tuple[str, ...] = ()
    differs: tuple[str, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "mm": self.mm, "page": self.page, "status": self.status,
            "compared": list(self.compared), "differs": list(self.differs), "note": self.note,
            "sim": {k: self.sim.get(k) for k in (*FIELDS, "reason", "exclusive", "blockers")},
            "real": None if self.real is None else {
                k: self.real.get(k) for k in (*FIELDS, "faults", "majflt", "pfn_before",
                                              "pfn_after", "excl_before", "excl_after",
                                              "softdirty_before", "softdirty_after",
                                              "observers", "note")},
        }


@dataclass
class Comparison:
    """The outcome of comparing one scenario."""

    scenario: str
    kernel: str
    host_release: str
    rows: list[Row]
    steps: list[dict[str, Any]]
    not_compared: int
    swap_device: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def agree(self) -> int:
        return sum(r.status == "agree" for r in self.rows)

    @property
    def differ(self) -> int:
        return sum(r.status == "differ" for r in self.rows)

    @property
    def excluded(self) -> int:
        return sum(r.status == "excluded" for r in self.rows)

    @property
    def exit_status(self) -> int:
        """0 when every compared write agrees, 1 when one differs."""
        return 1 if self.differ else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "kernel": self.kernel, "host_release": self.host_release,
            "swap_device": self.swap_device,
            "writes": len(self.rows), "agree": self.agree, "differ": self.differ,
            "excluded": self.excluded, "not_compared": self.not_compared,
            "notes": self.notes, "steps": self.steps, "rows": [r.to_dict() for r in self.rows],
        }


def _check_result(result: object, script: Script, where: str) -> dict[str, Any]:
    if not isinstance(result, dict) or result.get("format") != "cowlab-real-result":
        raise ResultError(f"{where}: not a cowlab real-kernel result "
                          f"(no \"format\": \"cowlab-real-result\")")
    if result.get("script_hash") != script.hash:
        raise ResultError(
            f"{where}: this result was produced from a different scenario script (hash "
            f"{str(result.get('script_hash'))[:12]}..., the scenario gives {script.hash[:12]}...)"
            "; emit the harness again from this scenario")
    for key, kind in (("steps", list), ("attempts", list), ("uname", dict)):
        if not isinstance(result.get(key), kind):
            raise ResultError(f"{where}: key '{key}' missing or not a {kind.__name__}")
    return result


def compare(sim: ScenarioResult, result: object, script: Script, *,
            where: str = "result") -> Comparison:
    """Compare the simulator's ``sim`` with the harness ``result`` of ``script``."""
    res = _check_result(result, script, where)
    steps: list[dict[str, Any]] = res["steps"]
    status_of = {int(s["step"]): str(s["status"]) for s in steps}
    write_steps = {i for i, op in script.ops.items() if op == "write"}
    # The first step that did not run as written taints every later store.
    taint: tuple[int, str] | None = None
    taint_at: dict[int, tuple[int, str] | None] = {}
    for index in sorted(script.ops):
        taint_at[index] = taint
        status = status_of.get(index, "missing: the harness stopped before this step")
        if status != "ok" and taint is None:
            taint = (index, status)
            taint_at[index] = taint
    real_by_step: dict[int, list[dict[str, Any]]] = {}
    for att in res["attempts"]:
        real_by_step.setdefault(int(att["step"]), []).append(att)
    sim_by_step: dict[int, list[dict[str, Any]]] = {}
    not_compared = 0
    for rec in sim.attempts:
        if rec.step in write_steps:
            sim_by_step.setdefault(rec.step, []).append(rec.to_dict())
        else:
            not_compared += 1
    rows: list[Row] = []
    for index in sorted(sim_by_step):
        sims = sim_by_step[index]
        reals = real_by_step.get(index, [])
        bad = taint_at.get(index)
        for i, s in enumerate(sims):
            real = reals[i] if i < len(reals) else None
            if real is not None:
                real = dict(real)
                mm_ix = int(real["mm"])
                real["mm"] = script.mms[mm_ix] if 0 <= mm_ix < len(script.mms) else str(mm_ix)
            if bad is not None:
                rows.append(Row(index, s["mm"], s["page"], s, real, "excluded",
                                note=f"step {bad[0]} did not run as written ({bad[1]})"))
                continue
            if real is None or real["mm"] != s["mm"] or int(real["page"]) != s["page"]:
                rows.append(Row(index, s["mm"], s["page"], s, real, "differ",
                                differs=("alignment",),
                                note="the harness recorded no matching store"))
                continue
            compared = tuple(f for f in FIELDS if real[f] != "unknown")
            differs = tuple(f for f in compared if s[f] != real[f])
            unseen = [f for f in FIELDS if f not in compared]
            note = f"{' and '.join(unseen)} not observable: {real.get('note', '')}" \
                if unseen else ""
            rows.append(Row(index, s["mm"], s["page"], s, real,
                            "differ" if differs else "agree", compared, differs, note))
    return Comparison(sim.scenario.source, sim.scenario.kernel.name,
                      str(res["uname"].get("release", "?")), rows, steps, not_compared)


def format_comparison(c: Comparison) -> str:
    """The side-by-side table ``cowlab real run`` prints."""
    lines = [
        f"scenario {c.scenario}: simulator {c.kernel} vs real kernel {c.host_release}"
        + (f" (swap: {c.swap_device})" if c.swap_device else ""),
    ]
    lines += [f"note: {n}" for n in c.notes]
    skipped = [s for s in c.steps if s["status"] != "ok"]
    for s in skipped:
        lines.append(f"step {s['step']} ({s['op']}): {s['status']}")
    lines += [
        "",
        f"{'step':>4}  {'mm':<10} {'page':>6}  {'sim fault':<9} {'outcome':<7} {'violation':<14}"
        f"  {'real fault':<10} {'outcome':<7} {'violation':<14}  verdict",
    ]
    for r in c.rows:
        rf = r.real or {}
        verdict = r.status if r.status != "differ" else "DIFFER " + ",".join(r.differs)
        lines.append(
            f"{r.step:>4}  {r.mm:<10.10} {r.page:>6}  {r.sim['fault']:<9} {r.sim['outcome']:<7} "
            f"{r.sim['violation'] or '-':<14}  {rf.get('fault', '-'):<10} "
            f"{rf.get('outcome', '-'):<7} {rf.get('violation') or '-':<14}  {verdict}"
            + (f"  ({r.note})" if r.note else ""))
    compared = c.agree + c.differ
    rate = f"{c.agree / compared:.3f}" if compared else "n/a"
    lines += [
        "",
        f"writes: {len(c.rows)}, compared {compared}, agree {c.agree}, differ {c.differ}, "
        f"excluded {c.excluded} (after a skipped step); agreement {rate}",
    ]
    if c.not_compared:
        lines.append(f"not compared: {c.not_compared} simulator attempts of non-write steps "
                     "(gup, mlock, madvise faults)")
    if c.excluded:
        lines.append(f"WARNING: {c.excluded} writes EXCLUDED because an earlier step was "
                     "skipped or failed on the real kernel")
    return "\n".join(lines)
