"""One module per channel behind one small contract (channels.base); provider sandboxes in channels.sandbox.

REGISTRY maps a channel name to a factory taking the settings (and keyword options such as timeout).
Adapters are imported lazily so that a worker for one channel does not load every provider's SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.base import (
    OUTCOME_KINDS,
    REGISTRY,
    ChannelAdapter,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderOutcome,
    Receipt,
    TransientDeliveryError,
    WebhookRejected,
)
from config.settings import Settings

_ADAPTERS = {
    "sms": ("channels.sms", "SmsAdapter"),
    "voice": ("channels.voice", "VoiceAdapter"),
    "email": ("channels.email", "EmailAdapter"),
    "letter": ("channels.letter", "LetterAdapter"),
    "agency": ("channels.agency", "AgencyAdapter"),
}


def _factory(module: str, attribute: str) -> Any:
    def build(settings: Settings, **options: Any) -> ChannelAdapter:
        adapter_class = getattr(import_module(module), attribute)
        adapter: ChannelAdapter = adapter_class(settings, **options)
        return adapter

    return build


REGISTRY.update({name: _factory(module, attribute) for name, (module, attribute) in _ADAPTERS.items()})


def build_adapter(name: str, settings: Settings, **options: Any) -> ChannelAdapter:
    """The adapter for a channel name; an unknown name lists the known ones."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown channel {name!r}; known: {sorted(REGISTRY)}") from None
    return factory(settings, **options)


__all__ = [
    "OUTCOME_KINDS",
    "REGISTRY",
    "ChannelAdapter",
    "DeliveryError",
    "OutboundMessage",
    "PermanentDeliveryError",
    "ProviderOutcome",
    "Receipt",
    "TransientDeliveryError",
    "WebhookRejected",
    "build_adapter",
]
