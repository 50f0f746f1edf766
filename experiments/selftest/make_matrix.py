"""Regenerate the committed cow.c selftest matrices in this directory.

Runs ``cowlab selftest --matrix`` twice through the command line's own entry point:

* every kernel preset with its own reuse rule, 1 GiB hugetlb included, into
  ``matrix.md`` and ``matrix.csv`` here;
* every shipped policy (except the learned ``sb3``) on the v6.15 preset, into
  ``policies-v6.15/``.

Run from the repository root (about three minutes on two cores)::

    python experiments/selftest/make_matrix.py
    python experiments/selftest/make_matrix.py --only presets   # the first one only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cowlab.cli import main

HERE = Path(__file__).resolve().parent
#: The policies compared on one kernel (``random`` is seeded: the table is reproducible).
POLICIES = ("legacy", "baseline", "patched", "patched-lru", "exclusive", "large-strict",
            "exact-mapcount", "oracle", "always-copy", "always-reuse", "random")
POLICY_KERNEL = "v6.15"

COMMANDS = {
    "presets": ["selftest", "--matrix", "--hugetlb-1g", "--format", "csv",
                "--out", str(HERE)],
    "policies": ["selftest", "--matrix", "--kernel", POLICY_KERNEL,
                 *[arg for p in POLICIES for arg in ("--policy", p)],
                 "--format", "csv", "--out", str(HERE / f"policies-{POLICY_KERNEL}")],
}


def run(which: str) -> int:
    """Run one of :data:`COMMANDS`; its CSV goes to /dev/null, the files to --out."""
    argv = COMMANDS[which]
    start = time.perf_counter()
    stdout = sys.stdout
    with open("/dev/null", "w", encoding="utf-8") as sink:
        sys.stdout = sink
        try:
            status = main(argv)
        finally:
            sys.stdout = stdout
    print(f"cowlab {' '.join(argv)}: exit {status} in {time.perf_counter() - start:.0f} s")
    return status


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(COMMANDS), help="regenerate one matrix")
    args = parser.parse_args()
    which = [args.only] if args.only else list(COMMANDS)
    return max(run(w) for w in which)


if __name__ == "__main__":
    sys.exit(cli())
