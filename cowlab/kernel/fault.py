"""The do_wp_page() decision point: what a policy sees and may do.

A :class:`FaultView` exposes only kernel-visible state of the faulting folio
(the counts and flags do_wp_page() reads) plus the primitives the kernel's
own rules call, each of which changes the real state and charges simulated
time to the fault:

* ``drain_lru()`` - lru_add_drain() on this CPU (d4c470970d45, v5.18)
* ``drain_lru_all()`` - lru_add_drain_all(): every CPU, expensive
* ``trylock()`` / ``lock()`` / ``unlock()`` - the folio (page) lock; ``lock()``
  sleeps until the holder releases it (era A/B), ``trylock()`` fails at once
* ``free_swap()`` - try_to_free_swap(): needs the lock; fails under writeback
  or while any swap PTE still refers to the entry

``path`` says which kernel path asks: ``"wp"`` (do_wp_page on a PTE),
``"swap"`` (do_swap_page write fault, up to v5.17: REUSE maps the page
writable at once, COPY maps it read-only and the fault continues into
do_wp_page, which asks again on path ``"wp"``) or ``"pmd"`` (a PMD-mapped THP).
``unshare`` is True for a GUP-triggered unshare fault (v5.19+): REUSE marks
the page exclusive but keeps it read-only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cowlab.kernel.errors import PolicyError as PolicyError
from cowlab.kernel.folio import GUP_PIN_COUNTING_BIAS, Folio
from cowlab.kernel.mm import MM, VMA

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel
    from cowlab.kernel.safety import Truth

#: The fixed order of :meth:`FaultView.features` (the env's observation).
FEATURE_NAMES: tuple[str, ...] = (
    "refcount",
    "mapcount",
    "large_mapcount",
    "order",
    "is_large",
    "pmd_mapped",
    "swapcache",
    "swapcount",
    "lru",
    "locked",
    "writeback",
    "ksm",
    "anon_exclusive_known",
    "anon_exclusive",
    "maybe_pinned",
    "pincount",
    "mm_has_pinned",
    "maybe_mapped_shared",
    "unshare",
    "path_swap",
    "path_pmd",
    "uffd_wp",
    "softdirty_tracking",
    "locked_by_policy",
)


class FaultView:
    """Kernel-visible state of one anonymous write (or unshare) fault, plus primitives."""

    # Only the properties below are the policy API; the underscored slots are the
    # simulator's own objects and are not part of it.
    __slots__ = (
        "_folio",
        "_index",
        "_kernel",
        "_mm",
        "_vma",
        "cpu",
        "locked_by_policy",
        "page",
        "path",
        "unshare",
    )

    def __init__(
        self,
        kernel: Kernel,
        folio: Folio,
        index: int,
        mm: MM,
        vma: VMA,
        page: int,
        cpu: int,
        path: str,
        unshare: bool = False,
    ) -> None:
        self._kernel = kernel
        self._folio = folio
        self._index = index
        self._mm = mm
        self._vma = vma
        self.page = page
        self.cpu = cpu
        self.path = path
        self.unshare = unshare
        self.locked_by_policy = False

    # -- kernel-visible state ------------------------------------------------------------
    @property
    def refcount(self) -> int:
        """folio_ref_count(): every reference, whoever holds it."""
        return self._folio.refcount

    @property
    def mapcount(self) -> int:
        """page_mapcount() of the faulting page (PTE maps of it plus PMD maps); for a large
        folio the highest mapcount of any of its pages (page_trans_huge_mapcount()), the
        count reuse_swap_page() used up to v5.17."""
        folio = self._folio
        if folio.order:
            return folio.max_page_mapcount()
        return folio.pte_mapcount(0)

    @property
    def large_mapcount(self) -> int:
        """folio_mapcount(): all mappings of the folio."""
        return self._folio.large_mapcount

    @property
    def nr_pages(self) -> int:
        """folio_nr_pages()."""
        return self._folio.nr_pages

    @property
    def order(self) -> int:
        """folio_order()."""
        return self._folio.order

    @property
    def is_large(self) -> bool:
        """folio_test_large()."""
        return self._folio.order > 0

    @property
    def pmd_mapped(self) -> bool:
        """True when the fault is on a PMD mapping of a THP (path ``pmd``)."""
        return self.path == "pmd"

    @property
    def swapcache(self) -> bool:
        """folio_test_swapcache()."""
        return self._folio.swap_entry is not None

    @property
    def swapcount(self) -> int:
        """Swap PTEs still referring to the faulting page's swap slot (0 if not in swapcache).

        On the ``swap`` path this includes the faulting PTE itself, as
        reuse_swap_page() counted it (do_swap_page calls it before swap_free()).
        """
        return self._kernel.swapcount_of(self._folio, self._index)

    @property
    def swap_stable_writes(self) -> bool:
        """SWP_STABLE_WRITES of the swap device (a page under writeback must not change)."""
        return self._kernel.swap.stable_writes

    @property
    def lru(self) -> bool:
        """folio_test_lru(): on an LRU list (not waiting in a per-CPU batch, not isolated)."""
        return self._folio.lru

    @property
    def locked(self) -> bool:
        """folio_test_locked()."""
        return self._folio.lock is not None

    @property
    def writeback(self) -> bool:
        """folio_test_writeback()."""
        return self._folio.writeback

    @property
    def ksm(self) -> bool:
        """folio_test_ksm()."""
        return self._folio.ksm

    @property
    def anon_exclusive(self) -> bool | None:
        """PageAnonExclusive() of the faulting page; None before v5.19 (no such flag)."""
        if not self._kernel.config.anon_exclusive:
            return None
        return self._folio.pae_of(self._index)

    @property
    def maybe_pinned(self) -> bool:
        """folio_maybe_dma_pinned() (refcount >= 1024 for a small folio: false positives)."""
        return self._folio.maybe_dma_pinned()

    @property
    def pincount(self) -> int:
        """Exact pins of a large folio; for a small one, refcount // 1024 (an estimate)."""
        if self._folio.order:
            return self._folio.pincount
        return self._folio.refcount // GUP_PIN_COUNTING_BIAS

    @property
    def mm_has_pinned(self) -> bool:
        """MMF_HAS_PINNED of the faulting mm."""
        return self._mm.has_pinned

    @property
    def maybe_mapped_shared(self) -> bool | None:
        """folio_maybe_mapped_shared() (v6.15 per-mm tracking); None before v6.15.

        For a small folio it is ``mapcount > 1``, which is exact.
        """
        return self._kernel.maybe_mapped_shared(self._folio)

    @property
    def uffd_wp(self) -> bool:
        """The VMA is registered for userfaultfd write-protection."""
        return self._vma.uffd_wp

    @property
    def softdirty_tracking(self) -> bool:
        """Soft-dirty tracking is active on the VMA (clear_refs cleared VM_SOFTDIRTY)."""
        return self._vma.softdirty_tracking

    def features(self) -> list[float]:
        """The kernel-visible state as floats in :data:`FEATURE_NAMES` order."""
        pae = self.anon_exclusive
        shared = self.maybe_mapped_shared
        return [
            float(self.refcount),
            float(self.mapcount),
            float(self.large_mapcount),
            float(self.order),
            float(self.is_large),
            float(self.pmd_mapped),
            float(self.swapcache),
            float(self.swapcount),
            float(self.lru),
            float(self.locked),
            float(self.writeback),
            float(self.ksm),
            float(pae is not None),
            float(bool(pae)),
            float(self.maybe_pinned),
            float(self.pincount),
            float(self.mm_has_pinned),
            float(bool(shared)),
            float(self.unshare),
            float(self.path == "swap"),
            float(self.path == "pmd"),
            float(self.uffd_wp),
            float(self.softdirty_tracking),
            float(self.locked_by_policy),
        ]

    # -- primitives ----------------------------------------------------------------------
    def drain_lru(self) -> None:
        """lru_add_drain(): drain this CPU's folio batches (cannot reach other CPUs)."""
        self._kernel.lru_add_drain(self.cpu)

    def drain_lru_all(self) -> None:
        """lru_add_drain_all(): drain every CPU's batches (tens of microseconds)."""
        self._kernel.lru_add_drain_all()

    def trylock(self) -> bool:
        """folio_trylock(): take the lock if free; never sleeps."""
        if self.locked_by_policy:
            return True
        self._kernel.charge(self._kernel.costs.lock_ns)
        if self._folio.lock is not None:
            return False
        self._kernel.lock_folio(self._folio, "do_wp_page")
        self.locked_by_policy = True
        return True

    def lock(self) -> None:
        """folio_lock(): sleep until the holder releases the lock, then take it."""
        if self.locked_by_policy:
            return
        self._kernel.charge(self._kernel.costs.lock_ns)
        self._kernel.wait_for_unlock(self._folio)
        self._kernel.lock_folio(self._folio, "do_wp_page")
        self.locked_by_policy = True

    def unlock(self) -> None:
        """folio_unlock() of a lock this fault took."""
        if not self.locked_by_policy:
            raise PolicyError("unlock() without holding the folio lock")
        self._kernel.unlock_folio(self._folio)
        self.locked_by_policy = False

    def free_swap(self) -> bool:
        """try_to_free_swap(): needs the lock; True if the folio left the swapcache."""
        if not self.locked_by_policy:
            raise PolicyError("free_swap() needs the folio lock: call trylock() or lock() first")
        return self._kernel.try_to_free_swap(self._folio)


