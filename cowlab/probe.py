"""Which kernel facilities a policy read on a preset that does not have them.

Two parts of the state a policy sees exist only from some kernel release on, and a
:class:`~cowlab.kernel.fault.FaultView` answers ``None`` for them on older presets:

* ``anon_exclusive``: PageAnonExclusive, the ``anon_exclusive`` facility (v5.19+,
  6c287605fd56);
* ``maybe_mapped_shared``: folio_maybe_mapped_shared(), the ``folio_mm_ids`` facility
  (v6.15+, 1da190f4d0a6).

A policy written for a newer kernel still runs on an older preset (``exclusive`` on
v5.9 finds ``anon_exclusive`` None, treats it as false and falls back to the v5.18
sequence), but a leaderboard must say that it asked for something that preset lacks.
:class:`ProbedPolicy` wraps a policy for one run and counts, per attribute, the faults
at which it read one of these attributes and got ``None``. ``features()`` (the
observation vector of a learned agent) contains both, so a call counts as a read of
each that is absent. The count says *that* the policy consulted a missing facility,
not that its decision depended on it.

The probe forwards everything else to the real view (the primitives change the real
kernel state, as without it), so a probed run makes the same decisions, bit for bit.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

__all__ = ["ABSENT_FACILITIES", "ProbedPolicy", "ProbedView"]

#: FaultView attribute -> (KernelConfig facility, what it is, first release, commit).
ABSENT_FACILITIES: dict[str, tuple[str, str, str, str]] = {
    "anon_exclusive": ("anon_exclusive", "PageAnonExclusive", "v5.19", "6c287605fd56"),
    "maybe_mapped_shared": ("folio_mm_ids", "folio_maybe_mapped_shared()", "v6.15",
                            "1da190f4d0a6"),
}


class ProbedView:
    """A FaultView stand-in that counts reads of facilities the preset lacks."""

    __slots__ = ("_reads", "_view")

    def __init__(self, view: Any, reads: Counter[str]) -> None:
        object.__setattr__(self, "_view", view)
        object.__setattr__(self, "_reads", reads)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(probe, FaultView) holds, as for the view
        return type(self._view)

    def __getattr__(self, name: str) -> Any:
        view = self._view
        value = getattr(view, name)
        if name in ABSENT_FACILITIES:
            if value is None:
                self._reads[name] += 1
        elif name == "features":
            for attr in ABSENT_FACILITIES:
                if getattr(view, attr) is None:
                    self._reads[attr] += 1
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._view, name, value)


class ProbedPolicy:
    """A policy whose ``decide`` sees a :class:`ProbedView`; ``reads`` has the counts.

    Any other attribute (``name``, ``oracle``, a learned agent's fields) is the wrapped
    policy's. Oracles are not probed: they read the ground truth, not facilities.
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.reads: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def reset(self, seed: int | None) -> None:
        """The wrapped policy's reset."""
        self.policy.reset(seed)

    def decide(self, fault: Any) -> Any:
        """The wrapped policy's decision on a probed view of ``fault``."""
        return self.policy.decide(ProbedView(fault, self.reads))

    def absent_reads(self) -> dict[str, int]:
        """``{attribute: faults at which it was read and absent}``, sorted, nonzero only."""
        return {k: v for k, v in sorted(self.reads.items()) if v}
