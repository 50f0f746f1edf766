"""What cow.c reports on every kernel preset, written down with the reason and the commit.

``expected(preset, family, kind)`` gives the verdict an upstream kernel of the preset's era
would give for one cow.c test (a case family over a memory variant kind), with a one-line
reason from that era's rules; :data:`RULES` is the table behind it, grouped by case family,
variant family and era, first match wins. ``cowlab.selftest.divergences`` lists where the
simulator does not reproduce upstream, with the simulator's verdict, the code at fault
and why; the tests in ``test_selftest.py`` assert both (so fixing the simulator makes a
divergence entry fail until it is removed).

Presets stand for release ranges (their descriptions in ``cowlab kernels`` say which):
``v5.9`` is v5.9..v5.10, ``v5.11`` is v5.11, ``v5.12`` is v5.12..v5.17, ``v5.19`` is
v5.19..v6.1, ``v6.2`` is v6.2..v6.8, ``v6.9`` is v6.9..v6.10, ``v6.11`` is v6.11 and
``v6.12`` is v6.12..v6.14. The v5.9, v5.11 and v5.12 presets share v5.9's reuse rule.
cow.c itself only exists from v6.1 (as selftests/vm/cow.c); on older presets the verdicts
are what its procedures would observe.
Two of its facilities are newer than some presets and are nonetheless simulated there: the
gup_test PIN_LONGTERM_TEST ioctls (v6.1), which stand for any longterm R/O pin (RDMA, VFIO),
and MADV_COLLAPSE (v6.1, 7d8faaf15545), for which cow.c reports SKIP on older kernels and
so do the expectations below.

Where upstream is silent (cow.c never ran on these kernels) the verdicts are derived from
the era's code, and these are the ones to double-check:

* v5.8 hugetlb: 17839856fd58 forces FOLL_WRITE in __get_user_pages()'s hugetlb branch too
  (should_force_cow_break() covers FOLL_GET and FOLL_PIN), and GUP-fast demands a writable
  PTE, so the child's vmsplice() and the R/O pins break COW first: pass, not XFAIL.
* v5.9 assumes the COW break was gone in v5.9 (a308c71bf1e6, merged with 70e806e4e645);
  hugetlb fork() copies a pinned page only from v5.12 (4eae4efa2c29), so "fork() with an
  iouring fixed buffer ... with hugetlb" fails on the v5.9 and v5.11 presets and passes
  from v5.12.
* v5.7/v5.8 "partially mremap()'ed THP" leak cases pass: page_trans_huge_map_swapcount()
  is a maximum over all subpages, and the moved half stays mapped by both processes.
* v6.9 swapped-out, PTE-mapped mTHP: upstream splits the folio onto the list being
  reclaimed (split_folio_to_list(folio, folio_list) in shrink_folio_list()), so
  MADV_PAGEOUT works and the cases pass as on v6.11; the simulator skips them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cowlab.kernel.presets import PRESETS as _PRESETS
from cowlab.selftest import ALL_CASES, SelfTest
from cowlab.selftest.divergences import KNOWN_DIVERGENCES, Divergence, divergence_for
from cowlab.selftest.variants import KINDS

PRESETS = tuple(_PRESETS)
#: The presets that run v5.9's reuse rule (09854ba94c6a): v5.9..v5.17.
V5_9_RULE = ("v5.9", "v5.11", "v5.12")
PRE_V5_19 = ("v5.7", "v5.8", *V5_9_RULE, "v5.18")
PRE_V6_1 = (*PRE_V5_19, "v5.19")
V6_1_ON = ("v6.2", "v6.9", "v6.11", "v6.12", "v6.15")

# ----------------------------------------------------------------------------- case families
COW = ("cow", "cow-mprotect")
VMSPLICE_CHILD = ("vmsplice-child", "vmsplice-child-mprotect")
VMSPLICE_PARENT = ("vmsplice-before-fork", "vmsplice-after-fork")
VMSPLICE = VMSPLICE_CHILD + VMSPLICE_PARENT
LEAK_CASES = COW + VMSPLICE
IOURING_RO = ("iouring-ro",)
IOURING_FORK = ("iouring-fork",)
RO_PIN_SHARED = ("ro-pin-shared", "ro-fast-pin-shared")
RO_PIN_EXCL = ("ro-pin-previously-shared", "ro-fast-pin-previously-shared",
               "ro-pin-exclusive", "ro-fast-pin-exclusive")
PIN_CASES = IOURING_RO + IOURING_FORK + RO_PIN_SHARED + RO_PIN_EXCL
COLLAPSE = ("collapse-unshared", "collapse-fully-shared", "collapse-lower-shared",
            "collapse-upper-shared")
ANON_FAMILIES = LEAK_CASES + PIN_CASES
FAMILIES = ANON_FAMILIES + COLLAPSE

# ---------------------------------------------------------------------------- variant kinds
BASE = ("base",)
SWAPPED = ("base_swap", "thp_swap", "pte_thp_swap", "single_pte_swap")
PMD = ("thp",)  # a PMD-mapped THP
PTE_MAPPED = ("pte_thp", "single_pte", "partial_mremap", "partial_shared")
HUGETLB = ("hugetlb",)
NOT_HUGETLB = BASE + SWAPPED + PMD + PTE_MAPPED
ANY = NOT_HUGETLB + HUGETLB

# Reasons used more than once.
MAX_SUBPAGE = ("reuse_swap_page() takes the highest mapcount of any subpage "
               "(page_trans_huge_map_swapcount()), and the mremap()'ed half is still mapped by "
               "parent and child: not reused, copied")
HUGETLB_MAPCOUNT = ("hugetlb_wp() counts mappings only (the refcount rule of 09854ba94c6a and "
                    "53a05ad9f21d never reached mm/hugetlb.c): the pinned huge page, mapped "
                    "once, is reused")
NO_UNSHARE = ("the R/O pin is taken on a page the child still maps and there is no unshare fault "
              "before v5.19 (c89357e27f20): the parent's write must copy, the pin keeps the old "
              "page")


@dataclass(frozen=True)
class Rule:
    """``result`` for the tests of ``families`` over ``kinds`` on ``presets``."""

    presets: tuple[str, ...]
    families: tuple[str, ...]
    kinds: tuple[str, ...]
    result: str
    why: str


R = Rule
#: First match wins. Every preset, family and kind is covered (the last rules per family
#: are the era's default).
RULES: tuple[Rule, ...] = (
    # --- the THP collapse cases (PMD-sized THP only) ---------------------------------
    R(PRE_V6_1, COLLAPSE, ANY, "skip",
      "MADV_COLLAPSE arrived in v6.1 (7d8faaf15545): madvise() fails with EINVAL and cow.c "
      "reports SKIP 'MADV_COLLAPSE failed'"),
    R(V6_1_ON, COLLAPSE, ANY, "pass",
      "MADV_COLLAPSE (7d8faaf15545) copies into a new THP exclusive to the parent "
      "(PageAnonExclusive on every subpage); the child keeps its old pages, the parent's "
      "writes cannot reach them"),
    # --- hugetlb: the same rule in every era -------------------------------------------
    R(("v5.8",), (*VMSPLICE_CHILD, "vmsplice-after-fork"), HUGETLB, "pass",
      "v5.8: GUP on a COW mapping breaks COW first (17839856fd58), hugetlb included: the pipe "
      "references a private copy"),
    R(PRESETS, VMSPLICE, HUGETLB, "xfail",
      "hugetlb_wp() reuses a huge page mapped once whatever GUP references it, in every era "
      "(09854ba94c6a and its successors changed do_wp_page() only); cow.c flags these XFAIL "
      "(harder to fix, nobody really cares)"),
    # --- v5.7: reuse_swap_page() everywhere, no COW break, fork shares pinned pages --------
    R(("v5.7",), VMSPLICE, ("partial_mremap",), "pass", MAX_SUBPAGE),
    R(("v5.7",), VMSPLICE, NOT_HUGETLB, "fail",
      "v5.7: reuse_swap_page() counts mappings and swap PTEs, not the pipe's GUP reference: once "
      "the other process unmapped, the writer reuses the page under the pipe (CVE-2020-29374; "
      "fixed for PTEs by 09854ba94c6a in v5.9, swap and PMD by c145e0b47c77/3bff7e3f1f16 in "
      "v5.18)"),
    R(("v5.7", "v5.8"), IOURING_FORK, ANY, "fail",
      "fork() shares the pinned page with the child until 70e806e4e645 (v5.9): the parent's "
      "write copies it away from the pin"),
    R(("v5.7",), RO_PIN_SHARED, ANY, "fail", NO_UNSHARE),
    R(("v5.7",), IOURING_RO + RO_PIN_EXCL, ANY, "pass",
      "v5.7: the page is mapped once, so reuse_swap_page() reuses it in place; the pin is not "
      "looked at"),
    # --- v5.8: GUP breaks COW first (17839856fd58) -------------------------------------
    R(("v5.8",), ("vmsplice-before-fork",), ("partial_mremap",), "pass", MAX_SUBPAGE),
    R(("v5.8",), ("vmsplice-before-fork",), NOT_HUGETLB, "fail",
      "vmsplice() before fork() meets an exclusive page, so v5.8's COW break (17839856fd58) "
      "does nothing; fork() shares it, and once the parent unmapped, the child's write reuses "
      "it by mapcount under the parent's pipe"),
    R(("v5.8",), VMSPLICE, NOT_HUGETLB, "pass",
      "v5.8: the GUP of vmsplice() on a COW mapping breaks COW first (17839856fd58): the pipe "
      "references the GUP caller's private copy"),
    R(("v5.8",), RO_PIN_SHARED + RO_PIN_EXCL, ANY, "pass",
      "v5.8: the pin breaks COW first (17839856fd58), so the pinned page is private and "
      "writable before the write"),
    R(("v5.8",), IOURING_RO, ANY, "pass",
      "v5.8: the page is mapped once, so reuse_swap_page() reuses it in place"),
    # --- v5.9 (to v5.17): refcount rule in do_wp_page() only ------------------------------
    R(V5_9_RULE, VMSPLICE_CHILD, SWAPPED,
      "fail", "do_swap_page() still decides with reuse_swap_page() (mapcount + swapcount, blind "
      "to GUP) until c145e0b47c77 (v5.18): the parent's write fault on its swap PTE reuses the "
      "page the child's pipe holds"),
    R(V5_9_RULE, VMSPLICE, PMD,
      "fail", "do_huge_pmd_wp_page() keeps reuse_swap_page() until 3bff7e3f1f16 (v5.18): a "
      "PMD-mapped THP mapped once is reused under the pipe"),
    R(V5_9_RULE, VMSPLICE, NOT_HUGETLB,
      "pass", "the pipe's reference raises the refcount: do_wp_page() copies (09854ba94c6a); "
      "the swapped variants of the parent-side cases were faulted in by the parent's read "
      "before fork()"),
    R(V5_9_RULE, IOURING_RO + RO_PIN_EXCL, PMD,
      "pass", "the PMD path keeps reuse_swap_page() (until 3bff7e3f1f16): mapped once, the "
      "pinned THP is reused in place"),
    R(V5_9_RULE, IOURING_RO + RO_PIN_EXCL, HUGETLB, "pass", HUGETLB_MAPCOUNT),
    R(V5_9_RULE, IOURING_RO + RO_PIN_EXCL, ANY,
      "fail", "the pin raises the refcount: do_wp_page()'s refcount rule (09854ba94c6a) copies "
      "the pinned page at the next write fault (clear_refs' pinned-page exception 9348b73c2e1b "
      "does not help: mprotect(PROT_READ) write-protected first)"),
    R((*V5_9_RULE, "v5.18"), RO_PIN_SHARED, ANY, "fail", NO_UNSHARE),
    R(("v5.9", "v5.11"), IOURING_FORK, HUGETLB,
      "fail", "copy_hugetlb_page_range() shares the pinned huge page with the child until "
      "4eae4efa2c29 (v5.12): hugetlb_wp() sees it mapped twice and the parent's write copies "
      "it away from the pin"),
    R((*V5_9_RULE, "v5.18"), IOURING_FORK, ANY,
      "pass", "fork() copies a maybe-pinned page for the child (70e806e4e645), splits a pinned "
      "PMD (d042035eaf5f) and, from v5.12, copies a pinned hugetlb page (4eae4efa2c29)"),
    # --- v5.18: refcount rule on every path ----------------------------------------------
    R(("v5.18",), VMSPLICE, NOT_HUGETLB,
      "pass", "v5.18: the refcount rule on every path (do_wp_page 53a05ad9f21d + d4c470970d45, "
      "swap c145e0b47c77, PMD 3bff7e3f1f16) sees the pipe's reference and copies"),
    R(("v5.18",), IOURING_RO + RO_PIN_EXCL, HUGETLB, "pass", HUGETLB_MAPCOUNT),
    R(("v5.18",), IOURING_RO + RO_PIN_EXCL, ANY,
      "fail", "v5.18: the pin's references exceed what the refcount rule allows (53a05ad9f21d, "
      "PMD 3bff7e3f1f16): the write copies the pinned page (fixed by PageAnonExclusive in "
      "v5.19)"),
    # --- defaults: every case passes where nothing above applies -------------------------
    R(PRESETS, COW, ANY, "pass",
      "the child still maps the page: the parent's write copies it (mapcount > 1 up to v5.8, "
      "refcount > 1 from 09854ba94c6a, !PageAnonExclusive from 6c287605fd56)"),
    R(PRESETS, VMSPLICE, NOT_HUGETLB, "pass",
      "fork() cleared PageAnonExclusive (6c287605fd56) and the pipe's reference keeps the "
      "refcount up: the write copies"),
    R(PRESETS, IOURING_FORK, ANY, "pass",
      "fork() copies the pinned PageAnonExclusive page for the child instead of sharing it "
      "(page_try_dup_anon_rmap(), 6c287605fd56; since 70e806e4e645)"),
    R(PRESETS, RO_PIN_SHARED, ANY, "pass",
      "the R/O pin triggers an unshare fault (c89357e27f20): the parent gets an exclusive copy "
      "before it is pinned, and the write reuses it"),
    R(PRESETS, IOURING_RO + RO_PIN_EXCL, ANY, "pass",
      "the pinned page is PageAnonExclusive (or made so by the unshare fault, c89357e27f20): "
      "the write fault reuses it without looking at the refcount (6c287605fd56)"),
)


def expected(preset: str, family: str, kind: str) -> tuple[str, str]:
    """Upstream's verdict and its reason for ``family`` over ``kind`` on ``preset``."""
    for rule in RULES:
        if preset in rule.presets and family in rule.families and kind in rule.kinds:
            return rule.result, rule.why
    raise LookupError(f"no expectation for {family} over {kind} on {preset}")


