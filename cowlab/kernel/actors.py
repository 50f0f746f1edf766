"""Background kernel actors: kswapd, kcompactd, ksmd and the lru_add_drain_all() callers.

Each actor is a daemon :class:`~cowlab.kernel.engine.Thread` body (a kernel thread: no
mm) that wakes at a rate, changes kernel state through the kernel's public operations,
and goes back to sleep. They are what makes the state a reuse policy sees *move* between
two faults of a workload: a page swapped out and refaulted, a folio locked or unmapped
for migration, a folio locked for a KSM merge attempt, a remote LRU batch drained.

Each actor has a frozen config dataclass (validated on construction) whose presence in
:class:`ActorsConfig` switches it on. :func:`start_actors` spawns the enabled ones on
one CPU (the machine's last by default: a workload that uses actors asks for an extra
CPU in ``machine_overrides()``), each with its own RNG derived from the run's seed, so
switching one actor on does not change the random stream of the workload or of another
actor.

Upstream references:

* kswapd: mm/vmscan.c ``kswapd()`` / ``balance_pgdat()``; woken by the allocator
  (``wakeup_kswapd()``) when a zone falls below its low watermark, it reclaims
  SWAP_CLUSTER_MAX (32) pages at a time until the zone is above its high watermark.
* kcompactd: mm/compaction.c ``kcompactd()`` -> ``migrate_pages()`` (mm/migrate.c);
  the folio is locked from before it is unmapped (``migrate_folio_unmap()``:
  ``folio_trylock()`` then ``try_to_migrate()``) until the new folio is mapped.
* ksmd: mm/ksm.c ``ksm_scan_thread()`` / ``ksm_do_scan()``: every ``sleep_millisecs``
  (20) it scans ``pages_to_scan`` (100) pages of MADV_MERGEABLE areas; a scan round
  starts with ``lru_add_drain_all()`` (``scan_get_next_rmap_item()``); a page equal to
  one in the stable tree (KSM pages) or the unstable tree (seen this round) is merged
  by ``try_to_merge_one_page()``, which takes the page lock with ``trylock_page()``,
  write-protects the PTE (``write_protect_page()``, clearing PageAnonExclusive), then
  replaces the page (``replace_page()``) and unlocks.
* the periodic ``lru_add_drain_all()`` callers: mlock / munlock (``mlock_fixup()`` on
  older kernels), memory hotplug and CMA (``lru_cache_disable()``), compaction
  (``compact_nodes()``), ``madvise(MADV_WILLNEED)`` on shmem, KSM's scan start, and
  ``/proc/sys/vm/compact_memory``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cowlab.geometry import pte_pfn
from cowlab.kernel.engine import Engine, Thread, ThreadBody, ThreadGen
from cowlab.kernel.folio import ZERO_PFN, Folio
from cowlab.kernel.ksm import write_protect_page
from cowlab.kernel.mm import MM

if TYPE_CHECKING:
    from cowlab.kernel.kernel import Kernel


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class KswapdConfig:
    """kswapd: keeps free memory between the low and the high watermark.

    The kernel model has no allocator wake-up, so kswapd polls the free page count every
    ``period_ns``; below the low watermark it reclaims ``batch`` pages at a time with
    ``Kernel.reclaim()`` on its own CPU until free memory is above the high watermark or
    ``retries`` passes in a row reclaim nothing (the first pass over recently used pages
    only clears their accessed bits; on an asynchronous device a pass starts writeback
    and frees nothing until it completes). With unlimited RAM (``Machine.ram_pages``
    None) it never has work.
    """

    #: How often it looks at the free page count (the wake-up latency), in ns.
    period_ns: int = 10_000
    #: Pages per reclaim pass (SWAP_CLUSTER_MAX).
    batch: int = 32
    #: Passes in a row without progress before it goes back to sleep (balance_pgdat()
    #: raises the scan priority instead; the model's scan is not priority-limited).
    retries: int = 3

    def __post_init__(self) -> None:
        _positive("kswapd period_ns", self.period_ns)
        _positive("kswapd batch", self.batch)
        _positive("kswapd retries", self.retries)


@dataclass(frozen=True)
class KcompactdConfig:
    """kcompactd / NUMA-balancing migration of LRU folios at a rate.

    Each wake picks a mapped anonymous folio on the LRU at random (``tries`` samples of
    a random page of a random VMA of a live mm; compaction's migrate scanner walks
    physical memory, which the model has no cheap index of) and migrates it with
    ``Kernel.migrate(folio, duration_ns)``: the folio stays locked and unmapped behind
    migration entries for ``duration_ns``, and a fault on one of its pages waits for
    the migration to end, then finds the new folio in an LRU-add batch (upstream the
    migrating CPU's, ``folio_add_lru()`` in ``migrate_folio_move()``; the kernel model
    queues it on CPU 0's for now). With ``unmap_delay_ns`` > 0 the folio is first locked, still
    mapped, for that long (``folio_trylock()`` before ``try_to_migrate()``), so a write
    fault in that window sees it locked and its trylock fails.
    """

    #: Folios migrated per simulated second.
    rate: float = 1_000.0
    #: How long the lock and the migration entries are held (unmap, copy, remap), ns.
    duration_ns: int = 20_000
    #: Time the folio is locked but still mapped before it is unmapped, ns (0: none).
    unmap_delay_ns: int = 0
    #: Random pages looked at per wake to find a migratable folio.
    tries: int = 8

    def __post_init__(self) -> None:
        _positive("kcompactd rate", self.rate)
        if self.rate > 1e9:
            raise ValueError(f"kcompactd rate must be at most 1e9 per second, got {self.rate}")
        _positive("kcompactd duration_ns", self.duration_ns)
        if self.unmap_delay_ns < 0:
            raise ValueError(f"kcompactd unmap_delay_ns must be >= 0, got {self.unmap_delay_ns}")
        _positive("kcompactd tries", self.tries)


@dataclass(frozen=True)
class KsmdConfig:
    """ksmd: scans MADV_MERGEABLE pages and merges pages of equal content.

    Every ``sleep_ns`` it scans ``pages_to_scan`` pages in (mm, address) order. A page
    whose content equals a KSM page's (the stable tree) or a page seen earlier in the
    round (the unstable tree) is merged. The merge attempt write-protects the
    candidates and holds their page locks for ``merge_window_ns`` (the ksmd thread is
    busy meanwhile); a write fault in the window finds a read-only PTE and a locked
    folio, so its trylock fails. At the end of the window the merge is done with
    ``Kernel.ksm_merge()`` if the pages still hold equal content.

    Simplification: the kernel only merges a page whose checksum did not change since
    the previous round (volatile pages are skipped); this model merges at first sight.
    """

    #: Pages scanned per wake (/sys/kernel/mm/ksm/pages_to_scan, default 100).
    pages_to_scan: int = 100
    #: Sleep between wakes, ns (/sys/kernel/mm/ksm/sleep_millisecs, default 20 ms).
    sleep_ns: int = 20_000_000
    #: How long a merge attempt holds the page locks, ns.
    merge_window_ns: int = 5_000

    def __post_init__(self) -> None:
        _positive("ksmd pages_to_scan", self.pages_to_scan)
        _positive("ksmd sleep_ns", self.sleep_ns)
        _positive("ksmd merge_window_ns", self.merge_window_ns)


@dataclass(frozen=True)
class LruDrainAllConfig:
    """A periodic ``lru_add_drain_all()`` caller (mlock, memory hotplug, compaction ...).

    Every ``period_ns`` it drains every CPU's folio batches (30 us of the caller's time
    by default), dropping the batch references that make a refcount rule copy.
    """

    #: Time between two drains, ns.
    period_ns: int = 1_000_000

    def __post_init__(self) -> None:
        _positive("lru_drain_all period_ns", self.period_ns)


@dataclass(frozen=True)
class ActorsConfig:
    """Which background actors run (None: off), and on which CPU (None: the last)."""

    kswapd: KswapdConfig | None = None
    kcompactd: KcompactdConfig | None = None
    ksmd: KsmdConfig | None = None
    lru_drain_all: LruDrainAllConfig | None = None
    cpu: int | None = None

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the actors switched on, in start order."""
        return tuple(
            name
            for name in ("kswapd", "kcompactd", "ksmd", "lru_drain_all")
            if getattr(self, name) is not None
        )


