"""Issue 11, kernel fidelity round 2: each fix pinned on every preset it affects.

Most tests run a scenario document (the form users write) on each preset and compare
what users see (the attempts, violations and counters) with what the upstream release
the preset stands for does. Each test names the upstream commit it follows.
"""

from __future__ import annotations

from typing import Any

import pytest

from cowlab.geometry import pte_dirty, pte_pfn, pte_write
from cowlab.kernel import Kernel
from cowlab.kernel.presets import PRESETS
from cowlab.plugins import get_registry
from cowlab.scenario import Scenario, ScenarioResult, ScenarioRunner
from cowlab.workloads.base import Budget, run_workload
from tests.conftest import KernelFactory

ALL = tuple(PRESETS)


def run_steps(
    kernel: object, steps: list[dict[str, Any]], machine: dict[str, Any] | None = None
) -> ScenarioResult:
    """Run a scenario document on ``kernel`` (a preset name or a preset mapping) with
    the preset's own reuse rule."""
    doc: dict[str, Any] = {"kernel": kernel, "steps": steps}
    if machine is not None:
        doc["machine"] = machine
    scenario = Scenario.from_mapping(doc, source="<test>")
    policy = get_registry().make_policy(scenario.kernel.default_policy)
    return ScenarioRunner(scenario, policy).run()  # type: ignore[arg-type]


def at_step(result: ScenarioResult, step: int) -> list[tuple[str, str, str | None]]:
    """(fault, outcome, violation) of every attempt recorded by step ``step``."""
    return [(r.fault, r.outcome, r.violation) for r in result.attempts if r.step == step]


# ======================================================================================
# 1. v5.11's pinned-page protections
# ======================================================================================
CLEAR_REFS_ON_A_PIN = [
    {"op": "mmap", "mm": "app", "page": 0, "pages": 2},
    {"op": "write", "mm": "app", "page": 0, "pages": 2},
    {"op": "gup", "mm": "app", "page": 0, "kind": "pin", "write": True, "longterm": True,
     "name": "rdma"},
    {"op": "clear_softdirty", "mm": "app"},
    {"op": "write", "mm": "app", "page": 0},  # step 4: the pinned page
    {"op": "write", "mm": "app", "page": 1},  # step 5: an ordinary page
    {"op": "put", "name": "rdma"},
]

#: The pinned page's write after clear_refs, per preset. v5.7/v5.8's mapcount rule reuses
#: the write-protected page; v5.9/v5.10's page_count rule copies it away from the
#: device; from v5.11 (9348b73c2e1b) clear_refs never write-protected it.
CLEAR_REFS_EXPECTED = {
    "v5.7": ("wp", "reuse", None),
    "v5.8": ("wp", "reuse", None),
    "v5.9": ("wp", "copy", "pin_incoherent"),
}


@pytest.mark.parametrize("preset", ALL)
def test_clear_refs_leaves_a_pinned_writable_page_writable_from_v5_11(preset: str) -> None:
    """9348b73c2e1b: pte_is_pinned() skips a maybe-pinned page of an mm that has pinned;
    every other page is still write-protected (its write faults, whatever the rule then
    decides)."""
    result = run_steps(preset, CLEAR_REFS_ON_A_PIN)
    expected = CLEAR_REFS_EXPECTED.get(preset, ("none", "none", None))
    assert at_step(result, 4) == [expected]
    assert [(a[0], a[2]) for a in at_step(result, 5)] == [("wp", None)]


PAGEOUT_OF_A_PIN = [
    {"op": "mmap", "mm": "app", "page": 0, "pages": 2},
    {"op": "write", "mm": "app", "page": 0, "pages": 2},
    {"op": "gup", "mm": "app", "page": 0, "kind": "pin", "write": True, "longterm": True,
     "name": "rdma"},
    {"op": "madvise", "mm": "app", "page": 0, "pages": 2, "advice": "pageout"},
    {"op": "write", "mm": "app", "page": 0},  # step 4: the pinned page
    {"op": "put", "name": "rdma"},
]

