"""Each era's reuse rule on the situation that tells it apart from its neighbours.

Every test names the upstream commit whose behaviour it pins down.
"""

from __future__ import annotations

import pytest

from cowlab.kernel import Kernel
from tests.conftest import KernelFactory

ALL_PRESETS = (
    "v5.7", "v5.8", "v5.9", "v5.11", "v5.12", "v5.18", "v5.19", "v6.2", "v6.9", "v6.11",
    "v6.12", "v6.15",
)


def forceswap_round(k: Kernel) -> tuple[str, str, str | None, tuple[str, ...]]:
    """One forceswap iteration on page 0 of a fresh mm with a helper thread on CPU 1."""
    mm = k.create_mm("fs")
    k.mmap(mm, 0, 1)
    k.write(mm, 0, 0)
    k.read(mm, 0, 1)  # helper thread: the mm now runs on CPU 1 too
    k.madvise(mm, 0, 1, "pageout", 0)
    k.read(mm, 0, 0)
    rec = k.write(mm, 0, 0)
    return rec.fault, rec.outcome, rec.reason, rec.blockers


def cve_vmsplice_child(k: Kernel) -> tuple[str, str | None]:
    """CVE-2020-29374: child vmsplices the page, unmaps it, parent writes."""
    parent = k.create_mm("parent")
    k.mmap(parent, 0, 1)
    k.write(parent, 0)
    child = k.fork(parent, "child")
    k.gup(child, 0, 1, pin=False, write=False, name="pipe")
    k.munmap(child, 0, 1)
    before = k.gup_read("pipe")
    rec = k.write(parent, 0)
    after = k.gup_read("pipe")
    # The content check and the detector must agree.
    assert (before != after) == (rec.violation == "leak")
    return rec.outcome, rec.violation


class TestSeedPatchVersusV518:
    def test_seed_patch_copies_a_swapped_in_page_waiting_in_the_local_lru_batch(
        self, kernel: KernelFactory
    ) -> None:
        """53a05ad9f21d alone: refcount = PTE + LRU-add batch > 1 + swapcache -> copy."""
        fault, outcome, reason, blockers = forceswap_round(kernel("v5.18", "patched", swap="pmem"))
        assert (fault, outcome, reason) == ("wp", "copy", "early")
        assert blockers == ("lru_batch_local",)

    def test_v5_18_drains_the_local_batch_and_reuses(self, kernel: KernelFactory) -> None:
        """d4c470970d45: lru_add_drain() when !PageLRU lets the refcount reach 1."""
        k = kernel("v5.18", "patched-lru", swap="pmem")
        assert forceswap_round(k)[:2] == ("wp", "reuse")
        assert k.counters["lru_add_drain"] >= 2

    def test_v5_9_copies_the_same_page(self, kernel: KernelFactory) -> None:
        """09854ba94c6a: any extra reference (here the batch) means copy."""
        assert forceswap_round(kernel("v5.9", "baseline", swap="pmem"))[1:3] == ("copy", "early")

    def test_v5_8_reuses_by_mapcount(self, kernel: KernelFactory) -> None:
        """Era A/B: reuse_swap_page() ignores the batch reference."""
        assert forceswap_round(kernel("v5.8", "legacy", swap="pmem"))[:2] == ("wp", "reuse")

    def test_a_remote_batch_reference_is_not_drained_by_a_local_drain(
        self, kernel: KernelFactory
    ) -> None:
        """lru_add_drain() reaches only the local CPU: a page added on CPU 1 is copied."""
        k = kernel("v5.19", "exclusive")
        mm = k.create_mm("p")
        k.mmap(mm, 0, 1)
        k.write(mm, 0, cpu=1)  # new page waits in CPU 1's batch
        child = k.fork(mm, "c")
        k.exit_mm(child)
        rec = k.write(mm, 0, cpu=0)
        assert (rec.outcome, rec.reason, rec.blockers) == ("copy", "lru", ("lru_batch_remote",))


def swapped_page_shared_via_pipe(k: Kernel) -> tuple[str, str, str | None]:
    """The page is swapped out before fork; the child swaps it in, vmsplices it and
    unmaps; the parent then write-faults on its swap PTE."""
    parent = k.create_mm("parent")
    k.mmap(parent, 0, 1)
    k.write(parent, 0)
    k.madvise(parent, 0, 1, "pageout")
    child = k.fork(parent, "child")
    k.read(child, 0)
    k.gup(child, 0, 1, pin=False, write=False, name="pipe")
    k.munmap(child, 0, 1)
    before = k.gup_read("pipe")
    rec = k.write(parent, 0)
    # What the pipe shows agrees with the detector.
    assert (k.gup_read("pipe") != before) == (rec.violation == "leak")
    return rec.fault, rec.outcome, rec.violation


