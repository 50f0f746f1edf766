"""The compact folio: PTE mappings as integer fields, a ledger dict only while other
references are held, per-page state of order-0 folios in scalars, intrusive LRU lists."""

from __future__ import annotations

import pytest

from cowlab.kernel.counters import COUNTER_NAMES, new_counters
from cowlab.kernel.folio import LRU_BATCH, PTE, Folio, LedgerError
from cowlab.kernel.kernel import NO_FAULT, WRITE_TOKEN_BASE
from cowlab.kernel.lru import LruList
from tests.conftest import make_kernel


def test_mappings_beyond_the_first_are_kept_and_unmapped_in_any_order() -> None:
    folio = Folio(0x100)
    for mm_id in (1, 2, 3):
        folio.map_pte(mm_id, 7, 0)
    assert folio.pte_mappings() == [(1, 7, 0), (2, 7, 0), (3, 7, 0)]
    assert folio.refcount == 3 and folio.pte_mapcount(0) == 3
    folio.unmap_pte(2, 7, 0)
    folio.unmap_pte(1, 7, 0)
    assert folio.pte_mappings() == [(3, 7, 0)] and folio.maps(3, 7, 0) == 1
    folio.map_pte(4, 9, 0)  # the freed first slot is used again
    assert sorted(folio.pte_mappings()) == [(3, 7, 0), (4, 9, 0)]
    assert folio.check_ledger() == []


def test_unmapping_a_mapping_the_folio_does_not_have_is_a_ledger_error() -> None:
    folio = Folio(0x100)
    folio.map_pte(1, 7, 0)
    with pytest.raises(LedgerError, match="does not map it"):
        folio.unmap_pte(1, 8, 0)
    assert folio.refcount == 1 and folio.pte_mapcount(0) == 1


def test_the_reference_list_exists_only_while_other_references_are_held() -> None:
    folio = Folio(0x100)
    folio.map_pte(1, 7, 0)
    assert not folio.has_refs()
    folio.get(LRU_BATCH, (0, "lru_add"))
    folio.get(LRU_BATCH, (0, "lru_add"))
    assert folio.refs() == [(LRU_BATCH, (0, "lru_add"), 0, 2)]
    assert folio.ledger_items() == [((PTE, (1, 7), 0), 1), ((LRU_BATCH, (0, "lru_add"), 0), 2)]
    folio.put(LRU_BATCH, (0, "lru_add"), 2)
    assert not folio.has_refs() and folio.refcount == 1 and folio.check_ledger() == []
    with pytest.raises(LedgerError, match="only 0 held"):
        folio.put(LRU_BATCH, (0, "lru_add"))


def test_a_large_folio_keeps_per_page_state_and_a_small_one_its_single_page() -> None:
    large = Folio(0x200, 2)
    large.map_pte(1, 10, 3)
    large.set_pae(3, True)
    large.set_data(1, "x")
    assert large.mapcounts() == [0, 0, 0, 1] and large.pae_list() == [False] * 3 + [True]
    assert large.data_list() == [None, "x", None, None] and not large.all_pae()
    small = Folio(0x300)
    small.set_pae(0, True)
    small.set_data(0, 5)
    assert small.pae_list() == [True] and small.data_list() == [5] and small.all_pae()
    with pytest.raises(LedgerError, match="2 pages of data for 1"):
        small.set_data_list([1, 2])


def test_lru_list_keeps_age_order_through_removal_and_rotation() -> None:
    folios = [Folio(pfn) for pfn in range(1, 5)]
    lru = LruList("inactive")
    for folio in folios:
        lru.append(folio)
    lru.remove(folios[1])
    lru.remove(folios[3])
    lru.push_oldest(folios[3])
    assert [f.pfn for f in lru.values()] == [4, 1, 3] and len(lru) == 3
    assert lru.first() is folios[3]
    for folio in lru.values():
        lru.remove(folio)
    assert lru.values() == [] and lru.first() is None and len(lru) == 0


def test_a_folio_whose_writeback_ends_after_reclaim_rotates_to_the_reclaim_end() -> None:
    # folio_rotate_reclaimable() -> lru_move_tail(): the folio goes to the end of the
    # inactive list that reclaim scans first.
    k = make_kernel("v6.9")
    lru = k.lru
    a, b = k.alloc_folio(0), k.alloc_folio(0)
    a.map_pte(0, 1, 0)  # mapped: the drain keeps them
    b.map_pte(0, 2, 0)
    lru.add_to_list(a, "inactive")
    lru.add_to_list(b, "inactive")
    lru.add(b, 0, "move_tail")
    lru.drain_cpu(0)
    assert [f.pfn for f in lru.inactive.values()] == [b.pfn, a.pfn]


def test_writes_without_data_get_tokens_no_64_bit_word_equals() -> None:
    k = make_kernel("v6.9")
    mm = k.create_mm("m")
    k.mmap(mm, 0, 2)
    k.write(mm, 0)
    k.write(mm, 1, data=(1 << 64) - 1)
    first, second = k.read(mm, 0), k.read(mm, 1)
    assert isinstance(first, int) and first > WRITE_TOKEN_BASE and first != second


def test_counters_are_fields_read_as_a_mapping_in_report_order() -> None:
    counters = new_counters()
    counters.pswpin += 2
    counters["pgreuse"] += 1
    assert counters["pswpin"] == 2 and counters.get("pgreuse") == 1
    assert list(counters) == list(COUNTER_NAMES) == [name for name, _ in counters.items()]
    assert dict(counters) == counters.as_dict() and counters == counters.as_dict()
    assert counters.get("no_such_counter", -1) == -1 and "no_such_counter" not in counters
    with pytest.raises(KeyError):
        counters["no_such_counter"] += 1
    assert set(vars(counters) if hasattr(counters, "__dict__") else COUNTER_NAMES) == set(
        COUNTER_NAMES
    )


def test_swap_slot_owners_follow_forks_and_frees() -> None:
    swap = make_kernel("v6.9").swap
    swap.dup(5, 1)
    swap.dup(5, 1)
    assert swap.owners_of(5) == {1: 2}
    swap.dup(5, 2)  # a child shares the swap entry
    assert swap.owners_of(5) == {1: 2, 2: 1} and swap.count(5) == 3
    swap.dup(7, 1)
    with pytest.raises(KeyError, match="no swap PTE of mm 3"):
        swap.free_entry(7, 3)
    assert swap.owners_of(7) == {1: 1}
    assert swap.free_entry(5, 2) == 2 and swap.owners_of(5) == {1: 2}
    assert swap.free_entry(5, 1) == 1 and swap.free_entry(5, 1) == 0
    assert swap.owners_of(5) == {} and not swap.in_use(5)


def test_a_kernel_that_records_no_hits_still_records_faults_and_stores_data() -> None:
    k = make_kernel("v6.9")
    k.record_hits = False
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1)
    first = k.write(mm, 0, data=1)  # a fault: recorded
    again = k.write(mm, 0, data=2)  # no fault: the shared record, nothing appended
    assert first.fault == "anon" and again is NO_FAULT and again.outcome == "none"
    assert k.records == [first] and k.read(mm, 0) == 2