#: Up to v5.10 MADV_PAGEOUT unmaps the pinned page to a swap PTE; the write swaps it back
#: in and reuse_swap_page() (mapcount + swapcount) reuses it. From v5.11 (feb889fb40fa)
#: shrink_page_list() keeps it before add_to_swap(): still mapped and writable.
PAGEOUT_EXPECTED = {
    "v5.7": ("swap", "reuse", None),
    "v5.8": ("swap", "reuse", None),
    "v5.9": ("swap", "reuse", None),
}


@pytest.mark.parametrize("preset", ALL)
def test_pageout_keeps_a_pinned_page_out_of_the_swapcache_from_v5_11(preset: str) -> None:
    """feb889fb40fa: MADV_PAGEOUT goes through reclaim_pages() -> shrink_page_list(), whose
    page_maybe_dma_pinned() check keeps the pinned page; the unpinned one is swapped out."""
    result = run_steps(preset, PAGEOUT_OF_A_PIN)
    assert at_step(result, 4) == [PAGEOUT_EXPECTED.get(preset, ("none", "none", None))]
    k = result.kernel
    assert result.counters["pswpout"] == (2 if preset in PAGEOUT_EXPECTED else 1)
    # The pinned page never entered the swapcache (v5.19 used to add it, then give up).
    pinned = k.frames[pte_pfn(k.mms[1].pt[0])]
    assert pinned.swap_entry is None or preset in PAGEOUT_EXPECTED


@pytest.mark.parametrize(("preset", "swapped"), [("v5.9", True), ("v5.11", False),
                                                 ("v5.18", False), ("v5.19", False)])
def test_kswapd_keeps_a_pinned_page_mapped_from_v5_11(preset: str, swapped: bool) -> None:
    """feb889fb40fa under memory pressure (the reclaim op, shrink_inactive_list()): the
    pinned page stays mapped; before v5.11 it is unmapped to a swap PTE."""
    result = run_steps(preset, [
        {"op": "mmap", "mm": "app", "page": 0, "pages": 1},
        {"op": "write", "mm": "app", "page": 0},
        {"op": "gup", "mm": "app", "page": 0, "kind": "pin", "name": "rdma"},
        {"op": "lru_drain", "cpu": 0},
        {"op": "reclaim", "pages": 8},  # the young page is activated
        {"op": "reclaim", "pages": 8},  # aged back to the inactive list and reclaimed
        {"op": "write", "mm": "app", "page": 0},
        {"op": "put", "name": "rdma"},
    ])
    assert (at_step(result, 6)[0][0] == "swap") is swapped
    assert result.violations == []


@pytest.mark.parametrize(("preset", "violations"), [("v5.9", 48), ("v5.11", 0), ("v5.18", 0),
                                                    ("v5.19", 0)])
def test_pinned_io_v1_breaks_pins_only_before_v5_11(preset: str, violations: int) -> None:
    """The workload of the leaderboard's pinned rows: soft-dirty clears write-protected
    every pinned buffer and v5.9/v5.10's refcount rule copied each away from the device
    (48 buffers); from v5.11 (9348b73c2e1b) the buffers stay writable, no pin breaks."""
    registry = get_registry()
    config = PRESETS[preset]
    result = run_workload(registry.make("workload", "pinned-io-v1", {}), config,
                          registry.make_policy(config.default_policy),
                          budget=Budget(max_decisions=2000))
    incoherent = [r for r in result.records if r.violation == "pin_incoherent"]
    assert len(incoherent) == violations


# ======================================================================================
# 2. a R/O pin unshares a KSM page (v5.19+)
# ======================================================================================
KSM_THEN_RO_PIN = [
    {"op": "mmap", "mm": "a", "page": 0, "pages": 2},
    {"op": "write", "mm": "a", "page": 0, "pages": 2, "data": 7},
    {"op": "madvise", "mm": "a", "page": 0, "pages": 2, "advice": "mergeable"},
    {"op": "ksm_merge", "pages": [{"mm": "a", "page": 0}, {"mm": "a", "page": 1}]},
    {"op": "gup", "mm": "a", "page": 0, "kind": "pin", "longterm": True, "name": "ro"},
    {"op": "write", "mm": "a", "page": 0},  # step 5
    {"op": "put", "name": "ro"},
]


