"""Learned agents as policies: ``sb3:PATH``, the sha256 sidecar and the trust rule."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from cowlab_sb3.policy import (
    TRUST_ENV,
    ModelTrustError,
    Sb3Policy,
    file_sha256,
    load_model,
    save_model,
    sidecar_path,
)
from stable_baselines3 import PPO

from cowlab.cli import main
from cowlab.env import CowFaultEnv
from cowlab.kernel import Decision, get_preset
from cowlab.plugins import (
    PluginError,
    RegisterFn,
    UnknownNameError,
    get_registry,
    hookimpl,
    load_registry,
)
from cowlab.workloads import Budget, run_workload

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "experiments" / "scenarios" / "forceswap.yaml")


# ------------------------------------------------------------------ prefix:argument names


@dataclass(frozen=True)
class PathParams:
    path: str
    trust: bool = False


class PathPolicy:
    name = "path-policy"

    def __init__(self, path: str, trust: bool = False) -> None:
        self.path, self.trust = path, trust

    def reset(self, seed: int | None) -> None:
        pass

    def decide(self, fault: object) -> Decision:
        return Decision.COPY


class NoParams(PathPolicy):
    def __init__(self) -> None:
        super().__init__("")


@hookimpl
def cowlab_register_policies(register: RegisterFn) -> None:
    register("model", PathPolicy, params=PathParams)
    register("plain", NoParams)


@pytest.fixture(scope="module")
def registry():  # type: ignore[no-untyped-def]
    plugin = types.ModuleType("prefix_plugin")
    plugin.cowlab_register_policies = cowlab_register_policies  # type: ignore[attr-defined]
    return load_registry(entry_points=False, extra_plugins=[("prefix_plugin", plugin)])


def test_prefix_colon_argument_passes_the_argument_as_path(registry) -> None:  # type: ignore[no-untyped-def]
    policy = registry.make_policy("model:runs/a:b/model.zip", {"trust": "true"})
    assert isinstance(policy, PathPolicy)
    assert (policy.path, policy.trust) == ("runs/a:b/model.zip", True)


def test_prefix_errors_are_plugin_errors(registry) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnknownNameError, match=r"unknown policy 'modle'.*did you mean 'model'"):
        registry.make_policy("modle:x.zip")
    with pytest.raises(PluginError, match="policy 'plain' takes no path"):
        registry.make_policy("plain:x.zip")
    with pytest.raises(PluginError, match="needs a path"):
        registry.make_policy("model:")


def test_sb3_is_registered_by_the_shipped_plugin() -> None:
    assert "sb3" in get_registry().names("policy")


# ------------------------------------------------------------------ model files


def make_model(tmp_path: Path, seed: int = 0, name: str = "model.zip") -> Path:
    env = CowFaultEnv(workload={"name": "forceswap-v1", "params": {"swap": "pmem"}})
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=seed, device="cpu",
                policy_kwargs={"net_arch": [8]})
    path = tmp_path / name
    save_model(model, path, {"algo": "ppo", "action_mode": "decision", "shield": False,
                             "feature_names": list(env.feature_names)})
    return path


def test_a_model_with_a_matching_sidecar_loads_and_decides(tmp_path: Path) -> None:
    path = make_model(tmp_path)
    side = json.loads(sidecar_path(path).read_text())
    assert side["sha256"] == file_sha256(path)
    policy = get_registry().make_policy(f"sb3:{path}")
    assert isinstance(policy, Sb3Policy)
    result = run_workload(get_registry().make("workload", "forceswap-v1", {"swap": "pmem"}),
                          get_preset("v5.19"), policy, budget=Budget(max_decisions=50))
    assert result.decisions == 50


def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    path = make_model(tmp_path)
    other = make_model(tmp_path, seed=1, name="other.zip")
    path.write_bytes(other.read_bytes())  # a different model under the recorded name
    with pytest.raises(ModelTrustError, match=r"does not match .* recorded at training time"):
        load_model(path)
    with pytest.raises(PluginError, match="refusing to load"):
        get_registry().make_policy(f"sb3:{path}")


def test_a_model_without_a_sidecar_is_refused_unless_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_model(tmp_path)
    sidecar_path(path).unlink()
    with pytest.raises(ModelTrustError, match="no sidecar"):
        load_model(path)
    assert isinstance(get_registry().make_policy(f"sb3:{path}", {"trust": True}), Sb3Policy)
    monkeypatch.setenv(TRUST_ENV, "1")
    assert isinstance(get_registry().make_policy(f"sb3:{path}"), Sb3Policy)


def test_cli_uses_a_model_as_a_policy_and_refuses_a_tampered_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_model(tmp_path)
    assert main(["scenario", "run", SCENARIO, "--policy", f"sb3:{path}"]) == 0
    assert f"sb3:{path}" in capsys.readouterr().out
    path.write_bytes(make_model(tmp_path, seed=2, name="x.zip").read_bytes())
    assert main(["scenario", "run", SCENARIO, "--policy", f"sb3:{path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cowlab: error: ") and "refusing to load" in err
    assert "Traceback" not in err
    monkeypatch.delenv(TRUST_ENV, raising=False)
    assert main(["--trust-model", "scenario", "run", SCENARIO, "--policy", f"sb3:{path}"]) == 0