class TestSwapPathV59VersusV518:
    def test_v5_9_reuses_in_do_swap_page_and_leaks_to_the_child_pipe(
        self, kernel: KernelFactory
    ) -> None:
        """Up to v5.17 do_swap_page() kept reuse_swap_page(): mapcount 0 + swapcount 1 -> reuse,
        blind to the child's GUP reference (the CVE's swap instance)."""
        assert swapped_page_shared_via_pipe(kernel("v5.9", "baseline", swap="zram")) == (
            "swap",
            "reuse",
            "leak",
        )

    def test_v5_18_copies_because_do_swap_page_no_longer_decides(
        self, kernel: KernelFactory
    ) -> None:
        """c145e0b47c77: the page is mapped R/O and do_wp_page()'s refcount test copies."""
        fault, outcome, violation = swapped_page_shared_via_pipe(kernel("v5.18"))
        assert (fault, outcome, violation) == ("swap", "copy", None)


def swapin_under_writeback(k: Kernel) -> tuple[str, str, str | None]:
    """Swap out to an asynchronous device; fault it back while writeback is pending."""
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.madvise(mm, 0, 1, "pageout")
    k.read(mm, 0)
    rec = k.write(mm, 0)
    return rec.fault, rec.outcome, rec.reason


class TestWritebackV518VersusV519:
    def test_v5_18_copies_an_exclusive_page_under_writeback(self, kernel: KernelFactory) -> None:
        """53a05ad9f21d: try_to_free_swap() fails under writeback -> copy (writeback)."""
        assert swapin_under_writeback(kernel("v5.18", swap="ssd")) == ("wp", "copy", "writeback")

    def test_v5_19_reuses_it_through_the_swap_pte_exclusive_bit(
        self, kernel: KernelFactory
    ) -> None:
        """1493a1913e34: PAE is restored from the swap PTE, and a PAE page is reused."""
        assert swapin_under_writeback(kernel("v5.19", swap="ssd")) == ("wp", "reuse", None)

    def test_v5_19_copies_when_the_device_needs_stable_writes(self, kernel: KernelFactory) -> None:
        """A page under writeback on a stable-writes device is not treated as exclusive."""
        k = kernel("v5.19", swap="ssd", stable_writes=True)
        assert swapin_under_writeback(k) == ("wp", "copy", "writeback")

    def test_synchronous_devices_never_leave_writeback_pending(self, kernel: KernelFactory) -> None:
        assert swapin_under_writeback(kernel("v5.18", swap="zram"))[1] == "reuse"


class TestCve2020_29374:
    def test_v5_7_leaks_the_parents_write_into_the_childs_pipe(self, kernel: KernelFactory) -> None:
        assert cve_vmsplice_child(kernel("v5.7", "legacy")) == ("reuse", "leak")

    def test_v5_8_breaks_cow_in_the_child_before_gup(self, kernel: KernelFactory) -> None:
        """17839856fd58: the child's GUP takes a write fault first, so the parent's page
        is its own again and is safely reused."""
        assert cve_vmsplice_child(kernel("v5.8", "legacy")) == ("reuse", None)

    @pytest.mark.parametrize(
        ("preset", "policy"),
        [
            ("v5.9", "baseline"),
            ("v5.18", "patched"),
            ("v5.19", "exclusive"),
            ("v5.19", "oracle"),
            ("v5.7", "oracle"),
        ],
    )
    def test_refcount_rules_and_the_oracle_copy(
        self, kernel: KernelFactory, preset: str, policy: str
    ) -> None:
        assert cve_vmsplice_child(kernel(preset, policy)) == ("copy", None)


def pinned_then_write_protected(k: Kernel) -> tuple[str, str, str | None]:
    """cow.c: io_uring fixed buffer, mprotect(R), clear soft-dirty, mprotect(RW), write."""
    mm = k.create_mm("app")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.gup(mm, 0, 1, pin=True, write=True, longterm=True, name="buf")
    k.mprotect(mm, 0, 1, "r")
    k.clear_softdirty(mm)
    k.mprotect(mm, 0, 1, "rw")
    rec = k.write(mm, 0)
    return rec.fault, rec.outcome, rec.violation


