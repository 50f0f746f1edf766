"""The reuse rule of every kernel era, one short function each, in the kernel's order.

Each function reads like its era's do_wp_page() (mm/memory.c): the checks appear
in upstream order and every ``goto copy`` returns a COPY with the reason the
``anon_wp_copy_*`` debug counters use. ``fault.path`` tells which kernel path
asks: ``"wp"`` (do_wp_page on a PTE), ``"swap"`` (do_swap_page's own decision up
to v5.17: COPY there means "map read-only and continue into do_wp_page") or
``"pmd"`` (a PMD-mapped THP).
"""

from __future__ import annotations

from collections.abc import Callable

from cowlab.kernel.decision import Decision
from cowlab.kernel.fault import FaultView
from cowlab.plugins import RegisterFn, hookimpl

REUSE = Decision.REUSE
COPY = Decision.COPY


# --- shared pieces -----------------------------------------------------------------------
def reuse_swap_page(fault: FaultView) -> bool:
    """reuse_swap_page() (mm/swapfile.c, up to v5.17): the mapcount + swapcount rule.

    The page may be reused if the mappings plus the swap PTEs referring to it
    number at most one. Under writeback on a device that needs stable writes the
    swapcache cannot be dropped, so the answer is no. GUP references are invisible
    to this rule: that is CVE-2020-29374.
    """
    if fault.ksm:
        return False
    count = fault.mapcount + fault.swapcount
    if count == 1 and fault.swapcache:
        if not fault.writeback:
            if fault.path != "swap":
                # delete_from_swap_cache(): we are the only user. (On the swap path the
                # kernel does this itself once the faulting swap PTE is gone.)
                fault.free_swap()
        elif fault.swap_stable_writes:
            return False
    return count <= 1


def thp_mapcount_rule(fault: FaultView) -> Decision:
    """do_huge_pmd_wp_page() up to v5.17: sleep on the page lock, then reuse_swap_page()
    with the THP's total mapcount. COPY means "split the PMD and handle the 4 KiB page"
    (from v5.8, 3917c80280c9; before it, the whole THP is copied)."""
    fault.lock()
    return REUSE if reuse_swap_page(fault) else COPY.because("count")


def thp_refcount_rule(fault: FaultView) -> Decision:
    """do_huge_pmd_wp_page() from v5.18 (3bff7e3f1f16): sleep on the lock, allow the
    swapcache's references, free the swap entry, reuse only with refcount 1 (the LRU
    batch is never involved: a THP is put on the LRU at once)."""
    fault.lock()
    if fault.refcount > 1 + fault.swapcache * fault.nr_pages:
        return COPY.because("early")
    if fault.swapcache:
        fault.free_swap()
    return REUSE if fault.refcount == 1 else COPY.because("count")


def swapin_refcount_rule(fault: FaultView) -> Decision:
    """do_swap_page() from v5.18 (c145e0b47c77), applied where an older kernel asks.

    A swapcache folio off the LRU is drained out of the local batch first; the entry is
    freed; the swapcache is dropped when only this fault and the swapcache hold the
    folio; the page is mapped writable only if it was never in the swapcache (the
    synchronous bypass) or nothing but this fault holds it. Otherwise it is mapped
    read-only and do_wp_page() decides.
    """
    if fault.ksm:
        return COPY.because("ksm")
    if not fault.swapcache:
        return REUSE
    if not fault.lru:
        # The swapcache folio may wait in this CPU's LRU-add batch: lru_add_drain().
        fault.drain_lru()
    # refcount here includes this fault's own reference (1) and the swapcache's (1).
    if fault.refcount == 2 and fault.swapcount <= 1 and not fault.writeback:
        return REUSE
    return COPY.because("swapcache")