@dataclass
class ActorStats:
    """What one actor did (for tests and reports; the kernel keeps its own counters)."""

    wakes: int = 0
    #: kswapd: reclaim passes and pages reclaimed.
    passes: int = 0
    reclaimed: int = 0
    #: kcompactd: migrations started, and wakes that found no migratable folio.
    migrations: int = 0
    misses: int = 0
    #: ksmd: pages scanned, merge attempts (locks taken), merges done, rounds completed.
    scanned: int = 0
    attempts: int = 0
    merges: int = 0
    rounds: int = 0
    #: lru_drain_all: drains done.
    drains: int = 0
    #: Free pages seen by kswapd after each balancing (tests check the watermarks).
    free_after_balance: list[int] = field(default_factory=list)


class ActorHost(Protocol):
    """What :func:`start_actors` needs of a run (``cowlab.workloads.Run`` has these)."""

    engine: Engine
    seed: int


@dataclass
class Actors:
    """The actor threads of a run and their statistics, by actor name."""

    threads: dict[str, Thread] = field(default_factory=dict)
    stats: dict[str, ActorStats] = field(default_factory=dict)


def start_actors(run: ActorHost, config: ActorsConfig) -> Actors:
    """Spawn the enabled actors of ``config`` as daemon threads of ``run.engine``."""
    engine = run.engine
    k = engine.kernel
    cpu = k.machine.cpus - 1 if config.cpu is None else config.cpu
    k.check_cpu(cpu)
    actors = Actors()
    bodies: dict[str, Callable[[ActorStats, random.Random], ThreadBody]] = {}
    if config.kswapd is not None:
        kswapd_cfg = config.kswapd
        bodies["kswapd"] = lambda st, _rng: kswapd(kswapd_cfg, st)
    if config.kcompactd is not None:
        kcompactd_cfg = config.kcompactd
        bodies["kcompactd"] = lambda st, rng: kcompactd(kcompactd_cfg, st, rng)
    if config.ksmd is not None:
        ksmd_cfg = config.ksmd
        bodies["ksmd"] = lambda st, _rng: ksmd(ksmd_cfg, st)
    if config.lru_drain_all is not None:
        drain_cfg = config.lru_drain_all
        bodies["lru_drain_all"] = lambda st, _rng: lru_drain_all(drain_cfg, st)
    for name, make in bodies.items():
        stats = ActorStats()
        rng = random.Random(f"actor:{name}:{run.seed}")
        actors.stats[name] = stats
        actors.threads[name] = engine.spawn(name, make(stats, rng), cpu=cpu, daemon=True)
    return actors


