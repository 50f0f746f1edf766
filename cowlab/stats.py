"""Leaderboard statistics after rliable (Agarwal et al., NeurIPS 2021), implemented here.

Scores are arranged per *task* (one workload on one kernel preset): ``{task: [score per
seed]}``. All random draws come from a seeded :class:`numpy.random.Generator` and tasks
are resampled in sorted task order; sums are exact (:func:`math.fsum`), so a statistic
does not depend on the order of the tasks or of the scores within a task, and a table is
the same to the last digit every time it is made from the same records.

* :func:`normalized_score`: 0 for ``baseline``, 1 for ``oracle``, on the reuse rate; a
  cell with a gap below :data:`GAP_EPS` has no score (excluded, counted by the caller).
* :func:`iqm`: interquartile mean, the mean of the middle 50% of scores with fractional
  weights for the scores that straddle the 25% and 75% cut points.
* :func:`stratified_bootstrap_ci`: percentile CI of a statistic over bootstrap replicates
  that resample runs (seeds) with replacement independently within each task, so every
  replicate has each task's number of runs (the strata keep their weights).
* :func:`probability_of_improvement`: the mean over tasks of P(X > Y) + 0.5 P(X = Y),
  estimated with the Mann-Whitney U statistic.
* :func:`performance_profile`: the fraction of runs with a score above each threshold.

    >>> iqm([0.0, 1.0, 2.0, 3.0])
    1.5
    >>> probability_of_improvement({"t": [1.0, 2.0]}, {"t": [1.0]})
    0.75
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "DEGENERATE_EPS",
    "GAP_EPS",
    "iqm",
    "normalized_score",
    "performance_profile",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "stratified_bootstrap_ci",
]

#: Oracle and baseline reuse rates closer than this leave a cell without headroom: it is
#: excluded from a normalized score (and counted), never divided by.
GAP_EPS = 0.01
#: The old name of :data:`GAP_EPS`.
DEGENERATE_EPS = GAP_EPS

Scores = Mapping[str, Sequence[float]]


def normalized_score(rate: float | None, baseline: float | None, oracle: float | None,
                     eps: float = GAP_EPS) -> float | None:
    """A run's reuse rate on the scale baseline = 0, oracle = 1, or None.

    ``(rate - baseline) / (oracle - baseline)``. A cell whose gap ``oracle - baseline``
    is below ``eps`` has no headroom to measure: it gets no score (None), never a
    division by a tiny gap, and the caller counts it as excluded. A cell without truly
    reusable faults (any rate None) has no score either. The leaderboard does not use
    this scale (its primary score, the reuse rate, is already 0 for copying everything
    and 1 for the oracle); it is kept for library users, with this exclusion rule.

        >>> normalized_score(0.75, 0.5, 1.0), normalized_score(1.0, 1.0, 1.0)
        (0.5, None)
        >>> normalized_score(0.9, 0.995, 1.0), normalized_score(None, 0.0, 1.0)
        (None, None)
    """
    if rate is None or baseline is None or oracle is None:
        return None
    if oracle - baseline < eps:
        return None
    return (rate - baseline) / (oracle - baseline)


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """The interquartile mean: trim 25% of the mass from each end, average the rest.

    Sorted value ``i`` (0-based) of ``n`` covers ``[i, i + 1)``; its weight is the
    overlap of that interval with ``[n / 4, 3n / 4]``, so when ``n`` is not a multiple of
    4 the values at the cut points count fractionally. For multiples of 4 this equals
    ``scipy.stats.trim_mean(values, 0.25)`` (what rliable uses).

        >>> iqm([1.0, 2.0, 3.0])  # weights 1/4, 1, 1/4 over 1.5
        2.0
        >>> round(iqm([0.0, 0.0, 1.0, 4.0, 9.0]), 6)  # (.75*0 + 1*1 + .75*4) / 2.5
        1.6
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return math.nan
    lo, hi = 0.25 * n, 0.75 * n
    idx = np.arange(n, dtype=float)
    weights = np.clip(np.minimum(idx + 1.0, hi) - np.maximum(idx, lo), 0.0, 1.0)
    return math.fsum((weights * x).tolist()) / (hi - lo)


