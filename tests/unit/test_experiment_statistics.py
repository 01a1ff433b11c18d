"""The comparison's statistics against published values (Newcombe, Statistics in Medicine 1998, 17:857–872,
and 873–890: the Wilson and hybrid-score examples) and their invariants under hypothesis."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.core.experiments.statistics import (
    Interval,
    mean_difference,
    mean_interval,
    mean_sample_needed,
    rate_difference,
    rate_sample_needed,
    ratio_interval,
    verdict,
    wilson,
)


def test_wilson_matches_the_published_example() -> None:
    interval = wilson(81, 263)
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.2553, 0.3662)


def test_newcombe_difference_matches_the_published_examples() -> None:
    interval = rate_difference(48, 80, 56, 70)  # 56/70 − 48/80
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.0524, 0.3339)
    none_either = rate_difference(0, 20, 0, 10)  # 0/10 − 0/20
    assert (round(none_either.low, 4), round(none_either.high, 4)) == (-0.1611, 0.2775)


def test_wilson_refuses_impossible_counts_and_knows_nothing_of_no_trials() -> None:
    with pytest.raises(ValueError, match="within 0..trials"):
        wilson(3, 2)
    assert wilson(0, 0) == Interval(0.0, 0.0, 1.0)


@given(st.integers(0, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_holds_the_observed_rate_inside_zero_one(counts: tuple[int, int]) -> None:
    successes, trials = counts
    interval = wilson(successes, trials)
    assert 0.0 <= interval.low <= interval.value <= interval.high <= 1.0


@given(
    st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
    st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
)
def test_rate_difference_holds_the_observed_difference(base: tuple[int, int], other: tuple[int, int]) -> None:
    interval = rate_difference(*base, *other)
    assert -1.0 <= interval.low <= interval.value + 1e-12
    assert interval.value - 1e-12 <= interval.high <= 1.0


def test_sample_needed_for_rates_matches_the_textbook_figure() -> None:
    # 5 % against 7 %, two-sided 95 %, power 80 %: about 2,210 accounts per arm.
    assert 2200 <= rate_sample_needed(0.05, 0.07) <= 2220
    assert rate_sample_needed(0.3, 0.3) == math.inf


def test_skewed_amounts_get_a_seeded_interval_around_the_mean() -> None:
    recovered = [0.0] * 90 + [100.0] * 10
    first, again = mean_interval(recovered, seed=7), mean_interval(recovered, seed=7)
    assert first == again  # a report read twice says the same
    assert first.value == 10.0 and first.low < 10.0 < first.high
    assert math.isnan(mean_interval([]).value)


def test_ratio_resamples_accounts_whole() -> None:
    contacts, resolved = [4.0, 6.0, 5.0, 9.0, 3.0] * 20, [1.0, 0.0, 1.0, 0.0, 1.0] * 20
    interval = ratio_interval(contacts, resolved, seed=1)
    assert interval.value == pytest.approx(27 / 3)
    assert interval.low < interval.value < interval.high
    assert math.isnan(ratio_interval([1.0], [0.0]).value)
    with pytest.raises(ValueError, match="one length"):
        ratio_interval([1.0], [1.0, 2.0])


def test_a_clear_difference_is_called_and_a_small_sample_is_insufficient() -> None:
    low, high = [10.0, 12.0, 11.0, 9.0] * 50, [20.0, 22.0, 21.0, 19.0] * 50
    difference = mean_difference(low, high, seed=3)
    needed = mean_sample_needed(low, high)
    assert difference.low > 0 and needed < 200
    assert verdict(difference, smallest_arm=200, needed=needed) == "higher"
    assert verdict(mean_difference(high, low, seed=3), 200, needed) == "lower"
    assert verdict(difference, smallest_arm=10, needed=50) == "insufficient"
    assert verdict(Interval(0.01, -0.02, 0.04), smallest_arm=10_000, needed=5_000) == "no difference"