class OracleFaultView(FaultView):
    """The privileged view given to policies marked ``oracle = True``: adds the ground truth."""

    __slots__ = ("truth",)

    truth: Truth

    @property
    def truly_exclusive(self) -> bool:
        """No observer but the writer can see the page."""
        return self.truth.exclusive

    @property
    def own_gup(self) -> bool:
        """The writer holds a live GUP reference or pin on the page."""
        return self.truth.own_gup


class FaultRecord:
    """One write (or unshare) attempt as the scenario and workload runners report it."""

    __slots__ = (
        "blockers",
        "cpu",
        "exclusive",
        "fault",
        "latency_ns",
        "mm",
        "outcome",
        "page",
        "reason",
        "step",
        "time_ns",
        "violation",
    )

    def __init__(
        self,
        mm: str,
        page: int,
        cpu: int,
        fault: str,
        outcome: str,
        reason: str | None = None,
        violation: str | None = None,
        exclusive: bool | None = None,
        blockers: tuple[str, ...] = (),
        latency_ns: int = 0,
        time_ns: int = 0,
    ) -> None:
        self.step = -1
        self.mm = mm
        self.page = page
        self.cpu = cpu
        self.fault = fault
        self.outcome = outcome
        self.reason = reason
        self.violation = violation
        self.exclusive = exclusive
        self.blockers = blockers
        self.latency_ns = latency_ns
        self.time_ns = time_ns

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form (the scenario runner's ``--json`` attempt entry)."""
        return {
            "step": self.step,
            "mm": self.mm,
            "page": self.page,
            "cpu": self.cpu,
            "fault": self.fault,
            "outcome": self.outcome,
            "reason": self.reason,
            "violation": self.violation,
            "exclusive": self.exclusive,
            "blockers": list(self.blockers),
            "latency_ns": self.latency_ns,
            "time_ns": self.time_ns,
        }
