"""The compact page table and frame table (cowlab/kernel/pagetable.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowlab.geometry import make_pte, make_swap_pte, pte_hw
from cowlab.kernel import Kernel, get_preset
from cowlab.kernel.folio import Folio
from cowlab.kernel.pagetable import PTRS_PER_PTE, FrameTable, PageTable
from cowlab.plugins import get_registry

#: A present PTE with NX (bit 63) set and the largest swap PTE: both need all 64 bits.
# The hardware value of a present PTE (NX set: bit 63), as a table may be given one.
BIG_PRESENT = pte_hw(make_pte((1 << 40) - 1, write=True, dirty=True, soft_dirty=True))
BIG_SWAP = make_swap_pte(31, (1 << 50) - 2, exclusive=True, soft_dirty=True, uffd_wp=True)


# -- PageTable --------------------------------------------------------------------------------
def test_a_stored_pte_reads_back_and_absent_pages_read_as_the_default() -> None:
    pt = PageTable()
    pt[5] = 0x67
    assert pt[5] == 0x67 and pt.get(5, 0) == 0x67 and pt.get(5) == 0x67
    assert pt.get(6, 0) == 0 and pt.get(6, 99) == 99 and pt.get(6) == 0
    assert 5 in pt and 6 not in pt and 5 + PTRS_PER_PTE not in pt
    with pytest.raises(KeyError):
        pt[6]


def test_ptes_with_bit_63_set_keep_all_64_bits() -> None:
    assert BIG_PRESENT >> 63 == 1 and BIG_SWAP >> 59 == 31
    pt = PageTable()
    pt[0] = BIG_PRESENT
    pt[1] = BIG_SWAP
    assert pt[0] == BIG_PRESENT and pt[1] == BIG_SWAP
    assert pt.items() == [(0, BIG_PRESENT), (1, BIG_SWAP)]


def test_a_value_outside_64_bits_is_refused() -> None:
    pt = PageTable()
    with pytest.raises(OverflowError):
        pt[0] = 1 << 64
    with pytest.raises(OverflowError):
        pt[0] = -1
    assert len(pt) == 0


def test_storing_pte_none_is_refused_loudly() -> None:
    pt = PageTable()
    with pytest.raises(ValueError, match="page 3: storing PTE value 0"):
        pt[3] = 0
    assert len(pt) == 0 and pt.tables == 0


def test_len_counts_entries_and_overwriting_does_not_count_twice() -> None:
    pt = PageTable()
    pt[1] = 0x67
    pt[1] = 0x65
    pt[PTRS_PER_PTE * 3] = 0x67
    assert len(pt) == 2 and bool(pt) and pt[1] == 0x65
    del pt[1]
    assert len(pt) == 1
    assert pt.pop(PTRS_PER_PTE * 3) == 0x67
    assert len(pt) == 0 and not pt


def test_deleting_an_absent_entry_raises_key_error() -> None:
    pt = PageTable()
    pt[0] = 0x67
    with pytest.raises(KeyError):
        del pt[1]
    with pytest.raises(KeyError):
        del pt[PTRS_PER_PTE]
    with pytest.raises(KeyError):
        pt.pop(1)
    assert pt.pop(1, 0) == 0 and pt.pop(1, 7) == 7 and len(pt) == 1


def test_a_table_is_released_when_its_last_entry_goes() -> None:
    pt = PageTable()
    pt[10] = 0x67
    pt[11] = 0x67
    pt[PTRS_PER_PTE + 1] = 0x67
    assert pt.tables == 2
    del pt[10]
    assert pt.tables == 2
    pt.pop(11)
    assert pt.tables == 1 and 10 not in pt and pt.get(11, 0) == 0
    # A fresh entry in the released range gets a fresh, empty table.
    pt[12] = 0x65
    assert pt.tables == 2 and pt.items() == [(12, 0x65), (PTRS_PER_PTE + 1, 0x67)]
    pt.clear()
    assert pt.tables == 0 and len(pt) == 0 and pt.get(12, 0) == 0


def test_iteration_runs_in_address_order_whatever_the_insertion_order() -> None:
    pt = PageTable()
    pages = [5000, 3, 2047, 511, 512, 0, 70_000]
    for i, p in enumerate(pages):
        pt[p] = 0x100 + i
    assert list(pt) == sorted(pages) == pt.keys()
    assert pt.items() == sorted((p, 0x100 + i) for i, p in enumerate(pages))
    assert pt.values() == [v for _p, v in pt.items()]


def test_a_walk_returns_a_snapshot_the_caller_may_change_the_table_under() -> None:
    pt = PageTable()
    for p in range(1000):
        pt[p] = 0x67
    for p, _pte in pt.items():
        del pt[p]
    assert len(pt) == 0 and pt.tables == 0


def test_range_walks_see_only_entries_inside_the_range_in_address_order() -> None:
    pt = PageTable()
    pages = [0, 1, 511, 512, 513, 1023, 1024, 5000, 1 << 30]
    for p in pages:
        pt[p] = p + 1
    assert pt.range_keys(1, 1024) == [1, 511, 512, 513, 1023]
    assert pt.range_items(511, 514) == [(511, 512), (512, 513), (513, 514)]
    assert pt.range_keys(0, 1 << 31) == pages
    assert pt.range_keys(2000, 4000) == [] and pt.range_keys(9, 9) == []
    # A range far wider than the table walks the tables, not the range.
    assert pt.range_keys(-(1 << 40), 1 << 40) == pages


def test_negative_pages_are_kept_apart_from_positive_ones() -> None:
    pt = PageTable()
    pt[-1] = 0x67
    pt[511] = 0x65
    assert pt[-1] == 0x67 and pt[511] == 0x65 and list(pt) == [-1, 511]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "del", "pop", "get", "clear"]),
                          st.integers(0, 3 * PTRS_PER_PTE),
                          st.sampled_from([0x67, 0x65, BIG_PRESENT, BIG_SWAP]))))
def test_page_table_behaves_like_a_dict_of_nonzero_values(
        ops: list[tuple[str, int, int]]) -> None:
    pt = PageTable()
    ref: dict[int, int] = {}
    for op, page, pte in ops:
        if op == "set":
            pt[page] = pte
            ref[page] = pte
        elif op == "del":
            if page in ref:
                del pt[page]
                del ref[page]
            else:
                with pytest.raises(KeyError):
                    del pt[page]
        elif op == "pop":
            assert pt.pop(page, 0) == ref.pop(page, 0)
        elif op == "clear":
            pt.clear()
            ref.clear()
        else:
            assert pt.get(page, 0) == ref.get(page, 0)
            assert (page in pt) == (page in ref)
        assert len(pt) == len(ref) and pt.get(page, 0) == ref.get(page, 0)
    assert pt.items() == sorted(ref.items())
    assert pt.range_items(100, 1200) == sorted(i for i in ref.items() if 100 <= i[0] < 1200)
    assert pt.tables == len({p // PTRS_PER_PTE for p in ref})


# -- FrameTable -------------------------------------------------------------------------------
def test_every_frame_of_a_folio_names_it_and_len_counts_frames() -> None:
    frames = FrameTable()
    big = Folio(512, 2)
    for i in range(4):
        frames[512 + i] = big
    small = Folio(7, 0)
    frames[7] = small
    assert all(frames[512 + i] is big for i in range(4)) and frames.get(7) is small
    assert len(frames) == 5 and 516 not in frames and frames.get(516) is None
    assert list(frames) == [7, 512, 513, 514, 515]
    assert frames.values() == [small, big, big, big, big]
    with pytest.raises(KeyError):
        frames[516]


def test_a_frame_chunk_is_released_when_its_last_frame_is_freed() -> None:
    frames = FrameTable()
    f = Folio(PTRS_PER_PTE - 1, 0)
    g = Folio(PTRS_PER_PTE, 0)
    frames[f.pfn] = f
    frames[g.pfn] = g
    assert frames.chunks == 2
    del frames[f.pfn]
    assert frames.chunks == 1 and len(frames) == 1 and frames
    with pytest.raises(KeyError):
        del frames[f.pfn]
    del frames[g.pfn]
    assert frames.chunks == 0 and not frames


def test_replacing_a_frame_s_folio_keeps_the_count() -> None:
    frames = FrameTable()
    whole = Folio(0, 1)
    frames[0] = frames[1] = whole
    piece = Folio(1, 0)
    frames[1] = piece  # a split gives the frame its own folio
    assert len(frames) == 2 and frames[1] is piece and frames[0] is whole


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 3 * PTRS_PER_PTE))))
def test_frame_table_behaves_like_a_dict(ops: list[tuple[bool, int]]) -> None:
    frames = FrameTable()
    ref: dict[int, Folio] = {}
    for add, pfn in ops:
        if add:
            folio = Folio(pfn, 0)
            frames[pfn] = folio
            ref[pfn] = folio
        elif pfn in ref:
            del frames[pfn]
            del ref[pfn]
        assert len(frames) == len(ref) and frames.get(pfn) is ref.get(pfn)
    assert frames.items() == sorted(ref.items(), key=lambda kv: kv[0])
    assert frames.chunks == len({p // PTRS_PER_PTE for p in ref})


# -- in the kernel ----------------------------------------------------------------------------
def test_exit_releases_every_page_table_and_frame_chunk() -> None:
    k = Kernel(get_preset("v5.19"), get_registry().make_policy("exclusive"))
    mm = k.create_mm("a")
    n = 3 * PTRS_PER_PTE
    k.mmap(mm, 0, n)
    for page in range(n):
        k.write(mm, page)
    child = k.fork(mm, "child")
    assert mm.pt.tables == child.pt.tables == 3 and len(child.pt) == n
    assert len(k.frames) == n and k.frames.chunks == 4  # pfns 1..1536: chunks 0..3
    k.exit_mm(child)
    k.exit_mm(mm)
    k.lru_add_drain_all()
    assert mm.pt.tables == child.pt.tables == 0 and len(mm.pt) == 0
    assert len(k.frames) == 0 and k.frames.chunks == 0
