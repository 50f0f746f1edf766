"""The per-step work of ``cowlab/CowFault-v0`` (cowlab/env.py), compiled with the kernel:
the observation of a write fault (what the env and the ``sb3`` policy feed a network,
encoded from the kernel-visible :class:`~cowlab.kernel.fault.FaultView`), the reward of
a decided fault and the step's info dict, both from the kernel's
:class:`~cowlab.kernel.fault.FaultRecord`.

Part of the compiled build (setup.py), as the kernel is: in Python this work cost
about as much as the rest of an env step. :mod:`cowlab.env` re-exports the observation
names.
"""

from __future__ import annotations

import math
from typing import Any, Final

from cowlab.kernel.fault import FEATURE_NAMES, FaultRecord, FaultView

__all__ = [
    "COUNT_HIGH",
    "DERIVED_FEATURES",
    "LOG_FEATURES",
    "LOG_INDEX",
    "MAX_ORDER",
    "OBSERVATION_NAMES",
    "PER_FOLIO_COUNTS",
    "encode_features",
    "observe",
    "settle",
    "step_info",
]

#: Counts in the observation: each is divided by the folio's ``nr_pages`` where it counts
#: per folio (so a fully mapped 2 MiB THP and a 4 KiB page read alike), then ``log1p``'d
#: (a pinned page's refcount is above 1024).
LOG_FEATURES: tuple[str, ...] = (
    "refcount",
    "mapcount",
    "large_mapcount",
    "swapcount",
    "pincount",
)
#: Of those, the per-folio counts divided by ``nr_pages`` first.
PER_FOLIO_COUNTS: tuple[str, ...] = ("refcount", "large_mapcount")
#: ``order`` is divided by this (a 1 GiB hugetlb folio, the largest, is order 18).
MAX_ORDER: Final = 18
#: Flags derived from the kernel-visible counts, appended after :data:`FEATURE_NAMES`:
#: the comparisons the kernel's own rules make, as 0/1 (a network need not learn an
#: exact threshold on a log-scaled count from a handful of rare faults).
DERIVED_FEATURES: tuple[str, ...] = (
    "sole_reference",  # refcount == 1: the writer's mapping is the only reference
    "mapped_more_than_once",  # mapcount > 1: another PTE or PMD maps the page
    "unexplained_references",  # refcount > mappings + swapcache: GUP, pipe, LRU batch...
)
#: The observation's features in ``decision`` mode (``primitives`` mode appends
#: ``primitives_used``).
OBSERVATION_NAMES: tuple[str, ...] = FEATURE_NAMES + DERIVED_FEATURES
#: Where each :data:`LOG_FEATURES` count sits in the observation.
LOG_INDEX: tuple[int, ...] = tuple(FEATURE_NAMES.index(n) for n in LOG_FEATURES)
_PER_FOLIO_INDEX = frozenset(FEATURE_NAMES.index(n) for n in PER_FOLIO_COUNTS)
_ORDER_INDEX: Final = FEATURE_NAMES.index("order")
#: (index, divided by ``nr_pages`` first) of each :data:`LOG_FEATURES` count.
_LOG_SCALING: Final = tuple((i, i in _PER_FOLIO_INDEX) for i in LOG_INDEX)
_REFCOUNT_INDEX: Final = FEATURE_NAMES.index("refcount")
_MAPCOUNT_INDEX: Final = FEATURE_NAMES.index("mapcount")
_LARGE_MAPCOUNT_INDEX: Final = FEATURE_NAMES.index("large_mapcount")
_SWAPCACHE_INDEX: Final = FEATURE_NAMES.index("swapcache")
#: The observation space's upper bound of a log-scaled count: log1p of any count the
#: simulator can hold stays far below it.
COUNT_HIGH: Final = 64.0

