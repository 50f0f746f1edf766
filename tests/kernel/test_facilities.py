"""Facilities that touch the reuse decision (issue 11): page migration as an operation,
KSM unmerge, MADV_FREE, mlock, GUP-fast's speculative reference, GUP of the shared zero
page and large-folio swap-in. Each test names the upstream behaviour it pins down."""

from __future__ import annotations

import pytest

from cowlab.geometry import pte_pfn
from cowlab.kernel import Kernel
from cowlab.kernel.errors import KernelError
from cowlab.kernel.folio import Folio
from cowlab.kernel.mm import MM
from cowlab.kernel.presets import PRESETS
from tests.conftest import KernelFactory

ALL_PRESETS = tuple(PRESETS)
LEGACY = ("v5.7", "v5.8")
# page_count rules without PageAnonExclusive
REFCOUNT = tuple(p for p, c in PRESETS.items() if c.era in ("C", "D"))
PAE = tuple(p for p, c in PRESETS.items() if c.anon_exclusive)


def folio_at(k: Kernel, mm: MM, page: int) -> Folio:
    return k.frames[pte_pfn(mm.pt[page])]


def exclusive_readonly_page(k: Kernel) -> MM:
    """A page only this mm maps, mapped read-only: written, forked, the child exited."""
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.exit_mm(k.fork(mm, "child"))
    return mm


# ----------------------------------------------------------------------------- migrate
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_a_write_during_migration_waits_and_then_finds_the_new_page_writable(
    kernel: KernelFactory, preset: str
) -> None:
    """migration_entry_wait(): the store sleeps until the migration ends; a writable
    migration entry comes back as a writable PTE, so the retried store does not fault."""
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0, data="before")
    old = folio_at(k, mm, 0)
    assert k.migrate_pages(mm, 0, 1, 20_000) == 1
    rec = k.write(mm, 0, data="after")
    assert rec.fault == "none" and rec.latency_ns >= 20_000
    assert k.nr_decisions == 0
    assert folio_at(k, mm, 0) is not old and old.freed
    assert k.read(mm, 0) == "after"
    assert k.counters["pgmigrate_success"] == 1
    assert k.check_invariants() == []


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_after_migrating_a_read_only_page_the_write_sees_the_new_folio_in_a_batch(
    kernel: KernelFactory, preset: str
) -> None:
    """The new folio waits in the migrating CPU's LRU-add batch (migrate_folio_move() ->
    folio_add_lru()): v5.9's refcount rule copies it; v5.18's local drain and the
    mapcount rule reuse; from v5.19 the read entry of a non-exclusive page goes the
    v5.18 way."""
    k = kernel(preset)
    mm = exclusive_readonly_page(k)
    k.migrate_pages(mm, 0, 1, 20_000)
    rec = k.write(mm, 0)
    assert rec.fault == "wp" and rec.exclusive
    if PRESETS[preset].era == "C":
        assert (rec.outcome, rec.blockers) == ("copy", ("lru_batch_local",))
    else:
        assert rec.outcome == "reuse"
    assert k.check_invariants() == []


@pytest.mark.parametrize("preset", ["v5.9", "v5.19", "v6.15"])
def test_a_gup_reference_makes_the_migration_fail_and_the_page_stay(
    kernel: KernelFactory, preset: str
) -> None:
    """folio_migrate_mapping(): any reference beyond the expected ones fails the move."""
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    old = folio_at(k, mm, 0)
    k.gup(mm, 0, 1, pin=False, write=False, name="dio")
    k.migrate_pages(mm, 0, 1, 20_000)
    k.advance(50_000)
    assert folio_at(k, mm, 0) is old
    assert (k.counters["pgmigrate_success"], k.counters["pgmigrate_fail"]) == (0, 1)
    assert k.check_invariants() == []


