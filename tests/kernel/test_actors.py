"""Background actors (cowlab/kernel/actors.py) and device behaviour, each shown through
what a reuse policy sees at the write fault it causes.

Every test records the kernel-visible state the policy was shown (``Recorder``) and the
decision, so the effect of the actor is pinned down where it matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cowlab.geometry import pte_pfn, swp_offset
from cowlab.kernel import Kernel, Machine, get_preset
from cowlab.kernel.actors import (
    ActorsConfig,
    KcompactdConfig,
    KsmdConfig,
    KswapdConfig,
    LruDrainAllConfig,
    start_actors,
)
from cowlab.kernel.decision import Decision
from cowlab.kernel.engine import Engine, Thread, ThreadGen
from cowlab.kernel.fault import FaultView
from cowlab.kernel.folio import Folio
from cowlab.kernel.mm import MM
from cowlab.plugins import get_registry


@dataclass
class Seen:
    """What one decision was shown, and what was decided."""

    page: int
    cpu: int
    refcount: int
    lru: bool
    locked: bool
    ksm: bool
    swapcache: bool
    writeback: bool
    outcome: str
    reason: str | None


class Recorder:
    """Wraps a policy and records the view of every decision it makes."""

    def __init__(self, inner: str) -> None:
        self.inner = get_registry().make_policy(inner)
        self.name = f"recorded-{inner}"
        self.seen: list[Seen] = []

    def reset(self, seed: int | None) -> None:
        self.inner.reset(seed)

    def decide(self, fault: FaultView) -> Decision:
        state = (fault.page, fault.cpu, fault.refcount, fault.lru, fault.locked, fault.ksm,
                 fault.swapcache, fault.writeback)
        decision = self.inner.decide(fault)
        self.seen.append(Seen(*state, decision.kind, decision.reason))
        return decision


@dataclass
class Host:
    """The two things start_actors() needs of a run."""

    engine: Engine
    seed: int = 0


def setup(preset: str, policy: str, **machine: object) -> tuple[Kernel, Engine, Recorder]:
    recorder = Recorder(policy)
    config = get_preset(preset)
    k = Kernel(config, recorder, machine=Machine(**machine))  # type: ignore[arg-type]
    return k, Engine(k), recorder


def folio_of(k: Kernel, mm: MM, page: int) -> Folio:
    return k.frames[pte_pfn(mm.pt[page])]


def wait_until(t: Thread, cond: object, step_ns: int = 500) -> ThreadGen:
    """Poll ``cond()`` every ``step_ns`` (sleeping) until it holds."""
    while not cond():  # type: ignore[operator]
        yield from t.sleep(step_ns)


# ======================================================================================
# kswapd
# ======================================================================================
def _fill(k: Kernel, engine: Engine, pages: int, think_ns: int) -> list[int]:
    """An app writing ``pages`` new pages, ``think_ns`` apart; returns free-page samples
    taken every 3 us once memory is first short."""
    mm = k.create_mm("app")
    k.mmap(mm, 0, pages)
    samples: list[int] = []
    ram = k.machine.ram_pages
    assert ram is not None

    def app(t: Thread) -> ThreadGen:
        for p in range(pages):
            yield from t.write(mm, p)
            yield from t.think(think_ns)

    def sampler(t: Thread) -> ThreadGen:
        while True:
            yield from t.sleep(3_000)
            free = k.nr_free_pages
            assert free is not None
            if samples or free < k.watermarks[2]:
                samples.append(free)

    engine.spawn("app", app, cpu=0, mm=mm)
    engine.spawn("sampler", sampler, cpu=0, daemon=True)
    return samples


def test_kswapd_keeps_free_memory_above_the_low_watermark_so_faults_never_reclaim() -> None:
    k, engine, _ = setup("v5.19", "exclusive", cpus=2, swap="pmem", ram_pages=1024)
    wmin, low, high = k.watermarks
    samples = _fill(k, engine, 2048, think_ns=5_000)
    actors = start_actors(Host(engine), ActorsConfig(kswapd=KswapdConfig(period_ns=10_000)))
    engine.run()
    stats = actors.stats["kswapd"]
    assert stats.reclaimed > 900 and k.counters["pswpout"] >= stats.reclaimed
    # Every balancing ends at the high watermark; between two wakes the app allocates at
    # most a couple of pages, so free memory never gets near min: no fault reclaims.
    assert stats.free_after_balance and min(stats.free_after_balance) >= high
    assert min(samples) >= low - 3 > wmin
    assert k.counters["allocstall"] == 0
    assert k.check_invariants() == []


def test_without_kswapd_the_faulting_thread_reclaims_itself() -> None:
    k, engine, _ = setup("v5.19", "exclusive", cpus=2, swap="pmem", ram_pages=1024)
    samples = _fill(k, engine, 2048, think_ns=5_000)
    engine.run()
    assert k.counters["allocstall"] > 0
    assert min(samples) <= k.watermarks[0]


# ======================================================================================
# device behaviour: writeback
# ======================================================================================
def _under_writeback(k: Kernel, mm: MM) -> int | None:
    """A page of ``mm`` swapped out to a folio still under writeback (None if none)."""
    for page, pte in mm.pt.items():
        if pte and not pte & 1:
            folio = k.swap.cache.get(swp_offset(pte))
            if folio is not None and folio.writeback:
                return page
    return None


def _swap_under_kswapd(swap: str) -> Recorder:
    """Allocate past the RAM size under kswapd; every 4th page, touch again (read, then
    write) a page kswapd is writing out if there is one, else an old page."""
    k, engine, recorder = setup("v5.18", "patched-lru", cpus=2, swap=swap, ram_pages=512)
    mm = k.create_mm("app")
    k.mmap(mm, 0, 1500)
    start_actors(Host(engine), ActorsConfig(kswapd=KswapdConfig(period_ns=5_000)))

    def app(t: Thread) -> ThreadGen:
        for p in range(1500):
            yield from t.write(mm, p)
            # Slow enough that writeback (200 us on the SSD) keeps up with allocation.
            yield from t.think(3_000)
            if p >= 600 and p % 4 == 0:
                victim = _under_writeback(k, mm)
                victim = p - 600 if victim is None else victim
                yield from t.read(mm, victim)
                yield from t.write(mm, victim)

    engine.spawn("app", app, cpu=0, mm=mm)
    engine.run()
    assert k.check_invariants() == []
    return recorder


def test_a_copy_is_blocked_by_writeback_on_an_asynchronous_device_only() -> None:
    """kswapd swaps out; on an SSD the folio stays in the swapcache under writeback for
    200 us, so v5.18 cannot free the swap entry and copies (anon_wp_copy_writeback).
    kswapd puts the folio straight back on the LRU (move_folios_to_lru()), never through
    a per-CPU batch, so no copy is blamed on a batch (anon_wp_copy_lru). On pmem the
    write completes inline, the folio is freed, and the refault reuses."""
    ssd = _swap_under_kswapd("ssd")
    pmem = _swap_under_kswapd("pmem")
    on_ssd = [s for s in ssd.seen if s.writeback]
    assert all(s.swapcache and s.outcome == "copy" for s in on_ssd)
    reasons = [s.reason for s in on_ssd]
    assert reasons.count("writeback") > 50 and set(reasons) == {"writeback"}
    assert pmem.seen and not any(s.writeback for s in pmem.seen)
    assert all(s.outcome == "reuse" for s in pmem.seen)


# ======================================================================================
# a remote LRU batch after the thread migrated
# ======================================================================================
@pytest.mark.parametrize("migrate", [False, True])
def test_a_thread_that_migrated_after_swap_in_leaves_a_remote_batch_reference(
    migrate: bool,
) -> None:
    """forceswap's read + write, with the scheduler moving the thread to CPU 1 in
    between: the swapped-in page waits in CPU 0's LRU-add batch, which v5.18's local
    lru_add_drain() on CPU 1 cannot drain, so the write copies (anon_wp_copy_lru)."""
    k, engine, recorder = setup("v5.18", "patched-lru", cpus=2, swap="pmem")
    mm = k.create_mm("app")
    k.mmap(mm, 0, 1)

    def app(t: Thread) -> ThreadGen:
        yield from t.write(mm, 0)
        yield from t.madvise(mm, 0, 1, "pageout")
        yield from t.read(mm, 0)  # swap-in on CPU 0: the folio waits in CPU 0's batch
        if migrate:
            engine.migrate(t, 1)
            yield from t.sleep(0)
        yield from t.write(mm, 0)

    engine.spawn("app", app, cpu=0, mm=mm)
    engine.run()
    [seen] = recorder.seen
    assert (seen.refcount, seen.lru) == (2, False)
    if migrate:
        assert (seen.cpu, seen.outcome, seen.reason) == (1, "copy", "lru")
        assert k.records[-1].blockers == ("lru_batch_remote",)
    else:
        assert (seen.cpu, seen.outcome) == (0, "reuse")


# ======================================================================================
# kcompactd: migration holds the lock
# ======================================================================================
def _migration_race(unmap_delay_ns: int) -> tuple[Kernel, Recorder, list[int]]:
    """A read-only exclusive page (soft-dirty tracking write-protected it) migrated by
    kcompactd on CPU 2 while the app on CPU 1 writes it."""
    k, engine, recorder = setup("v5.18", "patched-lru", cpus=3, swap="pmem")
    mm = k.create_mm("app")
    k.mmap(mm, 0, 1)
    times: list[int] = []
    config = KcompactdConfig(rate=100_000, duration_ns=40_000, unmap_delay_ns=unmap_delay_ns)

    def app(t: Thread) -> ThreadGen:
        yield from t.write(mm, 0)
        yield from t.call(k.lru_add_drain, t.cpu)
        yield from t.call(k.clear_softdirty, mm)
        folio = folio_of(k, mm, 0)
        yield from wait_until(t, lambda: folio.locked)
        times.append(k.clock.now)
        yield from t.write(mm, 0)
        times.append(k.clock.now)

    engine.spawn("app", app, cpu=1, mm=mm)
    start_actors(Host(engine), ActorsConfig(kcompactd=config))
    engine.run()
    assert k.check_invariants() == []
    return k, recorder, times


def test_a_write_to_a_page_under_migration_waits_for_it_then_finds_a_remote_batch() -> None:
    """The PTE is a migration entry while the folio is copied: the write sleeps
    (migration_entry_wait) until the 40 us migration ends, then faults on the new folio,
    which waits in another CPU's LRU-add batch (upstream the migrating CPU's, here
    CPU 2; the kernel model uses CPU 0's): a remote reference for the writer on CPU 1,
    so v5.18 copies although the page is exclusive."""
    k, recorder, (before, after) = _migration_race(unmap_delay_ns=0)
    assert k.counters["pgmigrate_success"] >= 1
    assert after - before >= 35_000
    seen = recorder.seen[0]
    assert (seen.refcount, seen.lru, seen.locked) == (2, False, False)
    assert (seen.outcome, seen.reason) == ("copy", "lru")


def test_a_write_while_migration_holds_the_lock_before_unmapping_fails_its_trylock() -> None:
    """With an unmap delay the folio is locked while still mapped (folio_trylock()
    before try_to_migrate()): do_wp_page() sees it locked and v5.18 copies at once."""
    _, recorder, (before, after) = _migration_race(unmap_delay_ns=20_000)
    seen = recorder.seen[0]
    assert (seen.refcount, seen.locked) == (1, True)
    assert (seen.outcome, seen.reason) == ("copy", "lock")
    assert after - before < 10_000  # no waiting: the copy is immediate


# ======================================================================================
# ksmd: the merge window and KSM pages
# ======================================================================================
def _ksm_pair(write_during_window: bool) -> tuple[Kernel, Recorder, dict[str, int]]:
    k, engine, recorder = setup("v5.18", "patched-lru", cpus=3, swap="pmem")
    a = k.create_mm("vm-a")
    b = k.create_mm("vm-b")
    for mm in (a, b):
        k.mmap(mm, 0, 1)
        k.madvise(mm, 0, 1, "mergeable")
    config = KsmdConfig(pages_to_scan=10, sleep_ns=10_000, merge_window_ns=50_000)
    actors = start_actors(Host(engine), ActorsConfig(ksmd=config))

    def guest(t: Thread) -> ThreadGen:
        assert t.mm is not None
        yield from t.write(t.mm, 0, "same content")
        if t.mm is not a:
            return
        if write_during_window:
            folio = folio_of(k, a, 0)
            yield from wait_until(t, lambda: folio.lock is not None)
            assert folio.lock is not None and folio.lock.reason == "ksm"
        else:
            yield from wait_until(t, lambda: folio_of(k, a, 0).ksm)
        yield from t.write(a, 0)
        yield from t.sleep(100_000)  # ksmd finishes its pass meanwhile

    engine.spawn("vcpu-a", guest, cpu=0, mm=a)
    engine.spawn("vcpu-b", guest, cpu=1, mm=b)
    engine.run()
    k.io_complete()  # the lock of the window ends
    assert k.check_invariants() == []
    stats = actors.stats["ksmd"]
    return k, recorder, {"attempts": stats.attempts, "merges": stats.merges}


def test_a_write_during_a_ksm_merge_window_finds_the_page_locked_and_copies() -> None:
    """ksmd write-protects both pages and holds their locks for the merge window: the
    guest's write faults, its trylock fails, and v5.18 copies (anon_wp_copy_lock); the
    merge is then abandoned because the content changed."""
    k, recorder, stats = _ksm_pair(write_during_window=True)
    [seen] = recorder.seen
    assert (seen.refcount, seen.locked, seen.ksm) == (1, True, False)
    assert (seen.outcome, seen.reason) == ("copy", "lock")
    assert stats == {"attempts": 1, "merges": 0}
    assert k.counters["ksm_merged"] == 0


def test_a_write_to_a_merged_ksm_page_is_always_copied() -> None:
    k, recorder, stats = _ksm_pair(write_during_window=False)
    assert stats["merges"] == 1 and k.counters["ksm_merged"] == 1
    [seen] = recorder.seen
    assert (seen.ksm, seen.outcome, seen.reason) == (True, "copy", "ksm")
    assert k.counters["cow_ksm"] == 1


# ======================================================================================
# the periodic lru_add_drain_all() caller
# ======================================================================================
@pytest.mark.parametrize("drainer", [False, True])
def test_a_periodic_drain_all_removes_the_batch_references_that_make_v5_9_copy(
    drainer: bool,
) -> None:
    """New pages wait in CPU 0's LRU-add batch (it holds 15): after fork + child exit
    v5.9 sees refcount 2 and copies; a periodic lru_add_drain_all() (here every 5 us)
    empties the batch first, and the same writes reuse."""
    k, engine, recorder = setup("v5.9", "baseline", cpus=2)
    mm = k.create_mm("app")
    k.mmap(mm, 0, 4)

    def app(t: Thread) -> ThreadGen:
        for p in range(4):
            yield from t.write(mm, p)
        child = yield from t.fork(mm, "child")
        yield from t.call(k.exit_mm, child)
        yield from t.sleep(20_000)
        for p in range(4):
            yield from t.write(mm, p)

    engine.spawn("app", app, cpu=0, mm=mm)
    if drainer:
        start_actors(Host(engine), ActorsConfig(lru_drain_all=LruDrainAllConfig(5_000)))
    engine.run()
    refcounts = {s.refcount for s in recorder.seen}
    outcomes = {(s.outcome, s.reason) for s in recorder.seen}
    if drainer:
        assert refcounts == {1} and outcomes == {("reuse", None)}
    else:
        assert refcounts == {2} and outcomes == {("copy", "early")}


# ======================================================================================
# swap readahead: the lock of an in-flight read
# ======================================================================================
def test_a_write_to_a_readahead_page_whose_read_is_in_flight_sleeps_instead_of_copying() -> None:
    """A fault on page 1 reads its neighbour page 2 too (an asynchronous device, readahead
    window 2): page 2's folio is locked while its read is in flight. A write to page 2
    then goes through do_swap_page(), which sleeps on the lock (VM_FAULT_RETRY) and maps
    the page only once the read completed, so do_wp_page() never sees a folio locked by
    a read: the policy is asked afterwards, with the lock free.

    That is the kernel's structure too: only a folio that nobody maps yet is locked for
    a swap-in read, so a trylock in do_wp_page() cannot fail because of one.
    """
    k, engine, recorder = setup("v5.18", "patched-lru", cpus=2, swap="ssd")
    mm = k.create_mm("app")
    k.mmap(mm, 0, 4)
    read_done: list[int] = []
    writes: list[tuple[int, int]] = []

    def first(t: Thread) -> ThreadGen:
        for p in range(4):
            yield from t.write(mm, p)
        yield from t.madvise(mm, 0, 4, "pageout")  # slots 1..4, under writeback
        yield from t.sleep(300_000)  # writeback completes
        yield from t.call(k.reclaim, 8, t.cpu)  # reclaim frees the clean folios
        assert not any(f.swapcache for f in set(k.frames.values()))
        yield from t.read(mm, 0)  # slot 1: window 2 (adjacent to slot 0), reads slot 1
        yield from t.read(mm, 1)  # slot 2: window 2, reads slots 2 and 3 (readahead)
        read_done.append(k.clock.now)

    def second(t: Thread) -> ThreadGen:
        yield from wait_until(t, lambda: 3 in k.swap.cache and k.swap.cache[3].locked, 1_000)
        ra = k.swap.cache[3]
        assert ra.readahead and ra.lock is not None and ra.lock.reason == "swapin_read"
        start = k.clock.now
        rec = yield from t.write(mm, 2)
        writes.append((start, k.clock.now))
        assert rec.fault == "swap"

    engine.spawn("first", first, cpu=0, mm=mm)
    engine.spawn("second", second, cpu=1, mm=mm)
    engine.run()
    [(start, end)] = writes
    assert end - start >= 100_000  # slept until the 150 us read completed
    assert k.counters["swap_ra"] >= 1 and k.counters["anon_wp_copy_lock"] == 0
    assert not any(s.locked for s in recorder.seen)
    assert k.check_invariants() == []


def test_actor_configs_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="period_ns"):
        KswapdConfig(period_ns=0)
    with pytest.raises(ValueError, match="rate"):
        KcompactdConfig(rate=0)
    with pytest.raises(ValueError, match="merge_window_ns"):
        KsmdConfig(merge_window_ns=-1)
    with pytest.raises(ValueError, match="period_ns"):
        LruDrainAllConfig(period_ns=0)
    assert ActorsConfig(kswapd=KswapdConfig(), ksmd=KsmdConfig()).enabled == ("kswapd", "ksmd")
