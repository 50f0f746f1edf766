"""The workloads' shared random draws: the same numbers as the ``random`` module's."""

from __future__ import annotations

import bisect
import itertools
import random

import pytest

from cowlab.workloads.common import ZipfKeys, randbelow, shuffle, zipf_tables


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 100, 1000, 2**20 + 3])
def test_randbelow_draws_what_randrange_draws_from_the_same_stream(n: int) -> None:
    ours, theirs = random.Random(f"seed:{n}"), random.Random(f"seed:{n}")
    assert [randbelow(ours, n) for _ in range(500)] == [theirs.randrange(n) for _ in range(500)]
    assert ours.random() == theirs.random()  # and leaves the stream at the same point


@pytest.mark.parametrize("n", [0, 1, 2, 5, 512, 4099])
def test_shuffle_permutes_as_random_shuffle_does(n: int) -> None:
    ours, theirs = list(range(n)), list(range(n))
    a, b = random.Random(n), random.Random(n)
    shuffle(a, ours)
    b.shuffle(theirs)
    assert ours == theirs
    assert a.getrandbits(64) == b.getrandbits(64)


def test_randbelow_refuses_an_empty_range() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        randbelow(random.Random(0), 0)


def test_zipf_keys_scatter_ranks_over_a_permutation_of_the_keys() -> None:
    keys = ZipfKeys(512, 0.99, random.Random(3))
    assert sorted(keys.key_of_rank(r) for r in range(512)) == list(range(512))
    uniform = ZipfKeys(10, 0, random.Random(3))
    rng = random.Random(4)
    assert all(0 <= uniform.sample(rng) < 10 for _ in range(1000))


@pytest.mark.parametrize(
    ("n", "skew"),
    [(1, 0.99), (2, 0.5), (3, 3.0), (100, 5.0), (512, 0.99), (1000, 0.8), (4096, 1.5)],
)
def test_zipf_sampling_is_bisect_left_over_the_cumulative_weights(n: int, skew: float) -> None:
    """The guide table and the hand-written binary search pick what bisect.bisect_left
    picks over the whole cumulative weights, draw for draw (and on the buckets' bounds)."""
    keys = ZipfKeys(n, skew, random.Random(1))
    weights = list(itertools.accumulate((r + 1) ** -skew for r in range(n)))
    a, b = random.Random(9), random.Random(9)
    for _ in range(5000):
        rank = bisect.bisect_left(weights, b.random() * weights[-1])
        assert keys.sample(a) == keys.key_of_rank(min(rank, n - 1))
    _, bounds, _ = zipf_tables(n, skew)

    class Fixed(random.Random):
        u = 0.0

        def random(self) -> float:
            return self.u

    fixed = Fixed()
    for x in [*bounds, weights[-1] * (1 - 2**-53), 0.0]:
        fixed.u = x / weights[-1]
        rank = bisect.bisect_left(weights, fixed.u * weights[-1])
        assert keys.sample(fixed) == keys.key_of_rank(min(rank, n - 1))


def test_zipf_tables_are_computed_once_and_shared() -> None:
    first = ZipfKeys(300, 0.7, random.Random(1))
    second = ZipfKeys(300, 0.7, random.Random(2))
    assert all(a is b for a, b in zip(zipf_tables(300, 0.7), zipf_tables(300, 0.7),
                                      strict=True))
    # each run draws its own permutation of the keys
    assert [first.key_of_rank(r) for r in range(300)] != [
        second.key_of_rank(r) for r in range(300)]