def test_migrate_of_an_unmapped_range_is_refused(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    with pytest.raises(KernelError, match="ENOMEM"):
        k.migrate_pages(mm, 0, 2, 1_000)


# ------------------------------------------------------------------------- KSM unmerge
def merged_pair(k: Kernel) -> tuple[MM, MM]:
    a, b = k.create_mm("a"), k.create_mm("b")
    for mm in (a, b):
        k.mmap(mm, 0, 1)
        k.madvise(mm, 0, 1, "mergeable")
        k.write(mm, 0, data="same")
    assert k.ksm_merge([(a, 0), (b, 0)]) == 2
    return a, b


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_unmergeable_gives_each_ksm_mapping_a_private_copy(
    kernel: KernelFactory, preset: str
) -> None:
    """break_ksm(): a write fault per KSM page. The first unmerge must copy (b maps it);
    the last mapping is reused by v5.7/v5.8's reuse_ksm_page() and copied from v5.9
    (09854ba94c6a: a KSM page is never reused)."""
    k = kernel(preset)
    a, b = merged_pair(k)
    k.madvise(a, 0, 1, "unmergeable")
    first = k.records[-1]
    assert (first.fault, first.outcome, first.reason, first.exclusive) == (
        "wp", "copy", "ksm", False)
    k.madvise(b, 0, 1, "unmergeable")
    last = k.records[-1]
    assert last.outcome == ("reuse" if preset in LEGACY else "copy")
    for mm in (a, b):
        assert not folio_at(k, mm, 0).ksm
        assert k.read(mm, 0) == "same"
        assert not mm.find_vma(0).mergeable  # type: ignore[union-attr]
    assert folio_at(k, a, 0) is not folio_at(k, b, 0)
    assert k.violations == [] and k.check_invariants() == []


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_unmergeable_in_a_read_only_mapping_unshares_from_v5_19(
    kernel: KernelFactory, preset: str
) -> None:
    """Without VM_WRITE only an unshare fault can break a KSM page: v5.19+ presets take
    one (a read-only private copy); earlier presets leave the page merged (a documented
    departure: upstream's write fault there maps a read-only copy too)."""
    k = kernel(preset)
    a, _b = merged_pair(k)
    k.mprotect(a, 0, 1, "r")
    k.madvise(a, 0, 1, "unmergeable")
    folio = folio_at(k, a, 0)
    assert not a.pt[0] & 2  # still read-only
    assert folio.ksm == (preset not in PAE)
    assert k.read(a, 0) == "same" and k.check_invariants() == []


def test_unmergeable_leaves_ordinary_pages_alone(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 2)
    k.madvise(mm, 0, 2, "mergeable")
    k.write(mm, 0)
    before = len(k.records)
    k.madvise(mm, 0, 2, "unmergeable")
    assert len(k.records) == before and k.nr_decisions == 0


# --------------------------------------------------------------------------- MADV_FREE
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_reclaim_discards_a_lazyfree_page_unless_it_was_written_again(
    kernel: KernelFactory, preset: str
) -> None:
    """MADV_FREE (854e9ed09ded) + try_to_unmap_one(): a clean lazyfree page is dropped
    (the next read sees zeroes), a re-dirtied one keeps its data and is not discarded."""
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 2)
    k.write(mm, 0, data="d0")
    k.write(mm, 1, data="d1")
    k.madvise(mm, 0, 2, "free")
    k.lru_add_drain(0)  # the lazyfree batch moves them: PG_swapbacked cleared
    assert folio_at(k, mm, 0).lazyfree and folio_at(k, mm, 1).lazyfree
    k.write(mm, 1, data="again")
    assert k.reclaim(8) == 1
    assert 0 not in mm.pt and k.read(mm, 0) == 0
    assert k.read(mm, 1) == "again" and not folio_at(k, mm, 1).lazyfree
    assert k.counters["pswpout"] == 0
    assert k.check_invariants() == []


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_the_lazyfree_batch_reference_makes_every_refcount_rule_copy(
    kernel: KernelFactory, preset: str
) -> None:
    """mark_page_lazyfree() queues the folio with a reference but keeps PG_lru, so
    v5.18's "drain when not on the LRU" does not help: every refcount rule copies an
    exclusive page (unnecessarily); the v5.7/v5.8 mapcount rule reuses it."""
    k = kernel(preset)
    mm = exclusive_readonly_page(k)
    k.lru_add_drain(0)
    k.madvise(mm, 0, 1, "free")
    rec = k.write(mm, 0)
    assert rec.exclusive
    if preset in LEGACY:
        assert rec.outcome == "reuse"
    else:
        assert (rec.outcome, rec.blockers) == ("copy", ("lru_batch_local",))
    assert k.check_invariants() == []


