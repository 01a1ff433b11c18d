"""The small contract every channel keeps, its values, and the errors that tell the caller what to do.

Errors (each adapter translates its provider's errors into these in exactly one place)::

    DeliveryError                      the provider did not accept the contact
    ├── TransientDeliveryError         try again later: timeout, 429, 5xx, back-pressure
    │       .retry_after: float|None   seconds the provider (or a limiter) asked us to wait
    │       .ambiguous: bool           the request may have reached the provider (read timeout):
    │                                  reconcile from callbacks before sending again
    │   ├── RateLimited                our own rate limit refused the request before it left: a
    │   │                              definite non-send; wait `retry_after`, never retried in the task
    │   └── ProviderMisconfigured      our configuration is wrong (401, 403, 404, unknown host, TLS):
    │           .setting: str          a definite non-send and never a debtor outcome; the claim goes
    │           .provider: str         back, the provider's circuit opens, `setting` names the variable
    ├── PermanentDeliveryError         do not retry: record the outcome and re-plan
    │   │   .outcome_kind: str         one of OUTCOME_KINDS, e.g. 'invalid_address', 'opted_out'
    │   └── ProviderRefused            the provider will not carry this contact for reasons of its own (a
    │                                  destination it does not serve), not the debtor's: a definite non-send;
    │                                  another provider of the route may take it, else it ends `failed`
    ├── ContactDeferred                the provider refused this recipient for now (a per-number daily
    │       .retry_after: float        limit): a definite non-send; the contact waits `retry_after`, no
    │                                  failover, no penalty on the provider's health
    └── LookupUnavailable              find_sent only: the provider cannot say whether it has the contact
                                       (SMTP, or an answer we cannot read as yes or no); the claim stays
                                       `unknown`, counts against caps and is reported, never called sent

Reconciling a claim in doubt (`Reconcilable.find_sent`): a claim taken but never ended (its worker died,
or the request timed out after it left) is resolved from the provider's own records. `find_sent` answers
Evidence(found=True, provider_id, status) when the provider has the contact, Evidence(found=False) when
the provider definitely has no such request, raises TransientDeliveryError when the provider could not be
asked right now (timeouts, 429, 5xx, and 401/403/404 too: a misconfiguration is never evidence of
absence), and LookupUnavailable when asking cannot tell.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import httpx

from config.errors import DispatcherError, InputRejected

# Mirrors dispatcher.core.models.OutcomeKind; channels may not import dispatcher, so the strings live here too
# (tests/unit/test_outcome_kinds.py keeps the two equal).
OUTCOME_KINDS: frozenset[str] = frozenset(
    {
        "sent",
        "delivered",
        "undelivered",
        "failed",
        "answered",
        "no_answer",
        "busy",
        "voicemail",
        "bounced",
        "returned",
        "opted_out",
        "invalid_address",
        "wrong_party",
        "refused",
        "handed_off",
    }
)

PostalAddress = dict[str, str]


@dataclass(frozen=True)
class OutboundMessage:
    """One contact, rendered and addressed, ready for a provider."""

    contact_id: str
    account_id: str
    to: str | PostalAddress  # E.164 phone, email address, or a postal address dict
    locale: str
    text: str
    subject: str | None = None
    html: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Receipt:
    """What the provider said when it accepted the contact."""

    provider_id: str
    status: str
    segments: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderOutcome:
    """An outcome a provider reported later, by callback or webhook."""

    contact_id: str
    kind: str
    provider_id: str
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in OUTCOME_KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r}")


class DeliveryError(DispatcherError):
    """The provider did not accept the contact; see the subclasses for what to do next."""


class TransientDeliveryError(DeliveryError):
    """Try again later; `retry_after` says when, if the provider said."""

    def __init__(self, message: str, retry_after: float | None = None, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class RateLimited(TransientDeliveryError):
    """Our own cluster-wide rate limit said not yet; the request never left."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit reached; a token frees up in {retry_after:.3f} s", retry_after=retry_after)


# The last step before a request leaves: every adapter passes it just before writing to the provider, after
# building the request, so a rate-limit token is taken as close to the provider's clock as we can get.
_REQUEST_GATE: ContextVar[Callable[[], None] | None] = ContextVar("request_gate", default=None)


@contextmanager
def request_gate(gate: Callable[[], None]) -> Iterator[None]:
    """Run `gate` (it may raise RateLimited) before each provider request made inside the block."""
    token = _REQUEST_GATE.set(gate)
    try:
        yield
    finally:
        _REQUEST_GATE.reset(token)


def pass_request_gate() -> None:
    """Called by adapters right before a request leaves; nothing when no gate is set (lookups, tests)."""
    gate = _REQUEST_GATE.get()
    if gate is not None:
        gate()


class ProviderMisconfigured(TransientDeliveryError):
    """The provider refused us, not the contact: a wrong key, URL, host or TLS setting. Nothing left; no
    retry in the task helps, and the debtor has no outcome: the caller gives the claim back and opens the
    provider's circuit until an operator fixes `setting` (the DISPATCHER_* variable that looks wrong)."""

    def __init__(self, message: str, provider: str, setting: str) -> None:
        super().__init__(message)
        self.provider = provider
        self.setting = setting


# What a misconfiguration looks like at the HTTP level: the answer says the key or the URL is wrong.
MISCONFIGURED_STATUSES = frozenset({401, 403, 404})


