"""Kernel eras: the facilities surrounding do_wp_page(), and each era's default policy.

A preset fixes how fork, GUP, swap-in, swap-out, mprotect and the LRU behave
in one kernel release; the reuse rule itself is a pluggable policy whose
default is the era's own. Any facility can be overridden by name
(``KernelConfig.with_overrides``), e.g. a v5.18 kernel with the v6.9 batch size.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mypy_extensions import mypyc_attr


# Interpreted even in the compiled build (setup.py): pickles and introspects like any
# Python exception.
@mypyc_attr(native_class=False)
class PresetError(ValueError):
    """An unknown preset or facility, or a facility value of the wrong type."""


@dataclass(frozen=True)
class KernelConfig:
    """One kernel release's facilities. Field docstrings cite the commit that changed them."""

    name: str
    era: str
    default_policy: str
    description: str = ""
    #: v5.8 only (17839856fd58 "gup: document and work around 'COW can break either way'
    #: issue"): every FOLL_GET / FOLL_PIN on a COW mapping (is_cow_mapping(): private and
    #: VM_MAYWRITE, so PROT_READ private memory too) first takes a write fault to break
    #: COW; FOLL_COW then lets GUP follow the dirty read-only copy.
    gup_cow_break: bool = False
    #: v5.9+ (70e806e4e645 "mm: Do early cow for pinned pages during fork() for ptes"):
    #: fork copies a maybe-DMA-pinned anon page for the child when the mm has pinned.
    fork_copies_pinned: bool = False
    #: v5.11+ (9348b73c2e1b "mm: don't play games with pinned pages in clear_page_refs"):
    #: clearing soft-dirty leaves a writable PTE of a maybe-DMA-pinned page alone when the mm has
    #: pinned (pte_is_pinned() in fs/proc/task_mmu.c), so the pin stays coherent.
    softdirty_skips_pinned: bool = False
    #: v5.11+ (feb889fb40fa "mm: don't put pinned pages into the swap cache"):
    #: shrink_page_list() keeps a maybe-DMA-pinned anon page that is not in the swapcache
    #: instead of adding it to swap (MADV_PAGEOUT's reclaim_pages() path too).
    reclaim_skips_pinned: bool = False
    #: v5.12+ (4eae4efa2c29 "hugetlb: do early cow when page pinned on src mm"): fork
    #: copies a maybe-pinned hugetlb page for the child, as 70e806e4e645 did for PTEs.
    hugetlb_fork_copies_pinned: bool = False
    #: v5.19+ (6c287605fd56 "mm: remember exclusively mapped anonymous pages with
    #: PG_anon_exclusive"): per-page PageAnonExclusive, cleared by fork, set on reuse.
    anon_exclusive: bool = False
    #: v5.19+ (1493a1913e34 "mm/swap: remember PG_anon_exclusive via a swp pte bit"):
    #: swap-out stores PAE in the swap PTE, swap-in restores it.
    swp_exclusive: bool = False
    #: v5.19+ (c89357e27f20 "mm: support GUP-triggered unsharing of anonymous pages"):
    #: a R/O FOLL_PIN on a non-PAE anon page first runs an unshare fault.
    gup_unshare: bool = False
    #: Up to v5.17: do_swap_page() decides reuse itself on a write fault (policy path
    #: "swap"); c145e0b47c77 ("mm: streamline COW logic in do_swap_page()", v5.18) removed it.
    swap_fault_decides: bool = True
    #: v5.18+ (c145e0b47c77): do_swap_page() maps a fresh (swapcache-bypassed) page, or
    #: one whose refcount shows no other user, writable itself; v5.19+ also a page whose
    #: swap PTE carried the exclusive bit.
    swapin_refcount_reuse: bool = False
    #: v6.11+ (c18160dba5ff "mm: swap: reuse exclusive folio directly instead of wp page
    #: faults"): a read fault maps an exclusive swapped-in folio writable at once.
    swapin_map_writable_on_read: bool = False
    #: v6.0+ (64fe24a3e05e "mm/mprotect: try avoiding write faults for exclusive anonymous
    #: pages when changing protection"): mprotect(RW) / uffd-wp off map provably exclusive
    #: (PAE), dirty pages writable at once.
    mprotect_upgrade_exclusive: bool = False
    #: v6.2+ (d84887739d5c "mm/mprotect: allow clean exclusive anon pages to be
    #: writable"): for a private anon mapping only PageAnonExclusive counts, so a clean
    #: exclusive PTE is upgraded too; before it the PTE also had to be dirty.
    mprotect_upgrade_clean: bool = False
    #: Per-CPU folio batch size: PAGEVEC_SIZE 15, raised to 31 in v6.9.
    lru_batch_size: int = 15
    #: Before v5.9 (b518154e59aa "mm/vmscan: protect the workingset on anonymous LRU")
    #: new anon pages started on the active list; from v5.9 on the inactive list.
    new_anon_active: bool = False
    #: v6.15 (1da190f4d0a6): large folios track up to two mm ids with per-mm mapcounts,
    #: exposing folio_maybe_mapped_shared() to the reuse rule.
    folio_mm_ids: bool = False
    #: Up to v5.7 a COW fault on a PMD-mapped THP copies the whole 2 MiB page; v5.8
    #: (3917c80280c9 "thp: change CoW semantics for anon-THP") splits the PMD instead.
    thp_cow_copies_whole: bool = False
    #: v6.8+ (19eaf44954df "mm: thp: support allocation of anonymous multi-size THP"):
    #: anonymous faults may allocate mTHP folios of orders 2..8.
    mthp: bool = False
    #: v6.10+ (845982eb264b "mm: swap: allow storage of all mTHP orders"): mTHP folios are
    #: swapped out whole instead of being split first.
    mthp_swapout: bool = False
    #: swap readahead window 2^page_cluster (vm.page-cluster, default 3).
    page_cluster: int = 3
    #: v6.2+ (84209e87c696 "mm/gup: reliable R/O long-term pinning in COW mappings"): a
    #: R/O FOLL_LONGTERM pin of the shared zero page in a COW mapping first unshares it
    #: (a new exclusive page, mapped read-only).
    gup_longterm_unshares_zero_page: bool = False
    #: v6.12+ (242d12c98174 "mm: support large folios swap-in for sync io devices"): a
    #: swap fault on a synchronous device whose entry has swap count 1 swaps in a whole
    #: mTHP-sized folio when every PTE of the aligned range holds a contiguous swap entry
    #: that is not in the swapcache (swapin.py).
    swapin_large_folio: bool = False

    def with_overrides(
        self, overrides: Mapping[Any, object], *, where: str = "kernel"
    ) -> KernelConfig:
        """A copy with facilities replaced; unknown names or wrong types raise PresetError."""
        known = [f.name for f in dataclasses.fields(self) if f.name not in _NOT_FACILITIES]
        changes: dict[str, object] = {}
        for key, value in overrides.items():
            if not isinstance(key, str):
                raise PresetError(f"{where}: facility names are strings, got {key!r}")
            if key in _NOT_FACILITIES:
                raise PresetError(
                    f"{where}: '{key}' describes the preset and cannot be overridden "
                    "(choose the policy with --policy or the config's policy key)"
                )
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise PresetError(f"{where}: unknown kernel facility '{key}'{extra}")
            current = getattr(self, key)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise PresetError(f"{where}.{key}: expected true or false, got {value!r}")
            elif isinstance(current, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise PresetError(f"{where}.{key}: expected an integer, got {value!r}")
                if value < 1 and key == "lru_batch_size":
                    raise PresetError(f"{where}.{key}: must be at least 1, got {value}")
                if key == "page_cluster" and not 0 <= value <= 5:
                    raise PresetError(f"{where}.{key}: must be 0..5, got {value}")
            elif not isinstance(value, str):
                raise PresetError(f"{where}.{key}: expected a string, got {value!r}")
            changes[key] = value
        if not changes:
            return self
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def facilities(self) -> dict[str, object]:
        """The facility flags as a plain mapping (for records and ``cowlab kernels``)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _NOT_FACILITIES
        }


#: Fields that describe a preset rather than configure a facility.
_NOT_FACILITIES = ("name", "era", "default_policy", "description")

_V5_7 = KernelConfig(
    name="v5.7",
    era="A",
    default_policy="legacy",
    description="v5.7: mapcount + swapcount rule (reuse_swap_page), sleeps on the page lock",
    new_anon_active=True,
    thp_cow_copies_whole=True,
)
_V5_8 = dataclasses.replace(
    _V5_7,
    name="v5.8",
    era="B",
    description="v5.8: as v5.7, but GUP on a COW mapping breaks COW first (17839856fd58); "
    "a COW fault on a PMD THP splits it (3917c80280c9)",
    gup_cow_break=True,
    thp_cow_copies_whole=False,
)
_V5_9 = dataclasses.replace(
    _V5_7,
    name="v5.9",
    era="C",
    default_policy="baseline",
    description="v5.9..v5.10: page_count rule in do_wp_page (09854ba94c6a); fork copies "
    "pinned pages (70e806e4e645); new anon pages start inactive (b518154e59aa)",
    fork_copies_pinned=True,
    new_anon_active=False,
    thp_cow_copies_whole=False,
)
_V5_11 = dataclasses.replace(
    _V5_9,
    name="v5.11",
    description="v5.11: as v5.9; clear_refs skips pinned pages (9348b73c2e1b), reclaim "
    "keeps pinned pages out of the swapcache (feb889fb40fa)",
    softdirty_skips_pinned=True,
    reclaim_skips_pinned=True,
)
_V5_12 = dataclasses.replace(
    _V5_11,
    name="v5.12",
    description="v5.12..v5.17: as v5.11; fork copies pinned hugetlb pages (4eae4efa2c29)",
    hugetlb_fork_copies_pinned=True,
)
_V5_18 = dataclasses.replace(
    _V5_12,
    name="v5.18",
    era="D",
    default_policy="patched-lru",
    description="v5.18: swapcache-aware page_count rule with local LRU drain "
    "(53a05ad9f21d + d4c470970d45); do_swap_page no longer decides, drains and maps "
    "certainly exclusive pages writable (c145e0b47c77)",
    swap_fault_decides=False,
    swapin_refcount_reuse=True,
)
_V5_19 = dataclasses.replace(
    _V5_18,
    name="v5.19",
    era="E",
    default_policy="exclusive",
    description="v5.19..v6.1: PageAnonExclusive (6c287605fd56), swap PTE exclusive bit "
    "(1493a1913e34), GUP unshare (c89357e27f20); v6.0's mprotect upgrade (64fe24a3e05e) "
    "comes with the v6.2 preset",
    anon_exclusive=True,
    swp_exclusive=True,
    gup_unshare=True,
)
_V6_2 = dataclasses.replace(
    _V5_19,
    name="v6.2",
    description="v6.2..v6.8: as v5.19; mprotect / uffd-wp map exclusive pages writable "
    "(64fe24a3e05e, v6.0), clean ones too (d84887739d5c); a R/O longterm pin unshares "
    "the zero page (84209e87c696); v6.8's mTHP (19eaf44954df) comes with the v6.9 preset",
    mprotect_upgrade_exclusive=True,
    mprotect_upgrade_clean=True,
    gup_longterm_unshares_zero_page=True,
)
_V6_9 = dataclasses.replace(
    _V6_2,
    name="v6.9",
    era="F",
    default_policy="large-strict",
    description="v6.9..v6.10: as v6.2; large folios never reused through the refcount "
    "path (cd197c3a2040); batch of 31; multi-size THP (19eaf44954df)",
    lru_batch_size=31,
    mthp=True,
)
_V6_11 = dataclasses.replace(
    _V6_9,
    name="v6.11",
    era="F",
    description="v6.11: as v6.9; swap-in maps an exclusive folio writable on a read fault "
    "(c18160dba5ff); whole-mTHP swap-out (845982eb264b)",
    swapin_map_writable_on_read=True,
    mthp_swapout=True,
)
_V6_12 = dataclasses.replace(
    _V6_11,
    name="v6.12",
    description="v6.12..v6.14: as v6.11; large-folio swap-in from synchronous devices "
    "(242d12c98174)",
    swapin_large_folio=True,
)
_V6_15 = dataclasses.replace(
    _V6_12,
    name="v6.15",
    era="G",
    default_policy="exact-mapcount",
    description="v6.15: exact large-folio reuse by per-mm mapcount tracking (1da190f4d0a6)",
    folio_mm_ids=True,
)

#: The shipped presets, oldest first.
PRESETS: dict[str, KernelConfig] = {
    p.name: p
    for p in (
        _V5_7, _V5_8, _V5_9, _V5_11, _V5_12, _V5_18, _V5_19, _V6_2, _V6_9, _V6_11, _V6_12,
        _V6_15,
    )
}


def get_preset(name: str, *, where: str = "kernel") -> KernelConfig:
    """Look up a preset by name (``v5.19``; ``5.19`` is accepted too)."""
    key = name if name.startswith("v") else f"v{name}"
    try:
        return PRESETS[key]
    except KeyError:
        hint = difflib.get_close_matches(key, list(PRESETS), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise PresetError(
            f"{where}: unknown kernel preset '{name}'{extra}; known: {', '.join(PRESETS)}"
        ) from None
