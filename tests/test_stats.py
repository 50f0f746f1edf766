"""The leaderboard statistics against hand-computed values (rliable's definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cowlab.stats import (
    iqm,
    normalized_score,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)


def test_iqm_of_a_multiple_of_four_is_the_mean_of_the_middle_half() -> None:
    # 8 values: trim 2 from each end -> mean(3, 4, 5, 6)
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    assert iqm([10.0, 0.0, 1.0, 2.0]) == pytest.approx(1.5)


def test_iqm_weights_the_straddling_values_fractionally() -> None:
    # n = 5: keep mass [1.25, 3.75]: x1 * 0.75 + x2 + x3 * 0.75 over 2.5
    assert iqm([0.0, 10.0, 20.0, 30.0, 1000.0]) == pytest.approx((7.5 + 20 + 22.5) / 2.5)
    # n = 6: keep [1.5, 4.5]: x1 * .5 + x2 + x3 + x4 * .5 over 3
    assert iqm([0, 1, 2, 3, 4, 5]) == pytest.approx((0.5 + 2 + 3 + 2) / 3)
    # n = 1: the value itself; n = 2: the mean
    assert iqm([3.0]) == 3.0
    assert iqm([1.0, 2.0]) == pytest.approx(1.5)


def test_iqm_of_nothing_is_nan() -> None:
    assert math.isnan(iqm([]))


def test_normalized_score_maps_baseline_to_zero_and_oracle_to_one() -> None:
    assert normalized_score(0.4, 0.4, 0.9) == 0.0
    assert normalized_score(0.9, 0.4, 0.9) == 1.0
    assert normalized_score(0.65, 0.4, 0.9) == pytest.approx(0.5)
    assert normalized_score(0.0, 0.4, 0.9) == pytest.approx(-0.8)


def test_a_cell_whose_gap_is_below_epsilon_gets_no_score_instead_of_a_division() -> None:
    from cowlab.stats import GAP_EPS

    assert GAP_EPS == 0.01
    assert normalized_score(1.0, 1.0, 1.0) is None  # baseline == oracle: never divided by
    assert normalized_score(0.0, 0.995, 1.0) is None  # the old -199 cell
    assert normalized_score(0.0, 0.99, 1.0) == pytest.approx(-99.0)  # gap exactly eps: kept
    assert normalized_score(0.5, 0.9, 1.0, eps=0.2) is None  # eps is a parameter
    assert normalized_score(None, 0.1, 1.0) is None
    assert normalized_score(0.5, None, 1.0) is None


def test_the_bootstrap_resamples_within_each_workload_so_strata_keep_their_weight() -> None:
    # two workloads of two runs each: a stratified replicate always pools two 0s and two
    # 1s (IQM 0.5); resampling the pooled runs would give 0 or 1 in some replicates
    scores = {"a": [0.0, 0.0], "b": [1.0, 1.0]}
    assert stratified_bootstrap_ci(scores, reps=500, seed=3) == (0.5, 0.5, 0.5)


def test_the_bootstrap_is_seeded_and_its_interval_covers_the_estimate() -> None:
    scores = {"a": [0.1, 0.5, 0.9, 0.3, 0.7], "b": [0.2, 0.4, 0.6, 0.8, 1.0]}
    first = stratified_bootstrap_ci(scores, reps=400, seed=7)
    assert stratified_bootstrap_ci(scores, reps=400, seed=7) == first
    point, low, high = first
    assert low <= point <= high and low < high
    assert low >= 0.0 and high <= 1.0


def test_probability_of_improvement_uses_mann_whitney_with_half_ties() -> None:
    # task a: x = [1, 3], y = [2, 3]: pairs (1,2) 0, (1,3) 0, (3,2) 1, (3,3) .5 -> 1.5 / 4
    # task b: x = [5], y = [0, 9]: 1 + 0 -> 0.5
    x = {"a": [1.0, 3.0], "b": [5.0]}
    y = {"a": [2.0, 3.0], "b": [0.0, 9.0]}
    assert probability_of_improvement(x, y) == pytest.approx((0.375 + 0.5) / 2)
    assert probability_of_improvement(y, x) == pytest.approx((0.625 + 0.5) / 2)
    assert probability_of_improvement(x, x) == pytest.approx(0.5)
    assert math.isnan(probability_of_improvement({"a": [1.0]}, {"b": [1.0]}))


def test_probability_of_improvement_interval_contains_its_estimate() -> None:
    x = {"a": [0.1, 0.5, 0.9], "b": [0.3, 0.4]}
    y = {"a": [0.2, 0.2, 0.6], "b": [0.5, 0.1]}
    point, low, high = probability_of_improvement_ci(x, y, reps=300, seed=1)
    assert point == pytest.approx(probability_of_improvement(x, y))
    assert 0.0 <= low <= point <= high <= 1.0


def test_performance_profile_counts_runs_strictly_above_tau() -> None:
    scores = {"a": [0.0, 0.25, 1.0], "b": [0.5]}
    assert performance_profile(scores, [-1.0, 0.0, 0.25, 0.5, 1.0]) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_stratified_bootstrap_resamples_within_each_task() -> None:
    # Each task is constant, so a stratified replicate always holds the same multiset of
    # values and its IQM never moves; an unstratified one would.
    scores = {"a": [0.0, 0.0], "b": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]}
    point, low, high = stratified_bootstrap_ci(scores, reps=200, seed=0)
    assert point == low == high == pytest.approx(iqm([0, 0, 1, 1, 1, 1, 1, 1]))


def test_stratified_bootstrap_interval_is_seeded_and_percentile_based() -> None:
    rng = np.random.default_rng(5)
    scores = {f"t{i}": list(rng.normal(i, 1.0, 5)) for i in range(3)}
    first = stratified_bootstrap_ci(scores, reps=500, seed=3)
    assert first == stratified_bootstrap_ci(scores, reps=500, seed=3)
    assert first != stratified_bootstrap_ci(scores, reps=500, seed=4)
    point, low, high = first
    assert low < point < high
    # Replicate the definition by hand: per-task resampling with the same generator,
    # tasks in sorted order, each task's scores sorted (order-independent by design).
    gen = np.random.default_rng(3)
    tasks = [np.sort(np.asarray(scores[t])) for t in sorted(scores)]
    reps = [iqm(np.concatenate([t[gen.integers(0, t.size, t.size)] for t in tasks]))
            for _ in range(500)]
    assert (low, high) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))


def test_stratified_bootstrap_of_no_scores_is_nan() -> None:
    assert all(math.isnan(v) for v in stratified_bootstrap_ci({}, reps=10))


def test_statistics_do_not_depend_on_the_order_of_tasks_or_scores() -> None:
    rng = np.random.default_rng(7)
    scores = {f"t{i}": [float(x) for x in rng.normal(i, 1.0, 7)] for i in range(4)}
    shuffled = {t: list(reversed(scores[t])) for t in reversed(list(scores))}
    other = {t: [v + 0.1 for v in vals] for t, vals in scores.items()}
    assert stratified_bootstrap_ci(scores, reps=300, seed=1) == stratified_bootstrap_ci(
        shuffled, reps=300, seed=1)
    assert probability_of_improvement_ci(scores, other, reps=100, seed=2) == (
        probability_of_improvement_ci(shuffled, other, reps=100, seed=2))
    assert iqm(scores["t1"]) == iqm(list(reversed(scores["t1"])))