class TestPinnedBuffers:
    def test_refcount_rules_copy_under_a_pin_and_break_it(self, kernel: KernelFactory) -> None:
        """v5.9-v5.18: refcount >= 1024 -> copy; the device keeps the old page."""
        assert pinned_then_write_protected(kernel("v5.9")) == ("wp", "copy", "pin_incoherent")
        assert pinned_then_write_protected(kernel("v5.18")) == ("wp", "copy", "pin_incoherent")

    def test_page_anon_exclusive_keeps_the_pin_coherent(self, kernel: KernelFactory) -> None:
        """6c287605fd56: PAE survives mprotect, so the write reuses the pinned page."""
        assert pinned_then_write_protected(kernel("v5.19")) == ("wp", "reuse", None)

    def test_fork_copies_a_pinned_page_for_the_child_from_v5_9(self, kernel: KernelFactory) -> None:
        """70e806e4e645: the parent keeps its pinned page writable; the child gets a copy."""
        for preset in ("v5.9", "v5.19"):
            k = kernel(preset)
            mm = k.create_mm("p")
            k.mmap(mm, 0, 1)
            k.write(mm, 0)
            k.gup(mm, 0, 1, pin=True, write=True, name="rdma")
            child = k.fork(mm, "c")
            assert k.write(mm, 0).fault == "none"  # still writable: no fault at all
            assert k.write(child, 0).fault == "none"  # the child's copy is writable too
            assert k.violations == []

    def test_v5_8_shares_a_pinned_page_at_fork_and_the_parent_write_breaks_the_pin(
        self, kernel: KernelFactory
    ) -> None:
        k = kernel("v5.8")
        mm = k.create_mm("p")
        k.mmap(mm, 0, 1)
        k.write(mm, 0)
        k.gup(mm, 0, 1, pin=True, write=True, name="rdma")
        k.fork(mm, "c")
        rec = k.write(mm, 0)
        assert (rec.outcome, rec.violation) == ("copy", "pin_incoherent")

    def test_ro_pin_on_a_shared_page_unshares_first_from_v5_19(self, kernel: KernelFactory) -> None:
        """c89357e27f20: the R/O pin triggers an unshare fault, so a later write by the
        pinning process reuses the page the pin sees (cow.c "R/O longterm pin")."""
        results = {}
        for preset in ("v5.18", "v5.19"):
            k = kernel(preset)
            mm = k.create_mm("p")
            k.mmap(mm, 0, 1)
            k.write(mm, 0)
            k.fork(mm, "c")
            faults = [r.fault for r in k.gup(mm, 0, 1, pin=True, write=False, name="ro")]
            rec = k.write(mm, 0)
            coherent = k.gup_read("ro") == [k.read(mm, 0)]
            results[preset] = (faults, rec.outcome, rec.violation, coherent)
        assert results["v5.18"] == ([], "copy", "pin_incoherent", False)
        assert results["v5.19"] == (["unshare"], "reuse", None, True)


class TestKsm:
    def _merged_pair(self, k: Kernel) -> tuple[Kernel, object]:
        parent = k.create_mm("p")
        k.mmap(parent, 0, 2)
        k.madvise(parent, 0, 2, "mergeable")
        k.write(parent, 0, data="same")
        child = k.fork(parent, "c")
        k.write(parent, 0, data="same")  # parent copies; both pages hold equal data
        assert k.ksm_merge([(parent, 0), (child, 0)]) == 2
        k.exit_mm(child)
        return k, parent

    def test_v5_8_reuses_a_ksm_page_mapped_once(self, kernel: KernelFactory) -> None:
        """reuse_ksm_page() (removed for v5.9): one mapping, not in swapcache -> reuse."""
        k, parent = self._merged_pair(kernel("v5.8"))
        rec = k.write(parent, 0)  # type: ignore[arg-type]
        assert (rec.outcome, rec.violation) == ("reuse", None)

    def test_v5_9_always_copies_a_ksm_page(self, kernel: KernelFactory) -> None:
        k, parent = self._merged_pair(kernel("v5.9"))
        rec = k.write(parent, 0)  # type: ignore[arg-type]
        assert (rec.outcome, rec.reason, rec.blockers) == ("copy", "ksm", ("ksm",))
        assert k.counters["cow_ksm"] == 1


