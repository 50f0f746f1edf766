"""Large folios: each era's rule on the situation that tells it apart from its neighbours."""

from __future__ import annotations

from cowlab.geometry import pte_huge, pte_pfn, pte_write
from cowlab.kernel import Kernel
from tests.conftest import KernelFactory

NR = 512


def thp_parent(k: Kernel, *, thp: str = "pmd", pages: int = NR):  # type: ignore[no-untyped-def]
    parent = k.create_mm("parent")
    k.mmap(parent, 0, pages, thp=thp)
    k.write(parent, 0)
    return parent


def test_a_write_to_a_pmd_thp_area_maps_the_whole_folio_with_one_pmd(
    kernel: KernelFactory,
) -> None:
    k = kernel("v5.19")
    parent = thp_parent(k)
    folio = k.frames[pte_pfn(parent.pt[0])]
    assert folio.order == 9 and folio.entire_mapcount == 1 and folio.refcount == 1
    assert all(pte_huge(parent.pt[p]) and pte_write(parent.pt[p]) for p in range(NR))
    assert k.write(parent, 300).fault == "none"  # the whole 2 MiB is mapped writable
    assert k.counters["thp_fault_alloc"] == 1
    assert k.check_invariants(safe_run=True) == []


def gup_then_unmap_in_child(k: Kernel) -> tuple[str, str, str | None]:
    parent = thp_parent(k)
    child = k.fork(parent, "child")
    k.gup(child, 0, 1, pin=False, write=False, name="pipe")
    k.munmap(child, 0, NR)
    before = k.gup_read("pipe")
    rec = k.write(parent, 0)
    assert (k.gup_read("pipe") != before) == (rec.violation == "leak")
    return rec.fault, rec.outcome, rec.violation


def test_v5_9_reuses_a_pmd_thp_by_total_mapcount_and_leaks_to_the_childs_pipe(
    kernel: KernelFactory,
) -> None:
    """Up to v5.17 do_huge_pmd_wp_page() kept reuse_swap_page(): the GUP reference the
    child left behind is invisible to the mapcount (the CVE's THP instance)."""
    assert gup_then_unmap_in_child(kernel("v5.9")) == ("wp", "reuse", "leak")


def test_v5_18_falls_back_to_a_4k_copy_when_the_thp_refcount_is_raised(
    kernel: KernelFactory,
) -> None:
    """3bff7e3f1f16 (v5.18): refcount > 1 -> split the PMD; the 4 KiB page is copied."""
    k = kernel("v5.18")
    assert gup_then_unmap_in_child(k) == ("wp", "copy", None)
    assert k.counters["thp_split_pmd"] == 1


def test_v5_7_copies_the_whole_thp_and_v5_8_splits_the_pmd(kernel: KernelFactory) -> None:
    """3917c80280c9 (v5.8): COW of a PMD THP no longer copies 2 MiB."""
    copied = {}
    for preset in ("v5.7", "v5.8"):
        k = kernel(preset)
        parent = thp_parent(k)
        k.fork(parent, "child")
        rec = k.write(parent, 0)
        copied[preset] = (rec.outcome, k.counters["pages_copied"], k.counters["thp_split_pmd"])
        assert k.check_invariants() == []
    assert copied == {"v5.7": ("copy", NR, 0), "v5.8": ("copy", 1, 1)}


def pte_mapped_thp_after_child_exit(k: Kernel) -> tuple[str, str | None, bool | None]:
    """A PTE-mapped THP (split by mprotect of one page), shared at fork; the child exits."""
    parent = thp_parent(k)
    k.mprotect(parent, 0, 1, "r")
    k.mprotect(parent, 0, 1, "rw")
    child = k.fork(parent, "child")
    k.exit_mm(child)
    rec = k.write(parent, 5)
    return rec.outcome, rec.reason, rec.exclusive


def test_pte_mapped_thp_after_the_child_exits_per_era(kernel: KernelFactory) -> None:
    """v5.19: PAE was cleared at fork and the refcount counts 512 PTEs -> copy (early);
    v6.9 (cd197c3a2040): large folios never reused by refcount -> copy (large);
    v6.15 (1da190f4d0a6): only this mm maps it, mapcount == refcount -> reuse."""
    results = {p: pte_mapped_thp_after_child_exit(kernel(p)) for p in ("v5.19", "v6.9", "v6.15")}
    assert results == {
        "v5.19": ("copy", "early", True),
        "v6.9": ("copy", "large", True),
        "v6.15": ("reuse", None, True),
    }


def last_pte_of_a_large_folio(k: Kernel) -> tuple[str, int]:
    parent = thp_parent(k)
    k.mprotect(parent, 0, 1, "r")  # split the PMD
    k.mprotect(parent, 0, 1, "rw")
    child = k.fork(parent, "child")  # clears PageAnonExclusive
    k.exit_mm(child)
    k.munmap(parent, 1, NR - 1)  # one PTE of the 2 MiB folio is left
    rec = k.write(parent, 0)
    return rec.outcome, len(k.frames)


