"""cowlab train end to end: train, checkpoint, resume, select, evaluate (cowlab.train)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cowlab.cli import main
from cowlab.config import TrainConfig, WorkloadEntry, load_config
from cowlab.evaluate import evaluate_policy, run_once
from cowlab.kernel import get_preset
from cowlab.plugins import get_registry
from cowlab.train import (
    TrainError,
    check_device,
    check_run,
    learning_changes,
    prepare_run_dir,
    train,
)
from cowlab.workloads import Budget, run_workload

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path: Path, *extra: str, base: Path = ROOT / "configs" / "exclusive.yaml"
          ) -> TrainConfig:
    """configs/exclusive.yaml scaled down to seconds."""
    return load_config(base, [
        f"output.dir={tmp_path / 'run'}",
        "agent.total_timesteps=1024",
        "agent.n_envs=2",
        "agent.ppo.n_steps=128",
        "agent.ppo.batch_size=128",
        "agent.net_arch=[16]",
        "eval.seeds=1",
        "eval.validation_seeds=1",
        "eval.max_decisions=200",
        "eval.every_steps=512",
        "output.checkpoint_every=512",
        "eval.baselines=[exclusive,oracle]",
        "output.progress=false",
        *extra,
    ])


def log_lines(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_run_once_matches_run_workload() -> None:
    reg = get_registry()
    params = {"swap": "pmem", "npages": 3}
    expected = run_workload(reg.make("workload", "forceswap-v1", params), get_preset("v5.18"),
                            reg.make_policy("patched-lru"), seed=4,
                            budget=Budget(max_decisions=100), params=params)
    got, records = run_once(reg.make("workload", "forceswap-v1", params),  # type: ignore[arg-type]
                            get_preset("v5.18"), reg.make_policy("patched-lru"), seed=4,
                            budget=Budget(max_decisions=100), params=params)
    assert got == expected
    assert sum(r.outcome in ("reuse", "copy") for r in records) == 100


def test_evaluation_pools_runs() -> None:
    ev = evaluate_policy(get_registry().make_policy("baseline"), kernel=get_preset("v5.9"),
                         workloads=[WorkloadEntry("forceswap-v1", {"swap": "pmem"})],
                         seeds=[1, 2, 3], max_decisions=30)
    assert len(ev.runs) == 3 and ev.metrics["decisions"] == 90
    assert ev.metrics["unnecessary_copies"] == sum(r.metrics["unnecessary_copies"] for r in ev.runs)


@pytest.mark.slow
def test_training_saves_reloads_and_evaluates(tmp_path: Path) -> None:
    result = train(small(tmp_path))
    run = result.out_dir
    assert not result.interrupted and result.num_timesteps == 1024
    for name in ("model.zip", "model.zip.json", "config.yaml", "eval.json", "eval.txt",
                 "versions.json", "log.jsonl", "checkpoints/last.zip"):
        assert (run / name).exists(), name
    assert load_config(run / "config.yaml") == small(tmp_path)
    report = json.loads((run / "eval.json").read_text())
    assert (run / "best.zip").exists() == report["selected"].startswith("step")
    assert [e["policy"] for e in report["evaluations"]] == ["agent (ppo)", "exclusive", "oracle"]
    assert report["versions"]["stable-baselines3"]
    assert "| **agent (ppo)** |" in result.table and "oracle (ground truth)" in result.table
    # The saved model is a policy like any other: same decisions, same metrics.
    reg = get_registry()
    cfg = small(tmp_path)
    again = evaluate_policy(reg.make_policy(f"sb3:{run / 'model.zip'}"), kernel=get_preset("v5.19"),
                            workloads=cfg.workload.mix, seeds=report["eval_seeds"],
                            max_decisions=cfg.eval.max_decisions)
    agent = report["evaluations"][0]
    assert again.decisions_sha256 == agent["decisions_sha256"]
    assert again.metrics == agent["metrics"]
    rollouts = [x for x in log_lines(run) if x["kind"] == "rollout"]
    assert [x["timesteps"] for x in rollouts] == [256 * i for i in range(1, 5)]
    # The run is complete: its manifest (written last) names the model and evaluation.
    files = check_run(run)
    assert {"model.zip", "eval.json", "eval.txt", "config.yaml"} <= set(files)
    # A file of another run in the directory is caught, by check_run and by the loader.
    (run / "eval.txt").write_text("an old evaluation\n")
    with pytest.raises(TrainError, match="mixes files of two runs"):
        check_run(run)
    # Training again into the finished run directory is refused, not mixed.
    with pytest.raises(TrainError, match="exists and is not empty"):
        train(small(tmp_path))


@pytest.mark.slow
def test_resume_after_an_interruption_loses_and_repeats_no_step(tmp_path: Path) -> None:
    cfg = small(tmp_path)
    first = train(cfg, stop_at=700)  # as if Ctrl-C came at step 700, mid-rollout
    assert first.interrupted and first.num_timesteps == 512  # the last trained step
    side = json.loads((first.out_dir / "checkpoints" / "last.zip.json").read_text())
    assert side["num_timesteps"] == 512
    assert not (first.out_dir / "model.zip").exists()

    # A resume whose config changes what is learned is refused (unless --force) ...
    with pytest.raises(TrainError, match=r"kernel\.preset"):
        train(small(tmp_path, "kernel.preset=v5.18"), resume=True)
    second = train(cfg, resume=True)
    assert not second.interrupted and second.num_timesteps == 1024
    # ... and every counter carries across it: steps of this process vs in total, the
    # violations of both sessions (the log's per-rollout counts add up to the total).
    assert second.steps_this_process == 512
    report = json.loads((second.out_dir / "eval.json").read_text())
    assert (report["steps_this_process"], report["num_timesteps"], report["sessions"]) == (
        512, 1024, 2)
    assert report["train_s_total"] > report["train_s"]
    rollout_violations = sum(x["violations"] for x in log_lines(second.out_dir)
                             if x["kind"] == "rollout")
    assert second.training_violations == report["training_violations"] == rollout_violations
    assert second.training_violations >= first.training_violations
    rollouts = [x for x in log_lines(second.out_dir) if x["kind"] == "rollout"]
    steps = [x["timesteps"] for x in rollouts]
    assert steps == [256, 512, 768, 1024]  # each rollout once: none lost, none repeated
    assert sum(x["rollout_steps"] for x in rollouts) == 1024
    validations = [x["timesteps"] for x in log_lines(second.out_dir) if x["kind"] == "validation"]
    assert validations == sorted(set(validations))


@pytest.mark.slow
def test_resume_refuses_a_tampered_checkpoint(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = small(tmp_path)
    train(cfg, stop_at=600)
    ckpt = Path(cfg.output.dir) / "checkpoints" / "last.zip"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")
    config = tmp_path / "cfg.yaml"
    config.write_text((Path(cfg.output.dir) / "config.yaml").read_text())
    assert main(["train", str(config), "--resume"]) == 2
    assert "refusing to load" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("algo", "mode"), [("dqn", "decision"), ("maskable_ppo", "primitives")])
def test_other_algorithms_and_the_primitives_mode_train(tmp_path: Path, algo: str,
                                                        mode: str) -> None:
    # Switching the algorithm by override just works: each has its own section.
    extra = [f"agent.algo={algo}", f"env.action_mode={mode}", "agent.total_timesteps=512"]
    if algo == "dqn":
        extra += ["agent.dqn.learning_starts=100", "agent.dqn.buffer_size=2000"]
    else:
        extra += ["agent.maskable_ppo.n_steps=128", "agent.maskable_ppo.batch_size=64"]
    result = train(small(tmp_path, *extra))
    assert result.num_timesteps >= 512 and result.model_path is not None
    side = json.loads(Path(f"{result.model_path}.json").read_text())
    assert (side["algo"], side["action_mode"]) == (algo, mode)
    assert result.evaluations[0].metrics["decisions"] > 0


# ------------------------------------------------------- run directories (issue 16)


def test_a_new_run_refuses_a_non_empty_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.zip").write_bytes(b"an older run's model")
    assert main(["train", str(ROOT / "configs" / "exclusive.yaml"),
                 f"output.dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--overwrite" in err and "--resume" in err
    assert (run / "model.zip").read_bytes() == b"an older run's model"


def test_overwrite_deletes_the_old_run_first_and_only_a_run_directory(tmp_path: Path) -> None:
    cfg = small(tmp_path)
    run = Path(cfg.output.dir)
    run.mkdir()
    (run / "eval.txt").write_text("old")
    with pytest.raises(TrainError, match="not a cowlab run"):
        prepare_run_dir(cfg, resume=False, overwrite=True, force=False)
    (run / "config.yaml").write_text("name: old\n")
    prepare_run_dir(cfg, resume=False, overwrite=True, force=False)
    assert run.is_dir() and not list(run.iterdir())


def test_a_resume_removes_the_previous_final_files_before_training(tmp_path: Path) -> None:
    from cowlab.config import save_config

    cfg = small(tmp_path)
    run = Path(cfg.output.dir)
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.zip").write_bytes(b"checkpoint")
    save_config(cfg, run / "config.yaml")
    for name in ("model.zip", "model.zip.json", "eval.txt", "eval.json", "manifest.json"):
        (run / name).write_text("of the previous session")
    prepare_run_dir(cfg, resume=True, overwrite=False, force=False)
    # a resume killed during its evaluation cannot leave a new model beside an old eval
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml"]


def test_learning_changes_name_what_affects_learning_only() -> None:
    from cowlab.config import _plain

    cfg = small(Path("/tmp/x"))
    saved = _plain(cfg)
    assert learning_changes(saved, cfg) == []
    assert learning_changes(saved, small(Path("/tmp/x"), "agent.total_timesteps=9999",
                                         "eval.seeds=3", "output.progress=true")) == []
    changed = learning_changes(saved, small(Path("/tmp/x"), "agent.algo=dqn",
                                            "agent.net_arch=[8,8]", "kernel.preset=v5.18"))
    assert changed == ["agent.algo", "agent.net_arch", "kernel.preset"]


def test_cuda_without_cuda_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TrainError, match="'cuda' requested but CUDA is not available"):
        check_device("cuda", "cfg.yaml")
    check_device("cpu")


@pytest.mark.parametrize(("override", "words"), [
    ("agent.hyperparameters.learning_rate=fast",
     "agent.hyperparameters.learning_rate: expected a number, got 'fast'"),
    ("agent.ppo.n_stepz=3", "unknown key 'agent.ppo.n_stepz' for ppo"),
    ("agent.dqn.learning_starts=soon", "agent.dqn.learning_starts: expected a number"),
    ("agent.device=cuda:0", "CUDA is not available"),
])
def test_train_check_reports_bad_hyperparameters_before_training(
    override: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if "cuda" in override and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", str(ROOT / "configs" / "exclusive.yaml"), override, "--check"]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_switching_the_algorithm_by_override_just_works(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(ROOT / "configs" / "exclusive.yaml"), "agent.algo=dqn",
                 "--check"]) == 0
    out = capsys.readouterr().out
    assert "config OK: dqn" in out and "n_epochs" not in out and "learning_starts" in out


def test_the_progress_bar_shows_reward_reuse_rate_and_violations(tmp_path: Path) -> None:
    from cowlab_sb3.callback import TrainingMonitor

    monitor = TrainingMonitor(total=10, log_path=tmp_path / "log.jsonl", progress=False,
                              on_boundary=lambda steps: None, violations=3)
    monitor._on_rollout_start()
    infos = [
        {"outcome": "reuse", "exclusive": True, "violation": None},
        {"outcome": "copy", "exclusive": True, "violation": None},
        {"outcome": "reuse", "exclusive": False, "violation": "leak"},
        {"outcome": None, "exclusive": None, "violation": None},  # a primitive step
    ]
    monitor.locals = {"infos": infos, "rewards": [1.0, -0.5, -100.0, 0.0]}
    assert monitor._on_step()
    shown = monitor._postfix()
    assert shown["reuse"] == "0.500"  # one of the two truly reusable faults reused
    assert shown["violations"] == "4"  # three from an earlier session, one now
    assert shown["reward"] == f"{-99.5 / 4:+.3f}"


def test_the_vec_env_returns_what_dummy_vec_env_returns() -> None:
    """CowVecEnv skips DummyVecEnv's deep copy of the infos and nothing else: same
    observations, rewards, dones and infos (terminal observations included)."""
    import gymnasium as gym
    import numpy as np
    from cowlab_sb3.vecenv import CowVecEnv
    from stable_baselines3.common.vec_env import DummyVecEnv

    from cowlab.env import ENV_ID

    def make() -> gym.Env[Any, Any]:
        return gym.make(ENV_ID, workload={"mix": [{"name": "fork-snapshot-v1",
                                                    "params": {"pages": 64}},
                                                   {"name": "forceswap-v1"}]},
                        max_decisions=7)

    venvs = [cls([make, make]) for cls in (DummyVecEnv, CowVecEnv)]
    for v in venvs:
        v.seed(3)
    first = [v.reset() for v in venvs]
    assert np.array_equal(first[0], first[1])
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(40):
        actions = rng.integers(2, size=2)
        (o1, r1, d1, i1), (o2, r2, d2, i2) = (v.step(actions) for v in venvs)
        assert np.array_equal(o1, o2) and np.array_equal(r1, r2) and np.array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                if key == "terminal_observation":
                    assert np.array_equal(a[key], b[key])
                else:
                    assert a[key] == b[key]
        ends += int(d1.sum())
    assert ends >= 4  # the reset at an episode's end was exercised


def test_learning_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    from cowlab.train import _frozen_heap

    assert gc.get_freeze_count() == 0
    with _frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
