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
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from dispatcher.state.redis_keys import rate_window_key

_AVERAGING_SECONDS = 10
# The provider counts requests by when they arrive, some milliseconds after their token was granted, and
# that delay varies (a busy worker, the network, a busy provider). Windows `guard` seconds longer than a
# second keep any one second of arrivals within the limit as long as no request is delayed by more than
# `guard` relative to another; the price is guard / (1 + guard) of the rate. Measured on a loaded 2-core
# machine (docs/reliability.md): 20 ms let 107 arrive in one second against 100/s; 100 ms held.
ARRIVAL_JITTER_GUARD = 0.1
# A batch may take several tokens in one call; each must be used within this share of the guard after it
# was granted (a token used later is as if its request had been delayed that long), the rest is dropped.
PREFETCH_SHARE_OF_GUARD = 0.25

# ARGV: wanted, then (limit, span) per window in KEYS. Grants as many of `wanted` as every window allows
# now: c more fit in a window when its entry at index limit - c (newest first) is absent or outside it.
_ACQUIRE = """
local clock = redis.call('TIME')
-- Microseconds kept as written: Lua's tostring keeps only 14 digits, which would move a grant into the future.
local stamp = string.format('%d.%06d', tonumber(clock[1]), tonumber(clock[2]))
local now = tonumber(stamp)
local grant = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit, span = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local function fits(c)
    if c == 0 then return true end
    if c > limit then return false end
    local entry = redis.call('LINDEX', key, limit - c)
    return (not entry) or tonumber(entry) <= now - span
  end
  if not fits(grant) then
    local low, high = 0, math.min(grant - 1, limit)
    while low < high do
      local middle = math.floor((low + high + 1) / 2)
      if fits(middle) then low = middle else high = middle - 1 end
    end
    grant = low
  end
end
local wait = 0
for i, key in ipairs(KEYS) do
  local limit, span = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if grant > 0 then
    for _ = 1, grant do redis.call('LPUSH', key, stamp) end
    redis.call('LTRIM', key, 0, limit - 1)
    redis.call('EXPIRE', key, math.ceil(span) + 1)
  end
  local nth = redis.call('LINDEX', key, limit - 1)
  if nth and tonumber(nth) > now - span then wait = math.max(wait, tonumber(nth) + span - now) end
end
return {grant, string.format('%.6f', wait), stamp}
"""


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: int = 0
    guard: float = ARRIVAL_JITTER_GUARD

    def windows(self) -> tuple[tuple[int, float], ...]:
        """(most sends, in seconds) per window."""
        per_second = (max(1, math.floor(self.rate) + self.burst), 1.0 + self.guard)
        if self.burst == 0:
            return (per_second,)
        return (per_second, (max(1, round(self.rate * _AVERAGING_SECONDS)), float(_AVERAGING_SECONDS)))


class RateLimiter:
    """`acquire(key, sender)` takes a token or says how long to wait; it never sleeps or spins."""

    def __init__(self, redis_url: str | redis.Redis, limits: dict[str, Limit]):
        # A URL (a single Redis), or the state's own client (a Sentinel master, a cluster: one key per script).
        self._redis = redis.Redis.from_url(redis_url) if isinstance(redis_url, str) else redis_url
        self._script = self._redis.register_script(_ACQUIRE)
        self._limits = limits

    def limit_of(self, key: str) -> Limit | None:
        return self._limits.get(key)

    def acquire(self, key: str, *identifiers: str) -> float:
        """0.0 when a send may go now (the token is taken); otherwise the seconds until one frees up."""
        return self.acquire_at(key, *identifiers)[0]

    def acquire_at(self, key: str, *identifiers: str) -> tuple[float, float]:
        """(wait, Redis time of the decision): the benchmark checks windows against the limiter's own clock."""
        granted, wait, now = self._take(1, key, identifiers)
        return (0.0 if granted else wait), now

    def acquire_many(self, count: int, key: str, *identifiers: str) -> tuple[int, float]:
        """Take up to `count` tokens at once: (how many were granted, seconds until the next one frees up,
        0.0 when all were granted)."""
        granted, wait, _ = self._take(count, key, identifiers)
        return granted, (0.0 if granted == count else wait)

    def _take(self, count: int, key: str, identifiers: tuple[str, ...]) -> tuple[int, float, float]:
        limit = self._limits.get(key)
        if limit is None or count <= 0:
            return max(0, count), 0.0, 0.0
        windows = limit.windows()
        keys = [rate_window_key(key, identifiers, seconds) for _, seconds in windows]
        args = [count, *(value for window in windows for value in window)]
        granted, wait, now = self._script(keys=keys, args=args)
        return int(granted), max(0.001, float(wait)), float(now)


class TokenRun:
    """Tokens for one batch's requests to one provider and sender, taken several at a time: one Redis call
    for the requests that leave within `PREFETCH_SHARE_OF_GUARD` of the guard, instead of one per request.
    Each request still takes its own token at its last step before the wire (`take`); a token unused in its
    time is dropped, never carried over, so the provider sees no more than the limit in any second."""

    def __init__(self, limiter: RateLimiter, key: str, sender: str, now: Callable[[], float] = time.monotonic) -> None:
        self.limiter, self.key, self.sender, self.now = limiter, key, sender, now
        limit = limiter.limit_of(key)
        # At most what the rate grants in a token's lifetime: an unused token costs the rate little.
        self.lifetime = 0.0 if limit is None else limit.guard * PREFETCH_SHARE_OF_GUARD
        self.most = 1 if limit is None else max(1, math.floor((limit.rate + limit.burst) * self.lifetime))
        self.left, self.until = 0, 0.0

    def take(self, wanted: int = 1) -> float:
        """0.0 when a request may leave now (its token taken); otherwise the seconds until one frees up.
        `wanted`: how many requests the batch still has for this provider and sender (this one included)."""
        if self.left > 0 and self.now() < self.until:
            self.left -= 1
            return 0.0
        granted, wait = self.limiter.acquire_many(max(1, min(wanted, self.most)), self.key, self.sender)
        if granted == 0:
            self.left = 0
            return wait
        self.left, self.until = granted - 1, self.now() + self.lifetime
        return 0.0
