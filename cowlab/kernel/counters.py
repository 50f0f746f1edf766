"""vmstat-style counters (KERNEL_MODEL.md section 7).

Named like the kernel's where one exists (``/proc/vmstat``), plus the debug
counters used on the mailing list to explain copies in ``do_wp_page()``.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Every counter, in report order.
COUNTER_NAMES: tuple[str, ...] = (
    "pgfault",
    "pgmajfault",
    "pgreuse",
    "cow_ksm",
    "pswpin",
    "pswpout",
    "swap_ra",
    "swap_ra_hit",
    "thp_fault_alloc",
    "thp_split_pmd",
    "thp_split_page",
    "thp_deferred_split_page",
    "thp_collapse_alloc",
    "nr_tlb_remote_flush",
    "nr_foll_pin_acquired",
    "nr_foll_pin_released",
    "anon_wp_reuse",
    "anon_wp_copy_early",
    "anon_wp_copy_lru",
    "anon_wp_copy_lock",
    "anon_wp_copy_writeback",
    "anon_wp_copy_swapcache",
    "anon_wp_copy_count",
    "anon_wp_copy_ksm",
    "anon_wp_copy_large",
    "anon_wp_copy_policy",
    "swapin_reuse",
    "lru_add_drain",
    "lru_add_drain_all",
    "ksm_merged",
    "pgscan",
    "allocstall",
    "pgmigrate_started",
    "pgmigrate_success",
    "pgmigrate_fail",
    "pages_allocated",
    "pages_copied",
)


class Counters:
    """The counter set: one integer field per name of :data:`COUNTER_NAMES`, so the
    kernel's hot paths increment a field (``counters.pswpin += 1``); read-only users
    see a mapping from name to value (``counters["pswpin"]``, ``dict(counters)``,
    ``counters.items()`` in report order)."""

    def __init__(self) -> None:
        self.pgfault = 0
        self.pgmajfault = 0
        self.pgreuse = 0
        self.cow_ksm = 0
        self.pswpin = 0
        self.pswpout = 0
        self.swap_ra = 0
        self.swap_ra_hit = 0
        self.thp_fault_alloc = 0
        self.thp_split_pmd = 0
        self.thp_split_page = 0
        self.thp_deferred_split_page = 0
        self.thp_collapse_alloc = 0
        self.nr_tlb_remote_flush = 0
        self.nr_foll_pin_acquired = 0
        self.nr_foll_pin_released = 0
        self.anon_wp_reuse = 0
        self.anon_wp_copy_early = 0
        self.anon_wp_copy_lru = 0
        self.anon_wp_copy_lock = 0
        self.anon_wp_copy_writeback = 0
        self.anon_wp_copy_swapcache = 0
        self.anon_wp_copy_count = 0
        self.anon_wp_copy_ksm = 0
        self.anon_wp_copy_large = 0
        self.anon_wp_copy_policy = 0
        self.swapin_reuse = 0
        self.lru_add_drain = 0
        self.lru_add_drain_all = 0
        self.ksm_merged = 0
        self.pgscan = 0
        self.allocstall = 0
        self.pgmigrate_started = 0
        self.pgmigrate_success = 0
        self.pgmigrate_fail = 0
        self.pages_allocated = 0
        self.pages_copied = 0

    def __getitem__(self, name: str) -> int:
        if name not in _NAMES:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def __setitem__(self, name: str, value: int) -> None:
        if name not in _NAMES:
            raise KeyError(name)
        setattr(self, name, value)

    def __contains__(self, name: object) -> bool:
        return name in _NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(COUNTER_NAMES)

    def __len__(self) -> int:
        return len(COUNTER_NAMES)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Counters):
            return self.items() == other.items()
        if isinstance(other, dict):
            return dict(self.items()) == other
        return NotImplemented

    def get(self, name: str, default: int = 0) -> int:
        """The counter's value, or ``default`` for a name that is not a counter."""
        return self[name] if name in _NAMES else default

    def keys(self) -> tuple[str, ...]:
        """The counter names, in report order."""
        return COUNTER_NAMES

    def values(self) -> list[int]:
        """The values, in report order."""
        return [self[name] for name in COUNTER_NAMES]

    def items(self) -> list[tuple[str, int]]:
        """(name, value) pairs, in report order."""
        return [(name, self[name]) for name in COUNTER_NAMES]

    def as_dict(self) -> dict[str, int]:
        """A plain dict copy."""
        return dict(self.items())

    def __repr__(self) -> str:
        return f"Counters({self.as_dict()!r})"


_NAMES = frozenset(COUNTER_NAMES)


def new_counters() -> Counters:
    """A fresh counter set, every counter at zero."""
    return Counters()
