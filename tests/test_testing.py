"""cowlab.testing: the helpers plugin authors test their policies with."""

from __future__ import annotations

import random
import types
from typing import Any

import pytest

from cowlab import Decision, hookimpl
from cowlab.plugins import get_registry
from cowlab.testing import ContractError, check_policy_contract


class Sloppy:
    name = "sloppy"

    def reset(self, seed: int | None) -> None:
        pass

    def decide(self, fault: Any) -> Any:
        return True  # not a Decision


class Unseeded:
    """Uses randomness that reset() does not seed: not reproducible."""

    name = "unseeded"
    _shared = random.Random()

    def reset(self, seed: int | None) -> None:
        pass

    def decide(self, fault: Any) -> Decision:
        return Decision.REUSE if self._shared.random() < 0.5 else Decision.COPY


@pytest.mark.parametrize("name", ["exclusive", "baseline", "legacy", "random", "oracle"])
def test_the_shipped_policies_pass_the_contract_check(name: str) -> None:
    decisions = check_policy_contract(lambda: get_registry().make_policy(name),
                                      presets=("v5.9", "v6.15"), seeds=(0, 1), ops=40)
    assert decisions > 0


def test_an_answer_that_is_not_a_decision_breaks_the_contract() -> None:
    with pytest.raises(ContractError, match="not a Decision"):
        check_policy_contract(Sloppy, presets=("v5.19",), seeds=(0,), ops=40)


def test_a_policy_that_is_not_reproducible_for_a_seed_breaks_the_contract() -> None:
    with pytest.raises(ContractError, match="not deterministic"):
        check_policy_contract(Unseeded, presets=("v5.19",), seeds=(0, 1, 2), ops=60)


def test_the_registry_fixture_holds_only_the_plugins_given(cowlab_registry: Any) -> None:
    plugin = types.ModuleType("my_plugin")

    @hookimpl
    def cowlab_register_policies(register: Any) -> None:
        register("mine", Sloppy, description="test")

    plugin.cowlab_register_policies = cowlab_register_policies  # type: ignore[attr-defined]
    registry = cowlab_registry(plugin)
    assert registry.names("policy") == ["mine"]
