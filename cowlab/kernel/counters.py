"""vmstat-style counters (KERNEL_MODEL.md section 7).

Named like the kernel's where one exists (``/proc/vmstat``), plus the debug
counters used on the mailing list to explain copies in ``do_wp_page()``.
"""

from __future__ import annotations

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


def new_counters() -> dict[str, int]:
    """A fresh counter set, every counter at zero."""
    return dict.fromkeys(COUNTER_NAMES, 0)
