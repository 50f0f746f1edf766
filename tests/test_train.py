"""cowlab train end to end: train, checkpoint, resume, select, evaluate (cowlab.train)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cowlab.cli import main
from cowlab.config import TrainConfig, WorkloadEntry, load_config
from cowlab.evaluate import evaluate_policy, run_once
from cowlab.kernel import get_preset
from cowlab.plugins import get_registry
from cowlab.train import train
from cowlab.workloads import Budget, run_workload

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path: Path, *extra: str, base: Path = ROOT / "configs" / "exclusive.yaml"
          ) -> TrainConfig:
    """configs/exclusive.yaml scaled down to seconds."""
    return load_config(base, [
        f"output.dir={tmp_path / 'run'}",
        "agent.total_timesteps=1024",
        "agent.n_envs=2",
        "agent.hyperparameters.n_steps=128",
        "agent.hyperparameters.batch_size=128",
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


@pytest.mark.slow
def test_resume_after_an_interruption_loses_and_repeats_no_step(tmp_path: Path) -> None:
    cfg = small(tmp_path)
    first = train(cfg, stop_at=700)  # as if Ctrl-C came at step 700, mid-rollout
    assert first.interrupted and first.num_timesteps == 512  # the last trained step
    side = json.loads((first.out_dir / "checkpoints" / "last.zip.json").read_text())
    assert side["num_timesteps"] == 512
    assert not (first.out_dir / "model.zip").exists()

    second = train(cfg, resume=True)
    assert not second.interrupted and second.num_timesteps == 1024
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
    data = yaml.safe_load((ROOT / "configs" / "exclusive.yaml").read_text())
    del data["agent"]["hyperparameters"]  # PPO's; a dict override would merge, not replace
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(data))
    extra = [f"agent.algo={algo}", f"env.action_mode={mode}", "agent.total_timesteps=512"]
    if algo == "dqn":
        extra += ["agent.hyperparameters.learning_starts=100",
                  "agent.hyperparameters.buffer_size=2000"]
    else:
        extra += ["agent.hyperparameters.n_steps=128", "agent.hyperparameters.batch_size=64"]
    result = train(small(tmp_path, *extra, base=base))
    assert result.num_timesteps >= 512 and result.model_path is not None
    side = json.loads(Path(f"{result.model_path}.json").read_text())
    assert (side["algo"], side["action_mode"]) == (algo, mode)
    assert result.evaluations[0].metrics["decisions"] > 0
