"""The Gymnasium environment cowlab/CowFault-v0 (cowlab.env)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import cowlab
from cowlab.config import ConfigError
from cowlab.env import PRIMITIVE_ACTIONS, CowFaultEnv
from cowlab.kernel import Decision, get_preset
from cowlab.kernel.engine import Thread, ThreadGen
from cowlab.plugins import PluginRegistry, RegisterFn, get_registry, hookimpl, load_registry
from cowlab.workloads import Budget, Run, run_workload

FORCESWAP = {"name": "forceswap-v1", "params": {"swap": "pmem", "npages": 4}}


# ------------------------------------------------------------------ test-only workloads


class ForkWrites:
    """A parent writes its pages right after each fork: every decision is on a shared page."""

    id = "test-fork-writes-v1"

    def machine_overrides(self) -> dict[str, object]:
        return {}

    def setup(self, run: Run) -> None:
        mm = run.mm("parent")
        run.kernel.mmap(mm, 0, 4)
        run.spawn("main", self._main, cpu=0, mm=mm)

    def _main(self, t: Thread) -> ThreadGen:
        assert t.mm is not None
        mm = t.mm
        for page in range(4):
            yield from t.write(mm, page)
        for i in range(10_000):
            child = yield from t.fork(mm, f"child{i}")
            for page in range(4):
                yield from t.write(mm, page)
            yield from t.call(t.kernel.exit_mm, child)


class PageoutWrites:
    """Page out, then write without reading first: the write faults on the swap PTE."""

    id = "test-pageout-writes-v1"

    def machine_overrides(self) -> dict[str, object]:
        return {"swap": "pmem"}

    def setup(self, run: Run) -> None:
        mm = run.mm("main")
        run.kernel.mmap(mm, 0, 2)
        run.spawn("main", self._main, cpu=0, mm=mm)

    def _main(self, t: Thread) -> ThreadGen:
        assert t.mm is not None
        mm = t.mm
        for page in range(2):
            yield from t.write(mm, page)
        for _ in range(10_000):
            yield from t.madvise(mm, 0, 2, "pageout")
            for page in range(2):
                yield from t.write(mm, page)


@hookimpl
def cowlab_register_workloads(register: RegisterFn) -> None:
    register(ForkWrites.id, ForkWrites, description="test: writes after fork")
    register(PageoutWrites.id, PageoutWrites, description="test: writes to paged-out pages")


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    plugin = types.ModuleType("test_env_workloads")
    plugin.cowlab_register_workloads = cowlab_register_workloads  # type: ignore[attr-defined]
    return load_registry(extra_plugins=[("test_env_workloads", plugin)])


def rollout(env: gymnasium.Env[Any, Any], seed: int, steps: int) -> Iterator[tuple[Any, ...]]:
    """(obs, reward, terminated, truncated, info) of ``steps`` random-action steps."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    yield obs, 0.0, False, False, info
    for _ in range(steps):
        mask = env.unwrapped.action_masks()  # type: ignore[attr-defined]
        action = int(rng.choice(np.flatnonzero(mask)))
        obs, reward, terminated, truncated, info = env.step(action)
        yield obs, reward, terminated, truncated, info
        if terminated or truncated:
            obs, info = env.reset()
            yield obs, 0.0, False, False, info


