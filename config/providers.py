"""Which provider each channel sends through: filled by each channel's `ChannelSpec` as it is declared; and
every provider declared for a channel (its own, and each `ProviderSpec` beside it), which DISPATCHER_ROUTES
and DISPATCHER_PROVIDER_WEIGHTS are checked against (config.settings.Settings.refuse_unknown_providers).

It lives in `config` because both sides read it: the channels declare it, and the dispatcher (the send
gate's attempt, the timeline, `simulate`) names it, and neither may import the other. A channel no spec
has declared (a process that never imported `channels`, or a channel registered without a spec) sends
through a provider of its own name.
"""

from __future__ import annotations

_PROVIDERS: dict[str, str] = {}  # channel name -> provider name
_KNOWN: dict[str, list[str]] = {}  # channel name -> every provider declared for it (its own, then others)


def register_provider(channel: str, provider: str) -> None:
    """The channel `channel` sends through `provider` (a spec declared again the same way changes nothing)."""
    _PROVIDERS[channel] = provider
    declare_provider(channel, provider)


def declare_provider(channel: str, provider: str) -> None:
    """`provider` can carry `channel` (a ProviderSpec beside the channel's own): DISPATCHER_ROUTES may name it."""
    known = _KNOWN.setdefault(channel, [])
    if provider not in known:
        known.append(provider)


def declared_providers() -> dict[str, list[str]]:
    """Every channel a spec declared, with the providers it can send through (empty in a process that never
    imported the channels)."""
    return {channel: list(providers) for channel, providers in _KNOWN.items()}


def provider_of(channel: str) -> str:
    """The provider a channel sends through; its own name when no spec declared one."""
    return _PROVIDERS.get(channel, channel)
