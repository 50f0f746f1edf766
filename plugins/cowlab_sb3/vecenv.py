"""The vectorised environment behind ``cowlab train``.

stable-baselines3's :class:`~stable_baselines3.common.vec_env.DummyVecEnv` steps its
environments one after the other in the learner's process, and then returns a deep copy
of the list of info dicts, in case an environment hands out the same dict again and
changes it later. ``cowlab/CowFault-v0`` builds a new info dict at every step and never
touches it afterwards, so :class:`CowVecEnv` returns a new list of those same dicts:
the same infos, without copying every key (the ``blockers`` tuples, the terminal
observation array) at every step of every environment. Everything else is
DummyVecEnv's own code (observations, rewards, dones, the reset at an episode's end).
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

__all__ = ["CowVecEnv"]


class CowVecEnv(DummyVecEnv):
    """DummyVecEnv without the per-step deep copy of the infos (module docstring)."""

    def step_wait(self) -> VecEnvStepReturn:
        """Step every environment with its action; reset those whose episode ended."""
        for i in range(self.num_envs):
            obs, self.buf_rews[i], terminated, truncated, info = self.envs[i].step(
                self.actions[i]
            )
            self.buf_infos[i] = info
            done = terminated or truncated
            self.buf_dones[i] = done
            # The Gymnasium-to-SB3 convention DummyVecEnv applies.
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = self.envs[i].reset()
            self._save_obs(i, obs)
        return (self._obs_from_buf(), np.copy(self.buf_rews), np.copy(self.buf_dones),
                list(self.buf_infos))