# ==========================================================================================
# kswapd
# ==========================================================================================
def kswapd(cfg: KswapdConfig, stats: ActorStats | None = None) -> ThreadBody:
    """The kswapd thread body (see :class:`KswapdConfig`)."""
    st = stats or ActorStats()

    def body(t: Thread) -> ThreadGen:
        k = t.kernel
        _wmin, low, high = k.watermarks
        while True:
            yield from t.sleep(cfg.period_ns)
            st.wakes += 1
            free = k.nr_free_pages
            if free is None or free >= low:
                continue
            # balance_pgdat(): reclaim until the high watermark is met.
            fruitless = 0
            while free is not None and free < high and fruitless < cfg.retries:
                got = yield from t.call(k.reclaim, min(cfg.batch, high - free), t.cpu)
                st.passes += 1
                st.reclaimed += got
                free = k.nr_free_pages
                fruitless = 0 if got else fruitless + 1
            if free is not None:
                st.free_after_balance.append(free)

    return body


# ==========================================================================================
# kcompactd
# ==========================================================================================
def _folio_at(k: Kernel, mm: MM, page: int) -> tuple[Folio, int] | None:
    """The folio and page index mapped at ``page`` of ``mm`` (None if not present)."""
    pte = mm.pt.get(page, 0)
    if not pte & 1:
        return None
    pfn = pte_pfn(pte)
    if pfn == ZERO_PFN:
        return None
    folio = k.frames[pfn]
    return folio, pfn - folio.pfn


