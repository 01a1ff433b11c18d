"""One runtime per worker process: settings, store, engine, adapters, renderer, limiter, deliverer.

Built lazily on first use, after the fork, so no connection or event loop is shared between processes.
The engine comes from the same builder the API and the commands use (dispatcher/wiring.py); what the
engine queues goes to the hand-off it is given, the send queues for a worker process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from channels import PROVIDERS, REGISTRY, ChannelAdapter, ProviderSpec, own_provider_of, provider_key
from channels.agencies import agency_providers
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
    settings.refuse_unknown_providers(_known_providers())  # against the providers this process can build
    engine = build_engine(settings, settings.redis_url, clock).engine
    routable = _routable(settings)
    adapters = {key: _adapter(settings, engine, key, spec) for key, spec in routable.items()}
    limits = {
        key: Limit(rate, settings.rate_limit_burst, settings.rate_limit_guard_seconds)
        for key, rate in _rates(settings, routable).items()
    }
    limiter = RateLimiter(engine.store.redis if _beyond_single(settings) else settings.redis_url, limits)
    deliverer = Deliverer(engine, adapters, Renderer(), limiter, settings, retry_wait)

    def queued(contacts: Sequence[Contact]) -> None:
        hand_off(contacts, settings.send_batch)

    engine.on_queued = queued
    return WorkerRuntime(settings, engine, deliverer)


def _known_providers() -> dict[str, list[str]]:
    """channel -> the providers this process can build (channels.PROVIDERS: each channel's own first)."""
    known: dict[str, list[str]] = {channel: [] for channel in REGISTRY}
    for channel, provider in PROVIDERS:
        known.setdefault(channel, []).append(provider)
    return known


def _routable(settings: Settings) -> dict[str, ProviderSpec]:
    """Each channel's own provider (its spec in channels.REGISTRY) and every other provider DISPATCHER_ROUTES
    names (channels.PROVIDERS), by key (channels.provider_key): each gets its adapter and rate limit."""
    routed = {(channel, p) for channel, table in settings.routes.items() for ps in table.values() for p in ps}
    specs = {channel: spec.own_provider() for channel, spec in REGISTRY.items()}
    for channel, provider in sorted(routed):
        if provider != own_provider_of(channel):
            specs[provider_key(channel, provider)] = PROVIDERS[channel, provider]
    for (channel, provider), spec in agency_providers(settings).items():  # DISPATCHER_AGENCIES, each its own key
        specs[provider_key(channel, provider)] = spec
    return specs


def _adapter(settings: Settings, engine: Engine, key: str, spec: ProviderSpec) -> ChannelAdapter:
    """A provider's adapter; one that shares a session through Redis keeps it under its key."""
    if spec.shared_state:
        adapter: ChannelAdapter = spec.adapter(settings, store=ProviderState(engine.store.redis, key))
    else:
        adapter = spec.adapter(settings)
    return adapter


def _rates(settings: Settings, keys: dict[str, ProviderSpec]) -> dict[str, float]:
    """Sends per second by provider key: DISPATCHER_RATE_LIMITS by the key (`sms`, `sms.aliyun`), else by the
    provider's name, else the channel's (each provider keeps its own windows at that rate)."""
    rates = dict(settings.rate_limits)
    for key, spec in keys.items():
        limits = settings.rate_limits
        rate = limits.get(key, limits.get(spec.name, limits.get(spec.channel)))
        if rate is not None:
            rates[key] = rate
    return rates


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