def test_the_last_pte_of_a_large_folio_keeps_it_alive_until_v6_9(kernel: KernelFactory) -> None:
    """Up to v6.8 the refcount path reuses the last PTE, keeping 2 MiB alive for 4 KiB;
    v6.9 copies it so the large folio can be freed."""
    assert last_pte_of_a_large_folio(kernel("v5.19")) == ("reuse", NR)
    assert last_pte_of_a_large_folio(kernel("v6.9")) == ("copy", 1)


def test_a_third_mm_leaves_a_false_positive_maybe_shared_flag(kernel: KernelFactory) -> None:
    """v6.15 tracks two mm ids; the third mapper sets "maybe mapped shared", which stays set
    while that untracked mm maps the folio alone: an exclusive page is copied."""
    k = kernel("v6.15")
    parent = thp_parent(k)
    k.mprotect(parent, 0, 1, "r")
    k.mprotect(parent, 0, 1, "rw")
    first = k.fork(parent, "first")
    second = k.fork(parent, "second")
    k.exit_mm(parent)
    k.exit_mm(first)
    rec = k.write(second, 7)
    assert (rec.outcome, rec.reason, rec.exclusive) == ("copy", "large", True)
    assert rec.blockers == ("large_folio",)


def test_mthp_needs_v6_8_and_falls_back_to_small_pages_when_the_range_is_populated(
    kernel: KernelFactory,
) -> None:
    import pytest

    from cowlab.kernel import KernelError

    with pytest.raises(KernelError, match="multi-size THP"):
        thp_parent(kernel("v5.19"), thp="mthp-4", pages=64)
    k = kernel("v6.9")
    mm = thp_parent(k, thp="mthp-4", pages=64)
    assert k.frames[pte_pfn(mm.pt[0])].order == 4
    assert k.write(mm, 15).fault == "none"
    k.read(mm, 16)  # the zero page now sits in the second block
    k.write(mm, 17)
    assert k.frames[pte_pfn(mm.pt[17])].order == 0
    assert k.check_invariants(safe_run=True) == []


def test_collapse_gives_the_parent_its_own_exclusive_thp_and_the_child_keeps_its_pages(
    kernel: KernelFactory,
) -> None:
    k = kernel("v5.19")
    parent = k.create_mm("parent")
    k.mmap(parent, 0, NR)
    for p in range(NR):
        k.write(parent, p, data=p)
    child = k.fork(parent, "child")
    k.madvise(parent, 0, NR, "collapse")
    head = k.frames[pte_pfn(parent.pt[0])]
    assert head.order == 9 and head.all_pae() and k.counters["thp_collapse_alloc"] == 1
    assert k.write(parent, 3, data="new").outcome == "none"  # writable, exclusive
    assert k.read(child, 3) == 3
    assert k.check_invariants(safe_run=True) == []


def test_a_partially_mremapped_thp_is_pte_mapped_in_two_places(kernel: KernelFactory) -> None:
    k = kernel("v5.19")
    parent = thp_parent(k, pages=NR)
    k.mmap(parent, 4 * NR, 1)
    k.munmap(parent, 4 * NR, 1)
    k.mremap(parent, NR // 2, NR // 2, 4 * NR)
    folio = k.frames[pte_pfn(parent.pt[0])]
    assert folio is k.frames[pte_pfn(parent.pt[4 * NR])]
    assert folio.entire_mapcount == 0 and folio.large_mapcount == NR
    assert k.write(parent, 4 * NR + 1).fault == "none"
    assert k.check_invariants(safe_run=True) == []


def test_hugetlb_stays_mapcount_based_and_leaks_through_vmsplice_in_every_era(
    kernel: KernelFactory,
) -> None:
    """hugetlb_wp() reuses a page mapped once whatever GUP holds: cow.c marks the hugetlb
    vmsplice cases as expected failures."""
    for preset in ("v5.9", "v5.19", "v6.15"):
        k = kernel(preset)
        parent = k.create_mm("parent")
        k.mmap(parent, 0, NR, hugetlb="2m")
        k.write(parent, 0)
        child = k.fork(parent, "child")
        k.gup(child, 0, 1, pin=False, write=False, name="pipe")
        k.munmap(child, 0, NR)
        rec = k.write(parent, 0)
        assert (rec.outcome, rec.reason, rec.violation) == ("reuse", "hugetlb", "leak")


def test_swapping_out_a_thp_splits_its_pmd_and_swaps_the_folio_whole(
    kernel: KernelFactory,
) -> None:
    k = kernel("v5.19", swap="zram")
    parent = thp_parent(k)
    k.madvise(parent, 0, NR, "pageout")
    assert k.counters["thp_split_pmd"] == 1 and k.counters["pswpout"] == NR
    assert not k.frames  # written to a synchronous device and freed
    assert k.read(parent, 3) is not None
    assert k.check_invariants(safe_run=True) == []
