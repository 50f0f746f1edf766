"""The learning algorithms: PPO and DQN (stable-baselines3), MaskablePPO (sb3-contrib).

stable-baselines3 and torch are imported only when a model is made or loaded, so the
``sb3`` policy registration costs nothing until it is used.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

__all__ = ["ALGOS", "DEFAULT_HYPERPARAMETERS", "AlgoError", "algo_class", "check_hyperparameters",
           "make_model", "set_torch_threads"]

#: Algorithm names as written in ``agent.algo``.
ALGOS = ("ppo", "dqn", "maskable_ppo")

#: Defaults applied under ``agent.hyperparameters`` (which win). Small rollouts and
#: networks: an episode is a few hundred cheap decisions, and the learner runs on a CPU.
DEFAULT_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 256, "batch_size": 256, "n_epochs": 4, "learning_rate": 1e-3,
            "gamma": 0.5, "ent_coef": 0.0},
    "maskable_ppo": {"n_steps": 256, "batch_size": 256, "n_epochs": 4, "learning_rate": 1e-3,
                     "gamma": 0.5, "ent_coef": 0.0},
    "dqn": {"learning_rate": 5e-4, "buffer_size": 50_000, "learning_starts": 1_000,
            "batch_size": 64, "gamma": 0.9, "train_freq": 4, "target_update_interval": 1_000,
            "exploration_fraction": 0.3, "exploration_final_eps": 0.02},
}

# Constructor arguments cowlab sets itself (from other config keys).
_MANAGED = ("policy", "env", "seed", "device", "tensorboard_log", "verbose", "_init_setup_model")


class AlgoError(ValueError):
    """A bad algorithm choice or hyperparameter (user-facing)."""


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The stable-baselines3 class of ``algo``."""
    if algo == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if algo == "dqn":
        from stable_baselines3 import DQN

        return DQN
    if algo == "maskable_ppo":
        try:
            from sb3_contrib import MaskablePPO
        except ImportError:
            raise AlgoError(
                "agent.algo: maskable_ppo needs sb3-contrib: "
                "pip install -c constraints.txt -e '.[sb3-contrib]'"
            ) from None
        return MaskablePPO
    hint = difflib.get_close_matches(algo, ALGOS, n=1)
    extra = f" (did you mean '{hint[0]}'?)" if hint else ""
    raise AlgoError(f"agent.algo: unknown algorithm '{algo}'{extra}; known: {', '.join(ALGOS)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_type(key: str, value: object, default: object, annotation: object) -> str | None:
    """Why ``value`` cannot be the argument ``key`` (None: plausible), judged from the
    constructor's default and annotation: a number where SB3 expects one (a string such
    as ``fast`` would fail deep inside SB3 with an AssertionError), a bool for a bool."""
    text = str(annotation)
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if _is_number(default) and not _is_number(value):
        if isinstance(value, str) and "str" in text:
            return None  # e.g. ent_coef="auto" for SAC-style arguments
        if isinstance(value, (list, tuple)) and ("tuple" in text.lower()):
            return None  # e.g. train_freq=[1, "episode"]
        return "expected a number"
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
            and "float" not in text and not value.is_integer():
        return "expected an integer"
    return None


def check_hyperparameters(algo: str, given: Mapping[str, Any], where: str = "",
                          prefix: str = "agent.hyperparameters") -> dict[str, Any]:
    """Defaults merged with ``given``; unknown names (with a did-you-mean hint) and values
    of the wrong type raise :class:`AlgoError` naming ``prefix.key``."""
    cls = algo_class(algo)
    params = {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
              if name not in ("self", *_MANAGED)}
    accepted = list(params)
    at = f"{where}: " if where else ""
    for key, value in given.items():
        if key not in accepted:
            hint = difflib.get_close_matches(key, accepted, n=1)
            extra = f" (did you mean '{prefix}.{hint[0]}'?)" if hint else ""
            raise AlgoError(f"{at}unknown key '{prefix}.{key}' for {algo}{extra}")
        p = params[key]
        why = _check_type(key, value, p.default, p.annotation)
        if why is not None:
            raise AlgoError(f"{at}{prefix}.{key}: {why}, got {value!r}")
    if "policy_kwargs" in given:
        raise AlgoError(f"{at}{prefix}.policy_kwargs: use agent.net_arch")
    return {**DEFAULT_HYPERPARAMETERS.get(algo, {}), **dict(given)}


def set_torch_threads(n: int) -> None:
    """Use ``n`` intra-op threads (small networks on a CPU: 1 is fastest)."""
    import torch

    torch.set_num_threads(n)


def make_model(
    algo: str,
    env: VecEnv,
    *,
    hyperparameters: Mapping[str, Any],
    net_arch: list[int],
    seed: int,
    device: str = "cpu",
    tensorboard_log: str | None = None,
) -> BaseAlgorithm:
    """A new model for ``env`` (MlpPolicy with ``net_arch`` hidden layers)."""
    cls = algo_class(algo)
    kwargs = check_hyperparameters(algo, hyperparameters)
    return cls(
        "MlpPolicy",
        env,
        policy_kwargs={"net_arch": list(net_arch)},
        seed=seed,
        device=device,
        tensorboard_log=tensorboard_log,
        verbose=0,
        **kwargs,
    )
