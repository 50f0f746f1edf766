"""The answer a reuse policy gives for one write fault.

``Decision.REUSE`` makes the faulting PTE writable in place (``wp_page_reuse``);
``Decision.COPY`` allocates a new folio, copies the data and maps the copy
(``wp_page_copy``). A copy may carry a reason that feeds the ``anon_wp_copy_*``
debug counters, mirroring the ``goto copy`` sites of ``do_wp_page()``::

    >>> Decision.COPY.because("lock").reason
    'lock'
    >>> Decision.REUSE.is_reuse
    True
"""

from __future__ import annotations

from typing import ClassVar

#: Copy reasons understood by the counters (``anon_wp_copy_<reason>``).
COPY_REASONS = frozenset(
    {"early", "lru", "lock", "writeback", "swapcache", "count", "ksm", "large", "policy"}
)


class Decision:
    """An immutable REUSE or COPY answer with an optional reason.

    Instances are compared by kind and reason; ``Decision.REUSE`` and
    ``Decision.COPY`` are the two canonical values.
    """

    __slots__ = ("kind", "reason")

    kind: str
    reason: str | None
    REUSE: ClassVar[Decision]
    COPY: ClassVar[Decision]

    def __init__(self, kind: str, reason: str | None = None) -> None:
        if kind not in ("reuse", "copy"):
            raise ValueError(f"Decision kind must be 'reuse' or 'copy', not {kind!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "reason", reason)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Decision is immutable")

    @property
    def is_reuse(self) -> bool:
        """True for REUSE."""
        return self.kind == "reuse"

    def because(self, reason: str) -> Decision:
        """Return the same decision carrying ``reason`` (e.g. ``"lock"``, ``"count"``).

        Decisions are interned: asking twice for the same reason returns the same object
        (they are on the hot path of every fault).
        """
        key = (self.kind, reason)
        cached = _INTERNED.get(key)
        if cached is not None:
            return cached
        if not isinstance(reason, str) or not reason:
            raise ValueError("a decision's reason must be a non-empty string")
        made = _INTERNED[key] = Decision(self.kind, reason)
        return made

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Decision) and other.kind == self.kind and other.reason == self.reason
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.reason))

    def __repr__(self) -> str:
        base = f"Decision.{self.kind.upper()}"
        return f"{base}.because({self.reason!r})" if self.reason else base


_INTERNED: dict[tuple[str, str], Decision] = {}
Decision.REUSE = Decision("reuse")
Decision.COPY = Decision("copy")