def _pooled(scores: Scores) -> np.ndarray:
    parts = [np.sort(np.asarray(scores[t], dtype=float)) for t in sorted(scores)
             if len(scores[t])]
    return np.concatenate(parts) if parts else np.zeros(0)


def stratified_bootstrap_ci(
    scores: Scores,
    statistic: Callable[[np.ndarray], float] = iqm,
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Point estimate and percentile CI of ``statistic`` over all runs of all tasks.

    Each replicate resamples, within every task independently, as many runs as the task
    has, with replacement (rliable's ``StratifiedBootstrap``), pools them and applies
    ``statistic``. The interval is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles of the replicates (linear interpolation).

    Returns:
        ``(estimate, low, high)``; NaNs when there are no scores.
    """
    pooled = _pooled(scores)
    if pooled.size == 0:
        return math.nan, math.nan, math.nan
    point = statistic(pooled)
    rng = np.random.default_rng(seed)
    tasks = [np.sort(np.asarray(scores[t], dtype=float)) for t in sorted(scores)
             if len(scores[t])]
    reps_values = np.empty(reps)
    for r in range(reps):
        sample = np.concatenate([t[rng.integers(0, t.size, t.size)] for t in tasks])
        reps_values[r] = statistic(sample)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(reps_values, [100 * alpha, 100 * (1 - alpha)])
    return point, float(low), float(high)


def _p_greater(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + 0.5 P(X = Y) = U / (n m), the Mann-Whitney U statistic of X over Y."""
    greater = (x[:, None] > y[None, :]).sum()
    ties = (x[:, None] == y[None, :]).sum()
    return float((greater + 0.5 * ties) / (x.size * y.size))


def probability_of_improvement(x: Scores, y: Scores) -> float:
    """rliable's P(X > Y): the mean over the tasks both have of the Mann-Whitney estimate.

    Tasks missing on either side (or empty) are skipped; NaN when none is shared.
    """
    shared = sorted(t for t in x if t in y and len(x[t]) and len(y[t]))
    if not shared:
        return math.nan
    return math.fsum(_p_greater(np.asarray(x[t], dtype=float), np.asarray(y[t], dtype=float))
                     for t in shared) / len(shared)


def probability_of_improvement_ci(x: Scores, y: Scores, *, reps: int = 2000,
                                  confidence: float = 0.95, seed: int = 0
                                  ) -> tuple[float, float, float]:
    """P(X > Y) with a stratified-bootstrap percentile CI (both sides resampled per task)."""
    point = probability_of_improvement(x, y)
    shared = sorted(t for t in x if t in y and len(x[t]) and len(y[t]))
    if not shared:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    xs = [np.sort(np.asarray(x[t], dtype=float)) for t in shared]
    ys = [np.sort(np.asarray(y[t], dtype=float)) for t in shared]
    values = np.empty(reps)
    for r in range(reps):
        values[r] = math.fsum([
            _p_greater(a[rng.integers(0, a.size, a.size)], b[rng.integers(0, b.size, b.size)])
            for a, b in zip(xs, ys, strict=True)
        ]) / len(xs)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return point, float(low), float(high)


def performance_profile(scores: Scores, taus: Sequence[float]) -> list[float]:
    """For each ``tau``, the fraction of all runs (every task, every seed) scoring above it.

        >>> performance_profile({"a": [0.0, 0.5], "b": [1.0, 1.0]}, [0.0, 0.5, 1.0])
        [0.75, 0.5, 0.0]
    """
    pooled = _pooled(scores)
    if pooled.size == 0:
        return [math.nan for _ in taus]
    return [float(np.mean(pooled > tau)) for tau in taus]
