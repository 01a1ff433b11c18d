"""The health weights of a channel's providers, shared by every worker through Redis, as GOV.UK Notify keeps
its SMS providers' priorities: a route picks among its providers at random in proportion to their weights
(workers/routing.py), and the weights move with what the providers do.

    a burst of failures (DISPATCHER_PROVIDER_ERROR_BURST failed or slow requests to one provider within a
    minute)  ─▶  that provider -10, each other provider of the channel +10, within 0..100; a provider moves
                 at most once per MOVE_GAP_SECONDS (5 minutes), so one outage lowers it step by step
    no move for QUIET_SECONDS (15 minutes)  ─▶  each weight tends back 10 per TEND_SECONDS (5 minutes) towards
                 its resting weight (DISPATCHER_PROVIDER_WEIGHTS, 50 when unset)

Tending back is read, not written: a weight is stored with the moment it was last moved, and what it has
tended back to since is worked out from the clock when it is read, so no scheduled task is needed and every
worker reads the same weight at the same moment. A move is one optimistic transaction (WATCH on the
channel's hash), so two workers meeting the same burst move a provider once.

A deferral the provider asks for one recipient (channels.base.ContactDeferred) and the debtor's own errors
(an invalid number) are not failures of the provider: they move nothing. The clock is injected (`now`, epoch
seconds), like the circuit breaker's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from dispatcher.state.redis_keys import provider_failures_key, provider_weights_key

MOVE = 10  # points a weight moves by, down after a burst, back when tended
MOST, LEAST = 100, 0
RESTING = 50  # a provider's resting weight when DISPATCHER_PROVIDER_WEIGHTS names none
MOVE_GAP_SECONDS = 300.0  # a provider's weight moves at most once in this long (a burst or a tending step)
QUIET_SECONDS = 900.0  # after a move, this long without another before the weight starts tending back
TEND_SECONDS = 300.0  # then one step of MOVE towards the resting weight this often
BURST_WINDOW_SECONDS = 60  # failures are counted per provider in windows this long


def tended(stored: tuple[float, float] | None, resting: float, now: float) -> tuple[float, float]:
    """(weight now, when it last moved) from the stored (weight, moved at): the stored weight, stepped back
    towards `resting` for every TEND_SECONDS past QUIET_SECONDS since it moved. Never stored: resting."""
    if stored is None:
        return resting, -math.inf
    weight, moved_at = stored
    gap = resting - weight
    if gap == 0 or now < moved_at + QUIET_SECONDS:
        return weight, moved_at
    steps = min(math.ceil(abs(gap) / MOVE), int((now - moved_at - QUIET_SECONDS) // TEND_SECONDS) + 1)
    weight += math.copysign(min(abs(gap), steps * MOVE), gap)
    return weight, moved_at + QUIET_SECONDS + (steps - 1) * TEND_SECONDS


class ProviderHealth:
    """The weights of every channel's providers (`resting`: channel -> provider -> resting weight)."""

    def __init__(
        self,
        client: redis.Redis,
        resting: Mapping[str, Mapping[str, int]] | None = None,
        *,
        burst: int = 20,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.resting = resting or {}
        self.burst = burst
        self.now = now

    def resting_weight(self, channel: str, provider: str) -> float:
        return float(self.resting.get(channel, {}).get(provider, RESTING))

    def weights(self, channel: str, providers: Sequence[str]) -> dict[str, float]:
        """Each provider's weight now (one HGETALL of the channel's hash)."""
        stored = _parse(self.redis.hgetall(provider_weights_key(channel)))
        now = self.now()
        return {p: tended(stored.get(p), self.resting_weight(channel, p), now)[0] for p in providers}

    def failed(self, channel: str, provider: str, providers: Sequence[str]) -> bool:
        """Count one failed (or slow) request to `provider`; every DISPATCHER_PROVIDER_ERROR_BURST-th within a
        window moves the weights (`providers`: every provider of the channel). Whether they moved."""
        key = provider_failures_key(channel, provider)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, 0, ex=BURST_WINDOW_SECONDS, nx=True)
        pipe.incr(key)
        count = int(pipe.execute()[1])
        return count % self.burst == 0 and self.penalise(channel, provider, providers)

    def penalise(self, channel: str, provider: str, providers: Sequence[str]) -> bool:
        """`provider` -10 and each other of `providers` +10 (within 0..100), each only if it has not moved in
        the last MOVE_GAP_SECONDS; whether the failing provider moved. One optimistic transaction."""
        key = provider_weights_key(channel)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    now = self.now()
                    stored = _parse(pipe.hgetall(key))
                    current = {p: tended(stored.get(p), self.resting_weight(channel, p), now) for p in providers}
                    weight, last = current[provider]
                    if now - last < MOVE_GAP_SECONDS or weight <= LEAST:
                        pipe.unwatch()
                        return False
                    moves = {provider: max(LEAST, weight - MOVE)}
                    for other, (other_weight, other_last) in current.items():
                        if other != provider and now - other_last >= MOVE_GAP_SECONDS and other_weight < MOST:
                            moves[other] = min(MOST, other_weight + MOVE)
                    pipe.multi()
                    pipe.hset(key, mapping={p: f"{w:g} {now:.3f}" for p, w in moves.items()})
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue  # another worker moved them meanwhile: read again (it may have done this move)


def _parse(raw: Mapping[Any, Any]) -> dict[str, tuple[float, float]]:
    parsed: dict[str, tuple[float, float]] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        weight, _, moved_at = (value.decode() if isinstance(value, bytes) else str(value)).partition(" ")
        parsed[name] = (float(weight), float(moved_at))
    return parsed
