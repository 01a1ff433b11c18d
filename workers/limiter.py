"""Cluster-wide send rate limits, kept in Redis so every worker process shares them.

Celery's own `rate_limit` counts per worker process; a provider counts per account and sender. The
algorithm is the `limits` library's moving window (exact: it keeps each hit's time in a Redis list and
decides in one Lua call), applied twice per key: at most `rate + burst` in any one second, and at most
`10 × rate` in any ten seconds, so a burst is allowed but the long-run rate stays at `rate`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

_AVERAGING_SECONDS = 10


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: int = 0

    def items(self) -> tuple[RateLimitItem, ...]:
        """The windows to pass: the per-second cap, and with a burst the ten-second average as well."""
        per_second = RateLimitItemPerSecond(max(1, int(self.rate) + self.burst), 1)
        if self.burst == 0:
            return (per_second,)
        return (RateLimitItemPerSecond(max(1, round(self.rate * _AVERAGING_SECONDS)), _AVERAGING_SECONDS), per_second)


class RateLimiter:
    """`acquire(key)` takes a token or says how long to wait; it never sleeps or spins."""

    def __init__(self, redis_url: str, limits: dict[str, Limit]):
        self._limiter = MovingWindowRateLimiter(storage_from_string(redis_url))
        self._limits = limits

    def acquire(self, key: str, *identifiers: str) -> float:
        """0.0 when a send may go now (the token is taken); otherwise the seconds until one frees up."""
        limit = self._limits.get(key)
        if limit is None:
            return 0.0
        items = limit.items()
        # Look before taking: a token taken from one window while another refuses would be lost.
        for item in items:
            if not self._limiter.test(item, key, *identifiers):
                return self._wait(item, key, *identifiers)
        for item in items:
            if not self._limiter.hit(item, key, *identifiers):  # another process took the last one meanwhile
                return self._wait(item, key, *identifiers)
        return 0.0

    def _wait(self, item: RateLimitItem, key: str, *identifiers: str) -> float:
        stats = self._limiter.get_window_stats(item, key, *identifiers)
        return max(0.01, stats.reset_time - time.time())
