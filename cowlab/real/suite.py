"""``cowlab real suite``: the differential suite, simulator against the host kernel.

Three sources of scenarios, all run through the same :func:`~cowlab.real.run` path:

* every ``*.yaml`` in ``experiments/scenarios/`` (``--scenarios DIR``);
* the cow.c selftest cases (:mod:`cowlab.selftest.cases`) that the harness can express as
  scenarios: the fork, mprotect, vmsplice and io_uring R/W pin cases over five memory
  variants (a base page, a swapped-out page, a PMD THP, an order-4 mTHP) and the four
  MADV_COLLAPSE cases; the R/O long-term pin cases need gup_test and are left out;
* small scenarios for KSM, mremap, mlock, MADV_DONTFORK and MADV_FREE, and the minimal forms
  of two disagreements found by the generated ones;
* ``--random N`` scenarios generated from ``--seed`` (each checked by the simulator first;
  a generated scenario the simulator refuses is replaced by the next one the seed gives).

Every scenario is written to ``OUT/scenarios/`` so the report can be replayed; every
scenario with a disagreement is copied to ``OUT/disagreements/``. The report is
``OUT/report.md`` and ``OUT/report.json`` (each written atomically).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from cowlab.atomicio import write_text_atomic
from cowlab.real.compare import Comparison, compare
from cowlab.real.harness import HarnessError, check_host, run_harness
from cowlab.real.host import MachineSetup, parse_size, preset_for
from cowlab.real.run import host_release, hugetlb_2m_pages, prepare, thp_orders
from cowlab.scenario import Scenario, ScenarioError, ScenarioRunner

#: The command that regenerates the committed report (docs/real.md, experiments/real/).
REGENERATE = ("cowlab real suite --scenarios experiments/scenarios --random 24 --seed 0 "
              "--swapfile 256M --out experiments/real/report")

FAMILIES = ("basic", "fork", "vmsplice", "io_uring pin", "mprotect", "soft-dirty", "swap",
            "thp", "mthp", "hugetlb", "collapse", "ksm", "madvise other", "mremap", "mlock",
            "uffd-wp")


def families(doc: dict[str, Any]) -> list[str]:
    """The op families a scenario exercises (a write counts under each)."""
    fam: set[str] = set()
    for s in doc["steps"]:
        op = s["op"]
        if op == "fork":
            fam.add("fork")
        elif op == "gup":
            fam.add("vmsplice" if s.get("kind") == "get" else "io_uring pin")
        elif op == "mprotect":
            fam.add("mprotect")
        elif op == "clear_softdirty":
            fam.add("soft-dirty")
        elif op == "madvise":
            adv = s.get("advice")
            fam.add({"pageout": "swap", "collapse": "collapse", "mergeable": "ksm"}.get(
                str(adv), "madvise other"))
        elif op == "mmap" and s.get("thp", "none") != "none":
            fam.add("thp" if s["thp"] == "pmd" else "mthp")
        elif op == "mmap" and s.get("hugetlb", "none") != "none":
            fam.add("hugetlb")
        elif op == "ksm_merge":
            fam.add("ksm")
        elif op in ("mremap", "mlock"):
            fam.add(op)
        elif op == "uffd_wp":
            fam.add("uffd-wp")
    return sorted(fam) or ["basic"]


# ----------------------------------------------------------------------------- selftests
_VARIANTS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "page": ({"pages": 1}, []),
    "swapped-page": ({"pages": 1}, ["pageout"]),
    "pmd-thp": ({"pages": 512, "thp": "pmd"}, []),
    "mthp-64k": ({"pages": 16, "thp": "mthp-4"}, []),
    "hugetlb-2m": ({"pages": 512, "hugetlb": "2m"}, []),
}


def _mm(pages: int, extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"op": "mmap", "mm": "parent", "page": 0, "pages": pages, **extra},
            {"op": "write", "mm": "parent", "page": 0, "pages": pages}]


def selftest_scenarios() -> Iterator[tuple[str, dict[str, Any]]]:
    """The cow.c cases the harness can express, as scenario documents."""
    for vname, (spec, after) in _VARIANTS.items():
        n = spec["pages"]
        extra = {k: v for k, v in spec.items() if k != "pages"}
        setup = _mm(n, extra)
        for adv in after:
            setup.append({"op": "madvise", "mm": "parent", "page": 0, "pages": n,
                          "advice": adv})
        dance = [{"op": "mprotect", "mm": "parent", "page": 0, "pages": n, "prot": "r"},
                 {"op": "mprotect", "mm": "parent", "page": 0, "pages": n, "prot": "rw"}]
        sd = [dance[0], {"op": "clear_softdirty", "mm": "parent"}, dance[1]]
        fork = {"op": "fork", "mm": "parent", "child": "child"}
        wp = {"op": "write", "mm": "parent", "page": 0, "pages": n}
        wc = {"op": "write", "mm": "child", "page": 0, "pages": n}
        ex = {"op": "exit", "mm": "child"}
        # A pipe holds at most fs.pipe-max-size (1 MiB by default): 256 pages.
        pipe = {"op": "gup", "kind": "get", "page": 0, "pages": min(n, 256), "name": "pipe"}
        pin = {"op": "gup", "mm": "parent", "kind": "pin", "write": True, "longterm": True,
               "page": 0, "pages": n, "name": "buf"}
        cases = {
            "cow": [fork, wp, ex],
            "cow-mprotect": [fork, *dance, wp, ex],
            "vmsplice-child": [fork, {**pipe, "mm": "child"},
                               {"op": "munmap", "mm": "child", "page": 0, "pages": n}, wp,
                               {"op": "put", "name": "pipe"}, ex],
            "vmsplice-child-mprotect": [fork, {**pipe, "mm": "child"},
                                        {"op": "munmap", "mm": "child", "page": 0, "pages": n},
                                        *dance, wp, {"op": "put", "name": "pipe"}, ex],
            "vmsplice-before-fork": [{**pipe, "mm": "parent"}, fork,
                                     {"op": "munmap", "mm": "parent", "page": 0, "pages": n},
                                     wc, ex, {"op": "put", "name": "pipe"}],
            "vmsplice-after-fork": [fork, {**pipe, "mm": "parent"},
                                    {"op": "munmap", "mm": "parent", "page": 0, "pages": n},
                                    wc, ex, {"op": "put", "name": "pipe"}],
            "iouring-ro": [pin, *sd, wp, {"op": "put", "name": "buf"}],
            "iouring-fork": [pin, fork, wp, ex, {"op": "put", "name": "buf"}],
        }
        for cname, steps in cases.items():
            yield f"selftest-{cname}-{vname}", {
                "description": f"cow.c case '{cname}' on a {vname} (cowlab real suite)",
                "steps": [dict(s) for s in setup + steps]}
    # MADV_COLLAPSE of a PTE-mapped THP before / after fork (cow.c anon_thp_test_cases).
    base = [{"op": "mmap", "mm": "parent", "page": 0, "pages": 512, "thp": "pmd"},
            {"op": "write", "mm": "parent", "page": 0, "pages": 512},
            {"op": "mprotect", "mm": "parent", "page": 0, "pages": 1, "prot": "r"},
            {"op": "mprotect", "mm": "parent", "page": 0, "pages": 1, "prot": "rw"}]
    col = {"op": "madvise", "mm": "parent", "page": 0, "pages": 512, "advice": "collapse"}
    fork = {"op": "fork", "mm": "parent", "child": "child"}
    tail = [{"op": "write", "mm": "parent", "page": 0, "pages": 512}, {"op": "exit",
                                                                        "mm": "child"}]
    collapse: dict[str, list[dict[str, Any]]] = {
        "unshared": [col, fork],
        "fully-shared": [fork, col],
        "lower-shared": [{"op": "madvise", "mm": "parent", "page": 256, "pages": 256,
                          "advice": "dontfork"}, fork,
                         {"op": "madvise", "mm": "parent", "page": 256, "pages": 256,
                          "advice": "dofork"}, col],
        "upper-shared": [{"op": "madvise", "mm": "parent", "page": 0, "pages": 256,
                          "advice": "dontfork"}, fork,
                         {"op": "madvise", "mm": "parent", "page": 0, "pages": 256,
                          "advice": "dofork"}, col],
    }
    for cname, steps in collapse.items():
        yield f"selftest-collapse-{cname}", {
            "description": f"cow.c THP collapse case '{cname}' (cowlab real suite)",
            "steps": [dict(s) for s in base + steps + tail]}


# ------------------------------------------------------------------------- other families
def extra_scenarios() -> Iterator[tuple[str, dict[str, Any]]]:
    """Small scenarios for the ops the other sources do not reach (KSM, mremap, mlock,
    MADV_DONTFORK, MADV_FREE) and minimal forms of disagreements the generated ones found."""
    a = {"mm": "a"}
    yield "extra-ksm-merge-then-write", {"description": "two equal pages merged by ksmd, "
                                         "then one is written", "steps": [
        {"op": "mmap", **a, "page": 0, "pages": 2},
        {"op": "write", **a, "page": 0, "pages": 2, "data": 4242},
        {"op": "madvise", **a, "page": 0, "pages": 2, "advice": "mergeable"},
        {"op": "ksm_merge", "pages": [{"mm": "a", "page": 0}, {"mm": "a", "page": 1}]},
        {"op": "write", **a, "page": 1},
        {"op": "write", **a, "page": 0}]}
    yield "extra-mremap-after-fork", {"description": "a shared page moved by mremap, then "
                                      "written on both sides", "steps": [
        {"op": "mmap", **a, "page": 0, "pages": 2},
        {"op": "write", **a, "page": 0, "pages": 2},
        {"op": "fork", **a, "child": "b"},
        {"op": "mremap", **a, "page": 0, "pages": 2, "new_page": 64},
        {"op": "write", **a, "page": 64, "pages": 2},
        {"op": "write", "mm": "b", "page": 0, "pages": 2}]}
    yield "extra-mlock-after-fork", {"description": "mlock breaks COW with write faults; "
                                     "later writes need none", "steps": [
        {"op": "mmap", **a, "page": 0, "pages": 2},
        {"op": "write", **a, "page": 0, "pages": 2},
        {"op": "fork", **a, "child": "b"},
        {"op": "mlock", **a, "page": 0, "pages": 2},
        {"op": "write", **a, "page": 0, "pages": 2},
        {"op": "munlock", **a, "page": 0, "pages": 2},
        {"op": "write", "mm": "b", "page": 0, "pages": 2}]}
    yield "extra-dontfork", {"description": "a MADV_DONTFORK page is not shared with the "
                             "child", "steps": [
        {"op": "mmap", **a, "page": 0, "pages": 2},
        {"op": "write", **a, "page": 0, "pages": 2},
        {"op": "madvise", **a, "page": 1, "pages": 1, "advice": "dontfork"},
        {"op": "fork", **a, "child": "b"},
        {"op": "write", **a, "page": 0, "pages": 2},
        {"op": "write", "mm": "b", "page": 0}]}
    yield "extra-mthp-after-mprotect-roundtrip", {
        "description": "mprotect r then rw of part of an mTHP mapping, then first touches "
                       "(minimal form of a disagreement: Linux merges the VMAs back)",
        "steps": [
            {"op": "mmap", **a, "page": 0, "pages": 8, "thp": "mthp-2"},
            {"op": "mprotect", **a, "page": 3, "pages": 3, "prot": "r"},
            {"op": "mprotect", **a, "page": 3, "pages": 3, "prot": "rw"},
            {"op": "write", **a, "page": 4},
            {"op": "write", **a, "page": 5}]}
    yield "extra-collapse-after-fork-whole-vma", {
        "description": "MADV_COLLAPSE of a PTE-mapped THP shared with a child, the THP split "
                       "by MADV_DONTNEED of one page (the VMA stays whole): both kernels "
                       "collapse and the parent's stores take no fault",
        "steps": [
            {"op": "mmap", "mm": "parent", "page": 0, "pages": 512, "thp": "pmd"},
            {"op": "write", "mm": "parent", "page": 0, "pages": 512},
            {"op": "madvise", "mm": "parent", "page": 0, "pages": 1, "advice": "dontneed"},
            {"op": "write", "mm": "parent", "page": 0},
            {"op": "fork", "mm": "parent", "child": "child"},
            {"op": "madvise", "mm": "parent", "page": 0, "pages": 512, "advice": "collapse"},
            {"op": "write", "mm": "parent", "page": 0, "pages": 512},
            {"op": "exit", "mm": "child"}]}
    yield "extra-mthp-partial-pageout", {
        "description": "part of an mTHP paged out, then its untouched pages written (minimal "
                       "form of a disagreement: the split maps zero-filled pages to the zero "
                       "page)",
        "steps": [
            {"op": "mmap", **a, "page": 0, "pages": 16, "thp": "mthp-4"},
            {"op": "write", **a, "page": 6},
            {"op": "madvise", **a, "page": 9, "pages": 1, "advice": "pageout"},
            {"op": "write", **a, "page": 0, "pages": 2}]}
    yield "extra-free-then-write", {"description": "MADV_FREE then a write before reclaim",
                                    "steps": [
        {"op": "mmap", **a, "page": 0, "pages": 2},
        {"op": "write", **a, "page": 0, "pages": 2},
        {"op": "madvise", **a, "page": 0, "pages": 2, "advice": "free"},
        {"op": "write", **a, "page": 0},
        {"op": "lru_drain", "cpu": "all"},
        {"op": "write", **a, "page": 1}]}


# -------------------------------------------------------------------------------- random
def random_scenario(rng: random.Random, n: int) -> dict[str, Any]:
    """One generated scenario (it may still be refused by the simulator; see caller)."""
    kind = rng.choice(["none", "none", "none", "pmd", "mthp-2", "mthp-4"])
    pages = {"none": rng.randint(1, 8), "pmd": 512, "mthp-2": 8, "mthp-4": 16}[kind]
    mmap: dict[str, Any] = {"op": "mmap", "mm": "a", "page": 0, "pages": pages}
    if kind != "none":
        mmap["thp"] = kind
    steps: list[dict[str, Any]] = [mmap]
    live = ["a"]
    held: list[str] = []
    child_n = 0

    def rng_range() -> tuple[int, int]:
        lo = rng.randrange(pages)
        return lo, rng.randint(1, min(pages - lo, 4))

    for _ in range(rng.randint(6, 12)):
        mm = rng.choice(live)
        lo, cnt = rng_range()
        cpu = rng.randrange(2)
        op = rng.choice(["write", "write", "write", "read", "fork", "exit", "mprotect",
                         "softdirty", "pageout", "cold", "dontneed", "vmsplice", "pin", "put",
                         "drain", "uffd"])
        if op == "write":
            steps.append({"op": "write", "mm": mm, "page": lo, "pages": cnt, "cpu": cpu})
        elif op == "read":
            steps.append({"op": "read", "mm": mm, "page": lo, "pages": cnt, "cpu": cpu})
        elif op == "fork" and len(live) < 3:
            child_n += 1
            steps.append({"op": "fork", "mm": mm, "child": f"c{child_n}", "cpu": cpu})
            live.append(f"c{child_n}")
        elif op == "exit" and len(live) > 1:
            victim = rng.choice(live[1:])
            steps.append({"op": "exit", "mm": victim})
            live.remove(victim)
        elif op == "mprotect":
            steps.append({"op": "mprotect", "mm": mm, "page": lo, "pages": cnt, "prot": "r"})
            steps.append({"op": "mprotect", "mm": mm, "page": lo, "pages": cnt, "prot": "rw"})
        elif op == "softdirty":
            steps.append({"op": "clear_softdirty", "mm": mm})
        elif op in ("pageout", "cold", "dontneed"):
            steps.append({"op": "madvise", "mm": mm, "page": lo, "pages": cnt, "advice": op,
                          "cpu": cpu})
        elif op in ("vmsplice", "pin") and len(held) < 2:
            name = f"g{len(steps)}"
            gup: dict[str, Any] = {"op": "gup", "mm": mm, "page": lo, "pages": cnt,
                                   "kind": "get" if op == "vmsplice" else "pin", "name": name}
            if op == "pin":
                gup.update(write=True, longterm=True)
            steps.append(gup)
            held.append(name)
        elif op == "put" and held:
            steps.append({"op": "put", "name": held.pop(0)})
        elif op == "uffd":
            steps.append({"op": "uffd_wp", "mm": mm, "page": lo, "pages": cnt,
                          "enable": rng.random() < 0.7})
        elif op == "drain":
            steps.append({"op": "lru_drain", "cpu": rng.choice([0, 1, "all"])})
        # the final writes make every scenario end on decisions
    for mm in live:
        steps.append({"op": "write", "mm": mm, "page": 0, "pages": min(pages, 4)})
    steps += [{"op": "put", "name": name} for name in held]
    return {"description": f"generated scenario {n} (cowlab real suite)",
            "machine": {"cpus": 2}, "steps": steps}


def random_scenarios(count: int, seed: int, preset: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count`` generated scenarios the simulator accepts on ``preset``."""
    rng = random.Random(seed)
    made = tries = 0
    while made < count:
        tries += 1
        if tries > count * 50:
            raise ScenarioError(f"--random: only {made} of {count} generated scenarios were "
                                "valid after many tries")
        doc = random_scenario(rng, made)
        try:
            sc = Scenario.from_mapping(doc, source="generated", kernel=preset)
            from cowlab.plugins import get_registry

            pol = get_registry().make_policy(sc.kernel.default_policy)
            ScenarioRunner(sc, pol).run()
        except ScenarioError:
            continue
        yield f"random-{seed}-{made:02d}", doc
        made += 1


