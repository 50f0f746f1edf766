"""The stable-baselines3 callback behind ``cowlab train``: progress, log, boundaries, Ctrl-C.

A *boundary* is the start of a rollout: every step counted so far has been trained on,
so a checkpoint taken there is consistent. Checkpoints and validations happen only at
boundaries (:attr:`TrainingMonitor.on_boundary`). A stop request (Ctrl-C, or the
``stop_at`` step used by tests) ends learning at the next step; the steps of the
unfinished rollout were never trained on and are dropped again by
:func:`rollback_to_boundary`, so a resumed run neither loses nor repeats a step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["TrainingMonitor", "append_log", "rollback_to_boundary"]


class TrainingMonitor(BaseCallback):
    """Progress bar (reward, reuse rate, violations, steps/s), JSONL log, TensorBoard scalars."""

    def __init__(
        self,
        *,
        total: int,
        log_path: Path,
        progress: bool,
        on_boundary: Callable[[int], None],
        stop_at: int | None = None,
        violations: int = 0,
        episodes: int = 0,
    ) -> None:
        super().__init__(verbose=0)
        self.total = total
        self.log_path = log_path
        self.progress = progress
        self.on_boundary = on_boundary
        self.stop_at = stop_at
        #: Set by the SIGINT handler: stop at the next step.
        self.stop_requested = False
        self.boundary = 0
        #: Violations counted so far, including those of earlier sessions (a resume
        #: passes the checkpoint's count in).
        self.violations = violations
        #: The count at the last boundary: what a checkpoint there covers.
        self.boundary_violations = violations
        self.episodes = episodes
        self.boundary_episodes = episodes
        self.decisions = 0
        self._rollout: dict[str, float] = {}
        self._bar: Any = None
        self._t0 = time.perf_counter()
        self._steps0 = 0
        self._last_postfix = 0.0

    def _on_training_start(self) -> None:
        self._t0 = time.perf_counter()
        self._steps0 = self.num_timesteps
        self.boundary = self.num_timesteps
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.num_timesteps, unit="step",
                             dynamic_ncols=True, smoothing=0.1, desc="train")

    def _on_rollout_start(self) -> None:
        self.boundary = self.num_timesteps
        self.boundary_violations = self.violations
        self.boundary_episodes = self.episodes
        self._rollout = {"steps": 0, "reward": 0.0, "violations": 0, "reuses": 0, "copies": 0,
                         "reusable": 0, "reused": 0}
        self.on_boundary(self.num_timesteps)

    def _on_step(self) -> bool:
        infos = self.locals.get("infos", ())
        rewards = self.locals.get("rewards")
        r = self._rollout
        for info in infos:
            r["steps"] += 1
            outcome = info.get("outcome")
            if outcome == "reuse":
                r["reuses"] += 1
            elif outcome == "copy":
                r["copies"] += 1
            if outcome is not None:
                self.decisions += 1
                if info.get("exclusive"):
                    r["reusable"] += 1
                    r["reused"] += outcome == "reuse"
            if info.get("violation"):
                r["violations"] += 1
                self.violations += 1
            if "episode" in info:
                self.episodes += 1
        if rewards is not None:
            r["reward"] += float(sum(rewards))
        if self._bar is not None:
            self._bar.update(len(infos))
            now = time.perf_counter()
            if now - self._last_postfix > 0.5:
                self._last_postfix = now
                self._bar.set_postfix(self._postfix(), refresh=False)
        if self.stop_at is not None and self.num_timesteps >= self.stop_at:
            self.stop_requested = True
        return not self.stop_requested

    def _postfix(self) -> dict[str, str]:
        """The progress bar's figures: this rollout's mean step reward and reuse rate over
        the truly reusable faults it decided, the violations so far, steps per second."""
        r = self._rollout
        reuse = f"{r['reused'] / r['reusable']:.3f}" if r.get("reusable") else "-"
        reward = f"{r['reward'] / r['steps']:+.3f}" if r.get("steps") else "-"
        return {"reward": reward, "reuse": reuse, "violations": str(self.violations),
                "sps": f"{self.sps:.0f}"}

    @property
    def sps(self) -> float:
        """Environment steps per wall second since training (re)started."""
        dt = time.perf_counter() - self._t0
        return (self.num_timesteps - self._steps0) / dt if dt > 0 else 0.0

    def _on_rollout_end(self) -> None:
        r = self._rollout
        steps = max(1, int(r["steps"]))
        line = {
            "kind": "rollout",
            "timesteps": self.num_timesteps,
            "rollout_steps": int(r["steps"]),
            "mean_reward": r["reward"] / steps,
            "violations": int(r["violations"]),
            "violations_total": self.violations,
            "reuses": int(r["reuses"]),
            "copies": int(r["copies"]),
            "reuse_rate": r["reused"] / r["reusable"] if r["reusable"] else None,
            "episodes": self.episodes,
            "steps_per_s": round(self.sps, 1),
        }
        append_log(self.log_path, line)
        self.logger.record("cowlab/violations_total", self.violations)
        self.logger.record("cowlab/rollout_violations", int(r["violations"]))
        self.logger.record("cowlab/mean_step_reward", line["mean_reward"])
        self.logger.record("cowlab/reuse_share", r["reuses"] / max(1, r["reuses"] + r["copies"]))
        self.logger.record("cowlab/steps_per_s", self.sps)

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix(self._postfix())
            self._bar.close()
            self._bar = None


def append_log(path: Path, line: dict[str, Any]) -> None:
    """Append one JSON line to the run log (flushed, so a crash loses at most that line)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()


def rollback_to_boundary(model: BaseAlgorithm, boundary: int) -> int:
    """Forget the steps collected after ``boundary`` (never trained on); return how many.

    Off-policy algorithms also drop those transitions from the replay buffer, so the
    resumed run collects them again exactly once.
    """
    extra = model.num_timesteps - boundary
    if extra <= 0:
        return 0
    model.num_timesteps = boundary
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None:
        n = extra // max(1, model.n_envs)
        if buffer.full:
            buffer.pos = (buffer.pos - n) % buffer.buffer_size
        else:
            buffer.pos = max(0, buffer.pos - n)
    return extra
