"""Where the simulator does not do what upstream Linux does in cow.c's procedures.

Each :class:`Divergence` names the tests it affects (presets, case families, variant ids),
the verdict the simulator gives, the verdict upstream gives, the simulator code at fault
and why. ``cowlab selftest`` prints a ``# [NOTE]`` line under an affected test and the
matrix lists them; ``tests/test_selftest.py`` asserts both verdicts, so a fix in the
simulator makes the entry fail until it is removed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cowlab.selftest.cases import ANON_CASES, THP_CASES


@dataclass(frozen=True)
class Divergence:
    """The simulator gives ``sim`` where upstream gives ``upstream``."""

    id: str
    presets: tuple[str, ...]
    families: tuple[str, ...]
    variants: tuple[str, ...]  # variant ids, e.g. "thp-9"
    sim: str
    upstream: str
    where: str
    why: str

    def covers(self, preset: str, family: str, variant_id: str) -> bool:
        """This divergence applies to ``family`` over ``variant_id`` on ``preset``."""
        return preset in self.presets and family in self.families and variant_id in self.variants


ANON_FAMILIES = tuple(case.family for case in ANON_CASES)
COLLAPSE_FAMILIES = tuple(case.family for case in THP_CASES)

KNOWN_DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        "no-vma-merge",
        ("v6.2", "v6.9", "v6.11", "v6.12", "v6.15"), COLLAPSE_FAMILIES, ("thp-9",), "skip",
        "pass",
        "cowlab/kernel/mm.py MM.split_range() (used by protect.py change_protection() and "
        "Kernel.madvise()); thp.py collapse()",
        "VMAs are split but never merged again: after cow.c's mprotect(PROT_READ) + "
        "mprotect(PROT_READ|PROT_WRITE) of one subpage (and MADV_DONTFORK + MADV_DOFORK) the "
        "THP spans two or three VMAs with equal flags, and collapse() returns False for a "
        "2 MiB range not inside one VMA, so MADV_COLLAPSE leaves the THP PTE-mapped. "
        "Upstream mprotect_fixup() and madvise_update_vma() merge them back (vma_merge()), "
        "which cow.c relies on, and MADV_COLLAPSE (v6.1, 7d8faaf15545) succeeds. (Before "
        "v6.1 upstream skips too: MADV_COLLAPSE fails with EINVAL.)"),
    Divergence(
        "mthp-split-swapout",
        ("v6.9",), ANON_FAMILIES, tuple(f"pte_thp_swap-{order}" for order in range(2, 9)),
        "skip", "pass",
        "cowlab/kernel/reclaim.py reclaim_folio()",
        "Before v6.10 (845982eb264b) an mTHP folio is split to be swapped out; the simulator "
        "puts the pieces back on the LRU for a later reclaim pass, so MADV_PAGEOUT leaves a "
        "PTE-mapped mTHP present and cow.c's range_is_swapped() check skips the test. "
        "Upstream shrink_folio_list() splits with split_folio_to_list(folio, folio_list), "
        "which queues the tail pages on the list being reclaimed: the same MADV_PAGEOUT "
        "swaps every page out."),
)


def divergence_for(preset: str, family: str, variant_id: str) -> Divergence | None:
    """The known divergence affecting one test, if any."""
    for d in KNOWN_DIVERGENCES:
        if d.covers(preset, family, variant_id):
            return d
    return None
