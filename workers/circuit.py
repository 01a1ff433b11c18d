"""A circuit breaker per provider, kept in Redis so every worker (and the pump's dispatch) sees the same one.

It opens on a misconfiguration (channels.base.ProviderMisconfigured: 401, 403, 404, unknown host, TLS
failure), the one kind of failure that no retry fixes and that must never become a debtor's outcome; and on a
burst of failures of a provider whose contacts no other may take (an agency's cases: `trip_down`):

    closed ──misconfigured──▶ open until T ──T passes──▶ half-open: one caller takes the probe
      ▲                          ▲                            │
      │                          └──misconfigured again───────┤  (open twice as long, up to the cap)
      └──────────────any other answer (sent, refused, 5xx)────┘

While it is open nothing is claimed on that channel and no attempt is written (caps count nothing): the
contacts it holds go back to the schedule (workers/delivery.py parks them: their queued claim is forgotten
and their account wakes when the opening ends), and their accounts are kept in the breaker's held set
(`redis_keys.held_key`). They never wait as delayed messages on the broker, where a worker stopped with
Redis (or killed) would leave them in the `unacked` hash until the stranded sweep. When the probe
succeeds, every held account is woken at once; a worker that starts (say, after the setting was fixed)
ends every opening at once (`probe_now`), so the next caller probes. Each opening logs one ERROR naming
the DISPATCHER_* setting that looks wrong and counts `dispatcher_provider_misconfigured`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis
import structlog

from channels.base import ProviderMisconfigured
from config.settings import Settings
from dispatcher.state.metrics import PROVIDER_MISCONFIGURED
from dispatcher.state.provider_state import read_breaker
from dispatcher.state.redis_keys import breaker_key, held_key, probe_key
from dispatcher.wiring import clock_from, open_store

log = structlog.get_logger("workers.circuit")

FIRST_OPEN_SECONDS = 5.0
MAX_OPEN_SECONDS = 300.0
PROBE_HOLD_SECONDS = 30.0  # how long a half-open probe may take before another caller may probe
PROBE_BUSY_WAIT = 2.0  # what the others wait while one caller probes


HELD_TTL = 86_400  # a held set nobody closes (the channel was left misconfigured) goes after a quiet day


@dataclass(frozen=True)
class Admission:
    """`wait` > 0: the circuit is open, come back then; `probe`: this caller tests a half-open circuit."""

    wait: float
    probe: bool


@dataclass(frozen=True)
class CircuitState:
    """What the breaker holds for one provider; `open_until` is None when it is closed."""

    provider: str
    open_until: float | None = None
    open_seconds: float = 0.0
    setting: str = ""
    reason: str = ""
    trips: int = 0

    @property
    def is_open(self) -> bool:
        return self.open_until is not None


class CircuitBreaker:
    """One breaker per provider name (the channel), shared through Redis."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        first_open: float = FIRST_OPEN_SECONDS,
        max_open: float = MAX_OPEN_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.first_open = first_open
        self.max_open = max_open
        self.now = now

    def admit(self, provider: str) -> Admission:
        """Whether sends may go now: closed (one HGET), or half-open and this caller took the probe."""
        until = self.redis.hget(breaker_key(provider), "until")
        if until is None:
            return Admission(0.0, probe=False)
        left = float(until) - self.now()
        if left > 0:
            return Admission(left, probe=False)
        if self.redis.set(probe_key(provider), "1", nx=True, px=int(PROBE_HOLD_SECONDS * 1000)):
            return Admission(0.0, probe=True)
        return Admission(PROBE_BUSY_WAIT, probe=False)

    def trip(self, exc: ProviderMisconfigured, provider: str | None = None) -> float:
        """Open (or re-open, twice as long) the circuit of `provider` (the channel that met the error; by
        default the error's provider); returns how long it stays open."""
        provider = provider or exc.provider
        seconds = self._open(provider, exc.setting, str(exc))
        PROVIDER_MISCONFIGURED.labels(provider, exc.setting).inc()
        log.error(
            "provider.misconfigured",
            provider=provider,
            setting=exc.setting,
            error=str(exc)[:300],
            open_seconds=seconds,
            hint=f"check {exc.setting}; contacts wait on the schedule and go once it is fixed (a worker start probes)",
        )
        return seconds

    def trip_down(self, provider: str, reason: str) -> float:
        """Open the circuit of a provider that keeps failing for now (a burst of 5xx or refused connections)
        where no other provider may take its contacts: an agency's cases (workers/routing.py). They wait on
        the schedule instead of each retrying on the broker; the half-open probe tells when it is back. The
        one opening that is not a misconfiguration: it names no setting."""
        seconds = self._open(provider, "", reason)
        log.warning("provider.down", provider=provider, reason=reason[:300], open_seconds=seconds)
        return seconds

    def _open(self, provider: str, setting: str, reason: str) -> float:
        key = breaker_key(provider)
        previous = self.redis.hget(key, "seconds")
        seconds = self.first_open if previous is None else min(self.max_open, float(previous) * 2)
        pipe = self.redis.pipeline(transaction=True)
        opening = {"until": self.now() + seconds, "seconds": seconds, "setting": setting, "reason": reason}
        pipe.hset(key, mapping=opening)
        pipe.hincrby(key, "trips", 1)
        pipe.delete(probe_key(provider))
        pipe.execute()
        return seconds

    def succeeded(self, provider: str) -> list[str]:
        """The provider answered something other than a misconfiguration: close its circuit if it was open;
        the accounts it held, for the caller to wake now."""
        if not self.redis.delete(breaker_key(provider)):
            return []
        self.redis.delete(probe_key(provider))
        held = self.take_held(provider)
        log.info("provider.recovered", provider=provider, held_accounts=len(held))
        return held

    def hold(self, provider: str, account_ids: Iterable[str]) -> set[str]:
        """Note accounts whose contacts the open circuit sent back to the schedule; those not held already."""
        ids = sorted(set(account_ids))
        if not ids:
            return set()
        pipe = self.redis.pipeline(transaction=True)
        for account_id in ids:
            pipe.sadd(held_key(provider), account_id)
        pipe.expire(held_key(provider), HELD_TTL)
        added = pipe.execute()[:-1]
        return {account_id for account_id, new in zip(ids, added, strict=True) if new}

    def take_held(self, provider: str) -> list[str]:
        """The held accounts, emptying the set (one caller wakes them)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(held_key(provider))
        pipe.delete(held_key(provider))
        members, _ = pipe.execute()
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def probe_now(self, provider: str) -> list[str]:
        """End an opening early: the next caller takes the probe. A worker does this as it starts, since a
        restart is how a fixed setting arrives; a setting still wrong costs one request and re-opens the
        circuit twice as long. Returns the held accounts (emptied) for the caller to wake, [] when closed."""
        if not self.redis.hexists(breaker_key(provider), "until"):
            return []
        self.redis.hset(breaker_key(provider), "until", self.now())
        self.redis.delete(probe_key(provider))
        held = self.take_held(provider)
        log.warning("provider.probe_now", provider=provider, held_accounts=len(held))
        return held

    def state(self, provider: str) -> CircuitState:
        fields = read_breaker(self.redis, provider)
        if not fields:
            return CircuitState(provider)
        return CircuitState(
            provider,
            open_until=float(fields.get("until", "0")),
            open_seconds=float(fields.get("seconds") or 0),
            setting=fields.get("setting", ""),
            reason=fields.get("reason", ""),
            trips=int(fields.get("trips") or 0),
        )


def probe_open_circuits(settings: Settings, providers: Iterable[str]) -> int:
    """A worker starts (a restart is how a fixed setting arrives): every open circuit of `providers` probes
    at once and the accounts each held are woken, so contacts held for a setting now fixed go within seconds
    of the restart instead of at the end of an opening of up to MAX_OPEN_SECONDS. How many were woken."""
    store = open_store(settings)
    try:
        breaker, now, woken = CircuitBreaker(store.redis), clock_from(settings).now(), 0
        for provider in providers:
            for account_id in breaker.probe_now(provider):
                store.wake_no_later(account_id, now)
                woken += 1
        return woken
    finally:
        store.redis.close()
