"""The core's invariants hold under every workload, and a finished run leaks nothing.

A seed loop (not hypothesis: a workload run is already a random program of thousands of
operations) over every registered workload, on an old and a new kernel, with and without
the background actors: the reference ledger and page tables stay consistent every few
decisions, and once every process has exited no frame or swap slot is left.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cowlab.plugins import get_registry
from tests.workloads.helpers import SMALL, WITH_ACTORS, build, teardown

WORKLOADS = sorted(SMALL)
ACTOR_WORKLOADS = [w for w in WORKLOADS if w not in ("forceswap-v1", "mix-v1")]
PRESETS = (
    "v5.7", "v5.8", "v5.9", "v5.11", "v5.12", "v5.18", "v5.19", "v6.2", "v6.9", "v6.11",
    "v6.12", "v6.15",
)


def check_run(name: str, params: dict[str, object], preset: str, policy: str | None,
              seed: int, *, safe: bool = False) -> None:
    run = build(name, params, preset=preset, policy=policy, seed=seed, decisions=400)
    k = run.kernel
    run.workload.setup(run)
    checkpoint = 0
    def reached() -> bool:
        return run.done or k.nr_decisions >= checkpoint

    while not run.done and not run.engine.idle:
        checkpoint += 50
        run.engine.run(until_ns=run.budget.max_time_ns, stop=reached)
        problems = k.check_invariants(safe_run=safe)
        assert not problems, f"{name} seed {seed} after {k.nr_decisions} decisions: {problems}"
        if run.budget.max_time_ns is not None and k.clock.now >= run.budget.max_time_ns:
            break
    assert k.records, f"{name} wrote nothing"
    if safe:
        assert k.violations == []
    assert teardown(k) == []
    assert k.check_invariants() == []


def test_every_registered_workload_is_covered() -> None:
    assert set(get_registry().names("workload")) == set(SMALL)


@pytest.mark.parametrize("name", WORKLOADS)
@pytest.mark.parametrize(("preset", "policy"), [("v5.9", None), ("v5.18", "random")])
def test_ledger_and_page_tables_stay_consistent_and_nothing_leaks(
    name: str, preset: str, policy: str | None
) -> None:
    for seed in range(3):
        check_run(name, SMALL[name], preset, policy, seed)


@pytest.mark.parametrize("name", WORKLOADS)
def test_the_exclusive_rule_never_violates_and_keeps_the_pae_invariants(name: str) -> None:
    for seed in range(2):
        check_run(name, SMALL[name], "v5.19", "exclusive", seed, safe=True)


@pytest.mark.parametrize("name", ACTOR_WORKLOADS)
def test_invariants_hold_with_every_background_actor_running(name: str) -> None:
    params = {**SMALL[name], **WITH_ACTORS}
    check_run(name, params, "v5.18", "always-reuse", 0)
    check_run(name, params, "v5.19", "exclusive", 1, safe=True)


@pytest.mark.parametrize("name", WORKLOADS)
def test_invariants_hold_over_many_seeds_and_eras(name: str) -> None:
    for seed in range(8):
        params = {**SMALL[name], **(WITH_ACTORS if seed % 2 and name in ACTOR_WORKLOADS
                                    else {})}
        check_run(name, params, PRESETS[seed], ("random", None)[seed % 2], seed)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(WORKLOADS), seed=st.integers(0, 2**32 - 1),
       preset=st.sampled_from(PRESETS),
       policy=st.sampled_from([None, "random", "always-reuse", "always-copy", "oracle"]),
       actors=st.booleans(), swap=st.sampled_from(["zram", "pmem", "ssd", "nvme"]))
def test_any_seed_era_policy_and_device_keeps_the_invariants(
    name: str, seed: int, preset: str, policy: str | None, actors: bool, swap: str
) -> None:
    params = dict(SMALL[name])
    if actors and name in ACTOR_WORKLOADS:
        params.update(WITH_ACTORS)
    if name in ("forceswap-v1", "memcached-pressure-v1"):
        params["swap"] = swap
    check_run(name, params, preset, policy, seed)