class TestSwapinAndMprotectUpgrades:
    def test_mprotect_rw_maps_an_exclusive_dirty_page_writable_only_from_v6_0(
        self, kernel: KernelFactory
    ) -> None:
        """64fe24a3e05e (v6.0): can_change_pte_writable(); before it the write faults."""
        faults = {}
        for preset in ("v5.19", "v6.9"):
            k = kernel(preset)
            mm = k.create_mm("m")
            k.mmap(mm, 0, 1)
            k.write(mm, 0)
            k.mprotect(mm, 0, 1, "r")
            k.mprotect(mm, 0, 1, "rw")
            faults[preset] = k.write(mm, 0).fault
        assert faults == {"v5.19": "wp", "v6.9": "none"}

    def test_mprotect_does_not_upgrade_after_clear_softdirty(self, kernel: KernelFactory) -> None:
        k = kernel("v6.9")
        mm = k.create_mm("m")
        k.mmap(mm, 0, 1)
        k.write(mm, 0)
        k.mprotect(mm, 0, 1, "r")
        k.clear_softdirty(mm)
        k.mprotect(mm, 0, 1, "rw")
        assert k.write(mm, 0).outcome == "reuse"

    def test_v6_11_maps_an_exclusive_swapped_in_page_writable_on_a_read_fault(
        self, kernel: KernelFactory
    ) -> None:
        """c18160dba5ff: no later write fault on v6.11; v6.9 still takes one."""
        faults = {}
        for preset in ("v6.9", "v6.11"):
            k = kernel(preset)
            mm = k.create_mm("m")
            k.mmap(mm, 0, 1)
            k.write(mm, 0)
            k.madvise(mm, 0, 1, "pageout")
            k.read(mm, 0)
            faults[preset] = k.write(mm, 0).fault
        assert faults == {"v6.9": "wp", "v6.11": "none"}

    def test_v5_18_do_swap_page_maps_a_bypassed_page_writable_on_a_write_fault(
        self, kernel: KernelFactory
    ) -> None:
        """c145e0b47c77: a fresh page that skipped the swapcache is certainly exclusive."""
        k = kernel("v5.18", swap="zram")
        mm = k.create_mm("m")
        k.mmap(mm, 0, 1)
        k.write(mm, 0)
        k.madvise(mm, 0, 1, "pageout")
        rec = k.write(mm, 0)
        assert (rec.fault, rec.outcome, rec.reason) == ("swap", "reuse", "swapin_exclusive")


class TestCosts:
    def test_forceswap_reuse_and_copy_match_the_published_cycle_counts(
        self, kernel: KernelFactory
    ) -> None:
        """~1606 cycles for a reused write after swap-in (v5.8), ~10534 copied (v5.9)."""
        reuse = kernel("v5.8", swap="pmem")
        copy = kernel("v5.9", swap="pmem")
        forceswap_round(reuse)
        forceswap_round(copy)
        cycles = [k.costs.cycles(k.records[-1].latency_ns) for k in (reuse, copy)]
        assert cycles[0] == pytest.approx(1606, rel=0.05)
        assert cycles[1] == pytest.approx(10534, rel=0.05)
        assert copy.counters["nr_tlb_remote_flush"] > reuse.counters["nr_tlb_remote_flush"]


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_every_preset_runs_its_own_policy_on_the_basic_fork_cycle(
    kernel: KernelFactory, preset: str
) -> None:
    k = kernel(preset)
    mm = k.create_mm("p")
    k.mmap(mm, 0, 2)
    k.write(mm, 0)
    k.write(mm, 1)
    k.lru_add_drain_all()  # so the refcount rules see no batch reference
    child = k.fork(mm, "c")
    assert k.write(mm, 0).outcome == "copy"
    assert k.write(child, 0).outcome == "reuse"
    assert k.read(child, 1) == k.read(mm, 1)
    assert k.read(child, 0) != k.read(mm, 0)
    assert k.violations == []


def test_a_swapped_in_page_survives_a_full_lru_batch_draining(kernel: KernelFactory) -> None:
    """Regression: the 15th synchronous swap-in fills the LRU-add batch, which drains at
    once; the fault's own reference must already be held or the page is freed."""
    for preset in ("v5.18", "v6.9"):
        k = kernel(preset, swap="zram")
        mm = k.create_mm("m")
        k.mmap(mm, 0, 64)
        for p in range(64):
            k.write(mm, p)
        k.madvise(mm, 0, 64, "pageout")
        for p in range(64):
            k.read(mm, p)
        assert k.check_invariants() == []


def test_reusing_a_page_another_swap_pte_refers_to_leaks_through_the_swapcache(
    kernel: KernelFactory,
) -> None:
    """Swap PTEs hold no page reference: reusing the swapcache folio while the child's swap
    PTE still refers to the slot lets the child map the parent's new data later."""
    k = kernel("v5.9", "always-reuse", swap="ssd")
    parent = k.create_mm("parent")
    k.mmap(parent, 0, 1)
    k.write(parent, 0, data="old")
    k.madvise(parent, 0, 1, "pageout")
    child = k.fork(parent, "child")
    rec = k.write(parent, 0, data="secret")
    assert (rec.fault, rec.outcome, rec.violation) == ("swap", "reuse", "leak")
    assert k.read(child, 0) == "secret"
    # The same sequence under the era's own rule copies, and the child keeps its data.
    k = kernel("v5.9", swap="ssd")
    parent = k.create_mm("parent")
    k.mmap(parent, 0, 1)
    k.write(parent, 0, data="old")
    k.madvise(parent, 0, 1, "pageout")
    child = k.fork(parent, "child")
    assert k.write(parent, 0, data="secret").violation is None
    assert k.read(child, 0) == "old"
