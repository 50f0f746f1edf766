"""Pieces shared by the workload generators: skewed key choice, common parameters.

:class:`CommonParams` is the base of every workload's parameter dataclass except
``forceswap-v1``'s (older) and ``mix-v1``'s: how long the workload runs, and which
background kernel actors (:mod:`cowlab.kernel.actors`) run beside it, each switched off
by a zero rate unless the workload's story needs it.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from mypy_extensions import mypyc_attr

from cowlab.kernel.actors import (
    ActorsConfig,
    KcompactdConfig,
    KswapdConfig,
    LruDrainAllConfig,
)
from cowlab.kernel.costs import DEVICES
from cowlab.kernel.engine import Thread, ThreadGen

NS_PER_MS = 1_000_000
NS_PER_US = 1_000


def randbelow(rng: random.Random, n: int) -> int:
    """A uniform integer in ``0..n-1``: the draw ``rng.randrange(n)`` makes, from the
    same stream (rejection sampling on ``getrandbits(n.bit_length())``, CPython's own
    algorithm), without the interpreted ``random`` module code around it.

        >>> a, b = random.Random(7), random.Random(7)
        >>> [randbelow(a, 1000) for _ in range(5)] == [b.randrange(1000) for _ in range(5)]
        True
    """
    if n <= 0:
        raise ValueError(f"randbelow needs n >= 1, got {n}")
    k = n.bit_length()
    r = rng.getrandbits(k)
    while r >= n:
        r = rng.getrandbits(k)
    return r


def shuffle(rng: random.Random, items: list[int]) -> None:
    """Shuffle ``items`` in place as ``rng.shuffle(items)`` does (Fisher-Yates from the
    end, :func:`randbelow` draws), with the same result from the same stream."""
    for i in range(len(items) - 1, 0, -1):
        j = randbelow(rng, i + 1)
        items[i], items[j] = items[j], items[i]


#: :func:`zipf_tables` by (n, skew), shared read-only by every ZipfKeys (a run draws
#: a new permutation, never new weights); a few entries at most.
_TABLES: dict[tuple[int, float], tuple[list[float], list[float], list[int]]] = {}


def zipf_tables(n: int, skew: float) -> tuple[list[float], list[float], list[int]]:
    """(cumulative weights, bucket bounds, guide) of ``ZipfKeys(n, skew)``, computed once
    per (n, skew) and shared (callers must not change them).

    The cumulative weights are ``sum(1 / (r + 1) ** skew for r in range(k + 1))`` for
    ``k`` in ``0..n-1``. The guide table cuts ``[0, total)`` into ``n`` equal buckets:
    ``bounds[b]`` is where bucket ``b`` starts and ``guide[b]`` is
    ``bisect_left(weights, bounds[b])``, so a draw searches only its bucket's slice.
    """
    key = (n, skew)
    tables = _TABLES.get(key)
    if tables is None:
        if len(_TABLES) >= 16:
            _TABLES.clear()
        weights = list(itertools.accumulate((r + 1) ** -skew for r in range(n)))
        step = weights[-1] / n
        bounds = [b * step for b in range(n)]
        guide = [bisect.bisect_left(weights, x) for x in bounds]
        tables = (weights, bounds, guide)
        _TABLES[key] = tables
    return tables


class ZipfKeys:
    """Keys ``0..n-1`` drawn with P(rank r) proportional to 1 / (r + 1) ** skew.

    ``skew`` 0 is uniform; YCSB's default is 0.99. The ranks are scattered over the keys
    by a permutation drawn from ``rng``, so the hot keys are not the lowest pages.
    Sampling draws ``x`` uniform in ``[0, total)`` and takes ``bisect_left`` of it in the
    cumulative weights, searching only the slice a guide table gives (:func:`zipf_tables`).

        >>> keys = ZipfKeys(1000, 0.99, random.Random(1))
        >>> rng = random.Random(2)
        >>> hot = keys.key_of_rank(0)
        >>> sum(keys.sample(rng) == hot for _ in range(10_000)) > 1000
        True
    """

    __slots__ = ("_bounds", "_cum", "_guide", "_last", "_perm", "_random", "_rng", "_scale",
                 "_total", "n")

    def __init__(self, n: int, skew: float, rng: random.Random) -> None:
        if n < 1:
            raise ValueError(f"ZipfKeys needs at least one key, got {n}")
        self.n = n
        self._last = n - 1
        self._perm = list(range(n))
        shuffle(rng, self._perm)
        self._cum: list[float] | None = None
        self._total = float(n)
        self._bounds: list[float] = []
        self._guide: list[int] = []
        self._scale = 0.0
        # ``rng.random`` of the rng sample() was last given, bound once: compiled, calling
        # a bound method skips looking ``random`` up on the rng's class at every sample.
        self._rng = rng
        self._random: Callable[[], float] = rng.random
        if skew != 0:
            self._cum, self._bounds, self._guide = zipf_tables(n, skew)
            self._total = self._cum[-1]
            self._scale = len(self._guide) / self._total

    def key_of_rank(self, rank: int) -> int:
        """The key with popularity rank ``rank`` (0: the hottest)."""
        return self._perm[rank]

    def sample(self, rng: random.Random) -> int:
        """One key."""
        cum = self._cum
        if cum is None:
            return self._perm[randbelow(rng, self.n)]
        if rng is not self._rng:
            self._rng = rng
            self._random = rng.random
        x = self._random() * self._total
        # bisect_left(cum, x), spelled out (compiled, it compares unboxed floats), over
        # the slice the guide table gives: bucket b holds the x with bounds[b] <= x <
        # bounds[b + 1], whose answers lie in guide[b]..guide[b + 1] (bisect is monotone).
        bounds = self._bounds
        guide = self._guide
        b = int(x * self._scale)
        last_bucket = len(guide) - 1
        if b > last_bucket:
            b = last_bucket
        while b > 0 and x < bounds[b]:
            b -= 1
        while b < last_bucket and x >= bounds[b + 1]:
            b += 1
        lo = guide[b]
        hi = guide[b + 1] if b < last_bucket else len(cum)
        while lo < hi:
            mid = (lo + hi) >> 1
            if cum[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        last = self._last
        return self._perm[lo if lo < last else last]


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ValueError unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low:g}..{high:g}, got {value!r}")


def check_swap(swap: str) -> None:
    """Raise ValueError unless ``swap`` names a swap device."""
    if swap not in DEVICES:
        raise ValueError(f"swap must be one of {', '.join(DEVICES)}, got {swap!r}")


@mypyc_attr(allow_interpreted_subclasses=True)
@dataclass(frozen=True)
class CommonParams:
    """Parameters every workload (but forceswap-v1 and mix-v1) has."""

    #: The workload's threads stop after this much simulated time (ms); the run's budget
    #: (decisions or time) usually stops it first.
    duration_ms: float = 100.0
    #: Run kswapd (reclaims when free memory is below the low watermark; only has work
    #: when the machine's RAM is limited).
    kswapd: bool = False
    #: kswapd's wake-up latency (how often it looks at free memory), us.
    kswapd_period_us: float = 10.0
    #: kcompactd: folios migrated per simulated second (0: off).
    compaction_rate: float = 0.0
    #: How long one migration holds the folio locked and unmapped, us.
    compaction_duration_us: float = 20.0
    #: A periodic lru_add_drain_all() caller (mlock, hotplug ...): period in ms (0: off).
    drain_all_period_ms: float = 0.0

    def __post_init__(self) -> None:
        check_range("duration_ms", self.duration_ms, 0.001, 1e7)
        check_range("kswapd_period_us", self.kswapd_period_us, 0.001, 1e6)
        check_range("compaction_rate", self.compaction_rate, 0, 1e9)
        check_range("compaction_duration_us", self.compaction_duration_us, 0.001, 1e6)
        check_range("drain_all_period_ms", self.drain_all_period_ms, 0, 1e6)

    @property
    def duration_ns(self) -> int:
        """:attr:`duration_ms` in ns."""
        return round(self.duration_ms * NS_PER_MS)

    def actors(self) -> ActorsConfig:
        """The background actors these parameters switch on."""
        return ActorsConfig(
            kswapd=KswapdConfig(period_ns=max(1, round(self.kswapd_period_us * NS_PER_US)))
            if self.kswapd
            else None,
            kcompactd=KcompactdConfig(
                rate=self.compaction_rate,
                duration_ns=max(1, round(self.compaction_duration_us * NS_PER_US)),
            )
            if self.compaction_rate
            else None,
            lru_drain_all=LruDrainAllConfig(
                period_ns=max(1, round(self.drain_all_period_ms * NS_PER_MS))
            )
            if self.drain_all_period_ms
            else None,
        )


def throttle_reclaim(t: Thread) -> ThreadGen:
    """Sleep while free memory is at the min watermark and swap writeback is in flight.

    The kernel's direct reclaim does not fail while writeback is in flight: it throttles
    the allocating task until some writeback completes (``reclaim_throttle(...,
    VMSCAN_THROTTLE_WRITEBACK)``, 8cd7c588decf, v5.16; ``congestion_wait()`` before).
    The kernel model's direct reclaim reports out of memory instead when every
    reclaimable page is under writeback on an asynchronous device, so a workload that
    allocates under pressure calls this before each access: the thread sleeps until the
    next I/O completion while free memory is at or below the min watermark.
    """
    k = t.kernel
    while not k.swap.synchronous:
        free = k.nr_free_pages
        if free is None or free > k.watermarks[0]:
            return
        due = k.clock.next_event_time()
        if due is None:
            return
        yield from t.sleep(max(1, due - k.clock.now))


def actor_cpus(actors: ActorsConfig) -> int:
    """CPUs to add for the actors: one, shared by all of them, if any runs."""
    return 1 if actors.enabled else 0