MTHP_SWAPPED = tuple(f"pte_thp_swap-{order}" for order in range(2, 9))


def divergence(preset: str, test: SelfTest) -> Divergence | None:
    """The known divergence for ``test`` on ``preset``, if any."""
    return divergence_for(preset, test.case.family, test.variant.id)


# ------------------------------------------------------------------ the table itself
def test_every_family_kind_and_preset_has_exactly_the_expectations_it_needs() -> None:
    families = {case.family for case in ALL_CASES}
    assert families == set(FAMILIES)
    assert set(ANY) == set(KINDS)
    for preset in PRESETS:
        for family in FAMILIES:
            for kind in ANY:
                result, why = expected(preset, family, kind)
                assert result in ("pass", "fail", "xfail", "skip")
                assert len(why) > 30


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.result}:{r.families[0]}")
def test_every_rule_is_reachable_and_cites_a_commit_or_mechanism(rule: Rule) -> None:
    assert any(
        expected(p, f, k) == (rule.result, rule.why)
        for p in rule.presets for f in rule.families for k in rule.kinds
    ), "rule is shadowed by earlier rules"
    assert any(ch.isdigit() for ch in rule.why) or "reuse_swap_page" in rule.why


def test_only_hugetlb_vmsplice_cases_are_expected_failures() -> None:
    for preset in PRESETS:
        for family in FAMILIES:
            for kind in ANY:
                if expected(preset, family, kind)[0] == "xfail":
                    assert kind == "hugetlb" and family in VMSPLICE


def test_divergences_name_real_tests_and_state_upstreams_verdict() -> None:
    """Each divergence's ``upstream`` verdict is this table's, and differs from ``sim``."""
    variant_ids = {"thp-9", *MTHP_SWAPPED}
    for d in KNOWN_DIVERGENCES:
        assert set(d.presets) <= set(PRESETS)
        assert set(d.families) <= set(FAMILIES)
        assert set(d.variants) <= variant_ids
        assert d.sim != d.upstream
        for preset in d.presets:
            for family in d.families:
                for vid in d.variants:
                    assert expected(preset, family, vid.split("-")[0])[0] == d.upstream