@pytest.mark.parametrize("preset", ALL)
def test_a_read_only_pin_on_a_ksm_page_unshares_it_from_v5_19(preset: str) -> None:
    """c89357e27f20: gup_must_unshare() is "not PageAnonExclusive" for every anon page, KSM
    included, so the pin lands on an exclusive copy and the later write reuses it. Before
    v5.19 the pin lands on the KSM page and the write copies it (pin_incoherent), except
    on v5.8, whose GUP broke COW first (17839856fd58)."""
    result = run_steps(preset, KSM_THEN_RO_PIN)
    cfg = PRESETS[preset]
    gup = at_step(result, 4)
    if cfg.gup_unshare:
        assert gup == [("unshare", "copy", None)]
        assert at_step(result, 5) == [("wp", "reuse", None)]
    elif cfg.gup_cow_break:
        assert gup == [("wp", "copy", None)]
        assert at_step(result, 5) == [("none", "none", None)]
    else:
        assert gup == []
        assert at_step(result, 5) == [("wp", "copy", "pin_incoherent")]
    assert result.counters["cow_ksm"] == 1


# ======================================================================================
# 3. v5.8's forced COW break keys on is_cow_mapping()
# ======================================================================================
RO_GUP_ON_UNTOUCHED = [
    {"op": "mmap", "mm": "a", "page": 0, "pages": 1, "prot": "r"},
    {"op": "gup", "mm": "a", "page": 0, "kind": "get", "name": "pipe"},
    {"op": "put", "name": "pipe"},
]


def test_v5_8_gup_on_untouched_read_only_private_memory_allocates() -> None:
    """17839856fd58: a PROT_READ private mapping is a COW mapping (VM_MAYWRITE), so the
    GUP is done as a write: a new page (not writable: no VM_WRITE), then a COW break
    fault that leaves it dirty and read-only, which FOLL_COW follows."""
    result = run_steps("v5.8", RO_GUP_ON_UNTOUCHED)
    assert at_step(result, 1) == [("anon", "none", None), ("wp", "reuse", None)]
    pte = result.kernel.mms[1].pt[0]
    assert pte_dirty(pte) and not pte_write(pte)
    assert result.counters["pages_allocated"] == 1


@pytest.mark.parametrize("preset", [p for p in ALL if p != "v5.8"])
def test_other_eras_take_a_gup_of_read_only_memory_on_the_zero_page(preset: str) -> None:
    """Without the forced break a read GUP faults in the shared zero page and takes its
    reference there: nothing is allocated."""
    result = run_steps(preset, RO_GUP_ON_UNTOUCHED)
    assert at_step(result, 1) == []
    assert result.counters["pages_allocated"] == 0


CHILD_READ_ONLY_VMSPLICE = [
    {"op": "mmap", "mm": "parent", "page": 0, "pages": 1},
    {"op": "write", "mm": "parent", "page": 0},
    {"op": "fork", "mm": "parent", "child": "child"},
    {"op": "mprotect", "mm": "child", "page": 0, "prot": "r"},
    {"op": "gup", "mm": "child", "page": 0, "kind": "get", "name": "pipe"},  # step 4
    {"op": "exit", "mm": "child"},
    {"op": "write", "mm": "parent", "page": 0},  # step 6
    {"op": "put", "name": "pipe"},
]


@pytest.mark.parametrize(("preset", "gup", "write"), [
    ("v5.7", [], ("wp", "reuse", "leak")),
    ("v5.8", [("wp", "copy", None)], ("wp", "reuse", None)),
])
def test_v5_8_breaks_cow_for_a_vmsplice_from_read_only_memory(
    preset: str, gup: list[tuple[str, str, str | None]], write: tuple[str, str, str | None]
) -> None:
    """CVE-2020-29374 from a child that mprotect()ed its copy read-only: v5.8's break
    covers PROT_READ private mappings, so the pipe holds the child's own copy and the
    parent's write leaks nothing; v5.7 leaks."""
    result = run_steps(preset, CHILD_READ_ONLY_VMSPLICE)
    assert at_step(result, 4) == gup
    assert at_step(result, 6) == [write]


