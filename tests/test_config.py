"""Training configs: schema <- YAML <- overrides, and the errors a user sees (cowlab.config)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cowlab.cli import main
from cowlab.config import (
    EVAL_SEED_BASE,
    TRAIN_SEEDS,
    VALIDATION_SEED_BASE,
    ActionMode,
    Algo,
    ConfigError,
    TrainConfig,
    env_kwargs,
    eval_seeds,
    load_config,
    schema_keys,
    to_yaml,
    validation_seeds,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.output.dir == f"runs/{cfg.name}"


def test_shipped_study_configs_exist_with_their_kernels() -> None:
    presets = {p.stem: load_config(p).kernel.preset for p in CONFIGS}
    assert presets == {"exclusive": "v5.19", "baseline": "v5.9", "patched": "v5.18"}


def test_overrides_apply_in_order_after_the_file() -> None:
    cfg = load_config(ROOT / "configs/exclusive.yaml", [
        "seed=3", "agent.total_timesteps=20000", "seed=4", "env.action_mode=primitives"])
    assert (cfg.seed, cfg.agent.total_timesteps) == (4, 20000)
    assert cfg.env.action_mode is ActionMode.primitives
    assert cfg.agent.algo is Algo.ppo


def test_unknown_key_names_the_file_and_full_key_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "agent:\n  total_timestep: 5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"{path}: unknown key 'agent.total_timestep' (did you mean 'agent.total_timesteps'?)"
    )


def test_unknown_key_inside_a_list_item_names_its_index(tmp_path: Path) -> None:
    path = write(tmp_path, "workload:\n  mix:\n    - {name: forceswap-v1, wieght: 2}\n")
    with pytest.raises(ConfigError, match=re.escape(
            "unknown key 'workload.mix[0].wieght' (did you mean 'workload.mix[0].weight'?)")):
        load_config(path)


def test_wrong_type_names_the_key_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "agent:\n  total_timesteps: lots\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == f"{path}: agent.total_timesteps: expected an integer, got 'lots'"


def test_bad_enum_lists_the_choices_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "env:\n  action_mode: decisions\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"{path}: env.action_mode: expected one of decision, primitives, got 'decisions' "
        "(did you mean 'decision'?)"
    )


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    expected = f"{tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"
    assert str(exc.value) == expected


def test_bad_override_is_blamed_on_the_override() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["agent.algo=ppp"])
    assert str(exc.value).startswith("override 'agent.algo=ppp': agent.algo: expected one of")
    assert "(did you mean 'ppo'?)" in str(exc.value)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["seed"])


def test_workload_parameter_typo_gets_the_registry_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, "workload:\n  name: forceswap-v1\n  params: {nopz: 3}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: workload: unknown parameter 'nopz'")
    assert "(did you mean 'nops'?)" in str(exc.value)


def test_unknown_workload_and_baseline_names_are_suggested(tmp_path: Path) -> None:
    path = write(tmp_path, "workload:\n  name: forceswap-v2\n")
    with pytest.raises(ConfigError, match="did you mean 'forceswap-v1'"):
        load_config(path)
    path = write(tmp_path, "workload: {name: forceswap-v1}\neval:\n  baselines: [exclusiv]\n")
    with pytest.raises(ConfigError, match=r"eval.baselines\[0\]: unknown policy 'exclusiv'"):
        load_config(path)


def test_policy_parameters_are_checked_against_the_registered_schema(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: {name: forceswap-v1}\n"
                 "eval:\n  baselines: [random]\n  policy_params: {random: {p_reus: 0.2}}\n")
    with pytest.raises(ConfigError, match=r"unknown parameter 'p_reus'.*did you mean 'p_reuse'"):
        load_config(path)


def test_kernel_preset_and_facility_typos_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "workload: {name: forceswap-v1}\nkernel: {preset: v5.91}\n")
    with pytest.raises(ConfigError, match=r"kernel.preset: unknown kernel preset 'v5.91'"):
        load_config(path)
    path = write(tmp_path, "workload: {name: forceswap-v1}\n"
                 "kernel: {facilities: {lru_batch_sise: 3}}\n")
    with pytest.raises(ConfigError, match="did you mean 'lru_batch_size'"):
        load_config(path)


def test_name_and_mix_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "workload:\n  name: forceswap-v1\n  mix: [{name: forceswap-v1}]\n")
    with pytest.raises(ConfigError, match="either name/params or mix"):
        load_config(path)


def test_ranges_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent.n_envs: must be at least 1"):
        load_config(ROOT / "configs/exclusive.yaml", ["agent.n_envs=0"])
    assert load_config(ROOT / "configs/exclusive.yaml",
                       ["executor.kind=ray"]).executor.kind.name == "ray"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nagent: [\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line")):
        load_config(path)


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs/exclusive.yaml", ["seed=7"])
    saved = tmp_path / "config.yaml"
    saved.write_text(to_yaml(cfg), encoding="utf-8")
    assert "${" not in saved.read_text(encoding="utf-8")
    assert load_config(saved) == cfg


def test_env_kwargs_are_plain_data_for_gymnasium_make() -> None:
    kwargs = env_kwargs(load_config(ROOT / "configs/exclusive.yaml"))
    assert kwargs["action_mode"] == "decision"
    assert kwargs["kernel"]["preset"] == "v5.19"
    yaml.safe_dump(kwargs)  # nothing but plain containers and scalars


def test_evaluation_training_and_validation_seeds_are_disjoint_by_construction() -> None:
    assert max(validation_seeds(1000)) < EVAL_SEED_BASE
    assert min(validation_seeds(1)) >= TRAIN_SEEDS
    assert min(eval_seeds(1)) >= VALIDATION_SEED_BASE + (1 << 30) - 1
    assert all(s >= TRAIN_SEEDS for s in eval_seeds(50))


def test_every_schema_key_is_in_the_config_reference() -> None:
    text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    section = text[text.index("## Training configs"):]
    missing = [k for k in schema_keys() if f"`{k}`" not in section]
    assert missing == []


def test_cli_train_config_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "agent:\n  algoo: ppo\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"cowlab: error: {path}: unknown key 'agent.algoo' (did you mean 'agent.algo'?)\n"
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config: No such file or directory" in capsys.readouterr().err


def test_cli_train_rejects_unknown_hyperparameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "workload: {name: forceswap-v1}\n"
                 f"output: {{dir: {tmp_path / 'run'}}}\nagent:\n  hyperparameters: {{n_step: 8}}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'agent.hyperparameters.n_step'" in err
    assert "did you mean 'agent.hyperparameters.n_steps'" in err


# ------------------------------------------------------------------ issue 16: configs


def test_a_list_element_can_be_overridden_by_index() -> None:
    cfg = load_config(ROOT / "configs" / "exclusive.yaml",
                      ["workload.mix.0.params.pages=3", "workload.mix.3.weight=4"])
    assert cfg.workload.mix[0].params == {"pages": 3}
    assert cfg.workload.mix[3].weight == 4.0
    assert cfg.workload.mix[1].name == "pinned-io-v1"  # the others untouched


def test_a_list_index_out_of_range_names_the_list_and_its_length() -> None:
    with pytest.raises(ConfigError, match=r"workload\.mix\.9: index 9 out of range "
                                          r"\(workload\.mix has 5 entries\)"):
        load_config(ROOT / "configs" / "exclusive.yaml", ["workload.mix.9.weight=1"])


def test_an_empty_mapping_override_clears_the_mapping() -> None:
    base = ROOT / "configs" / "exclusive.yaml"
    assert load_config(base).agent.ppo["n_epochs"] == 4
    cfg = load_config(base, ["agent.ppo={}", "kernel.facilities={}"])
    assert cfg.agent.ppo == {} and cfg.kernel.facilities == {}
    cfg = load_config(base, ["agent.hyperparameters.gamma=0.7", "agent.hyperparameters={}"])
    assert cfg.agent.hyperparameters == {}


def test_each_algorithm_has_its_own_hyperparameter_section() -> None:
    cfg = load_config(ROOT / "configs" / "exclusive.yaml", ["agent.algo=dqn"])
    hp = cfg.agent.algo_hyperparameters()
    assert "n_epochs" not in hp and hp["learning_starts"] == 1000
    cfg = load_config(ROOT / "configs" / "exclusive.yaml", ["agent.hyperparameters.gamma=0.3"])
    assert cfg.agent.algo_hyperparameters()["gamma"] == 0.3  # the flat mapping wins


def test_duplicate_yaml_keys_are_rejected_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nagent:\n  n_envs: 2\n  n_envs: 4\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: line 4 invalid YAML: duplicate key "
                                          r"'n_envs' \(first on line 3\)"):
        load_config(path)


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("workload: {name: forceswap-v1}\nagent:\n  ppo: {learning_rate: 1e-3}\n"
                    "env:\n  reward: {violation: 1e3}\n")
    cfg = load_config(path)
    assert cfg.env.reward.violation == 1000.0 and cfg.agent.ppo["learning_rate"] == 0.001
    assert load_config(None, ["workload.name=forceswap-v1",
                              "env.reward.violation=2e2"]).env.reward.violation == 200.0


def test_the_old_executor_name_local_reads_as_process_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("workload: {name: forceswap-v1}\nexecutor: {kind: local}\n")
    with pytest.warns(DeprecationWarning, match="'local' is deprecated, use 'process'"):
        cfg = load_config(path)
    assert cfg.executor.kind.name == "process"