# --------------------------------------------------------------------------------- suite
def run_suite(out: Path, *, scenarios_dir: Path | None, random_count: int, seed: int,
              swapfile: int | None, kernel: str | None = None,
              progress: Any = sys.stderr) -> dict[str, Any]:
    """Run the whole suite; write the report and the scenarios under ``out``."""
    check_host()
    preset = kernel or preset_for(host_release())
    docs: list[tuple[str, str, dict[str, Any]]] = []
    if scenarios_dir is not None:
        for path in sorted(scenarios_dir.glob("*.yaml")):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            docs.append(("experiments", path.stem, doc))
    docs += [("selftest", name, doc) for name, doc in selftest_scenarios()]
    docs += [("extra", name, doc) for name, doc in extra_scenarios()]
    docs += [("random", name, doc) for name, doc in random_scenarios(random_count, seed, preset)]
    sc_dir = out / "scenarios"
    entries: list[dict[str, Any]] = []
    log: list[str] = []
    started = time.monotonic()
    with MachineSetup(swapfile=swapfile, log=log):
        for i, (source, name, doc) in enumerate(docs):
            path = sc_dir / f"{name}.yaml"
            write_text_atomic(path, yaml.safe_dump(doc, sort_keys=False))
            entry: dict[str, Any] = {"name": name, "source": source, "file": str(path),
                                     "families": families(doc)}
            try:
                prep = prepare(path, kernel=preset)
                with MachineSetup(thp_orders=thp_orders(prep.scenario), log=log, guard_ksm=True,
                                  hugetlb_2m=hugetlb_2m_pages(prep.scenario)):
                    result = run_harness(prep.script)
                comp: Comparison = compare(prep.sim, result, prep.script, where=str(path))
                comp.swap_device = prep.scenario.machine.swap
                entry.update(comp.to_dict())
                entry["status"] = "differ" if comp.differ else "agree"
            except (ScenarioError, HarnessError) as exc:
                entry.update(status="error", error=str(exc))
            if progress is not None:
                print(f"[{i + 1}/{len(docs)}] {name}: {entry['status']} "
                      f"({entry.get('agree', 0)} agree, {entry.get('differ', 0)} differ, "
                      f"{entry.get('excluded', 0)} excluded)", file=progress, flush=True)
            if entry["status"] == "differ":
                dis = dict(doc)
                dis["kernel"] = preset
                bad = sorted({r["step"] for r in entry["rows"] if r["status"] == "differ"})
                dis["description"] = (f"{doc.get('description', '')} -- DISAGREEMENT on "
                                      f"{entry.get('host_release')}: steps {bad}").strip()
                write_text_atomic(out / "disagreements" / f"{name}.yaml",
                              yaml.safe_dump(dis, sort_keys=False))
            # Keep the report small: the stores that agree are counted, not listed (their
            # page frame numbers differ from run to run anyway).
            if "rows" in entry:
                entry["rows"] = [r for r in entry["rows"] if r["status"] != "agree"]
            entries.append(entry)
    report = _summarize(entries, preset, time.monotonic() - started, log)
    write_text_atomic(out / "report.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "report.md", format_report(report))
    return report


def _summarize(entries: list[dict[str, Any]], preset: str, seconds: float,
               log: list[str]) -> dict[str, Any]:
    fam: dict[str, dict[str, int]] = {f: {"scenarios": 0, "compared": 0, "agree": 0,
                                          "differ": 0, "excluded": 0} for f in FAMILIES}
    total = {"compared": 0, "agree": 0, "differ": 0, "excluded": 0, "not_compared": 0}
    for e in entries:
        for f in e["families"]:
            d = fam[f]
            d["scenarios"] += 1
            d["agree"] += e.get("agree", 0)
            d["differ"] += e.get("differ", 0)
            d["excluded"] += e.get("excluded", 0)
            d["compared"] += e.get("agree", 0) + e.get("differ", 0)
        for k in ("agree", "differ", "excluded", "not_compared"):
            total[k] += e.get(k, 0)
        total["compared"] += e.get("agree", 0) + e.get("differ", 0)
    release = next((e.get("host_release") for e in entries if e.get("host_release")), "?")
    return {
        "host_release": release, "preset": preset, "command": REGENERATE,
        "seconds": round(seconds, 1), "scenarios": len(entries),
        "scenarios_agreeing": sum(e["status"] == "agree" for e in entries),
        "scenarios_differing": sum(e["status"] == "differ" for e in entries),
        "scenarios_error": sum(e["status"] == "error" for e in entries),
        "totals": total,
        "agreement": round(total["agree"] / total["compared"], 4) if total["compared"] else None,
        "families": {f: {**d, "agreement": round(d["agree"] / d["compared"], 4)
                         if d["compared"] else None} for f, d in fam.items() if d["scenarios"]},
        "setup_log": log,
        "entries": entries,
    }


def _verdict_key(row: dict[str, Any]) -> tuple[Any, ...]:
    s, real = row["sim"], row["real"] or {}
    return (row["step"], row["mm"], s["fault"], s["outcome"], s["violation"], s.get("reason"),
            tuple(s.get("blockers") or ()), real.get("fault"), real.get("outcome"),
            real.get("violation"), real.get("excl_before"), real.get("excl_after"),
            tuple(row["differs"]))


def _runs_of_rows(rows: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any]]]:
    """Differing rows grouped into runs of consecutive pages with the same verdict:
    ``(first page, last page, first row)``."""
    runs: list[tuple[int, int, dict[str, Any]]] = []
    for row in rows:
        if row["status"] != "differ":
            continue
        if runs and runs[-1][1] + 1 == row["page"] and \
                _verdict_key(runs[-1][2]) == _verdict_key(row):
            runs[-1] = (runs[-1][0], row["page"], runs[-1][2])
        else:
            runs.append((row["page"], row["page"], row))
    return runs


