"""``cowlab real calibrate``: time kernel work on the host and write a cost file.

The harness's ``--calibrate`` mode times, with clock_gettime(CLOCK_MONOTONIC) around
each event and many repeats (medians; a sample counts only when pagemap and getrusage
confirm the event happened as intended):

* a reuse write fault (a page write-protected by clear_refs soft-dirty, reused in place),
* a copy write fault (a page shared with a live forked child),
* a swap-in write fault from a swapfile (page-cluster set to 0 so each fault reads its
  own page; major faults only), and the same fault when the page is still in the
  swapcache,
* an LRU drain: madvise(MADV_COLD) starts with lru_add_drain(); the call right after 31
  first-touch faults (a full per-CPU batch) minus the call with an empty batch,
* a TLB-flushing mprotect: mprotect(PROT_READ) of one dirty page with a second thread
  spinning on another CPU (a remote shootdown) minus the same without the thread.

The cost file maps them onto :class:`~cowlab.kernel.costs.CostModel`: ``fault_ns`` is
the reuse fault minus ``decide_ns``; the extra time of a copy is split over ``alloc_ns``,
``copy_4k_ns`` and ``rmap_ns`` in the proportions of the defaults (the harness cannot
time those three apart); ``lru_drain_ns`` and ``tlb_remote_ns`` are the differences
above. The swap-in figures are recorded but not loaded: the device latencies belong to
the device table, not to the cost model.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path
from typing import Any

import yaml

from cowlab.atomicio import write_text_atomic
from cowlab.costfile import FORMAT
from cowlab.kernel.costs import DEVICES, CostModel
from cowlab.real.harness import HarnessError, check_host, run_harness
from cowlab.real.host import MachineSetup, parse_size
from cowlab.real.script import Script

PAGE_CLUSTER = Path("/proc/sys/vm/page-cluster")


def derive_costs(t: dict[str, Any]) -> tuple[dict[str, int], list[str]]:
    """Cost-model fields from the harness's timings, and notes on what was not derived.

    >>> t = {"reuse_fault": {"median_ns": 600, "samples": 9},
    ...      "copy_fault": {"median_ns": 2050, "samples": 9},
    ...      "madv_cold_full_batch": {"median_ns": 1500, "samples": 9},
    ...      "madv_cold_empty_batch": {"median_ns": 400, "samples": 9},
    ...      "mprotect_remote": {"median_ns": 3000, "samples": 9},
    ...      "mprotect_local": {"median_ns": 1000, "samples": 9}}
    >>> derive_costs(t)[0]
    {'fault_ns': 590, 'alloc_ns': 450, 'copy_4k_ns': 400, 'rmap_ns': 600, \
'lru_drain_ns': 1100, 'tlb_remote_ns': 2000}
    """
    d = CostModel()
    out: dict[str, int] = {}
    notes: list[str] = []

    def med(key: str) -> int | None:
        entry = t.get(key) or {}
        return int(entry["median_ns"]) if entry.get("samples", 0) > 0 else None

    reuse, copy = med("reuse_fault"), med("copy_fault")
    if reuse is not None:
        out["fault_ns"] = max(reuse - d.decide_ns, 0)
    else:
        notes.append("reuse fault not measured: fault_ns keeps its default")
    if reuse is not None and copy is not None and copy > reuse:
        extra = copy - reuse
        parts = {"alloc_ns": d.alloc_ns, "copy_4k_ns": d.copy_4k_ns, "rmap_ns": d.rmap_ns}
        total = sum(parts.values())
        for key, share in parts.items():
            out[key] = round(extra * share / total)
    else:
        notes.append("copy fault not measured (or not slower than reuse): alloc/copy/rmap "
                     "keep their defaults")
    full, empty = med("madv_cold_full_batch"), med("madv_cold_empty_batch")
    if full is not None and empty is not None and full > empty:
        out["lru_drain_ns"] = full - empty
    else:
        notes.append("LRU drain not measurable as a difference: lru_drain_ns keeps its default")
    remote, local = med("mprotect_remote"), med("mprotect_local")
    if remote is not None and local is not None and remote > local:
        out["tlb_remote_ns"] = remote - local
    else:
        notes.append("no remote TLB shootdown measured (one CPU, or no difference): "
                     "tlb_remote_ns keeps its default")
    return out, notes


def calibrate(out: Path, *, repeats: int, swapfile: int | None) -> dict[str, Any]:
    """Run the timings and write the cost file ``out`` (atomically)."""
    check_host()
    log: list[str] = []
    script = Script("calibrate")
    with MachineSetup(swapfile=swapfile, log=log) as setup:
        if PAGE_CLUSTER.exists():
            setup.write_knob(PAGE_CLUSTER, "0")
        timings = run_harness(script, args=("--calibrate", str(repeats)),
                              timeout_s=max(120, repeats // 10))
    if timings.get("format") != "cowlab-real-calibration":
        raise HarnessError("the harness printed no calibration result")
    costs, notes = derive_costs(timings["timings"])
    default = CostModel()
    doc = {
        "format": FORMAT,
        "version": 1,
        "host": {"kernel": timings.get("kernel"), "machine": timings.get("machine"),
                 "node": platform.node(), "cpus": os.cpu_count()},
        "repeats": repeats,
        "costs": costs,
        "defaults": {k: getattr(default, k) for k in costs},
        "measured": timings["timings"],
        "swap_device_read_ns_measured": (timings["timings"].get("swapin_major_fault") or {})
        .get("median_ns"),
        "swap_device_defaults_ns": {k: v.read_ns for k, v in DEVICES.items()},
        "notes": [*notes, "alloc_ns, copy_4k_ns and rmap_ns share the copy fault's extra "
                  "time in the defaults' proportions (not timed apart)"],
        "setup_log": log,
    }
    write_text_atomic(out, yaml.safe_dump(doc, sort_keys=False))
    return doc


def format_calibration(doc: dict[str, Any]) -> str:
    lines = [f"calibration on {doc['host']['kernel']} ({doc['host']['machine']}), "
             f"{doc['repeats']} repeats, medians:"]
    for key, entry in doc["measured"].items():
        lines.append(f"  {key:<24} {entry['median_ns']:>9} ns  ({entry['samples']}/"
                     f"{entry['attempted']} samples)")
    lines.append("cost model (measured vs shipped default):")
    for key, value in doc["costs"].items():
        lines.append(f"  {key:<16} {value:>9} ns   default {doc['defaults'][key]:>7} ns")
    lines += [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines)


def add_calibrate_parser(rsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = rsub.add_parser("calibrate", help="time faults, drains and TLB flushes on this host "
                        "and write a cost file (machine.costs)")
    p.add_argument("--repeats", type=int, default=2000, metavar="N",
                   help="samples per measurement (default 2000)")
    p.add_argument("--swapfile", default="256M", metavar="SIZE",
                   help="swapfile for the swap-in timing, deleted afterwards (default 256M; "
                   "'none' to skip it)")
    p.add_argument("--out", default="experiments/real/costs.yaml", metavar="FILE",
                   help="cost file to write (default experiments/real/costs.yaml)")


def run_calibrate_command(args: argparse.Namespace) -> int:
    if args.repeats < 10 or args.repeats > 1_000_000:
        raise HarnessError(f"--repeats: expected 10..1000000, got {args.repeats}")
    size = None if args.swapfile == "none" else parse_size(args.swapfile)
    doc = calibrate(Path(args.out), repeats=args.repeats, swapfile=size)
    print(format_calibration(doc))
    print(f"cost file written to {args.out}", file=sys.stderr)
    return 0