# ======================================================================================
# 4. v6.2: mprotect / uffd-wp upgrade clean exclusive PTEs; c18160dba5ff is clean
# ======================================================================================
CLEAN_EXCLUSIVE_THEN_MPROTECT = [
    {"op": "mmap", "mm": "a", "page": 0, "pages": 1},
    {"op": "write", "mm": "a", "page": 0},
    {"op": "madvise", "mm": "a", "page": 0, "advice": "pageout"},
    {"op": "read", "mm": "a", "page": 0},  # swap-in: exclusive (swap PTE bit), clean PTE
    {"op": "mprotect", "mm": "a", "page": 0, "prot": "r"},
    {"op": "mprotect", "mm": "a", "page": 0, "prot": "rw"},
    {"op": "write", "mm": "a", "page": 0},  # step 6
]


@pytest.mark.parametrize("preset", [p for p in ALL if PRESETS[p].anon_exclusive])
def test_mprotect_upgrades_a_clean_exclusive_page_from_v6_2(preset: str) -> None:
    """d84887739d5c: for a private anon mapping can_change_pte_writable() needs only
    PageAnonExclusive, so the clean swapped-in page becomes writable and the write takes
    no fault; v5.19..v6.1 leave it read-only (v6.0 needed a dirty PTE)."""
    result = run_steps(preset, CLEAN_EXCLUSIVE_THEN_MPROTECT)
    expected = ("none", "none", None) if PRESETS[preset].mprotect_upgrade_clean else (
        "wp", "reuse", None)
    assert at_step(result, 6) == [expected]


def test_v6_0_behaviour_needs_a_dirty_pte() -> None:
    """64fe24a3e05e alone (v6.0: the v6.2 preset without d84887739d5c): clean stays R/O."""
    result = run_steps({"preset": "v6.2", "mprotect_upgrade_clean": False},
                       CLEAN_EXCLUSIVE_THEN_MPROTECT)
    assert at_step(result, 6) == [("wp", "reuse", None)]


@pytest.mark.parametrize("preset", [p for p in ALL if PRESETS[p].anon_exclusive])
def test_uffd_wp_off_upgrades_a_clean_exclusive_page_from_v6_2(preset: str) -> None:
    """UFFDIO_WRITEPROTECT(off) uses the same can_change_pte_writable()."""
    steps = [
        *CLEAN_EXCLUSIVE_THEN_MPROTECT[:4],
        {"op": "uffd_wp", "mm": "a", "page": 0, "enable": True},
        {"op": "uffd_wp", "mm": "a", "page": 0, "enable": False},
        {"op": "write", "mm": "a", "page": 0},
    ]
    result = run_steps(preset, steps)
    expected = ("none", "none", None) if PRESETS[preset].mprotect_upgrade_clean else (
        "wp", "reuse", None)
    assert at_step(result, 6) == [expected]


@pytest.mark.parametrize("preset", [p for p in ALL if PRESETS[p].swapin_map_writable_on_read])
def test_swap_in_on_a_read_fault_maps_writable_but_clean_from_v6_11(preset: str) -> None:
    """c18160dba5ff: the read fault maps the exclusive page writable without dirtying the
    PTE; the write then takes no fault and dirties it."""
    result = run_steps(preset, CLEAN_EXCLUSIVE_THEN_MPROTECT[:4])
    pte = result.kernel.mms[1].pt[0]
    assert pte_write(pte) and not pte_dirty(pte)


# ======================================================================================
# 5. v5.18's do_swap_page() drains the local LRU batch
# ======================================================================================
WRITE_TO_A_SWAPCACHE_PAGE = [
    {"op": "mmap", "mm": "a", "page": 0, "pages": 1},
    {"op": "write", "mm": "a", "page": 0},
    {"op": "madvise", "mm": "a", "page": 0, "advice": "pageout"},  # ssd: stays cached
    {"op": "io_complete"},
    {"op": "write", "mm": "a", "page": 0},  # step 4: a write fault on the swap PTE
]


