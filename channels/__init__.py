"""One module per channel behind one small contract (channels.base); provider sandboxes in channels.sandbox.

REGISTRY maps a channel's name to the `ChannelSpec` its module declares (channels.spec): its adapter, its
queue, who it sends as, how its message is composed and any step before a send. Adding a channel is one
module here and one line below; the workers read everything else from the spec.
"""

from __future__ import annotations

from typing import Any

from channels import agency, aliyun_sms, email, letter, sms, voice, wechat
from channels.base import (
    OUTCOME_KINDS,
    ChannelAdapter,
    ContactDeferred,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderOutcome,
    ProviderRefused,
    Receipt,
    TransientDeliveryError,
    WebhookRejected,
)
from channels.spec import ChannelSpec, Draft, ProviderSpec
from config.settings import Settings

REGISTRY: dict[str, ChannelSpec] = {
    spec.name: spec for spec in (sms.SPEC, voice.SPEC, email.SPEC, letter.SPEC, agency.SPEC, wechat.SPEC)
}


# Providers beyond each channel's own, by module (each declares `PROVIDER = ProviderSpec(...)`).
EXTRA_PROVIDERS: tuple[ProviderSpec, ...] = (aliyun_sms.PROVIDER,)

PROVIDERS: dict[tuple[str, str], ProviderSpec] = {
    **{(spec.name, spec.provider): spec.own_provider() for spec in REGISTRY.values()},
    **{(extra.channel, extra.name): extra for extra in EXTRA_PROVIDERS},
}


def providers_of(channel: str) -> list[str]:
    """Every provider a channel can send through, its own first."""
    return [name for (owner, name) in PROVIDERS if owner == channel]


def provider_spec(channel: str, provider: str) -> ProviderSpec:
    """The spec of one provider of a channel; an unknown pair lists the channel's providers."""
    try:
        return PROVIDERS[channel, provider]
    except KeyError:
        raise KeyError(f"channel {channel!r} has no provider {provider!r}; it has: {providers_of(channel)}") from None


def own_provider_of(channel: str) -> str:
    """The provider a channel declares itself (its spec's); a channel without a spec here, its own name."""
    spec = REGISTRY.get(channel)
    return channel if spec is None else spec.provider


def provider_key(channel: str, provider: str) -> str:
    """The name a provider's circuit breaker, rate limit, health weight and shared session are kept under: the
    channel's own provider keeps the channel's name (so the circuits kept in Redis and DISPATCHER_RATE_LIMITS
    read as before), any other provider of the channel is `CHANNEL.PROVIDER`, e.g. `sms.aliyun`."""
    return channel if provider == own_provider_of(channel) else f"{channel}.{provider}"


def provider_keys() -> dict[str, tuple[str, str]]:
    """Every provider's key -> (channel, provider), for what is built or probed per provider."""
    return {provider_key(channel, provider): (channel, provider) for channel, provider in PROVIDERS}


def spec_of(name: str) -> ChannelSpec:
    """The spec of a channel name; an unknown name lists the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown channel {name!r}; known: {sorted(REGISTRY)}") from None


def build_adapter(name: str, settings: Settings, **options: Any) -> ChannelAdapter:
    """The adapter for a channel name; an unknown name lists the known ones."""
    adapter: ChannelAdapter = spec_of(name).adapter(settings, **options)
    return adapter


__all__ = [
    "OUTCOME_KINDS",
    "REGISTRY",
    "ChannelAdapter",
    "ChannelSpec",
    "ContactDeferred",
    "DeliveryError",
    "Draft",
    "OutboundMessage",
    "PermanentDeliveryError",
    "PROVIDERS",
    "ProviderOutcome",
    "ProviderRefused",
    "ProviderSpec",
    "Receipt",
    "TransientDeliveryError",
    "WebhookRejected",
    "build_adapter",
    "own_provider_of",
    "provider_key",
    "provider_keys",
    "provider_spec",
    "providers_of",
    "spec_of",
]
