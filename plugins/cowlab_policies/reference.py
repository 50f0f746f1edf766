"""Reference policies: the oracle (upper bound on safe reuse) and the trivial bounds."""

from __future__ import annotations

import random
from dataclasses import dataclass

from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView, OracleFaultView
from cowlab.plugins import RegisterFn, hookimpl


class Oracle:
    """Reuse iff no observer but the writer can see the page (KERNEL_MODEL.md section 5).

    It reads the simulator's ground truth through the privileged view, which no
    kernel could do: tables label it ``oracle``. Reusing also keeps the writer's own
    pins coherent, so it never commits a violation the writer could have avoided.
    """

    name = "oracle"
    oracle = True

    def reset(self, seed: int | None) -> None:
        """Stateless."""

    def decide(self, fault: FaultView) -> Decision:
        """Reuse exactly the truly exclusive pages."""
        assert isinstance(fault, OracleFaultView)
        return Decision.REUSE if fault.truly_exclusive else Decision.COPY.because("policy")


class AlwaysCopy:
    """Copy on every write fault: safe against leaks, breaks every pin it meets."""

    name = "always-copy"

    def reset(self, seed: int | None) -> None:
        """Stateless."""

    def decide(self, fault: FaultView) -> Decision:
        """Always COPY."""
        return Decision.COPY.because("policy")


class AlwaysReuse:
    """Reuse on every write fault: never breaks a pin, leaks every shared page."""

    name = "always-reuse"

    def reset(self, seed: int | None) -> None:
        """Stateless."""

    def decide(self, fault: FaultView) -> Decision:
        """Always REUSE."""
        return Decision.REUSE


@dataclass(frozen=True)
class RandomParams:
    """Parameters of the ``random`` policy."""

    #: Probability of answering REUSE.
    p_reuse: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_reuse <= 1.0:
            raise ValueError(f"p_reuse must be within 0..1, got {self.p_reuse}")


class RandomPolicy:
    """REUSE with probability ``p_reuse``, seeded by ``reset(seed)``: a sanity baseline."""

    name = "random"

    def __init__(self, p_reuse: float = 0.5) -> None:
        self.p_reuse = p_reuse
        self._rng = random.Random(0)

    def reset(self, seed: int | None) -> None:
        """Reseed the generator."""
        self._rng = random.Random(seed)

    def decide(self, fault: FaultView) -> Decision:
        """A coin flip."""
        if self._rng.random() < self.p_reuse:
            return Decision.REUSE
        return Decision.COPY.because("policy")


@hookimpl
def cowlab_register_policies(register: RegisterFn) -> None:
    """Register the reference policies."""
    register("oracle", Oracle, description="ground-truth upper bound (oracle, not a kernel)")
    register("always-copy", AlwaysCopy, description="copy on every write fault")
    register("always-reuse", AlwaysReuse, description="reuse on every write fault (unsafe)")
    register("random", RandomPolicy, params=RandomParams,
             description="reuse with probability p_reuse (seeded)")