def format_report(r: dict[str, Any]) -> str:
    """The markdown report."""
    t = r["totals"]
    lines = [
        f"# cowlab real suite: simulator {r['preset']} vs Linux {r['host_release']}",
        "",
        f"Regenerate (as root): `{r['command']}`",
        "",
        f"- scenarios: {r['scenarios']} ({r['scenarios_agreeing']} agree on every compared "
        f"write, {r['scenarios_differing']} with a disagreement, {r['scenarios_error']} "
        "errors)",
        f"- writes compared: {t['compared']}, agree {t['agree']}, differ {t['differ']}; "
        f"agreement **{r['agreement']}**",
        f"- writes excluded (after a step the harness skipped or failed): {t['excluded']}",
        f"- simulator attempts of non-write steps, not compared: {t['not_compared']}",
        "",
        "## Agreement per op family",
        "",
        "A write counts under every family its scenario exercises.",
        "",
        "| family | scenarios | writes compared | agree | differ | excluded | agreement |",
        "|---|---|---|---|---|---|---|",
    ]
    for f, d in r["families"].items():
        lines.append(f"| {f} | {d['scenarios']} | {d['compared']} | {d['agree']} | "
                     f"{d['differ']} | {d['excluded']} | {d['agreement']} |")
    lines += ["", "## Scenarios", "",
              "| scenario | families | writes | agree | differ | excluded | skipped steps |",
              "|---|---|---|---|---|---|---|"]
    for e in r["entries"]:
        skipped = [f"{s['step']} ({s['op']})" for s in e.get("steps", [])
                   if s["status"] != "ok"]
        lines.append(f"| {e['name']} | {', '.join(e['families'])} | {e.get('writes', '-')} | "
                     f"{e.get('agree', '-')} | {e.get('differ', '-')} | "
                     f"{e.get('excluded', '-')} | {', '.join(skipped) or '-'} |")
    lines += ["", "## Disagreements", "",
              "Each is replayable: `cowlab real run disagreements/NAME.yaml`.", ""]
    any_dis = False
    for e in r["entries"]:
        if e["status"] == "error":
            lines.append(f"- **{e['name']}**: error: {e['error']}")
        for first, last, row in _runs_of_rows(e.get("rows", [])):
            any_dis = True
            s, real = row["sim"], row["real"] or {}
            blockers = ",".join(s.get("blockers") or []) or "-"
            pages = f"page {first}" if first == last else \
                f"pages {first}-{last} ({last - first + 1} stores)"
            lines.append(
                f"- **{e['name']}** step {row['step']} mm {row['mm']} {pages}: "
                f"simulator {s['fault']}/{s['outcome']}/{s['violation'] or '-'} "
                f"(reason {s.get('reason') or '-'}, blockers {blockers}), real "
                f"{real.get('fault', '-')}/{real.get('outcome', '-')}/"
                f"{real.get('violation') or '-'} (excl {real.get('excl_before', '-')}->"
                f"{real.get('excl_after', '-')}); differs in {', '.join(row['differs'])}")
    if not any_dis:
        lines.append("None.")
    skipped_reasons: dict[str, int] = {}
    for e in r["entries"]:
        for s in e.get("steps", []):
            if s["status"] != "ok":
                skipped_reasons[s["status"]] = skipped_reasons.get(s["status"], 0) + 1
    lines += ["", "## Steps the harness skipped or failed", ""]
    lines += [f"- {n} x {reason}" for reason, n in sorted(skipped_reasons.items())] or ["None."]
    lines += ["", "## Machine set-up", ""] + [f"- {x}" for x in r["setup_log"]] + [""]
    return "\n".join(lines)


