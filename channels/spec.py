"""What the rest of the house knows of a channel: one `ChannelSpec`, declared by the channel's own module and
listed in `channels.REGISTRY`.

A worker turns a contact into a channel-neutral `Draft` (the rendered text, the address, and the facts of
the account a channel may add: plain values, or callables for the costly ones); the channel's spec turns it
into its `OutboundMessage`, takes any step of its own before the send, and says who it sends as. Each
channel has its own Celery queue, named after it, so a slow provider holds up only its own contacts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from channels.base import AdapterFactory, OutboundMessage, PostalAddress
from channels.render import Renderer
from config.providers import declare_provider, register_provider
from config.settings import Settings

# Keeps what the provider fetches from us while the contact goes out (a call's TwiML scripts), for `ttl`
# seconds: (account_id, contact_id, scripts, ttl). The worker passes the send gate's own method.
Stash = Callable[[str, str, dict[str, str], int], None]


@dataclass(frozen=True)
class Draft:
    """One contact rendered for the debtor, before its channel adds what only it needs."""

    contact_id: str
    account_id: str
    template: str
    locale: str
    to: str | PostalAddress
    text: str
    subject: str | None
    html: str | None
    extra: dict[str, Any]  # what every message carries: the unsubscribe link and its token
    renderer: Renderer  # with `context`, renders another template for the same contact
    context: Mapping[str, Any]
    local_today: date  # in the debtor's zone
    window_seconds_left: int  # until the channel's sending window closes in the debtor's zone
    case_file: Callable[[], dict[str, Any]] = field(default=dict)  # the account's file, built only when asked

    def message(self, **extra: Any) -> OutboundMessage:
        """The provider's message: the draft with what the channel adds to `extra`."""
        return OutboundMessage(
            contact_id=self.contact_id,
            account_id=self.account_id,
            to=self.to,
            locale=self.locale,
            text=self.text,
            subject=self.subject,
            html=self.html,
            extra={**self.extra, **extra},
        )


def plain_message(draft: Draft) -> OutboundMessage:
    """A channel that adds nothing to the draft."""
    return draft.message()


def default_sender(settings: Settings) -> str:
    """A channel without a sender identity of its own: one rate limit for the whole provider."""
    return "default"


@dataclass(frozen=True)
class ChannelSpec:
    """A channel's name (also its queue's, its breaker's and its rate limit's key in settings.rate_limits),
    the provider it sends through (named on every attempt, in the audit, the timeline and the metrics), its
    adapter, who it sends as (the rate limit is per provider and sender), how its message is composed, and the step
    it takes before each send, if any, and whether its adapter shares a session through Redis."""

    name: str
    adapter: AdapterFactory  # adapter(settings, **options)
    compose: Callable[[Draft], OutboundMessage] = plain_message
    sender: Callable[[Settings], str] = default_sender
    prepare: Callable[[OutboundMessage, Settings, Stash], OutboundMessage] | None = None
    # The adapter keeps a session every worker shares (WeChat's access token, its message ids): the workers
    # build it with `store=`, a dispatcher.state.provider_state.ProviderState named after the channel.
    shared_state: bool = False
    provider: str = ""  # the provider's name; the channel's own when left out

    def __post_init__(self) -> None:
        if self.provider:  # a spec that names none (a test's stand-in) leaves the declared one alone
            register_provider(self.name, self.provider)
        else:
            object.__setattr__(self, "provider", self.name)

    @property
    def queue(self) -> str:
        return self.name

    def own_provider(self) -> ProviderSpec:
        """The provider the channel declares itself: its adapter, composition, sender and shared session."""
        return ProviderSpec(
            name=self.provider, channel=self.name, adapter=self.adapter, compose=self.compose, sender=self.sender,
            shared_state=self.shared_state,
        )  # fmt: skip


@dataclass(frozen=True)
class ProviderSpec:
    """One provider a channel can send through. A channel's own provider comes from its `ChannelSpec`; a
    second one (Aliyun beside Twilio for SMS) declares its own spec in its module, listed in
    `channels.EXTRA_PROVIDERS`. Each provider has its own adapter, how the draft becomes its message (an
    approved-template gateway sends a template code and parameters, not the rendered text), who it sends as,
    and whether its adapter shares a session through Redis (`store=`, a ProviderState named after it)."""

    name: str
    channel: str
    adapter: AdapterFactory  # adapter(settings, **options)
    compose: Callable[[Draft], OutboundMessage] = plain_message
    sender: Callable[[Settings], str] = default_sender
    shared_state: bool = False

    def __post_init__(self) -> None:
        declare_provider(self.channel, self.name)  # what DISPATCHER_ROUTES is checked against