@pytest.mark.parametrize("preset", ["v5.9", "v5.19"])
def test_madv_free_of_a_swapped_out_page_drops_it_at_once(
    kernel: KernelFactory, preset: str
) -> None:
    k = kernel(preset, swap="pmem")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0, data="x")
    k.madvise(mm, 0, 1, "pageout")
    assert not mm.pt[0] & 1
    k.madvise(mm, 0, 1, "free")
    assert 0 not in mm.pt and k.swap.swap_map == {}
    assert k.read(mm, 0) == 0


def test_a_pinned_lazyfree_page_is_not_discarded(kernel: KernelFactory) -> None:
    """6c8e2a256915 (v5.18): only the isolation and the mappings may hold references."""
    k = kernel("v5.19")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0, data="dma")
    k.madvise(mm, 0, 1, "free")
    k.lru_add_drain(0)
    k.gup(mm, 0, 1, pin=True, write=False, name="rdma")
    k.reclaim(8)
    assert k.read(mm, 0) == "dma" and k.gup_read("rdma") == ["dma"]


# ------------------------------------------------------------------------------- mlock
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_mlock_after_fork_takes_a_write_fault_on_every_shared_page(
    kernel: KernelFactory, preset: str
) -> None:
    """populate_vma_page_range(): FOLL_WRITE in a writable private mapping breaks COW."""
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 2)
    k.write(mm, 0)
    k.write(mm, 1)
    k.fork(mm, "child")
    recs = k.mlock(mm, 0, 2)
    assert [(r.fault, r.outcome, r.exclusive) for r in recs] == [("wp", "copy", False)] * 2
    assert k.nr_decisions == 2 and k.violations == []


@pytest.mark.parametrize("preset", ["v5.7", "v5.19", "v6.15"])
def test_mlocked_pages_are_never_reclaimed_and_lru_advice_is_refused(
    kernel: KernelFactory, preset: str
) -> None:
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 4)
    k.mlock(mm, 0, 4)  # populates: four new pages
    assert all(mm.pt[p] & 1 for p in range(4))
    assert k.reclaim(16) == 0
    assert all(mm.pt[p] & 1 for p in range(4))
    for advice in ("pageout", "cold", "dontneed", "free"):
        with pytest.raises(KernelError, match="mlocked"):
            k.madvise(mm, 0, 1, advice)
    k.munlock(mm, 0, 4)
    assert k.reclaim(16) > 0  # evictable again (v5.7 ages its active list first)


def test_a_forked_child_does_not_inherit_vm_locked(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.mlock(mm, 0, 1)
    child = k.fork(mm, "child")
    assert mm.vmas[0].locked and not child.vmas[0].locked


def swapped_to_swapcache(k: Kernel) -> MM:
    """A page written out to an ssd: unmapped to a swap PTE, its folio still in the
    swapcache (the writeback completed), mapped read-only (PROT_READ) by nobody."""
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0, data="x")
    k.madvise(mm, 0, 1, "pageout")
    k.io_complete()
    k.mprotect(mm, 0, 1, "r")
    return mm


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_a_swap_in_in_a_vm_locked_mapping_frees_the_swapcache(
    kernel: KernelFactory, preset: str
) -> None:
    """do_swap_page(): VM_LOCKED (or PageMlocked, or vm_swap_full()) -> try_to_free_swap()
    even on a read fault; an ordinary read fault keeps the folio in the swapcache."""
    k = kernel(preset, swap="ssd")
    mm = swapped_to_swapcache(k)
    k.read(mm, 0)
    assert folio_at(k, mm, 0).swapcache
    k2 = kernel(preset, swap="ssd")
    mm2 = swapped_to_swapcache(k2)
    k2.mlock(mm2, 0, 1)  # populates with a read fault (PROT_READ)
    folio = folio_at(k2, mm2, 0)
    assert not folio.swapcache and k2.swap.cache == {}
    assert k2.read(mm2, 0) == "x"
    assert k2.check_invariants() == []