def add_suite_parser(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = rsub.add_parser("suite", help="the differential suite: shipped scenarios, cow.c cases "
                        "and generated ones, simulator vs this kernel")
    p.add_argument("--scenarios", default="experiments/scenarios", metavar="DIR",
                   help="directory of scenario files to include (default experiments/scenarios)")
    p.add_argument("--random", type=int, default=24, metavar="N",
                   help="generated scenarios (default 24)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated scenarios")
    p.add_argument("--swapfile", default="256M", metavar="SIZE",
                   help="swapfile created for the suite and deleted afterwards (default 256M; "
                   "'none' for no swapfile)")
    p.add_argument("--kernel", default=None, metavar="PRESET",
                   help="simulator preset (default: the host's)")
    p.add_argument("--out", default="experiments/real/report", metavar="DIR",
                   help="output directory (default experiments/real/report)")


def run_suite_command(args: argparse.Namespace) -> int:
    if args.random < 0:
        raise ScenarioError(f"--random: must be 0 or more, got {args.random}")
    size = None if args.swapfile == "none" else parse_size(args.swapfile)
    sdir = Path(args.scenarios) if args.scenarios else None
    if sdir is not None and not sdir.is_dir():
        raise ScenarioError(f"--scenarios: {sdir} is not a directory")
    report = run_suite(Path(args.out), scenarios_dir=sdir, random_count=args.random,
                       seed=args.seed, swapfile=size, kernel=args.kernel)
    t = report["totals"]
    print(f"cowlab real suite: {report['scenarios']} scenarios, {t['compared']} writes "
          f"compared, agreement {report['agreement']} ({t['differ']} differ, {t['excluded']} "
          f"excluded); report in {args.out}/report.md")
    return 1 if t["differ"] or report["scenarios_error"] else 0
