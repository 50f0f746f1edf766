"""A workload run is a deterministic function of (workload, parameters, kernel, policy,
seed): the same seed gives the same decision sequence and counters, in this process and
in another one (string seeds hash the same everywhere; nothing depends on id() or on
set order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workloads.helpers import SMALL, WITH_ACTORS, build, fingerprint, trace

ROOT = Path(__file__).resolve().parents[2]
CASES = [(name, SMALL[name]) for name in sorted(SMALL)] + [
    (name, {**SMALL[name], **WITH_ACTORS})
    for name in ("fork-snapshot-v1", "memcached-pressure-v1", "ksm-vms-v1")
]


def run_case(name: str, params: dict[str, object], seed: int, policy: str = "random") -> str:
    run = build(name, params, preset="v5.18", policy=policy, seed=seed, decisions=300)
    run.execute()
    assert run.kernel.records
    return fingerprint(run.kernel)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_the_same_seed_gives_the_same_decisions_and_counters(
    name: str, params: dict[str, object]
) -> None:
    first = build(name, params, preset="v5.18", policy="random", seed=5, decisions=300)
    second = build(name, params, preset="v5.18", policy="random", seed=5, decisions=300)
    first.execute()
    second.execute()
    assert trace(first.kernel) == trace(second.kernel)
    assert first.kernel.counters == second.kernel.counters
    assert first.kernel.clock.now == second.kernel.clock.now


@pytest.mark.parametrize("name", ["fork-snapshot-v1", "memcached-pressure-v1",
                                  "pinned-io-v1", "softdirty-tracking-v1", "ksm-vms-v1"])
def test_another_seed_gives_another_run(name: str) -> None:
    assert run_case(name, SMALL[name], 1) != run_case(name, SMALL[name], 2)


def test_a_run_in_another_process_gives_the_same_fingerprint() -> None:
    script = (
        "import json, sys\n"
        "from tests.workloads.test_determinism import CASES, run_case\n"
        "print(json.dumps([run_case(n, p, 7) for n, p in CASES]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "123"})
    assert json.loads(out.stdout) == [run_case(n, p, 7) for n, p in CASES]