@pytest.mark.parametrize("preset", ALL)
def test_do_swap_page_drains_and_maps_a_swapcache_page_writable_from_v5_18(preset: str) -> None:
    """c145e0b47c77: the folio put back through MADV_PAGEOUT's batch is off the LRU, so the
    write fault drains the local batch, frees the swapcache (refcount 2) and maps the page
    writable itself: do_wp_page() is never reached. Up to v5.17 do_swap_page() asks
    reuse_swap_page() (no drain)."""
    result = run_steps(preset, WRITE_TO_A_SWAPCACHE_PAGE, {"swap": "ssd"})
    (rec,) = [r for r in result.attempts if r.step == 4]
    c = result.counters
    if PRESETS[preset].swapin_refcount_reuse:
        assert (rec.fault, rec.outcome, rec.reason) == ("swap", "reuse", "swapin_exclusive")
        assert (c["swapin_reuse"], c["anon_wp_reuse"], c["lru_add_drain"]) == (1, 0, 2)
    else:
        assert (rec.fault, rec.outcome) == ("swap", "reuse")
        assert (c["swapin_reuse"], c["anon_wp_reuse"], c["lru_add_drain"]) == (1, 0, 1)
    assert result.kernel.swap.cache == {}


# ======================================================================================
# 6. v6.15's trylock, reclaim putback, migration of swapcache folios
# ======================================================================================
def _mthp_in_swapcache_not_exclusive(k: Kernel) -> None:
    """A 16-page mTHP mapped only by "p", read-only and not PageAnonExclusive, that is
    still in the swapcache (swapped out whole, read back page by page)."""
    p = k.create_mm("p")
    k.mmap(p, 0, 16, thp="mthp-4")
    for i in range(16):
        k.write(p, i, data=i)
    child = k.fork(p, "c")
    k.exit_mm(child)
    k.madvise(p, 0, 16, "pageout")
    k.io_complete()
    for i in range(16):
        assert k.read(p, i) == i


def test_v6_15_frees_the_swapcache_of_a_large_folio_even_when_reuse_then_fails(
    kernel: KernelFactory,
) -> None:
    """__wp_can_reuse_large_anon_folio() (1da190f4d0a6): a folio in the swapcache is
    trylocked and its swapcache freed before the reference check; a GUP reference then
    makes the write copy, but the swapcache stays freed."""
    k = kernel("v6.15", swap="ssd")
    _mthp_in_swapcache_not_exclusive(k)
    p = k.mms[1]
    folio = k.frames[pte_pfn(p.pt[0])]
    assert folio.order == 4 and folio.swap_entry is not None and not folio.any_pae()
    k.gup(p, 5, 1, pin=False, write=False, name="pipe")
    rec = k.write(p, 0)
    assert (rec.outcome, rec.reason) == ("copy", "large")
    assert folio.swap_entry is None
    k.put("pipe")
    assert k.check_invariants() == []


def test_v6_15_reuses_a_large_folio_after_freeing_its_swapcache(kernel: KernelFactory) -> None:
    """The same folio without the extra reference: freed from the swapcache, reused."""
    k = kernel("v6.15", swap="ssd")
    _mthp_in_swapcache_not_exclusive(k)
    rec = k.write(k.mms[1], 0)
    assert rec.outcome == "reuse"


def test_kswapd_puts_a_kept_folio_straight_back_on_the_lru(kernel: KernelFactory) -> None:
    """move_folios_to_lru(): after kswapd / direct reclaim started an asynchronous
    write-back, the folio is on the inactive list at once, in no per-CPU batch."""
    k = kernel("v5.18", swap="ssd")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.lru_add_drain(0)
    k.reclaim(1)  # young: activated
    k.reclaim(1)  # aged, reclaimed: write-back to the SSD started
    (folio,) = list(k.swap.cache.values())
    assert folio.writeback and folio.lru and folio.lru_list == "inactive"
    assert k.lru.batch_refs(folio) == []


