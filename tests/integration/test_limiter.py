"""The shared rate limiter on the real Redis: exact windows, one decision for all windows, no spinning."""

from __future__ import annotations

import pytest
import redis

from workers.limiter import ARRIVAL_JITTER_GUARD, Limit, RateLimiter

pytestmark = pytest.mark.integration


def test_a_limit_grants_its_rate_then_says_how_long_to_wait(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, {"sms": Limit(rate=3)})
    assert [limiter.acquire("sms", "+15005550006") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("sms", "+15005550006")
    assert 0.0 < wait <= 1.0 + ARRIVAL_JITTER_GUARD


def test_senders_and_channels_have_their_own_windows_and_unlimited_ones_always_pass(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, {"sms": Limit(rate=1)})
    assert limiter.acquire("sms", "+15005550006") == 0.0
    assert limiter.acquire("sms", "+15005550007") == 0.0
    assert limiter.acquire("sms", "+15005550006") > 0.0
    assert all(limiter.acquire("letter", "x") == 0.0 for _ in range(100))


def test_a_refusal_by_one_window_takes_nothing_from_the_other(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, {"sms": Limit(rate=2, burst=1)})  # ≤ 3 in a second, ≤ 20 in ten
    granted = [limiter.acquire("sms", "s") == 0.0 for _ in range(10)]
    assert granted == [True, True, True] + [False] * 7
    client = redis.Redis.from_url(redis_url)
    assert client.llen("{rl:sms:s}:10s") == 3  # refusals left the ten-second window untouched