# --- era A/B: v5.7, v5.8 -----------------------------------------------------------------
def legacy_rule(fault: FaultView) -> Decision:
    """v5.7 / v5.8 do_wp_page(): KSM check, sleep on the page lock, reuse_swap_page().

    Up to v5.8 a KSM page mapped once and not in the swapcache was reused
    (reuse_ksm_page()); every other page was reused if ``mapcount + swapcount <= 1``.
    """
    if fault.path == "swap":
        return REUSE if reuse_swap_page(fault) else COPY.because("count")
    if fault.ksm and (fault.swapcache or fault.refcount != 1):
        return COPY.because("ksm")
    fault.lock()  # lock_page(): sleeps while a swap-in read or reclaim holds it
    if fault.ksm:
        return REUSE if (not fault.swapcache and fault.refcount == 1) else COPY.because("ksm")
    if reuse_swap_page(fault):
        return REUSE
    return COPY.because("count")


# --- era C: v5.9 .. v5.17 ----------------------------------------------------------------
def baseline_rule(fault: FaultView) -> Decision:
    """v5.9 do_wp_page() (09854ba94c6a "mm: do_wp_page() simplification").

    Reuse only if nothing but our own mapping holds a reference. Pages in the
    swapcache or in an LRU batch are always copied. do_swap_page() and the PMD path
    still use reuse_swap_page(), the mapcount rule: the leftover CVE instances.
    """
    if fault.path == "swap":
        return REUSE if reuse_swap_page(fault) else COPY.because("count")
    if fault.path == "pmd":
        return thp_mapcount_rule(fault)
    # PageKsm() doesn't necessarily raise the page refcount.
    if fault.ksm:
        return COPY.because("ksm")
    if fault.refcount != 1:
        return COPY.because("early")
    if not fault.trylock():
        return COPY.because("lock")
    if fault.ksm or fault.mapcount != 1 or fault.refcount != 1:
        return COPY.because("count")
    return REUSE


# --- the seed patch: 53a05ad9f21d alone -----------------------------------------------------
def _after_free_swap(fault: FaultView) -> Decision:
    """The tail shared by the v5.18+ rules: free the swapcache under the lock, recheck."""
    if not fault.trylock():
        return COPY.because("lock")
    if fault.swapcache:
        fault.free_swap()
    if fault.ksm:
        return COPY.because("ksm")
    if fault.refcount != 1:
        if fault.swapcache:
            return COPY.because("writeback" if fault.writeback else "swapcache")
        return COPY.because("count")
    return REUSE


def patched_rule(fault: FaultView) -> Decision:
    """53a05ad9f21d "mm: optimize do_wp_page() for exclusive pages in the swapcache", alone.

    Allow one extra reference for the swapcache and try to free it under the page
    lock. Without d4c470970d45 a page still waiting in the LRU-add batch (refcount
    + 1) is copied. do_swap_page() keeps its pre-v5.18 reuse_swap_page() decision.
    """
    if fault.path == "swap":
        return REUSE if reuse_swap_page(fault) else COPY.because("count")
    if fault.path == "pmd":
        return thp_mapcount_rule(fault)
    if fault.ksm:
        return COPY.because("ksm")
    if fault.refcount > 1 + fault.swapcache:
        return COPY.because("early")
    return _after_free_swap(fault)


# --- era D: v5.18 ----------------------------------------------------------------------------
def patched_lru_rule(fault: FaultView) -> Decision:
    """v5.18 do_wp_page(): 53a05ad9f21d plus d4c470970d45 (lru_add_drain() when !PageLRU).

    Cheap early exit above refcount 3; drain the local LRU batch (a remote CPU's
    batch cannot be drained here); allow the swapcache reference; free the swap
    entry under the lock; reuse only with refcount 1.
    """
    if fault.path == "swap":
        return swapin_refcount_rule(fault)
    if fault.path == "pmd":
        return thp_refcount_rule(fault)
    if fault.ksm:
        return COPY.because("ksm")
    if fault.refcount > 3:
        return COPY.because("early")
    if not fault.lru:
        fault.drain_lru()
    if fault.refcount > 1 + fault.swapcache:
        # Still off the LRU after a local drain: a remote batch holds it.
        return COPY.because("early" if fault.lru else "lru")
    return _after_free_swap(fault)