def misconfiguration_of(exc: BaseException) -> str | None:
    """'unknown host' or 'TLS failure' when a transport error comes from DNS or the TLS handshake (our host
    or TLS setting), else None. Walks the cause chain: httpx, urllib3 and aiosmtplib all wrap the OS error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "unknown host"
        if isinstance(current, ssl.SSLError | ssl.CertificateError):
            return "TLS failure"
        text = str(current)
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo failed" in text:
            return "unknown host"
        if "CERTIFICATE_VERIFY_FAILED" in text or "WRONG_VERSION_NUMBER" in text or "SSL:" in text:
            return "TLS failure"
        current = current.__cause__ or current.__context__
    return None


def httpx_transport_error(
    exc: httpx.TransportError, provider: str, setting: str, what: str, *, sent: bool
) -> TransientDeliveryError:
    """An httpx transport failure of an HTTP provider: DNS or TLS points at `setting` (the host); any other is
    worth another try, ambiguous when a request that sends (`sent`) may have left before the failure."""
    reason = misconfiguration_of(exc)
    if reason is not None:
        return ProviderMisconfigured(f"{provider} {reason}: {exc!r}", provider, setting)
    never_left = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    return TransientDeliveryError(f"{provider} {what}: {exc!r}", ambiguous=sent and not never_left)


def seconds_until_midnight(local: datetime) -> float:
    """Seconds from `local` to the next midnight of its own zone (at least one): when a provider's daily
    quotas start again."""
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), local.tzinfo)
    return max(1.0, (midnight - local).total_seconds())


class PermanentDeliveryError(DeliveryError):
    """Do not retry; record `outcome_kind` and let the strategy answer it."""

    def __init__(self, message: str, outcome_kind: str) -> None:
        if outcome_kind not in OUTCOME_KINDS:
            raise ValueError(f"unknown outcome kind {outcome_kind!r}")
        super().__init__(message)
        self.outcome_kind = outcome_kind


class ProviderRefused(PermanentDeliveryError):
    """The provider will not carry this contact for a reason of its own, not the debtor's (a destination it
    does not serve, a route it has not enabled): nothing left. Another provider of the contact's route may
    take it (workers/delivery.py fails over); with none left it ends `failed`. An invalid or opted-out
    number is the debtor's: a plain PermanentDeliveryError, never this."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "failed")


class ContactDeferred(DeliveryError):
    """The provider refused this one recipient for now (a per-number daily limit, e.g. Aliyun's
    isv.BUSINESS_LIMIT_CONTROL): nothing left. The contact waits `retry_after` seconds and tries again; it
    does not fail over to another provider and costs the provider's health weight nothing."""

    def __init__(self, message: str, retry_after: float) -> None:
        if retry_after <= 0:
            raise ValueError("a deferral says how long to wait: retry_after > 0")
        super().__init__(message)
        self.retry_after = retry_after


class LookupUnavailable(DeliveryError):
    """find_sent cannot tell whether the provider has the contact; the claim stays `unknown` (not sent)."""


@dataclass(frozen=True)
class SentQuery:
    """What the reconciler knows of a claim in doubt, for asking the provider whether it has the contact.

    `since` is when the claim was taken (the request left after it); `until` is the claim time plus the
    task's hard time limit (the request cannot have left after it). Both are timezone-aware UTC.
    """

    contact_id: str
    account_id: str
    to: str | PostalAddress  # the address the contact was sent to: E.164, email, postal dict
    sender: str | None  # our from-number, messaging service SID (MG...) or email From, where relevant
    since: datetime
    until: datetime
    text: str | None = None  # the rendered body, when the reconciler could rebuild it
    # Provider ids already recorded for other contacts (their receipts or evidence): never this claim's.
    # Lookups by number and time (SMS, voice) can see another contact's message to the same number.
    exclude_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("SentQuery.since and .until must be timezone-aware")
        if self.until < self.since:
            raise ValueError("SentQuery.until is before .since")


@dataclass(frozen=True)
class Evidence:
    """The provider's answer: found (with its id and status) or definitely absent."""

    found: bool  # True: the provider has it; False: the provider definitely has no such request
    provider_id: str | None = None
    status: str | None = None  # the provider's own status, e.g. 'queued', 'delivered', 'handed_off'

    def __post_init__(self) -> None:
        if self.found and not self.provider_id:
            raise ValueError("found evidence needs the provider's id")
        if not self.found and self.provider_id:
            raise ValueError("absent evidence carries no provider id")

    @classmethod
    def absent(cls) -> Evidence:
        return cls(found=False)


@runtime_checkable
class Reconcilable(Protocol):
    """An adapter that can ask its provider whether a contact in doubt reached it."""

    def find_sent(self, query: SentQuery) -> Evidence:
        """Evidence from the provider; TransientDeliveryError to ask later; LookupUnavailable if it cannot tell."""
        ...


def lookup_error(label: str, status: int, retry_after: str | None) -> DeliveryError:
    """For find_sent over HTTP: 429, 5xx and also 401/403/404 mean ask again later (a wrong key or URL is
    never evidence of absence); any other 4xx means asking this way cannot tell (LookupUnavailable)."""
    if status in (401, 403, 404, 429) or status >= 500:
        return TransientDeliveryError(label, retry_after=parse_retry_after(retry_after))
    return LookupUnavailable(label)


class WebhookRejected(InputRejected):
    """A callback failed its signature or freshness check; answer 403 and record nothing."""


@runtime_checkable
class ChannelAdapter(Protocol):
    """Sends one contact through one provider; callbacks are parsed by the adapter's own functions."""

    name: str

    def send(self, message: OutboundMessage) -> Receipt:
        """Hand the message to the provider; raise a DeliveryError if it was not accepted."""
        ...

    def close(self) -> None:
        """Release connections and loops held by the adapter."""
        ...


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header holding delta-seconds; an HTTP-date or junk gives None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


AdapterFactory = Callable[..., ChannelAdapter]