def test_madvise_pageout_puts_a_kept_folio_back_through_the_local_batch(
    kernel: KernelFactory,
) -> None:
    """reclaim_pages() -> folio_putback_lru(): the folio waits in the local LRU-add batch."""
    k = kernel("v5.18", swap="ssd")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.madvise(mm, 0, 1, "pageout")
    (folio,) = list(k.swap.cache.values())
    assert folio.writeback and not folio.lru
    assert k.lru.batch_refs(folio) == [(0, "lru_add")]


@pytest.mark.parametrize("preset", ["v5.18", "v5.19", "v6.15"])
def test_migration_moves_a_swapcache_folio_and_its_slot(
    kernel: KernelFactory, preset: str
) -> None:
    """migrate_folio() -> folio_migrate_mapping(): a mapped swapcache folio (refcount =
    isolation + swapcache + mapping... then only isolation + swapcache once unmapped) is
    copied, the new folio takes over the swapcache slot and the mapping."""
    k = kernel(preset, swap="ssd")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0, data="payload")
    k.madvise(mm, 0, 1, "pageout")
    k.io_complete()
    assert k.read(mm, 0) == "payload"
    k.lru_add_drain(0)
    old = k.frames[pte_pfn(mm.pt[0])]
    offset = old.swap_entry[1] if old.swap_entry else None
    assert offset is not None
    assert k.migrate(old, 1000)
    k.advance(1000)
    new = k.frames[pte_pfn(mm.pt[0])]
    assert new is not old and old.freed
    assert k.swap.cache[offset] is new and new.swap_entry == (k.swap.type, offset)
    assert k.counters["pgmigrate_success"] == 1
    assert k.read(mm, 0) == "payload"
    assert k.check_invariants() == []


# ======================================================================================
# v5.12: hugetlb early COW of pinned pages at fork
# ======================================================================================
HUGETLB_PIN_THEN_FORK = [
    {"op": "mmap", "mm": "p", "page": 0, "pages": 512, "hugetlb": "2m"},
    {"op": "write", "mm": "p", "page": 0},
    {"op": "gup", "mm": "p", "page": 0, "kind": "pin", "write": True, "name": "rdma"},
    {"op": "fork", "mm": "p", "child": "c"},
    {"op": "write", "mm": "p", "page": 0},  # step 4
    {"op": "put", "name": "rdma"},
]


@pytest.mark.parametrize("preset", ALL)
def test_fork_copies_a_pinned_hugetlb_page_from_v5_12(preset: str) -> None:
    """4eae4efa2c29: copy_hugetlb_page_range() gives the child its own copy of a pinned
    hugetlb page, so the parent keeps it writable. Before v5.12 (the v5.9 and v5.11
    presets included) it is shared and the parent's write copies it away from the pin."""
    result = run_steps(preset, HUGETLB_PIN_THEN_FORK)
    if PRESETS[preset].hugetlb_fork_copies_pinned:
        assert at_step(result, 4) == [("none", "none", None)]
    else:
        assert at_step(result, 4) == [("wp", "copy", "pin_incoherent")]


def test_a_v5_18_rule_on_an_older_kernel_drains_in_do_swap_page_too() -> None:
    """swapin_refcount_rule (v5.18's do_swap_page() run by a modern policy where an older
    kernel asks on path "swap") drains the local batch as c145e0b47c77 does, so the page
    is reused inside do_swap_page() rather than mapped read-only and reused again later."""
    scenario = Scenario.from_mapping(
        {"kernel": "v5.12", "machine": {"swap": "ssd"}, "steps": WRITE_TO_A_SWAPCACHE_PAGE},
        source="<test>",
    )
    result = ScenarioRunner(scenario, get_registry().make_policy("patched-lru")).run()
    assert at_step(result, 4) == [("swap", "reuse", None)]
    assert (result.counters["swapin_reuse"], result.counters["lru_add_drain"]) == (1, 2)
