"""The bounded search: the issue's checks, counterexamples that replay, executors agree."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main
from cowlab.executors import make_executor
from cowlab.kernel.decision import Decision
from cowlab.kernel.presets import PRESETS
from cowlab.testing import assert_safe_up_to
from cowlab.verify import Bounds, to_scenario, verify
from cowlab.verify.command import DEFAULT_DEPTH
from cowlab.verify.randomized import random_search
from cowlab.verify.search import make_setup
from cowlab.verify.shrink import shrink_counterexample
from cowlab.verify.sim import Problem, freeze
from cowlab.verify.universe import DEFAULT_OPS, initial_steps

#: A small alphabet that still holds every check's counterexample (fast tests).
SMALL = ("write", "fork", "munmap", "gup-get", "gup-pin", "put", "mprotect")
NO_FOLL_GET = tuple(op for op in DEFAULT_OPS if op != "gup-get")


def _ops(result: Any) -> list[str]:
    return [s["op"] for s in result.counterexample]


@pytest.mark.parametrize("kernel", ["v5.7", "v5.19", "v6.15"])
def test_always_reuse_leaks_after_a_fork_in_two_steps(kernel: str) -> None:
    r = verify("always-reuse", kernel, Bounds(depth=3))
    assert r.status == "counterexample"
    assert _ops(r) == ["fork", "write"]
    assert r.violation is not None and r.violation["violation"] == "leak"


def test_legacy_on_v57_yields_the_cve_pattern_or_one_as_short() -> None:
    # CVE-2020-29374: fork, R/O GUP, unmap (or copy away), write: 4 steps.
    r = verify("legacy", "v5.7", Bounds(depth=4, ops=SMALL))
    assert r.status == "counterexample" and r.violation is not None
    assert r.violation["violation"] == "leak" and r.violation["avoidable"]
    assert len(r.counterexample or []) <= 4
    assert "fork" in _ops(r) and "gup" in _ops(r)


def test_baseline_on_v59_breaks_a_pin() -> None:
    # FOLL_PIN only (with R/O FOLL_GET the search finds that kind of break first).
    ops = ("write", "fork", "gup-pin", "put", "softdirty", "mprotect")
    r = verify("baseline", "v5.9", Bounds(depth=4, ops=ops))
    assert r.status == "counterexample" and r.violation is not None
    assert r.violation["violation"] == "pin_incoherent" and r.violation["avoidable"]
    pinned = [s for s in r.counterexample or [] if s["op"] == "gup"]
    assert pinned and all(s["kind"] == "pin" for s in pinned)


def test_exclusive_on_v519_copies_under_a_ro_foll_get_reference() -> None:
    # The upstream limitation: GUP-triggered unsharing (c89357e27f20) covers FOLL_PIN
    # only, so a R/O FOLL_GET reference on a page that is exclusive but not marked
    # PageAnonExclusive is broken by the refcount-based copy.
    r = verify("exclusive", "v5.19", Bounds(depth=4, ops=("write", "fork", "gup-get")))
    assert r.status == "counterexample" and r.violation is not None
    assert r.violation["violation"] == "pin_incoherent"
    assert next(s for s in r.counterexample or [] if s["op"] == "gup")["kind"] == "get"


def test_exclusive_on_v519_is_safe_without_foll_get_to_depth_3() -> None:
    r = verify("exclusive", "v5.19", Bounds(depth=3, ops=NO_FOLL_GET))
    assert r.status == "safe" and r.depth_completed == 3
    assert "safe up to depth 3 over this universe" in r.headline()


@pytest.mark.slow
def test_exclusive_on_v519_is_safe_without_foll_get_at_the_default_bound() -> None:
    r = verify("exclusive", "v5.19", Bounds(depth=DEFAULT_DEPTH, ops=NO_FOLL_GET))
    assert r.status == "safe"


@pytest.mark.parametrize("kernel", ["v5.7", "v5.19"])
def test_oracle_is_safe_to_depth_3(kernel: str) -> None:
    r = verify("oracle", kernel, Bounds(depth=3))
    assert r.status == "safe"


@pytest.mark.slow
@pytest.mark.parametrize("kernel", list(PRESETS))
def test_oracle_is_safe_on_every_preset_at_the_default_bound(kernel: str) -> None:
    assert verify("oracle", kernel, Bounds(depth=DEFAULT_DEPTH)).status == "safe"


def test_unavoidable_violations_are_counted_and_strict_stops_at_them() -> None:
    # A R/O FOLL_GET in the parent after fork: the parent's write either leaks (reuse)
    # or breaks its own reference (copy). No rule can help; the oracle is not blamed.
    ops = ("write", "fork", "gup-get")
    r = verify("oracle", "v5.19", Bounds(depth=3, ops=ops))
    assert r.status == "safe" and r.unavoidable > 0
    assert r.first_unavoidable is not None
    strict = verify("oracle", "v5.19", Bounds(depth=3, ops=ops, strict=True))
    assert strict.status == "counterexample" and strict.violation is not None
    assert not strict.violation["avoidable"]


def test_a_counterexample_replays_to_the_same_violation_with_scenario_run(
        tmp_path: Path) -> None:
    r = verify("legacy", "v5.7", Bounds(depth=4, ops=SMALL))
    assert r.violation is not None
    path = tmp_path / "cx.yaml"
    path.write_text(to_scenario(r))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["scenario", "run", str(path), "--policy", "legacy", "--json"]) == 0
    doc = json.loads(out.getvalue())
    last = len(r.initial) + len(r.counterexample or []) - 1
    hits = [v for v in doc["violations"] if v["step"] == last]
    assert hits and hits[0]["violation"] == r.violation["violation"]
    assert hits[0]["mm"] == r.violation["mm"] and hits[0]["outcome"] == r.violation["outcome"]
    assert "# leak" in path.read_text()


def _comparable(r: Any) -> dict[str, Any]:
    d: dict[str, Any] = r.to_dict()
    for key in ("seconds", "states_per_s"):
        d.pop(key)
    return d


@pytest.mark.parametrize("policy,kernel", [("legacy", "v5.7"), ("exclusive", "v5.19")])
def test_the_result_is_the_same_in_process_and_on_a_process_pool(policy: str,
                                                                  kernel: str) -> None:
    bounds = Bounds(depth=3, ops=SMALL)
    one = verify(policy, kernel, bounds, executor=make_executor("inprocess"))
    pool = make_executor("process", workers=2)
    try:
        two = verify(policy, kernel, bounds, executor=pool)
    finally:
        pool.close()
    assert _comparable(one) == _comparable(two)


def _problem(policy: str) -> Problem:
    from cowlab.geometry import DEFAULT_GEOMETRY
    from cowlab.kernel.kernel import Machine
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import get_registry

    return Problem(resolve_kernel("v5.19"), Machine(cpus=2), DEFAULT_GEOMETRY,
                   get_registry().make_policy(policy),
                   tuple(freeze(s) for s in initial_steps(Bounds(), 0)))


def test_delta_debugging_drops_every_step_the_violation_does_not_need() -> None:
    noisy: list[dict[str, Any]] = [
        {"op": "read", "mm": "m0", "page": 0, "cpu": 1},
        {"op": "lru_drain", "cpu": "all"},
        {"op": "fork", "mm": "m0", "child": "m1"},
        {"op": "read", "mm": "m1", "page": 0, "cpu": 0},
        {"op": "clear_softdirty", "mm": "m1"},
        {"op": "write", "mm": "m1", "page": 0, "cpu": 1},
        {"op": "write", "mm": "m0", "page": 0, "cpu": 0},
    ]
    steps, violation = shrink_counterexample(_problem("always-reuse"), noisy, "leak")
    assert [s["op"] for s in steps] == ["fork", "write"]
    assert violation["violation"] == "leak"


def test_random_mode_is_seeded_and_shrinks_what_it_finds() -> None:
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import get_registry

    def run(seed: int) -> Any:
        setup = make_setup(get_registry().make_policy("always-reuse"), "always-reuse",
                           resolve_kernel("v5.19"), Bounds())
        return random_search(setup, policy_label="always-reuse", seed=seed,
                             budget_s=60, max_steps=30, max_sequences=20)

    a, b = run(3), run(3)
    assert a.status == "counterexample" and a.counterexample == b.counterexample
    assert a.sequences == b.sequences
    assert len(a.counterexample or []) <= (a.unshrunk_length or 0)


def test_random_mode_reports_a_sample_never_a_bound() -> None:
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import get_registry

    setup = make_setup(get_registry().make_policy("oracle"), "oracle",
                       resolve_kernel("v5.19"), Bounds())
    r = random_search(setup, policy_label="oracle", seed=0, budget_s=60, max_steps=10,
                      max_sequences=3)
    assert r.status == "safe" and r.sequences == 3
    assert "not a bound" in r.headline() and "safe up to" not in r.headline()


class _Raises:
    name = "raises"

    def reset(self, seed: int | None) -> None:
        """Stateless."""

    def decide(self, fault: object) -> Decision:
        raise ValueError("boom")


def test_a_policy_that_raises_is_reported_not_explored_past() -> None:
    r = verify(_Raises(), "v5.19", Bounds(depth=2, ops=("write", "fork")))
    assert r.status == "error" and r.error is not None and "boom" in r.error


def test_assert_safe_up_to_passes_safe_rules_and_prints_the_scenario_otherwise() -> None:
    assert assert_safe_up_to("oracle", "v5.19", depth=2).status == "safe"
    with pytest.raises(AssertionError, match="leak") as info:
        assert_safe_up_to("always-reuse", "v5.19", depth=2)
    assert "steps:" in str(info.value) and "op: fork" in str(info.value)


def test_the_thp_family_maps_the_initial_pages_as_one_mthp_folio() -> None:
    from cowlab.kernels import resolve_kernel
    from cowlab.plugins import get_registry
    from cowlab.verify.sim import Sim

    setup = make_setup(get_registry().make_policy("large-strict"), "large-strict",
                       resolve_kernel("v6.9"), Bounds(pages=4))
    assert "thp" in setup.ops
    assert {f.order for f in Sim(setup.problem).kernel.frames.values()} == {2}
    old = make_setup(get_registry().make_policy("exclusive"), "exclusive",
                     resolve_kernel("v5.19"), Bounds(pages=4))
    assert "thp" not in old.ops
