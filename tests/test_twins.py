"""The twin scenarios of experiments/agents/twins/: before v5.19 no kernel-visible reuse
rule can be safe (docs/results.md), from v5.19 PageAnonExclusive tells the twins apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from cowlab.env import encode_features
from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView
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


def _last_write(twin: str, kernel: str, decision: Decision) -> tuple[tuple[float, ...], str | None]:
    policy = Fixed(decision)
    scenario = Scenario.load(TWINS / f"{twin}.yaml", kernel=kernel)
    result = ScenarioRunner(scenario, policy, seed=0).run()
    return policy.seen[-1], result.attempts[-1].violation


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
