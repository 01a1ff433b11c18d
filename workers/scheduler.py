"""The beat's scheduler: Celery's own for the periodic entries, plus the pump and the callbacks' pump, run
inside beat itself.

The pump leases the due wake-ups here and sends one `dispatcher.plan` task per batch of due account ids,
so an idle cluster puts nothing on the broker and shows nothing in Flower (a `dispatcher.pump` task every
second used to, each a no-op). A beat that dies between the lease and the send loses nothing: the lease
runs out and the accounts come due again. Redis away: the pump waits for it and beat keeps running.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import structlog
from celery.beat import PersistentScheduler

from config.settings import Settings, load_settings
from dispatcher.core.clock import Clock
from dispatcher.state.store import Store
from dispatcher.state.webhook_endpoints import EndpointRegistry
from dispatcher.webhook_relay import callbacks_due
from dispatcher.wiring import clock_from, open_store

log = structlog.get_logger("workers.scheduler")

PUMP_EVERY = 1.0  # seconds between looks at the schedule
PLAN_BATCH = 500  # account ids per plan task
REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class BeatPump:
    """Leases due wake-ups and hands them to the planner workers, one task per batch."""

    def __init__(self, store: Store, clock: Clock, settings: Settings, send: Any) -> None:
        self.store, self.clock, self.settings, self.send = store, clock, settings, send
        self._away = False

    def run_once(self) -> int:
        """How many due accounts were handed over (0 when nothing was due: nothing was sent)."""
        try:
            due = self.store.lease_due(self.clock.now(), self.settings.lease_seconds, self.settings.pump_batch)
        except REDIS_AWAY as exc:
            if not self._away:
                log.warning("pump.redis_away", error=str(exc))
            self._away = True
            return 0
        self._away = False
        for start in range(0, len(due), PLAN_BATCH):
            self.send("dispatcher.plan", args=[due[start : start + PLAN_BATCH]], queue="plan")
        return len(due)


class CallbacksPump:
    """Sends `dispatcher.callbacks` every DISPATCHER_WEBHOOK_RELAY_INTERVAL_SECONDS, only when it has work
    (dispatcher.webhook_relay.callbacks_due): without endpoints, or with nothing new, nothing is sent."""

    def __init__(self, store: Store, clock: Clock, settings: Settings, send: Any) -> None:
        self.store, self.clock, self.send = store, clock, send
        self.registry = EndpointRegistry(store.redis, store.shards, lambda: clock.now().timestamp())
        self.every = settings.webhook_relay_interval_seconds
        self._next = 0.0

    def run_once(self) -> bool:
        """Whether a callbacks task was sent."""
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.every
        try:
            due = callbacks_due(self.store, self.registry, self.clock.now().timestamp())
        except REDIS_AWAY:
            return False  # the plan pump says so in the log
        if due:
            self.send("dispatcher.callbacks", args=[], queue="plan", expires=self.every * 5)
        return due


class DispatcherScheduler(PersistentScheduler):
    """`dispatcher beat` runs this: the periodic entries as usual, and the pump between them."""

    def setup_schedule(self) -> None:
        super().setup_schedule()
        settings = load_settings()
        store = open_store(settings)
        self.pump = BeatPump(store, clock_from(settings), settings, self.app.send_task)
        self.callbacks = CallbacksPump(store, clock_from(settings), settings, self.app.send_task)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        wait = float(super().tick(*args, **kwargs))
        self.pump.run_once()
        self.callbacks.run_once()
        return min(wait, PUMP_EVERY, self.callbacks.every)
