"""mix-v1: one component per run, chosen from the seed by weight."""

from __future__ import annotations

from collections import Counter

import pytest

from cowlab.kernel import Kernel, Machine, get_preset
from cowlab.kernel.errors import KernelError
from cowlab.plugins import get_registry
from cowlab.workloads import Budget, Run, machine_for, resolve_workload, run_workload
from cowlab.workloads.mix import COMPONENTS, Mix
from tests.workloads.helpers import fingerprint

IDS = [workload_id for workload_id, _ in COMPONENTS.values()]


def test_every_shipped_workload_but_the_mixture_is_a_component() -> None:
    assert set(IDS) == set(get_registry().names("workload")) - {"mix-v1"}


def test_the_choice_follows_the_weights_and_is_fixed_by_the_seed() -> None:
    mix = Mix(forceswap=3.0, ksm_vms=1.0, fork_snapshot=0.0, pinned_io=0.0,
              memcached_pressure=0.0, softdirty_tracking=0.0, vmsplice_pipe=0.0)
    picks = Counter(mix.component_for(seed) for seed in range(400))
    assert set(picks) == {"forceswap-v1", "ksm-vms-v1"}
    assert 250 < picks["forceswap-v1"] < 350
    assert [mix.component_for(s) for s in range(20)] == [mix.component_for(s) for s in range(20)]
    uniform = Counter(Mix().component_for(seed) for seed in range(600))
    assert set(uniform) == set(IDS)


def test_a_mixture_run_is_the_run_of_the_component_it_picked() -> None:
    """resolve_workload() returns the component, so the machine and the run are exactly
    those of the component with the same seed."""
    reg = get_registry()
    config = get_preset("v5.19")
    seed = next(s for s in range(50) if Mix().component_for(s) == "pinned-io-v1")
    chosen = resolve_workload(Mix(), seed)
    assert chosen.id == "pinned-io-v1"

    def fp(workload: object) -> str:
        concrete = resolve_workload(workload, seed)  # type: ignore[arg-type]
        k = Kernel(config, reg.make_policy("exclusive"), machine=machine_for(concrete, None),
                   seed=seed)
        Run(concrete, k, seed, Budget(max_decisions=200)).execute()
        return fingerprint(k)

    assert fp(Mix()) == fp(reg.make("workload", "pinned-io-v1"))
    result = run_workload(Mix(), config, reg.make_policy("exclusive"), seed=seed,
                          budget=Budget(max_decisions=50))
    assert result.workload == "mix-v1" and result.decisions == 50


def test_an_unresolved_mixture_on_the_wrong_machine_says_how_to_fix_it() -> None:
    seed = next(s for s in range(50) if Mix().component_for(s) == "memcached-pressure-v1")
    k = Kernel(get_preset("v5.19"), get_registry().make_policy("exclusive"),
               machine=Machine(cpus=8))
    run = Run(Mix(), k, seed, Budget())
    with pytest.raises(KernelError, match="resolve_workload"):
        run.workload.setup(run)


def test_weights_must_be_non_negative_and_not_all_zero() -> None:
    with pytest.raises(ValueError, match="forceswap"):
        Mix(forceswap=-1.0)
    with pytest.raises(ValueError, match="at least one positive"):
        Mix(**{name: 0.0 for name in COMPONENTS})
