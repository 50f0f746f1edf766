"""The policy protocol: what the kernel calls at the do_wp_page decision point.

A policy is any object with a ``name``, ``reset(seed)`` and ``decide(fault)``.
The kernel resolves the policy once per run and calls ``decide`` directly on
every anonymous write fault (never through a plugin hook).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from cowlab.kernel.decision import Decision
    from cowlab.kernel.fault import FaultView


@runtime_checkable
class Policy(Protocol):
    """A reuse policy: decides REUSE or COPY for one write fault."""

    name: str

    def reset(self, seed: int | None) -> None:
        """Forget per-run state; ``seed`` seeds any randomness the policy uses."""

    def decide(self, fault: FaultView) -> Decision:
        """Return ``Decision.REUSE`` or ``Decision.COPY`` (optionally ``.because(reason)``)."""


#: The attributes every policy object must have (checked when a plugin registers one).
POLICY_MEMBERS = ("name", "reset", "decide")