def encode_features(view: FaultView | Any) -> list[float]:
    """The observation of ``view`` in :data:`OBSERVATION_NAMES` order (without env extras).

    Counts are scaled as :data:`LOG_FEATURES` says, ``order`` by :data:`MAX_ORDER`, flags
    are 0 or 1, and the :data:`DERIVED_FEATURES` follow. ``view`` is a
    :class:`~cowlab.kernel.fault.FaultView` or a stand-in with its ``features()`` and
    ``nr_pages`` (a policy may be handed a wrapper, such as the leaderboard's probe:
    compiled code checks the real type of a parameter typed as a class).

    >>> from math import log1p
    >>> LOG_FEATURES[0], round(log1p(1024), 3), DERIVED_FEATURES[0]
    ('refcount', 6.932, 'sole_reference')
    """
    return _encode(view.features(), view.nr_pages)


def _encode(values: list[float], nr_pages: int) -> list[float]:
    # The derived flags compare the raw counts, read back from the features (floats of
    # integers far below 2**53: the comparisons are exact).
    refcount = values[_REFCOUNT_INDEX]
    mapcount = values[_MAPCOUNT_INDEX]
    held = values[_LARGE_MAPCOUNT_INDEX] + (nr_pages if values[_SWAPCACHE_INDEX] else 0)
    log1p = math.log1p
    for i, per_folio in _LOG_SCALING:
        values[i] = log1p(values[i] / nr_pages if per_folio else values[i])
    values[_ORDER_INDEX] /= MAX_ORDER
    values += (float(refcount == 1), float(mapcount > 1), float(refcount > held))
    return values


def observe(view: FaultView | Any, primitives: bool, used: int,
            max_primitives: int) -> list[float]:
    """The env's observation of ``view``: :func:`encode_features`, plus in ``primitives``
    mode the fraction of the fault's primitive budget used. The env and the ``sb3``
    policy both observe through this one function."""
    values = encode_features(view)
    if primitives:
        values.append(used / max_primitives if max_primitives else 1.0)
    return values


def settle(records: list[FaultRecord], safe_reuse: float, latency_per_us: float,
           memory_per_page: float, violation: float) -> tuple[float, FaultRecord | None]:
    """The reward of the decision just made, from the records the kernel appended since
    (the env's reward weights, docs/config.md), and the decided fault's record (None
    if there is none). Consumes ``records``: it is emptied."""
    if not records:
        return 0.0, None
    reward = 0.0
    found: FaultRecord | None = None
    for rec in records:
        outcome = rec.outcome
        if outcome != "reuse" and outcome != "copy":
            continue
        found = rec
        if rec.violation:
            reward -= violation
        elif outcome == "reuse" and rec.exclusive:
            reward += safe_reuse
        if outcome == "copy":
            reward -= memory_per_page
        reward -= latency_per_us * rec.latency_ns / 1000.0
    records.clear()
    return reward, found


def step_info(workload: str | None, run_seed: int | None, decisions: int,
              record: FaultRecord | None,
              primitive: str | None, shielded: bool) -> dict[str, Any]:
    """A step's info dict: the run, this step's ``primitive`` and ``shielded``, then the
    decided fault's record (outcome, fault, exclusive, violation, blockers,
    latency_ns; None, None, None, None, (), 0 without one)."""
    outcome: str | None = None
    fault: str | None = None
    exclusive: bool | None = None
    violation: str | None = None
    blockers: tuple[str, ...] = ()
    latency_ns = 0
    if record is not None:
        outcome, fault, exclusive = record.outcome, record.fault, record.exclusive
        violation, blockers, latency_ns = record.violation, record.blockers, record.latency_ns
    # One literal: the dict is made at its final size (filled key by key, it was
    # resized twice).
    return {
        "workload": workload,
        "run_seed": run_seed,
        "decisions": decisions,
        "primitive": primitive,
        "shielded": shielded,
        "outcome": outcome,
        "fault": fault,
        "exclusive": exclusive,
        "violation": violation,
        "blockers": blockers,
        "latency_ns": latency_ns,
    }