@pytest.mark.parametrize("preset", ["v5.7", "v5.18", "v6.15"])
def test_a_swap_in_with_swap_more_than_half_full_frees_the_swapcache(
    kernel: KernelFactory, preset: str
) -> None:
    """vm_swap_full(): with one usable slot in use, swap is full."""
    k = kernel(preset, swap="ssd", swap_slots=2)
    mm = swapped_to_swapcache(k)
    assert k.swap.full()
    k.read(mm, 0)
    assert not folio_at(k, mm, 0).swapcache


# --------------------------------------------------------------- speculative reference
def swapped_in_read_only(k: Kernel) -> MM:
    """A page swapped out to pmem and read back in (mapped read-only, exclusive; v5.19+
    PageAnonExclusive from the swap PTE), its LRU batch drained."""
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.madvise(mm, 0, 1, "pageout")
    k.read(mm, 0)
    k.lru_add_drain(0)
    return mm


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_a_speculative_reference_makes_only_the_pre_v5_19_refcount_rules_copy(
    kernel: KernelFactory, preset: str
) -> None:
    """GUP-fast's try_grab_folio() before its PTE recheck: +1 for a moment. 09854ba94c6a's
    page_count rule (v5.9 .. v5.18) copies; the mapcount rule and PageAnonExclusive
    (v5.19) reuse; from v6.11 the read mapped the page writable, so nothing faults."""
    k = kernel(preset, swap="pmem")
    mm = swapped_in_read_only(k)
    folio = folio_at(k, mm, 0)
    assert k.speculative_ref(mm, 0, 1) == 1 and folio.refcount == 2
    rec = k.write(mm, 0)
    k.drop_speculative()
    if PRESETS[preset].swapin_map_writable_on_read:
        assert rec.fault == "none"
    elif preset in REFCOUNT:
        assert (rec.outcome, rec.reason, rec.blockers) == ("copy", "early", ("speculative",))
    else:
        assert rec.outcome == "reuse"
    assert rec.violation is None
    assert k.check_invariants() == []


# -------------------------------------------------------------------------- zero page
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_a_read_only_longterm_pin_of_the_zero_page_stays_coherent_only_from_v6_2(
    kernel: KernelFactory, preset: str
) -> None:
    """84209e87c696 (v6.2): the R/O longterm pin unshares the
    zero page, so the later write reuses the pinned page. Before, the pin lands on the
    zero page and the write allocates a new page under it (pin_incoherent); v5.8's
    COW break write-faults the page in first."""
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    assert k.read(mm, 0) == 0  # maps the shared zero page
    recs = k.gup(mm, 0, 1, pin=True, write=False, longterm=True, name="pin")
    rec = k.write(mm, 0, data="new")
    if PRESETS[preset].gup_longterm_unshares_zero_page:
        assert [(r.fault, r.reason) for r in recs] == [("unshare", "zero_page")]
        assert (rec.fault, rec.outcome, rec.violation) == ("wp", "reuse", None)
        assert k.gup_read("pin") == ["new"]
    elif preset == "v5.8":
        assert rec.violation is None and k.gup_read("pin") == ["new"]
    else:
        assert recs == []
        assert (rec.fault, rec.reason, rec.violation) == ("anon", "zero_page", "pin_incoherent")
        assert k.gup_read("pin") == [0]
    k.put("pin")
    assert k.check_invariants() == []


