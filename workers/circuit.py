"""A circuit breaker per provider, kept in Redis so every worker (and the pump's dispatch) sees the same one.

It opens on a misconfiguration only (channels.base.ProviderMisconfigured: 401, 403, 404, unknown host,
TLS failure), the one kind of failure that no retry fixes and that must never become a debtor's outcome:

    closed ──misconfigured──▶ open until T ──T passes──▶ half-open: one caller takes the probe
      ▲                          ▲                            │
      │                          └──misconfigured again───────┤  (open twice as long, up to the cap)
      └──────────────any other answer (sent, refused, 5xx)────┘

While it is open nothing is claimed on that channel: the contacts stay `queued`, their send tasks come back
after the wait, and no attempt is written (caps count nothing). Each opening logs one ERROR naming the
DISPATCHER_* setting that looks wrong and counts `dispatcher_provider_misconfigured`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog

from channels.base import ProviderMisconfigured
from dispatcher.metrics import PROVIDER_MISCONFIGURED
from dispatcher.redis_keys import breaker_key, probe_key

log = structlog.get_logger("workers.circuit")

FIRST_OPEN_SECONDS = 5.0
MAX_OPEN_SECONDS = 300.0
PROBE_HOLD_SECONDS = 30.0  # how long a half-open probe may take before another caller may probe
PROBE_BUSY_WAIT = 2.0  # what the others wait while one caller probes


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
        key = breaker_key(provider)
        previous = self.redis.hget(key, "seconds")
        seconds = self.first_open if previous is None else min(self.max_open, float(previous) * 2)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={"until": self.now() + seconds, "seconds": seconds, "setting": exc.setting, "reason": str(exc)},
        )
        pipe.hincrby(key, "trips", 1)
        pipe.delete(probe_key(provider))
        pipe.execute()
        PROVIDER_MISCONFIGURED.labels(provider, exc.setting).inc()
        log.error(
            "provider.misconfigured",
            provider=provider,
            setting=exc.setting,
            error=str(exc)[:300],
            open_seconds=seconds,
            hint=f"check {exc.setting}; contacts wait queued and go out once it is fixed",
        )
        return seconds

    def succeeded(self, provider: str) -> None:
        """The provider answered something other than a misconfiguration: close its circuit if it was open."""
        if self.redis.delete(breaker_key(provider)):
            self.redis.delete(probe_key(provider))
            log.info("provider.recovered", provider=provider)

    def state(self, provider: str) -> CircuitState:
        raw = self.redis.hgetall(breaker_key(provider))
        fields = {key.decode() if isinstance(key, bytes) else key: value for key, value in raw.items()}
        if not fields:
            return CircuitState(provider)

        def text(name: str) -> str:
            value = fields.get(name, b"")
            return value.decode() if isinstance(value, bytes) else str(value)

        return CircuitState(
            provider,
            open_until=float(text("until")),
            open_seconds=float(text("seconds") or 0),
            setting=text("setting"),
            reason=text("reason"),
            trips=int(text("trips") or 0),
        )
