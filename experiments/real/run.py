"""Regenerate experiments/real/ (as root, on the machine being measured; one command).

    sudo PYTHONPATH=.:plugins python experiments/real/run.py [--skip-calibrate]

1. ``cowlab real suite`` with the arguments the committed report used
   (:data:`cowlab.real.suite.REGENERATE`): report/report.md, report.json, the scenarios
   and the disagreements.
2. ``cowlab real calibrate --repeats 2000 --swapfile 256M``: costs.yaml, whose figures
   docs/real.md quotes.

Both commands set up and restore the machine themselves (swapfile, THP and KSM knobs).
Exit status: the suite's (1 when a store differs), or 2 when the host cannot run it.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from cowlab.cli import main
from cowlab.real.suite import REGENERATE

CALIBRATE = ("cowlab real calibrate --repeats 2000 --swapfile 256M "
             "--out experiments/real/costs.yaml")


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-calibrate", action="store_true",
                        help="regenerate the suite report only")
    args = parser.parse_args(argv)
    status = main(shlex.split(REGENERATE)[1:])
    if status == 2:
        return status
    if not args.skip_calibrate:
        cal = main(shlex.split(CALIBRATE)[1:])
        if cal != 0:
            return cal
    return status


if __name__ == "__main__":
    sys.exit(run())