def test_the_zero_page_unshare_follows_its_facility(kernel: KernelFactory) -> None:
    k = kernel("v6.9", facilities={"gup_longterm_unshares_zero_page": False})
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    k.read(mm, 0)
    assert k.gup(mm, 0, 1, pin=True, write=False, longterm=True, name="pin") == []
    assert k.write(mm, 0).violation == "pin_incoherent"


@pytest.mark.parametrize("preset", ["v5.9", "v5.19", "v6.15"])
def test_gup_of_untouched_memory_references_the_zero_page(
    kernel: KernelFactory, preset: str
) -> None:
    """A read GUP faults pte_none in as the zero page and is allowed on it; a short-term
    reference is not unshared, and put drops it."""
    k = kernel(preset)
    mm = k.create_mm("a")
    k.mmap(mm, 0, 1)
    assert k.gup(mm, 0, 1, pin=False, write=False, name="dio") == []
    assert pte_pfn(mm.pt[0]) == 0 and k.gup_read("dio") == [0]
    k.put("dio")
    assert k.gups == {}
    rec = k.write(mm, 0)
    assert (rec.fault, rec.reason, rec.violation) == ("anon", "zero_page", None)


# ---------------------------------------------------------------- large-folio swap-in
def mthp_swapped_out(k: Kernel) -> MM:
    mm = k.create_mm("a")
    k.mmap(mm, 0, 16, thp="mthp-4")
    for i in range(16):
        k.write(mm, i, data=i)
    assert folio_at(k, mm, 0).order == 4
    k.madvise(mm, 0, 16, "pageout")
    k.io_complete()
    assert not any(mm.pt[i] & 1 for i in range(16))
    return mm


@pytest.mark.parametrize(("preset", "large"), [("v6.11", False), ("v6.12", True), ("v6.15", True)])
def test_a_fault_on_a_synchronous_device_swaps_in_the_whole_mthp(
    kernel: KernelFactory, preset: str, large: bool
) -> None:
    """242d12c98174 (v6.12): the aligned range holds 16 contiguous swap
    entries, none in the swapcache: one fault brings back an order-4 folio, all pages
    exclusive and mapped."""
    k = kernel(preset, swap="zram")
    mm = mthp_swapped_out(k)
    rec = k.write(mm, 5, data="w")
    folio = folio_at(k, mm, 5)
    assert (rec.fault, rec.outcome, rec.reason) == ("swap", "reuse", "swapin_exclusive")
    if large:
        assert folio.order == 4 and all(mm.pt[i] & 1 for i in range(16))
        assert k.counters["pswpin"] == 16 and folio.all_pae()
        assert [k.read(mm, i) for i in (0, 4, 15)] == [0, 4, 15]
        assert k.swap.swap_map == {}
    else:
        assert folio.order == 0 and k.counters["pswpin"] == 1
        assert sum(mm.pt[i] & 1 for i in range(16)) == 1
    assert k.read(mm, 5) == "w"
    assert k.check_invariants() == []


def test_large_folio_swap_in_falls_back_to_a_base_page_when_the_range_has_a_hole(
    kernel: KernelFactory,
) -> None:
    """can_swapin_thp(): every PTE of the range must be a contiguous swap entry."""
    k = kernel("v6.15", swap="zram")
    mm = mthp_swapped_out(k)
    k.madvise(mm, 0, 1, "dontneed")  # page 0 is pte_none now
    k.read(mm, 7)
    assert folio_at(k, mm, 7).order == 0 and k.counters["pswpin"] == 1


def test_large_folio_swap_in_needs_a_synchronous_device(kernel: KernelFactory) -> None:
    k = kernel("v6.15", swap="nvme")
    mm = mthp_swapped_out(k)
    k.reclaim(64)  # free the written-back folio: the slots hold the only copy
    k.read(mm, 7)
    assert folio_at(k, mm, 7).order == 0