def pick_migratable_folio(k: Kernel, rng: random.Random, tries: int) -> Folio | None:
    """A random mapped anonymous folio that ``Kernel.migrate()`` would accept, or None."""
    mms = [mm for mm in k.mms.values() if mm.alive and mm.vmas]
    if not mms:
        return None
    for _ in range(tries):
        mm = mms[rng.randrange(len(mms))]
        vma = mm.vmas[rng.randrange(len(mm.vmas))]
        found = _folio_at(k, mm, rng.randrange(vma.start, vma.end))
        if found is None:
            continue
        folio = found[0]
        if (
            folio.lru
            and folio.lock is None
            and not folio.writeback
            and not folio.ksm
            and folio.swap_entry is None
            and not folio.order
        ):
            return folio
    return None


def _release_lock(k: Kernel, folio: Folio, reason: str) -> Callable[[], None]:
    """A clock callback that drops the lock ``reason`` holds on ``folio`` (if it still does)."""

    def release() -> None:
        if folio.lock is not None and folio.lock.reason == reason:
            k.unlock_folio(folio)

    return release


def kcompactd(
    cfg: KcompactdConfig, stats: ActorStats | None = None, rng: random.Random | None = None
) -> ThreadBody:
    """The kcompactd thread body (see :class:`KcompactdConfig`)."""
    st = stats or ActorStats()
    pick_rng = rng or random.Random(0)
    interval = max(1, round(1e9 / cfg.rate))

    def body(t: Thread) -> ThreadGen:
        k = t.kernel
        while True:
            yield from t.sleep(interval)
            st.wakes += 1
            folio = pick_migratable_folio(k, pick_rng, cfg.tries)
            if folio is None:
                st.misses += 1
                continue
            if cfg.unmap_delay_ns:
                # migrate_folio_unmap(): locked (and isolated) before try_to_migrate().
                release_at = k.clock.now + cfg.unmap_delay_ns
                k.lock_folio(folio, "migration", release_at)
                k.clock.schedule(release_at, _release_lock(k, folio, "migration"))
                yield from t.sleep(cfg.unmap_delay_ns)
                if folio.freed:
                    continue  # a write fault copied it away and the last reference went
            if (yield from t.call(k.migrate, folio, cfg.duration_ns)):
                st.migrations += 1

    return body


# ==========================================================================================
# ksmd
# ==========================================================================================
def _content_key(folio: Folio, sub: int) -> object | None:
    """The page content as a dict key (None if the token is unhashable)."""
    data = folio.data_of(sub)
    try:
        hash(data)
    except TypeError:
        return None
    return data


def _mergeable_pages(k: Kernel) -> Iterator[tuple[MM, int]]:
    """One scan round: every page of every MADV_MERGEABLE VMA, in (mm, address) order
    (the ksm_mm_head list and each mm's VMAs; a snapshot taken per mm)."""
    for mm in list(k.mms.values()):
        if not mm.alive:
            continue
        for vma in list(mm.vmas):
            if not vma.mergeable:
                continue
            for page in range(vma.start, vma.end):
                yield mm, page


