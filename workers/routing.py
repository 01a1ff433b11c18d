"""Providers under a channel: which of a contact's route carries it (the choose-provider step of
workers/delivery.py), and what the providers' answers do to their health weights.

    the route           DISPATCHER_ROUTES for the channel and the debtor's country (dispatcher.core.routing);
                        the channel's own provider alone when the table says nothing (today's behaviour)
    minus               the providers that already definitely did not send this contact (a failover), and
                        those whose circuit is open (workers/circuit.py): an open breaker gets nothing
    picked              at random in proportion to the health weights every worker shares through Redis
                        (dispatcher.state.provider_health), as GOV.UK Notify's `provider_to_use` does

A channel with one provider in every route never reads or writes a weight: its sends cost what they cost
before routes existed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence

from channels import PROVIDERS, own_provider_of, provider_key, spec_of
from config.settings import Settings
from dispatcher.core.models import Account, Contact
from dispatcher.core.routing import route_of
from dispatcher.state.provider_health import ProviderHealth


class Router:
    """The routes of the settings, the shared health weights, and a random draw (injected by tests)."""

    def __init__(self, settings: Settings, health: ProviderHealth, draw: Callable[[], float] = random.random) -> None:
        self.routes = settings.routes
        self.health = health
        self.draw = draw
        self.slow_seconds = settings.provider_slow_seconds
        # Every provider a channel's routes name (its own first): the companions a weight moves against.
        self.providers: dict[str, tuple[str, ...]] = {}
        for channel, table in settings.routes.items():
            named = [own_provider_of(channel)] + [p for providers in table.values() for p in providers]
            self.providers[channel] = tuple(dict.fromkeys(named))
        self._single: dict[str, tuple[str, ...]] = {}
        self.settings = settings
        self._keys: dict[tuple[str, str], str] = {}
        self._senders: dict[tuple[str, str], str] = {}

    def route(self, contact: Contact, account: Account | None) -> tuple[str, ...]:
        """The providers that may carry the contact, in the route's order."""
        channel = contact.channel.value
        if channel not in self.routes:  # the channel's own provider only, without reading the account
            single = self._single.get(channel)
            if single is None:
                single = self._single[channel] = (own_provider_of(channel),)
            return single
        return route_of(self.routes, contact.channel, account, own_provider_of(channel))

    def weighted(self, channel: str) -> bool:
        """Whether the channel has more than one provider: only then are weights kept for it."""
        return len(self.providers.get(channel, ())) > 1

    def weights(self, channel: str) -> dict[str, float]:
        return self.health.weights(channel, self.providers.get(channel, ()))

    def pick(self, candidates: Sequence[str], weights: Mapping[str, float]) -> str:
        """One of `candidates` at random in proportion to its weight; the first when every weight is 0."""
        total = sum(max(0.0, weights.get(p, 0.0)) for p in candidates)
        if len(candidates) == 1 or total <= 0:
            return candidates[0]
        mark = self.draw() * total
        for provider in candidates:
            mark -= max(0.0, weights.get(provider, 0.0))
            if mark < 0:
                return provider
        return candidates[-1]

    def failed(self, channel: str, provider: str) -> None:
        """A request to `provider` failed (or was slow): counted towards a burst that moves the weights."""
        if self.weighted(channel):
            self.health.failed(channel, provider, self.providers[channel])

    def timed(self, channel: str, provider: str, started: float) -> None:
        """A request that took longer than DISPATCHER_PROVIDER_SLOW_SECONDS counts as a failure."""
        if self.weighted(channel) and time.perf_counter() - started > self.slow_seconds:
            self.failed(channel, provider)

    def key_of(self, channel: str, provider: str) -> str:
        """The provider's breaker, limiter and adapter key (channels.provider_key), worked out once."""
        key = self._keys.get((channel, provider))
        if key is None:
            key = self._keys[channel, provider] = provider_key(channel, provider)
        return key

    def sender(self, channel: str, provider: str) -> str:
        """Who a provider of a channel sends as (its spec's sender), worked out once."""
        sender = self._senders.get((channel, provider))
        if sender is None:
            own = provider == own_provider_of(channel)  # the channel's spec (REGISTRY) declares its own
            sender = (spec_of(channel).sender if own else PROVIDERS[channel, provider].sender)(self.settings)
            self._senders[channel, provider] = sender
        return sender
