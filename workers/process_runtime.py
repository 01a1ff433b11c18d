"""One runtime per worker process: settings, store, engine, adapters, renderer, limiter, deliverer.

Built lazily on first use, after the fork, so no connection or event loop is shared between processes.
The engine comes from the same builder the API and the commands use (dispatcher/wiring.py); what the
engine queues goes to the hand-off it is given, the send queues for a worker process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from channels import REGISTRY, build_adapter
from channels.render import Renderer
from config.settings import Settings, load_settings
from dispatcher.core.clock import Clock
from dispatcher.core.models import Contact
from dispatcher.engine import Engine
from dispatcher.state.provider_state import ProviderState
from dispatcher.wiring import build_engine
from workers.delivery import Deliverer
from workers.limiter import Limit, RateLimiter
from workers.queueing import dispatch

# Contacts the engine queued, and the most one send task carries.
HandOff = Callable[[Sequence[Contact], int], object]


@dataclass(frozen=True)
class WorkerRuntime:
    settings: Settings
    engine: Engine
    deliverer: Deliverer


def _beyond_single(settings: Settings) -> bool:
    """The state on a cluster or behind Sentinel: the limiter shares the store's client (it knows the topology)."""
    return settings.redis_cluster or (settings.redis_url or "").startswith("sentinel://")


def build_runtime(
    settings: Settings, hand_off: HandOff, clock: Clock | None = None, retry_wait: float = 0.5
) -> WorkerRuntime:
    assert settings.redis_url, "configure() refuses to start without DISPATCHER_REDIS_URL"
    engine = build_engine(settings, settings.redis_url, clock).engine
    adapters = {
        name: build_adapter(name, settings, store=ProviderState(engine.store.redis, name))
        if spec.shared_state
        else build_adapter(name, settings)
        for name, spec in REGISTRY.items()
    }
    limits = {
        key: Limit(rate, settings.rate_limit_burst, settings.rate_limit_guard_seconds)
        for key, rate in settings.rate_limits.items()
    }
    limiter = RateLimiter(engine.store.redis if _beyond_single(settings) else settings.redis_url, limits)
    deliverer = Deliverer(engine, adapters, Renderer(), limiter, settings, retry_wait)

    def queued(contacts: Sequence[Contact]) -> None:
        hand_off(contacts, settings.send_batch)

    engine.on_queued = queued
    return WorkerRuntime(settings, engine, deliverer)


_installed: WorkerRuntime | None = None


def worker_runtime() -> WorkerRuntime:
    """This process's runtime, built from the environment on first use, handing off to the send queues."""
    global _installed
    if _installed is None:
        _installed = build_runtime(load_settings(), dispatch)
    return _installed


def install_runtime(runtime: WorkerRuntime | None) -> None:
    """Use this runtime in this process (tests inject one with a manual clock); None forgets it."""
    global _installed
    _installed = runtime