class _KsmScanner:
    """ksmd's scan position and its stable and unstable trees (dicts keyed by content)."""

    def __init__(self, cfg: KsmdConfig, stats: ActorStats) -> None:
        self.cfg = cfg
        self.stats = stats
        self.round: Iterator[tuple[MM, int]] | None = None
        #: content -> a page mapping the KSM page of that content.
        self.stable: dict[object, tuple[MM, int]] = {}
        #: content -> the first page of that content seen this round.
        self.unstable: dict[object, tuple[MM, int]] = {}

    def _valid(self, k: Kernel, mm: MM, page: int, key: object, ksm: bool) -> bool:
        """Does ``page`` of ``mm`` still map a mergeable page of content ``key``?"""
        if not mm.alive:
            return False
        vma = mm.find_vma(page)
        if vma is None or not vma.mergeable:
            return False
        found = _folio_at(k, mm, page)
        if found is None:
            return False
        folio, sub = found
        return folio.ksm == ksm and _content_key(folio, sub) == key

    def run(self, t: Thread) -> ThreadGen:
        k = t.kernel
        while True:
            yield from t.sleep(self.cfg.sleep_ns)
            self.stats.wakes += 1
            yield from self.scan(t, k)

    def scan(self, t: Thread, k: Kernel) -> ThreadGen:
        """ksm_do_scan(): look at up to ``pages_to_scan`` pages."""
        for _ in range(self.cfg.pages_to_scan):
            if self.round is None:
                # scan_get_next_rmap_item(): a new round drains every CPU's batches so
                # that batch references do not make write_protect_page() fail.
                self.round = _mergeable_pages(k)
                self.unstable.clear()
                yield from t.call(k.lru_add_drain_all)
            item = next(self.round, None)
            if item is None:
                self.round = None
                self.stats.rounds += 1
                return
            self.stats.scanned += 1
            yield from self.cmp_and_merge_page(t, k, *item)

    def cmp_and_merge_page(self, t: Thread, k: Kernel, mm: MM, page: int) -> ThreadGen:
        """cmp_and_merge_page(): the stable tree first, then the unstable tree."""
        vma = mm.find_vma(page)
        if not mm.alive or vma is None or not vma.mergeable:
            return
        found = _folio_at(k, mm, page)
        if found is None:
            return
        folio, sub = found
        key = _content_key(folio, sub)
        if key is None:
            return
        if folio.ksm:
            self.stable.setdefault(key, (mm, page))
            return
        partner = self.stable.get(key)
        if partner is not None and not self._valid(k, *partner, key, ksm=True):
            del self.stable[key]
            partner = None
        if partner is None:
            partner = self.unstable.get(key)
            if partner is not None and (
                not self._valid(k, *partner, key, ksm=False)
                or _folio_at(k, *partner) == (folio, sub)
            ):
                partner = None
            if partner is None:
                self.unstable[key] = (mm, page)
                return
        yield from self.try_to_merge(t, k, [partner, (mm, page)], key)

    def try_to_merge(self, t: Thread, k: Kernel, pages: list[tuple[MM, int]],
                     key: object) -> ThreadGen:
        """try_to_merge_one_page() on each candidate: trylock, write-protect, and hold
        the lock for the merge window; then merge if the contents are still equal."""
        release_at = k.clock.now + self.cfg.merge_window_ns
        for mm, page in pages:
            found = _folio_at(k, mm, page)
            if found is None:
                return
            folio, sub = found
            if folio.ksm:
                continue
            if folio.lock is not None or not write_protect_page(k, mm, page, folio, sub):
                return  # trylock_page() failed, or an extra reference: try next round
            k.flush_tlb(mm, t.cpu)
            k.lock_folio(folio, "ksm", release_at)
            k.clock.schedule(release_at, _release_lock(k, folio, "ksm"))
        self.stats.attempts += 1
        yield from t.think(self.cfg.merge_window_ns)
        # The locks were released at the end of the window (clock events run first).
        if not all(self._valid(k, mm, page, key, ksm=_is_ksm(k, mm, page)) for mm, page in pages):
            return  # written meanwhile (the write fault copied or reused it)
        merged = yield from t.call(k.ksm_merge, pages)
        if merged >= 2:
            self.stats.merges += 1
            self.unstable.pop(key, None)
            self.stable[key] = pages[0]


def _is_ksm(k: Kernel, mm: MM, page: int) -> bool:
    found = _folio_at(k, mm, page)
    return found is not None and found[0].ksm


def ksmd(cfg: KsmdConfig, stats: ActorStats | None = None) -> ThreadBody:
    """The ksmd thread body (see :class:`KsmdConfig`)."""
    scanner = _KsmScanner(cfg, stats or ActorStats())
    return scanner.run


# ==========================================================================================
# lru_add_drain_all() callers
# ==========================================================================================
def lru_drain_all(cfg: LruDrainAllConfig, stats: ActorStats | None = None) -> ThreadBody:
    """A thread that calls ``lru_add_drain_all()`` every ``period_ns``."""
    st = stats or ActorStats()

    def body(t: Thread) -> ThreadGen:
        k = t.kernel
        while True:
            yield from t.sleep(cfg.period_ns)
            st.wakes += 1
            yield from t.call(k.lru_add_drain_all)
            st.drains += 1

    return body
