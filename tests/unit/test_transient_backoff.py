"""The wait between transient retries, as a pure function: where it starts, how it grows, where it stops,
how much the jitter takes off; and the settings that shape it."""

from __future__ import annotations

import random

import pytest

from channels.retry import transient_backoff
from config.settings import SettingsError, load_settings

DEFAULTS = {"first": 30.0, "cap": 300.0, "jitter": 0.2}


@pytest.mark.parametrize(
    ("tries", "low", "high"),
    [(1, 24, 30), (2, 48, 60), (3, 96, 120), (4, 192, 240), (5, 240, 300), (9, 240, 300), (10_000, 240, 300)],
)
def test_the_default_wait_starts_near_30_s_doubles_and_stops_at_the_cap(tries: int, low: float, high: float) -> None:
    rng = random.Random(tries)
    waits = [transient_backoff(tries, **DEFAULTS, draw=rng.random) for _ in range(500)]
    assert low <= min(waits) and max(waits) <= high
    assert max(waits) - min(waits) > 0.8 * (high - low)  # the jitter really spreads them over its range


def test_the_jitter_takes_off_at_most_its_share_and_nothing_without_it() -> None:
    assert transient_backoff(1, first=30, cap=300, jitter=0.2, draw=lambda: 0.0) == 30
    assert transient_backoff(1, first=30, cap=300, jitter=0.2, draw=lambda: 0.999999) == pytest.approx(24, abs=1e-4)
    assert transient_backoff(3, first=30, cap=300, jitter=0.5, draw=lambda: 0.5) == 90
    assert [transient_backoff(n, first=1, cap=5, jitter=0, draw=random.random) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_each_wait_is_longer_than_the_last_until_the_cap_whatever_the_draws() -> None:
    """With a jitter under a half, the shortest next wait is longer than the longest last one."""
    rng = random.Random(7)
    waits = [transient_backoff(n, **DEFAULTS, draw=rng.random) for n in range(1, 5)]
    assert waits == sorted(waits) and len(set(waits)) == 4


def test_tries_count_from_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        transient_backoff(0, **DEFAULTS)


def test_the_settings_default_to_30_s_doubling_to_300_s_with_a_fifth_off_at_random() -> None:
    settings = load_settings()
    assert (settings.retry_backoff_seconds, settings.retry_backoff_max_seconds) == (30, 300)
    assert settings.retry_backoff_jitter == 0.2


def test_a_cap_below_the_first_wait_or_a_jitter_of_one_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="DISPATCHER_RETRY_BACKOFF_MAX_SECONDS"):
        load_settings(retry_backoff_seconds=60, retry_backoff_max_seconds=30)
    with pytest.raises(SettingsError, match="DISPATCHER_RETRY_BACKOFF_JITTER"):
        load_settings(retry_backoff_jitter=1)
