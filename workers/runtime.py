"""One runtime per worker process: settings, store, engine, adapters, renderer, limiter, deliverer.

Built lazily on first use, after the fork, so no connection or event loop is shared between processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from channels import REGISTRY, build_adapter
from channels.render import Renderer
from config.settings import Settings, load_settings
from dispatcher.clock import Clock, deployment_clock
from dispatcher.engine import Engine
from dispatcher.models import Contact
from dispatcher.store import Store
from dispatcher.strategy import load_strategy
from workers.delivery import Deliverer
from workers.limiter import Limit, RateLimiter


@dataclass(frozen=True)
class WorkerRuntime:
    settings: Settings
    engine: Engine
    deliverer: Deliverer


def clock_from(settings: Settings) -> Clock:
    return deployment_clock(settings.clock_start, settings.clock_factor, settings.clock_origin)


def build_runtime(settings: Settings, clock: Clock | None = None, retry_wait: float = 0.5) -> WorkerRuntime:
    assert settings.redis_url, "configure() refuses to start without DISPATCHER_REDIS_URL"
    store = Store.from_url(settings.redis_url, settings.schedule_shards)
    engine = Engine(store, load_strategy(settings.strategy_path), clock or clock_from(settings))
    adapters = {name: build_adapter(name, settings) for name in REGISTRY}
    limits = {
        key: Limit(rate, settings.rate_limit_burst, settings.rate_limit_guard_seconds)
        for key, rate in settings.rate_limits.items()
    }
    limiter = RateLimiter(settings.redis_url, limits)
    deliverer = Deliverer(engine, adapters, Renderer(), limiter, settings, retry_wait)
    engine.on_queued = lambda contacts: _dispatch(contacts, settings.send_batch)
    return WorkerRuntime(settings, engine, deliverer)


def _dispatch(contacts: Sequence[Contact], batch: int) -> None:
    from workers.tasks import dispatch  # the tasks module imports this one

    dispatch(contacts, batch)


_installed: WorkerRuntime | None = None


def worker_runtime() -> WorkerRuntime:
    """This process's runtime, built from the environment on first use."""
    global _installed
    if _installed is None:
        _installed = build_runtime(load_settings())
    return _installed


def install_runtime(runtime: WorkerRuntime | None) -> None:
    """Use this runtime in this process (tests inject one with a manual clock); None forgets it."""
    global _installed
    _installed = runtime
