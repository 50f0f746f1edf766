"""Tests for cowlab.geometry: page geometry, address limits and PTE / swap-PTE bits."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowlab import geometry as g
from cowlab.geometry import (
    DEFAULT_GEOMETRY,
    Geometry,
    GeometryError,
    describe_pte,
    is_swap_pte,
    make_pte,
    make_swap_pte,
    pte_clear_soft_dirty,
    pte_clear_uffd_wp,
    pte_dirty,
    pte_huge,
    pte_hw,
    pte_mkclean,
    pte_mkdirty,
    pte_mkold,
    pte_mksoft_dirty,
    pte_mkuffd_wp,
    pte_mkwrite,
    pte_mkyoung,
    pte_modify_pfn,
    pte_none,
    pte_pfn,
    pte_present,
    pte_soft_dirty,
    pte_swp_clear_exclusive,
    pte_swp_clear_soft_dirty,
    pte_swp_clear_uffd_wp,
    pte_swp_exclusive,
    pte_swp_mkexclusive,
    pte_swp_mksoft_dirty,
    pte_swp_mkuffd_wp,
    pte_swp_soft_dirty,
    pte_swp_uffd_wp,
    pte_uffd_wp,
    pte_write,
    pte_wrprotect,
    pte_young,
    swp_offset,
    swp_type,
)

MASK64 = (1 << 64) - 1
# Few examples keep the file fast; the strategies still reach both ends of each range.
FAST = settings(max_examples=60, deadline=None)

types = st.integers(min_value=0, max_value=31)
offsets = st.integers(min_value=0, max_value=(1 << 50) - 2)
pfns = st.integers(min_value=0, max_value=(1 << 40) - 1)


def bits(value: int) -> set[int]:
    """Positions of the set bits of a non-negative int."""
    return {i for i in range(value.bit_length()) if value >> i & 1}


def kernel_swp_entry(type_: int, offset: int) -> int:
    """x86-64 ``__swp_entry`` written literally with 64-bit wrap-around."""
    return (((~offset << 14) & MASK64) >> 5) | (type_ << 59)


# --- constants ---------------------------------------------------------------


def test_page_geometry_constants_match_x86_64() -> None:
    assert (g.PAGE_SHIFT, g.PAGE_SIZE, g.PTRS_PER_TABLE) == (12, 4096, 512)
    assert (g.PMD_SHIFT, g.PMD_SIZE) == (21, 2 * 1024 * 1024)
    assert (g.PUD_SHIFT, g.PUD_SIZE) == (30, 1024 * 1024 * 1024)
    assert (g.HPAGE_PMD_ORDER, g.HPAGE_PMD_NR) == (9, 512)
    assert g.MTHP_ORDERS == (2, 3, 4, 5, 6, 7, 8, 9)
    assert g.TLB_SINGLE_PAGE_FLUSH_CEILING == 33


def test_pte_bit_constants_sit_at_the_kernel_bit_positions() -> None:
    expected = {
        g._PAGE_PRESENT: 0,
        g._PAGE_RW: 1,
        g._PAGE_USER: 2,
        g._PAGE_ACCESSED: 5,
        g._PAGE_DIRTY: 6,
        g._PAGE_PSE: 7,
        g._PAGE_GLOBAL: 8,
        g._PAGE_UFFD_WP: 10,
        g._PAGE_SOFT_DIRTY: 11,
        g._PAGE_NX: 63,
        g._PAGE_SWP_SOFT_DIRTY: 1,
        g._PAGE_SWP_UFFD_WP: 2,
        g._PAGE_SWP_EXCLUSIVE: 3,
    }
    for constant, bit in expected.items():
        assert constant == 1 << bit
    assert bits(g.PTE_PFN_MASK) == set(range(12, 52))
    assert (g.SWP_TYPE_BITS, g.MAX_SWAPFILES) == (5, 32)
    assert (g.SWP_OFFSET_FIRST_BIT, g.SWP_OFFSET_SHIFT) == (9, 14)


# --- present PTEs ------------------------------------------------------------


def test_make_pte_sets_present_user_accessed_and_pfn_bits_and_implies_nx() -> None:
    pte = make_pte(pfn=1, write=True)
    assert bits(pte) == {0, 1, 2, 5, 12}
    assert bits(make_pte(pfn=1, write=True, dirty=True)) == {0, 1, 2, 5, 6, 12}
    assert bits(make_pte(pfn=1, accessed=False)) == {0, 2, 12}
    # The hardware value carries NX; a stored PTE fits the compiled build's small ints.
    assert bits(pte_hw(pte)) == {0, 1, 2, 5, 12, 63} and pte < 1 << 62
    swp = make_swap_pte(0, 17)
    assert pte_hw(swp) == swp and pte_hw(0) == 0


def test_make_pte_optional_flags_set_their_own_bits() -> None:
    base = make_pte(7)
    assert make_pte(7, huge=True) == base | 1 << 7
    assert make_pte(7, uffd_wp=True) == base | 1 << 10
    assert make_pte(7, soft_dirty=True) == base | 1 << 11
    assert pte_huge(make_pte(7, huge=True)) and not pte_huge(base)


@given(pfns)
@FAST
def test_pte_pfn_round_trips_through_bits_12_to_51(pfn: int) -> None:
    pte = make_pte(pfn, write=True, dirty=True)
    assert pte_pfn(pte) == pfn
    assert 0 <= pte <= MASK64
    assert (pte & g.PTE_PFN_MASK) >> 12 == pfn


@pytest.mark.parametrize("pfn", [-1, 1 << 40, 1 << 52])
def test_make_pte_rejects_pfn_outside_40_bits(pfn: int) -> None:
    with pytest.raises(GeometryError, match="40-bit PFN"):
        make_pte(pfn)


def test_present_pte_predicates_read_their_bits() -> None:
    pte = make_pte(3, write=True, dirty=True, soft_dirty=True, uffd_wp=True)
    assert pte_present(pte) and not pte_none(pte) and not is_swap_pte(pte)
    assert pte_write(pte) and pte_dirty(pte) and pte_young(pte)
    assert pte_soft_dirty(pte) and pte_uffd_wp(pte)
    clean = make_pte(3, accessed=False)
    assert not (pte_write(clean) or pte_dirty(clean) or pte_young(clean))
    assert not (pte_soft_dirty(clean) or pte_uffd_wp(clean))


def test_pte_none_is_only_the_zero_value() -> None:
    assert pte_none(0)
    assert not pte_present(0) and not is_swap_pte(0)
    assert not pte_none(make_pte(0, accessed=False))
    assert describe_pte(0) == "none"


def test_wrprotect_then_mkwrite_restores_rw_bit_only() -> None:
    pte = make_pte(0x1A3, write=True, dirty=True, soft_dirty=True)
    ro = pte_wrprotect(pte)
    assert ro == pte & ~(1 << 1)
    assert not pte_write(ro)
    assert pte_mkwrite(ro) == pte


def test_mkdirty_sets_soft_dirty_like_x86_and_mkclean_clears_only_dirty() -> None:
    pte = make_pte(5)
    dirty = pte_mkdirty(pte)
    assert dirty == pte | 1 << 6 | 1 << 11
    assert pte_mkclean(dirty) == pte | 1 << 11


def test_young_and_soft_dirty_modifiers_toggle_one_bit() -> None:
    pte = make_pte(5)
    assert pte_mkold(pte) == pte & ~(1 << 5)
    assert pte_mkyoung(pte_mkold(pte)) == pte
    assert pte_mksoft_dirty(pte) == pte | 1 << 11
    assert pte_clear_soft_dirty(pte_mksoft_dirty(pte)) == pte


def test_mkuffd_wp_also_write_protects_and_clear_keeps_it_read_only() -> None:
    pte = make_pte(5, write=True)
    marked = pte_mkuffd_wp(pte)
    assert pte_uffd_wp(marked) and not pte_write(marked)
    assert pte_clear_uffd_wp(marked) == pte_wrprotect(pte)


def test_pte_modify_pfn_keeps_every_flag() -> None:
    pte = make_pte(0x10, write=True, dirty=True, soft_dirty=True, uffd_wp=True)
    moved = pte_modify_pfn(pte, (1 << 40) - 1)
    assert pte_pfn(moved) == (1 << 40) - 1
    assert moved & ~g.PTE_PFN_MASK == pte & ~g.PTE_PFN_MASK
    with pytest.raises(GeometryError):
        pte_modify_pfn(pte, 1 << 40)


def test_describe_present_pte_lists_its_flags() -> None:
    pte = make_pte(0x1A3, write=True, dirty=True, soft_dirty=True)
    assert describe_pte(pte) == "present pfn=0x1a3 RW dirty accessed soft-dirty"
    ro = make_pte(2, accessed=False, uffd_wp=True, huge=True)
    assert describe_pte(ro) == "present pfn=0x2 RO uffd-wp huge"


# --- swap PTEs ---------------------------------------------------------------


@given(types, offsets, st.booleans(), st.booleans(), st.booleans())
@FAST
def test_swap_pte_round_trips_type_offset_and_flags(
    type_: int, offset: int, exclusive: bool, soft_dirty: bool, uffd_wp: bool
) -> None:
    pte = make_swap_pte(type_, offset, exclusive=exclusive, soft_dirty=soft_dirty, uffd_wp=uffd_wp)
    assert is_swap_pte(pte) and not pte_present(pte) and not pte_none(pte)
    assert 0 < pte <= MASK64
    assert (swp_type(pte), swp_offset(pte)) == (type_, offset)
    assert pte_swp_exclusive(pte) is exclusive
    assert pte_swp_soft_dirty(pte) is soft_dirty
    assert pte_swp_uffd_wp(pte) is uffd_wp


@given(types, offsets)
@FAST
def test_swap_pte_matches_the_kernel_swp_entry_formula(type_: int, offset: int) -> None:
    assert make_swap_pte(type_, offset) == kernel_swp_entry(type_, offset)


def test_swap_offset_is_stored_inverted_in_bits_9_to_58() -> None:
    assert bits(make_swap_pte(0, 0)) == set(range(9, 59))
    pte = make_swap_pte(0, 17)
    assert (pte >> 9) & ((1 << 50) - 1) == ~17 & ((1 << 50) - 1)
    assert pte & 0x1FF == 0
    # __swp_offset, literally: ~val << SWP_TYPE_BITS >> SWP_OFFSET_SHIFT in 64 bits.
    assert ((~pte << 5) & MASK64) >> 14 == 17


def test_swap_type_lives_in_bits_59_to_63() -> None:
    top = make_swap_pte(31, 0)
    assert top >> 59 == 31
    assert make_swap_pte(1, 0) - make_swap_pte(0, 0) == 1 << 59


def test_swap_flags_use_bits_1_2_3_and_leave_present_clear() -> None:
    plain = make_swap_pte(2, 40)
    assert make_swap_pte(2, 40, soft_dirty=True) == plain | 1 << 1
    assert make_swap_pte(2, 40, uffd_wp=True) == plain | 1 << 2
    assert make_swap_pte(2, 40, exclusive=True) == plain | 1 << 3
    assert make_swap_pte(2, 40, exclusive=True, soft_dirty=True, uffd_wp=True) & 1 == 0


def test_make_swap_pte_never_produces_pte_none() -> None:
    # Zero bits can only come from a zero type with an all-ones offset, so
    # check every type against the extreme offsets exhaustively.
    edge_offsets = [0, 1, (1 << 49) - 1, 1 << 49, (1 << 50) - 3, (1 << 50) - 2]
    for type_ in range(32):
        for offset in edge_offsets:
            assert not pte_none(make_swap_pte(type_, offset))


def test_make_swap_pte_refuses_the_offset_that_would_encode_as_pte_none() -> None:
    # The all-ones 50-bit offset inverts to zero; with type 0 that is pte_none.
    assert kernel_swp_entry(0, (1 << 50) - 1) == 0
    with pytest.raises(GeometryError, match="pte_none"):
        make_swap_pte(0, (1 << 50) - 1)
    largest = make_swap_pte(0, (1 << 50) - 2)
    assert largest == 1 << 9 and swp_offset(largest) == (1 << 50) - 2


@pytest.mark.parametrize(
    ("type_", "offset", "message"),
    [
        (-1, 0, "swap type -1"),
        (32, 0, "swap type 32"),
        (0, -1, "swap offset"),
        (0, 1 << 50, "swap offset 0x4000000000000"),
    ],
)
def test_make_swap_pte_rejects_out_of_range_type_or_offset(
    type_: int, offset: int, message: str
) -> None:
    with pytest.raises(GeometryError, match=message):
        make_swap_pte(type_, offset)


@given(types, offsets)
@FAST
def test_swap_flag_modifiers_touch_only_their_bit(type_: int, offset: int) -> None:
    pte = make_swap_pte(type_, offset)
    for mk, clear, bit in [
        (pte_swp_mkexclusive, pte_swp_clear_exclusive, 3),
        (pte_swp_mksoft_dirty, pte_swp_clear_soft_dirty, 1),
        (pte_swp_mkuffd_wp, pte_swp_clear_uffd_wp, 2),
    ]:
        assert mk(pte) == pte | 1 << bit
        assert clear(mk(pte)) == pte
    assert pte_swp_exclusive(pte_swp_mkexclusive(pte))
    assert pte_swp_soft_dirty(pte_swp_mksoft_dirty(pte))
    assert pte_swp_uffd_wp(pte_swp_mkuffd_wp(pte))


def test_describe_swap_pte_names_type_offset_and_flags() -> None:
    assert describe_pte(make_swap_pte(0, 17, exclusive=True)) == "swap type=0 offset=17 exclusive"
    both = make_swap_pte(3, 5, soft_dirty=True, uffd_wp=True)
    assert describe_pte(both) == "swap type=3 offset=5 soft-dirty uffd-wp"


# --- Geometry ----------------------------------------------------------------


def test_default_geometry_is_4_level_with_a_2_pow_47_limit() -> None:
    geo = Geometry()
    assert geo == DEFAULT_GEOMETRY
    assert (geo.va_bits, geo.user_limit, geo.max_pages) == (48, 1 << 47, 1 << 35)
    assert geo.description == "4-level paging, 48-bit VA, user space below 2^47"
    assert geo.mthp_orders == g.MTHP_ORDERS


def test_address_above_47_bits_is_rejected_naming_the_limit() -> None:
    geo = Geometry()
    geo.check_range((1 << 35) - 1)
    with pytest.raises(GeometryError) as info:
        geo.check_range(1 << 35)
    assert str(info.value) == (
        "page 0x800000000 (address 0x800000000000) is above the user address limit "
        "0x800000000000 (2^47, 4-level paging)"
    )


def test_range_crossing_the_limit_names_the_first_page_beyond_it() -> None:
    geo = Geometry()
    geo.check_range((1 << 35) - 4, 4)
    with pytest.raises(GeometryError, match=r"page 0x800000000 \(address 0x800000000000\)"):
        geo.check_range((1 << 35) - 4, 5)


def test_check_range_rejects_negative_pages_and_empty_ranges() -> None:
    with pytest.raises(GeometryError, match="negative"):
        Geometry().check_range(-1)
    with pytest.raises(GeometryError, match="at least 1 page"):
        Geometry().check_range(0, 0)


def test_five_level_paging_allows_high_addresses_only_on_request() -> None:
    plain = Geometry(paging_levels=5)
    assert (plain.va_bits, plain.user_limit) == (57, 1 << 47)
    assert "high addresses not requested" in plain.description
    with pytest.raises(GeometryError, match="5-level paging without high user addresses"):
        plain.check_range(1 << 35)
    high = Geometry(paging_levels=5, high_user_addresses=True)
    assert (high.user_limit, high.max_pages) == (1 << 56, 1 << 44)
    assert high.description == "5-level paging, 57-bit VA, user space below 2^56"
    high.check_range(1 << 35, 1 << 20)
    with pytest.raises(GeometryError, match=r"0x100000000000000 \(2\^56, 5-level"):
        high.check_range(1 << 44)


def test_page_address_and_address_page_convert_within_the_limit() -> None:
    geo = Geometry()
    assert geo.page_address(3) == 3 * 4096
    assert geo.address_page(3 * 4096 + 17) == 3
    with pytest.raises(GeometryError):
        geo.page_address(1 << 35)
    with pytest.raises(GeometryError, match="above the user address limit"):
        geo.address_page(1 << 47)
    with pytest.raises(GeometryError, match="negative"):
        geo.address_page(-1)


def test_table_indices_and_alignment() -> None:
    geo = Geometry()
    page = 3 * 512 * 512 + 7 * 512 + 11
    assert (geo.pmd_index(page), geo.pte_index(page)) == (7, 11)
    assert geo.pmd_aligned(1024, 9) and not geo.pmd_aligned(1024 + 4, 9)
    assert geo.pmd_aligned(4, 2) and not geo.pmd_aligned(6, 2)
    assert geo.pmd_aligned(5, 0)
    with pytest.raises(GeometryError):
        geo.pmd_aligned(0, -1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"paging_levels": 3}, "Geometry.paging_levels"),
        ({"paging_levels": True}, "Geometry.paging_levels"),
        ({"high_user_addresses": True}, "Geometry.high_user_addresses"),
        ({"mthp_orders": (1,)}, "Geometry.mthp_orders"),
        ({"mthp_orders": (10,)}, "Geometry.mthp_orders"),
        ({"mthp_orders": (4, 4)}, "Geometry.mthp_orders"),
    ],
)
def test_invalid_geometry_fields_are_rejected_by_name(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(GeometryError, match=field):
        Geometry(**kwargs)  # type: ignore[arg-type]


def test_geometry_is_frozen_hashable_and_sorts_mthp_orders() -> None:
    geo = Geometry(mthp_orders=(9, 4))
    assert geo.mthp_orders == (4, 9)
    assert geo == Geometry(mthp_orders=(4, 9))
    assert hash(geo) == hash(Geometry(mthp_orders=(4, 9)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        geo.paging_levels = 5  # type: ignore[misc]


def test_from_mapping_accepts_yaml_keys_and_the_levels_alias() -> None:
    geo = Geometry.from_mapping(
        {"levels": 5, "high_user_addresses": True, "mthp_orders": [4, 2, 9]}
    )
    assert geo == Geometry(paging_levels=5, high_user_addresses=True, mthp_orders=(2, 4, 9))
    assert Geometry.from_mapping({}) == DEFAULT_GEOMETRY
    assert Geometry.from_mapping({"paging_levels": 4, "mthp_orders": []}).mthp_orders == ()


def test_from_mapping_rejects_unknown_keys_listing_the_expected_ones() -> None:
    with pytest.raises(GeometryError) as info:
        Geometry.from_mapping({"pagesize": 4096}, where="scenario.geometry")
    assert str(info.value).startswith("scenario.geometry: unknown key 'pagesize' (expected one of")
    assert "'paging_levels'" in str(info.value) and "'levels'" in str(info.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"levels": True}, "cfg.levels: expected an integer"),
        ({"paging_levels": "4"}, "cfg.paging_levels: expected an integer"),
        ({"high_user_addresses": 1}, "cfg.high_user_addresses: expected a boolean"),
        ({"mthp_orders": 4}, "cfg.mthp_orders: expected a list"),
        ({"mthp_orders": [4, False]}, r"cfg.mthp_orders\[1\]: expected an integer order"),
        ({"levels": 6}, "cfg.levels: paging levels must be 4 or 5"),
        ({"high_user_addresses": True}, "cfg.high_user_addresses: .*5-level"),
        ({"levels": 4, "paging_levels": 4}, "cfg: give either"),
    ],
)
def test_from_mapping_names_the_key_and_expected_type(
    data: dict[str, object], expected: str
) -> None:
    with pytest.raises(GeometryError, match=expected):
        Geometry.from_mapping(data, where="cfg")


def test_from_mapping_rejects_a_non_mapping() -> None:
    with pytest.raises(GeometryError, match="geometry: expected a mapping, got list"):
        Geometry.from_mapping([4])  # type: ignore[arg-type]