def digest(env: gymnasium.Env[Any, Any], seed: int = 5, steps: int = 300) -> str:
    h = hashlib.sha256()
    for obs, reward, term, trunc, info in rollout(env, seed, steps):
        h.update(obs.tobytes())
        h.update(repr((float(reward), term, trunc, sorted(info.items()))).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ API and checkers


def test_importing_cowlab_registers_the_env() -> None:
    assert cowlab.__version__
    env = gymnasium.make("cowlab/CowFault-v0", workload=FORCESWAP, max_decisions=4)
    assert isinstance(env.unwrapped, CowFaultEnv)


@pytest.mark.parametrize("mode", ["decision", "primitives"])
def test_gymnasium_and_sb3_env_checkers_pass(mode: str) -> None:
    env = CowFaultEnv(workload=FORCESWAP, action_mode=mode, max_decisions=32)
    check_env(env, skip_render_check=True)
    sb3_check_env(CowFaultEnv(workload=FORCESWAP, action_mode=mode, max_decisions=32))


@pytest.mark.parametrize(("mode", "n"), [("decision", 2), ("primitives", 7)])
def test_spaces_and_feature_names(mode: str, n: int) -> None:
    env = CowFaultEnv(workload=FORCESWAP, action_mode=mode)
    assert env.action_space.n == n
    assert env.observation_space.shape == (len(env.feature_names),)
    assert env.feature_names[:2] == ("refcount", "mapcount")
    assert ("primitives_used" in env.feature_names) == (mode == "primitives")
    assert env.action_names == PRIMITIVE_ACTIONS[:n]


def test_info_carries_the_ground_truth_and_the_observation_does_not() -> None:
    env = CowFaultEnv(workload=FORCESWAP, max_decisions=8)
    _, info = env.reset(seed=1)
    assert info["outcome"] is None
    _, reward, _, _, info = env.step(1)
    assert (info["outcome"], info["exclusive"], info["violation"]) == ("reuse", True, None)
    assert info["latency_ns"] > 0 and info["fault"] == "wp"
    assert reward == pytest.approx(1.0 - 0.1 * info["latency_ns"] / 1000)
    assert not any(name == "exclusive" or "truth" in name for name in env.feature_names)


def test_counts_are_log1p_transformed() -> None:
    env = CowFaultEnv(workload=FORCESWAP)
    obs, _ = env.reset(seed=0)
    fault = env.fault
    assert fault is not None
    assert obs[0] == pytest.approx(np.log1p(fault.refcount))


def test_render_ansi_prints_the_faulting_folio() -> None:
    env = CowFaultEnv(workload=FORCESWAP, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text is not None and "refcount=" in text and "page" in text


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="did you mean 'forceswap-v1'"):
        CowFaultEnv(workload="forceswap-v2")
    with pytest.raises(ConfigError, match="action_mode"):
        CowFaultEnv(action_mode="decide")
    with pytest.raises(ConfigError, match="unknown parameter 'nopz'"):
        CowFaultEnv(workload={"name": "forceswap-v1", "params": {"nopz": 1}})


# ------------------------------------------------------------------ episodes


def test_budget_truncates_the_episode() -> None:
    env = CowFaultEnv(workload=FORCESWAP, max_decisions=5)
    env.reset(seed=0)
    flags = [env.step(1)[2:4] for _ in range(5)]
    assert flags[:4] == [(False, False)] * 4
    assert flags[4] == (False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(1)


def test_a_workload_that_finishes_terminates_the_episode() -> None:
    env = CowFaultEnv(workload={"name": "forceswap-v1", "params": {"nops": 3, "npages": 1}},
                      max_decisions=100)
    env.reset(seed=0)
    steps, done = 0, (False, False)
    while not any(done):
        done = env.step(1)[2:4]
        steps += 1
    assert done == (True, False)
    assert steps == 3


def test_weighted_mix_draws_workloads_with_the_env_rng() -> None:
    env = CowFaultEnv(workload={"mix": [
        {"name": "forceswap-v1", "params": {"npages": 1}, "weight": 1},
        {"name": "forceswap-v1", "params": {"npages": 2}, "weight": 3}]})
    drawn = []
    for seed in range(40):
        env.reset(seed=seed)
        assert env.run is not None
        drawn.append(env.run.workload.p.npages)  # type: ignore[attr-defined]
    assert 20 <= drawn.count(2) <= 38 and drawn.count(1) >= 2


def test_the_mix_draw_is_numpys_weighted_choice_bit_for_bit() -> None:
    """The env draws a mix entry as ``np_random.choice(n, p=weights)`` would, from the
    same stream: the trained agents and leaderboard runs of earlier versions replay."""
    weights = [2.0, 1.0, 1.0, 1.0, 1.0]
    env = CowFaultEnv(workload={"mix": [
        {"name": "forceswap-v1", "params": {"npages": n + 1}, "weight": w}
        for n, w in enumerate(weights)]})
    p = np.array([w / sum(weights) for w in weights])
    for seed in range(200):
        twin = np.random.Generator(np.random.PCG64(seed))
        env.np_random = np.random.Generator(np.random.PCG64(seed))
        assert env._pick_workload(None) == int(twin.choice(len(weights), p=p))
        assert env.np_random.bit_generator.state == twin.bit_generator.state


def test_same_seed_gives_identical_observations_rewards_and_infos() -> None:
    kwargs: dict[str, Any] = {"workload": {"mix": [FORCESWAP, {"name": "forceswap-v1"}]},
                              "action_mode": "primitives", "max_decisions": 40}
    assert digest(CowFaultEnv(**kwargs)) == digest(CowFaultEnv(**kwargs))
    assert digest(CowFaultEnv(**kwargs), seed=6) != digest(CowFaultEnv(**kwargs))


def test_the_env_consumes_the_records_it_settles() -> None:
    """The kernel's write records go once their reward is settled: an episode keeps no
    history of every write (the info dict carries what the env makes of them)."""
    env = CowFaultEnv(workload={"name": "fork-snapshot-v1", "params": {"pages": 64}},
                      max_decisions=30)
    env.reset(seed=0)
    assert env.run is not None
    outcomes = []
    for i in range(20):
        _, _, terminated, truncated, info = env.step(i % 2)
        assert env.run.kernel.records == []
        outcomes.append(info["outcome"])
        if terminated or truncated:
            break
    assert {"copy", "reuse"} <= set(outcomes)


@pytest.mark.parametrize("workload", [
    {"name": "fork-snapshot-v1", "params": {"pages": 64}},
    {"name": "softdirty-tracking-v1", "params": {"pages": 64}},
    {"name": "vmsplice-pipe-v1", "params": {"pages": 64}},
    {"name": "pinned-io-v1", "params": {}},
    FORCESWAP,
])
def test_a_finished_episode_is_freed_without_the_cyclic_garbage_collector(
    workload: dict[str, Any]
) -> None:
    """Run.close() breaks every reference cycle of the last run when the next starts:
    Python's cyclic collector finds nothing left of it (it would otherwise scan every
    folio of every past episode, a sizeable share of the env's time)."""
    import gc

    env = CowFaultEnv(workload=workload, max_decisions=40)
    env.reset(seed=0)
    for i in range(60):  # into the episode, with threads suspended mid-body
        _, _, terminated, truncated, _ = env.step(i % 2)
        if terminated or truncated:
            break
    gc.collect()
    gc.disable()
    try:
        old = env.run
        assert old is not None
        decisions = old.kernel.nr_decisions
        env.reset(seed=1)
        assert old.kernel.nr_decisions == decisions  # a closed run can still be read
        del old
        assert gc.collect() == 0
    finally:
        gc.enable()
    env.close()


def test_determinism_holds_across_processes() -> None:
    code = (
        "import sys; sys.path.insert(0, 'tests'); from test_env import *; "
        "print(digest(CowFaultEnv(workload=FORCESWAP, action_mode='primitives', max_decisions=40)))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    outs = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        outs.add(subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True,
                                capture_output=True, text=True).stdout.strip())
    here = digest(CowFaultEnv(workload=FORCESWAP, action_mode="primitives", max_decisions=40))
    assert outs == {here}


# ------------------------------------------------------------------ same as the runner


@pytest.mark.parametrize(
    ("policy", "preset", "params"),
    [("exclusive", "v5.19", {"swap": "pmem", "npages": 4}),
     ("patched-lru", "v5.18", {"swap": "zram", "npages": 16, "nthreads": 0}),
     ("baseline", "v5.9", {"swap": "pmem", "npages": 16}),
     ("patched", "v5.18", {"swap": "nvme", "npages": 2, "nops": 20}),
     ("random", "v5.9", {"swap": "zram", "npages": 3})],
)
def test_a_builtin_policy_through_the_env_matches_the_workload_runner(
    policy: str, preset: str, params: dict[str, Any]
) -> None:
    reg = get_registry()
    seed, budget = 11, 300

    class Recording:
        def __init__(self) -> None:
            self.inner = reg.make_policy(policy)
            self.name = policy
            self.decisions: list[Decision] = []

        def reset(self, seed: int | None) -> None:
            self.inner.reset(seed)

        def decide(self, fault: Any) -> Decision:
            d = self.inner.decide(fault)
            self.decisions.append(d)
            return d

    recorded = Recording()
    expected = run_workload(reg.make("workload", "forceswap-v1", params), get_preset(preset),
                            recorded, seed=seed, budget=Budget(max_decisions=budget))  # type: ignore[arg-type]

    env = gymnasium.make("cowlab/CowFault-v0", kernel=preset,
                         workload={"name": "forceswap-v1", "params": params},
                         max_decisions=budget)
    agent = reg.make_policy(policy)
    agent.reset(seed)
    env.reset(seed=0, options={"run_seed": seed})
    decisions, done = [], False
    while not done:
        decision = agent.decide(env.unwrapped.fault)  # type: ignore[attr-defined]
        decisions.append(decision)
        _, _, terminated, truncated, _ = env.unwrapped.step(decision)
        done = terminated or truncated
    kernel = env.unwrapped.run.kernel  # type: ignore[attr-defined]
    assert decisions == recorded.decisions
    assert dict(kernel.counters) == expected.counters
    assert kernel.nr_decisions == expected.decisions


# ------------------------------------------------------------------ rewards, violations, shield


def test_a_leak_is_penalised_and_can_end_the_episode(registry: PluginRegistry) -> None:
    env = CowFaultEnv(workload="test-fork-writes-v1", registry=registry, max_decisions=50)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(1)
    assert (info["violation"], info["exclusive"], terminated) == ("leak", False, False)
    assert reward == pytest.approx(-100.0 - 0.1 * info["latency_ns"] / 1000)
    _, reward, _, _, info = env.step(0)
    assert info["violation"] is None and info["outcome"] == "copy"
    assert reward == pytest.approx(-0.1 - 0.1 * info["latency_ns"] / 1000)

    env = CowFaultEnv(workload="test-fork-writes-v1", registry=registry,
                      terminate_on_violation=True)
    env.reset(seed=0)
    assert env.step(1)[2:4] == (True, False)


@pytest.mark.parametrize("preset", ["v5.9", "v5.19"])
def test_the_shield_masks_and_overrides_an_unproven_reuse(
    registry: PluginRegistry, preset: str
) -> None:
    env = CowFaultEnv(kernel=preset, workload="test-fork-writes-v1", registry=registry,
                      shield=True, max_decisions=200)
    env.reset(seed=0)
    violations = 0
    for _ in range(200):
        mask = env.action_masks()
        assert mask[0]
        _, _, _, truncated, info = env.step(1)
        violations += info["violation"] is not None
        assert info["shielded"] == (not mask[1])
        if truncated:
            break
    assert violations == 0


def test_the_shield_allows_proven_reuse() -> None:
    env = CowFaultEnv(kernel="v5.19", workload=FORCESWAP, shield=True)
    env.reset(seed=0)
    assert env.action_masks().tolist() == [True, True]  # PageAnonExclusive is set
    _, _, _, _, info = env.step(1)
    assert info["outcome"] == "reuse" and not info["shielded"]


def test_a_swap_path_copy_gets_its_reward_with_the_second_decision(
    registry: PluginRegistry,
) -> None:
    # Up to v5.17 do_swap_page asks first; COPY there continues into do_wp_page, which asks
    # again: the fault's one record (and reward) belongs to the second decision.
    env = CowFaultEnv(kernel="v5.9", workload="test-pageout-writes-v1", registry=registry)
    env.reset(seed=0)
    assert env.fault is not None and env.fault.path == "swap"
    _, reward, _, _, info = env.step(0)
    assert (reward, info["outcome"]) == (0.0, None)
    assert env.fault is not None and env.fault.path == "wp"
    _, reward, _, _, info = env.step(0)
    assert info["outcome"] == "copy" and reward < 0


def test_primitives_change_state_and_masks() -> None:
    env = CowFaultEnv(kernel="v5.18", workload=FORCESWAP, action_mode="primitives",
                      max_primitives=3)
    env.reset(seed=0)
    names = list(env.action_names)
    mask = env.action_masks()
    assert mask[names.index("trylock")] and not mask[names.index("free_swap")]
    obs, reward, _, _, info = env.step(names.index("trylock"))
    assert (reward, info["primitive"], info["outcome"]) == (0.0, "trylock", None)
    assert obs[env.feature_names.index("locked_by_policy")] == 1.0
    assert not env.action_masks()[names.index("trylock")]
    env.step(names.index("drain_lru"))
    env.step(names.index("drain_lru"))
    assert env.action_masks().tolist() == [True, True, False, False, False, False, False]
    _, _, _, _, info = env.step(names.index("drain_lru"))  # over the budget: a COPY
    assert info["outcome"] == "copy"


def test_primitives_mode_runs_an_era_rule_to_the_same_outcome() -> None:
    # v5.18 forceswap: the local LRU drain lets patched-lru reuse; so does drain + trylock.
    env = CowFaultEnv(kernel="v5.18", workload=FORCESWAP, action_mode="primitives")
    env.reset(seed=0)
    names = list(env.action_names)
    env.step(names.index("drain_lru"))
    env.step(names.index("trylock"))
    fault = env.fault
    assert fault is not None and fault.refcount == 1
    _, reward, _, _, info = env.step(names.index("reuse"))
    assert info["outcome"] == "reuse" and info["exclusive"] and reward > 0


def test_an_all_allowed_mask_is_shared_and_read_only() -> None:
    """decision mode without the shield hands out one read-only all-True mask, so a
    caller that writes to it fails loudly instead of changing later masks."""
    env = CowFaultEnv(workload=FORCESWAP, max_decisions=4)
    env.reset(seed=0)
    mask = env.action_masks()
    assert mask.tolist() == [True, True]
    with pytest.raises(ValueError, match="read-only"):
        mask[1] = False
    env.step(1)
    assert env.action_masks().tolist() == [True, True]


def test_observation_array_packs_what_numpy_converts() -> None:
    from cowlab.env import observation_array

    values = [0.0, -0.0, 1.0, 1 / 3, 6.931471805599453, 1e-40, 3.4e38, float(2**60), 0.5]
    obs = observation_array(values)
    assert obs.dtype == np.float32 and obs.flags.writeable
    assert obs.tobytes() == np.array(values, dtype=np.float32).tobytes()
    assert observation_array(values[:3]).tolist() == [0.0, 0.0, 1.0]