# --- era E: v5.19 .. v6.8 ----------------------------------------------------------------
def exclusive_rule(fault: FaultView) -> Decision:
    """v5.19 do_wp_page() (6c287605fd56 "mm: remember exclusively mapped anonymous pages
    with PG_anon_exclusive").

    PageAnonExclusive -> reuse without taking the lock or looking at the refcount.
    Otherwise the v5.18 sequence; a successful reuse marks the page exclusive
    (page_move_anon_rmap()). On a PTE-mapped large folio the refcount path reuses
    only when this is the folio's last reference (the last PTE).
    """
    if fault.anon_exclusive:
        return REUSE
    return patched_lru_rule(fault)


# --- era F: v6.9 .. v6.14 ---------------------------------------------------------------
def large_strict_rule(fault: FaultView) -> Decision:
    """v6.9 (cd197c3a2040): a large folio is never reused through the refcount path, so
    the last PTE of a PTE-mapped THP is copied and the folio can be freed."""
    if fault.anon_exclusive:
        return REUSE
    if fault.is_large and fault.path == "wp":
        return COPY.because("large")
    return patched_lru_rule(fault)


# --- era G: v6.15 --------------------------------------------------------------------------
def exact_mapcount_rule(fault: FaultView) -> Decision:
    """v6.15 (1da190f4d0a6): exact large-folio reuse by per-mm mapcount tracking.

    __wp_can_reuse_large_anon_folio(): a large folio is reused if it has more than one
    mapping left (the last PTE is copied so the folio can go), only this mm maps it
    (per-mm mapcount tracking says so) and every reference is a mapping. Only a folio in
    the swapcache is locked, with a trylock, to free the swapcache, which stays freed
    even when the reference check then fails. (Large folios are never KSM pages.)
    """
    if fault.anon_exclusive:
        return REUSE
    if not fault.is_large or fault.path != "wp":
        return patched_lru_rule(fault)
    if fault.large_mapcount <= 1 or fault.maybe_mapped_shared:
        return COPY.because("large")
    if fault.swapcache:
        if not fault.trylock():
            return COPY.because("lock")
        fault.free_swap()
        fault.unlock()
    if fault.large_mapcount != fault.refcount:
        return COPY.because("swapcache" if fault.swapcache else "large")
    return REUSE


Rule = Callable[[FaultView], Decision]


class EraPolicy:
    """A kernel era's rule as a policy object."""

    def __init__(self, name: str, rule: Rule) -> None:
        self.name = name
        self.rule = rule

    def reset(self, seed: int | None) -> None:
        """Era rules are stateless."""

    def decide(self, fault: FaultView) -> Decision:
        """Apply the era's rule."""
        return self.rule(fault)


ERAS: dict[str, tuple[Rule, str]] = {
    "legacy": (legacy_rule, "v5.7 mapcount + swapcount rule (reuse_swap_page), sleeps on lock"),
    "baseline": (baseline_rule, "v5.9 page_count rule (09854ba94c6a)"),
    "patched": (patched_rule, "the seed patch 53a05ad9f21d alone: swapcache-aware refcount"),
    "patched-lru": (patched_lru_rule, "v5.18: 53a05ad9f21d + local LRU drain (d4c470970d45)"),
    "exclusive": (exclusive_rule, "v5.19 PageAnonExclusive (6c287605fd56)"),
    "large-strict": (large_strict_rule, "v6.9: never reuse a large folio by refcount"),
    "exact-mapcount": (exact_mapcount_rule, "v6.15: exact large-folio reuse (1da190f4d0a6)"),
}


def _factory(name: str, rule: Rule) -> Callable[[], EraPolicy]:
    def make() -> EraPolicy:
        return EraPolicy(name, rule)

    make.__name__ = f"make_{name.replace('-', '_')}"
    return make


@hookimpl
def cowlab_register_policies(register: RegisterFn) -> None:
    """Register every era's policy."""
    for name, (rule, description) in ERAS.items():
        register(name, _factory(name, rule), description=description)
