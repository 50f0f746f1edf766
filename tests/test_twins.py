"""The twin scenarios of experiments/agents/twins/: before v5.19 no kernel-visible reuse
rule can be safe (docs/results.md), from v5.19 PageAnonExclusive tells the twins apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowlab.env import encode_features
from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView
from cowlab.kernel.presets import PRESETS
from cowlab.plugins import get_registry
from cowlab.scenario import Scenario, ScenarioRunner

TWINS = Path(__file__).resolve().parents[1] / "experiments" / "agents" / "twins"
PRE_PAE = ("v5.9", "v5.11", "v5.12", "v5.18")


class Fixed:
    """Answers every fault the same way and keeps what the kernel let it see."""

    name = "fixed"

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.seen: list[tuple[float, ...]] = []

    def reset(self, seed: int | None) -> None:
        """Stateless."""

    def decide(self, fault: FaultView) -> Decision:
        self.seen.append(tuple(encode_features(fault)))
        return self.decision


def _last_write(twin: str | Scenario, kernel: str,
                decision: Decision) -> tuple[tuple[float, ...], str | None]:
    policy = Fixed(decision)
    scenario = (Scenario.load(TWINS / f"{twin}.yaml", kernel=kernel)
                if isinstance(twin, str) else twin)
    result = ScenarioRunner(scenario, policy, seed=0).run()
    return policy.seen[-1], result.attempts[-1].violation


def _foll_get_twin(kernel: str, child_takes_it: bool) -> Scenario:
    """The FOLL_GET twins: p's own R/O reference, or one its child took before exiting."""
    gup = {"op": "gup", "page": 0, "kind": "get", "write": False, "name": "g",
           "mm": "c" if child_takes_it else "p"}
    exit_ = {"op": "exit", "mm": "c"}
    steps = [{"op": "mmap", "mm": "p", "page": 0, "pages": 1},
             {"op": "write", "mm": "p", "page": 0},
             {"op": "fork", "mm": "p", "child": "c"},
             *([gup, exit_] if child_takes_it else [exit_, gup]),
             {"op": "write", "mm": "p", "page": 0}]
    return Scenario.from_mapping({"kernel": kernel, "steps": steps})


@pytest.mark.parametrize("kernel", PRE_PAE)
def test_the_twins_look_the_same_to_the_kernel_and_each_answer_is_wrong_in_one(
    kernel: str,
) -> None:
    own_reuse, own_reuse_violation = _last_write("own-pin", kernel, Decision.REUSE)
    own_copy, own_copy_violation = _last_write("own-pin", kernel, Decision.COPY)
    other_reuse, other_reuse_violation = _last_write("other-pin", kernel, Decision.REUSE)
    other_copy, other_copy_violation = _last_write("other-pin", kernel, Decision.COPY)
    assert own_reuse == own_copy == other_reuse == other_copy  # one observation
    assert own_reuse_violation is None and own_copy_violation == "pin_incoherent"
    assert other_reuse_violation == "leak" and other_copy_violation is None


@pytest.mark.parametrize("twin", ["own-pin", "other-pin"])
def test_page_anon_exclusive_makes_the_twins_safe_from_v5_19(twin: str) -> None:
    scenario = Scenario.load(TWINS / f"{twin}.yaml", kernel="v5.19")
    result = ScenarioRunner(scenario, get_registry().make_policy("exclusive"), seed=0).run()
    assert result.violations == []


@pytest.mark.parametrize("kernel", [k for k in PRESETS if k != "v5.8"])
def test_foll_get_twins_defeat_every_rule_on_every_preset_but_v5_8(kernel: str) -> None:
    # v5.8 breaks COW when GUP takes a reference in a COW mapping (17839856fd58), so
    # there the writer's own reference is on a page nobody else maps: no twin.
    own, child = (_foll_get_twin(kernel, c) for c in (False, True))
    own_reuse, own_reuse_v = _last_write(own, kernel, Decision.REUSE)
    own_copy, own_copy_v = _last_write(own, kernel, Decision.COPY)
    child_reuse, child_reuse_v = _last_write(child, kernel, Decision.REUSE)
    child_copy, child_copy_v = _last_write(child, kernel, Decision.COPY)
    assert own_reuse == own_copy == child_reuse == child_copy
    assert (own_reuse_v, own_copy_v) == (None, "pin_incoherent")
    assert (child_reuse_v, child_copy_v) == ("leak", None)
