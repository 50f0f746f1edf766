"""Migration entries, the lock held across the copy, and memory pressure."""

from __future__ import annotations

import pytest

from cowlab.kernel import KernelError
from cowlab.kernel.engine import Engine, Thread, ThreadGen
from cowlab.kernel.migrate import is_migration_entry
from tests.conftest import KernelFactory


def mapped_folio(k, mm, page):  # type: ignore[no-untyped-def]
    from cowlab.geometry import pte_pfn

    return k.frames[pte_pfn(mm.pt[page])]


def test_a_write_during_migration_waits_and_then_reuses_the_new_exclusive_page(
    kernel: KernelFactory,
) -> None:
    """The PTE is a migration entry while the copy runs (the folio is locked); the write
    sleeps (migration_entry_wait) and afterwards finds the new page, still exclusive."""
    k = kernel("v5.19")
    engine = Engine(k)
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1)
    faults: list[tuple[str, str, int]] = []

    def app(t: Thread) -> ThreadGen:
        yield from t.write(mm, 0)
        yield from t.call(k.lru_add_drain, 0)
        folio = mapped_folio(k, mm, 0)
        assert (yield from t.call(k.migrate, folio, 50_000))
        assert is_migration_entry(mm.pt[0])
        rec = yield from t.write(mm, 0)
        faults.append((rec.fault, rec.outcome, k.clock.now))

    engine.spawn("app", app, cpu=0, mm=mm)
    engine.run()
    assert k.counters["pgmigrate_success"] == 1
    # The write was retried after the 50 us migration and needed no decision: the page
    # came back writable (a writable migration entry).
    assert faults[0][0] == "none" and faults[0][2] >= 50_000
    assert k.check_invariants(safe_run=True) == []


def test_a_pinned_page_is_not_migrated_and_keeps_its_pin(kernel: KernelFactory) -> None:
    """v5.18: the refcount check after unmapping fails and the page is put back;
    v5.19: page_try_share_anon_rmap() refuses to unmap the pinned exclusive page at all."""
    for preset, starts in (("v5.18", True), ("v5.19", False)):
        k = kernel(preset)
        mm = k.create_mm("m")
        k.mmap(mm, 0, 1)
        k.write(mm, 0)
        k.gup(mm, 0, 1, pin=True, write=True, name="dma")
        k.lru_add_drain_all()
        folio = mapped_folio(k, mm, 0)
        assert k.migrate(folio, 10_000) is starts
        k.io_complete()
        assert k.counters["pgmigrate_fail"] == 1
        assert mapped_folio(k, mm, 0) is folio  # put back where it was
        assert k.write(mm, 0).fault == "none"  # and still writable
        assert k.check_invariants() == []


def test_a_failed_trylock_makes_v5_18_copy_with_reason_lock(
    kernel: KernelFactory,
) -> None:
    """anon_wp_copy_lock's cause: the folio is locked by someone else (here a KSM merge
    attempt) when do_wp_page() tries the lock, so v5.18 copies although the page is
    exclusive again (the child has exited)."""
    k = kernel("v5.18")
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1)
    k.write(mm, 0)
    k.lru_add_drain_all()
    folio = mapped_folio(k, mm, 0)
    # Simulate a short-lived lock holder (e.g. a KSM merge attempt) on a mapped page.
    k.lock_folio(folio, "ksm", k.clock.now + 10_000)
    child = k.fork(mm, "c")
    k.exit_mm(child)
    rec = k.write(mm, 0)
    assert (rec.outcome, rec.reason, rec.blockers) == ("copy", "lock", ("lock",))
    assert k.counters["anon_wp_copy_lock"] == 1


def test_memory_pressure_reclaims_before_a_fault_can_run_out(kernel: KernelFactory) -> None:
    k = kernel("v5.19", swap="zram", ram_pages=512)
    mm = k.create_mm("m")
    k.mmap(mm, 0, 2000)
    for p in range(2000):
        k.write(mm, p)
    assert k.counters["allocstall"] > 0 and k.counters["pswpout"] > 0
    assert k.nr_free_pages is not None and k.nr_free_pages >= 0
    assert k.check_invariants() == []


def test_running_out_of_memory_without_swap_room_is_a_clear_error(
    kernel: KernelFactory,
) -> None:
    k = kernel("v5.19", swap="zram", ram_pages=256, swap_slots=8)
    mm = k.create_mm("m")
    k.mmap(mm, 0, 1000)
    with pytest.raises(KernelError, match="out of memory"):
        for p in range(1000):
            k.write(mm, p)
