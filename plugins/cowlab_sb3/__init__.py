"""Learned agents for cowlab: stable-baselines3 models as reuse policies.

Registers the policy ``sb3``: ``--policy sb3:runs/exclusive/model.zip`` (the registry
splits ``sb3:PATH`` into the registration ``sb3`` with ``path=PATH``). Training itself
is ``cowlab train`` (:mod:`cowlab.train`), which uses :mod:`cowlab_sb3.algos`.

Model files are pickles: loading one runs code. A model is loaded only when its sha256
matches the one recorded next to it at training time (``<model>.json``), or when the
user trusts it explicitly (``trust=true``, ``--trust-model``, ``COWLAB_TRUST_MODELS=1``).
"""

from __future__ import annotations

from cowlab.plugins import RegisterFn, hookimpl
from cowlab_sb3.policy import Sb3Params, make_sb3_policy

COWLAB_HOOK_API = 1

__all__ = ["Sb3Params", "cowlab_register_policies", "make_sb3_policy"]


@hookimpl
def cowlab_register_policies(register: RegisterFn) -> None:
    """Register the ``sb3`` policy (a trained stable-baselines3 model)."""
    register(
        "sb3",
        make_sb3_policy,
        params=Sb3Params,
        description="a trained stable-baselines3 agent: sb3:PATH/model.zip (learned)",
    )
