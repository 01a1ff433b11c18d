"""What the send pipeline's steps (workers/delivery.py) pass along: one contact on its way (`One`), what a
batch's steps share and leave for the record step (`Batch`), how a contact ended this time (`Delivery`), and
the back-off of the contacts that definitely failed for now, worked out for the whole batch at its end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis

from channels.base import ContactDeferred, OutboundMessage, TransientDeliveryError
from channels.render import TemplateContextError
from channels.retry import transient_backoff
from config.settings import Settings
from dispatcher.core.events import Event
from dispatcher.core.models import Account, ClaimStatus, Contact, HistoryEntry, OutcomeKind
from dispatcher.state.gate import ClaimResult
from dispatcher.state.redis_keys import retries_key
from dispatcher.state.store import Loaded
from workers.circuit import Admission
from workers.limiter import TokenRun

# A wait longer than this goes back to the schedule instead of the broker: no long ETAs on Redis.
MAX_REQUEUE_SECONDS = 60.0
# A run of transient failures of one contact is forgotten once it has met none for this long (or for twice
# the longest back-off, if that is longer): its next failure waits the first back-off again.
RETRIES_TTL = 3600
# A step's answer that is not an end: the provider definitely did not send it, the next one of its route may.
FAILOVER = "failover"


@dataclass(frozen=True)
class Delivery:
    contact_id: str
    result: str  # sent | failed | unknown | deferred | denied | claimed_elsewhere | throttled | retry |
    # retry_later | template_error | circuit_open (and, between steps only, failover)
    retry_in: float | None = None
    detail: str | None = None


@dataclass
class One:
    """One contact on its way through the steps; each step fills in what the next needs."""

    contact: Contact
    provider: str  # the provider it goes to (the choose-provider step's pick), named on its attempt and metrics
    key: str  # whose breaker, rate limit and adapter it uses: the provider's key (channels.provider_key; the
    # channel's own provider keeps the channel's name, as the circuits and the rate-limit settings are keyed)
    claim: ClaimResult | None = None
    attempt: HistoryEntry | None = None  # the attempt the last look wrote down, claimed by the claim step
    token: Callable[[], None] | None = None  # the limiter's gate, run before each request leaves
    message: OutboundMessage | None = None
    ending: tuple[ClaimStatus, dict[str, str], OutcomeKind | None] | None = None  # how its claim ends, if it does
    route: tuple[str, ...] = ()  # the providers that may carry it, in the route's order (set by choose_provider)
    tried: list[str] = field(default_factory=list)  # those that definitely did not send it (failed over)

    def alternatives(self) -> bool:
        """Whether another provider of its route is still untried: a definite non-send fails over to it."""
        return any(p != self.provider and p not in self.tried for p in self.route)

    def again(self) -> None:
        """Forget what a provider that did not send it left: the steps run again from the choice."""
        self.tried.append(self.provider)
        self.claim = self.attempt = self.token = self.message = self.ending = None


@dataclass
class Batch:
    """What one batch's steps share and what they leave for the record step, written together at the end."""

    loaded: dict[str, Loaded]
    already_waiting: frozenset[str] = frozenset()
    admissions: dict[str, Admission] = field(default_factory=dict)
    done: dict[str, Delivery] = field(default_factory=dict)
    held: dict[str, list[Contact]] = field(default_factory=dict)  # by breaker key: parked once, at the end
    stop: tuple[str, float] | None = None  # ("throttled", wait): the rest of the batch waits unclaimed
    ended: list[tuple[Contact, ClaimStatus, dict[str, str]]] = field(default_factory=list)
    outcomes: list[tuple[str, Event]] = field(default_factory=list)
    failing: list[tuple[Contact, HistoryEntry, TransientDeliveryError]] = field(default_factory=list)
    deferred: list[tuple[Contact, HistoryEntry, ContactDeferred]] = field(default_factory=list)
    broken: list[TemplateContextError] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)  # breaker keys whose provider answered (a probe closes)
    tokens: dict[tuple[str, str], TokenRun] = field(default_factory=dict)  # by rate-limit key and sender
    pending: Counter[str] = field(default_factory=Counter)  # contacts not yet past the limiter, by key
    accounts: dict[str, Account] = field(default_factory=dict)  # as read for the batch: the routes' countries
    weights: dict[str, dict[str, float]] = field(default_factory=dict)  # by channel, read once per batch
    providers: dict[str, str] = field(default_factory=dict)  # contact id -> the provider it went to last

    def account(self, account_id: str) -> Account | None:
        """The account as the batch read it (the last look may have taken it off `loaded` since)."""
        known = self.accounts.get(account_id)
        if known is None:
            loaded = self.loaded.get(account_id)
            if loaded is not None and loaded.record is not None:
                known = self.accounts[account_id] = loaded.record.account
        return known


Releases = dict[tuple[str, bool], list[tuple[Contact, HistoryEntry]]]  # (audited reason, forget) -> claims


def back_off(
    batch: Batch, settings: Settings, client: redis.Redis, now: datetime
) -> tuple[Releases, list[tuple[str, datetime]]]:
    """How long each contact that definitely failed for now waits: what the provider's Retry-After (or its
    deferral) says, or the back-off for the transient failures it met in a row (counted in Redis, so the count
    survives a re-plan); a minute at most on the broker (released, queued), longer on the schedule
    (forgotten). A deferral for one recipient counts no failure."""
    releases: Releases = {}
    wake_later: list[tuple[str, datetime]] = []
    waits: list[tuple[Contact, HistoryEntry, float, str, str]] = []
    if batch.failing:
        tried = _count_tries(batch.failing, settings, client)
        for (contact, attempt, exc), tries in zip(batch.failing, tried, strict=True):
            wait = exc.retry_after or transient_backoff(
                tries,
                first=settings.retry_backoff_seconds,
                cap=settings.retry_backoff_max_seconds,
                jitter=settings.retry_backoff_jitter,
            )
            waits.append((contact, attempt, wait, str(exc), "transient_error"))
    for contact, attempt, deferral in batch.deferred:
        waits.append((contact, attempt, deferral.retry_after, str(deferral), "deferred_by_provider"))
    for contact, attempt, wait, why, reason in waits:
        later = wait > MAX_REQUEUE_SECONDS
        releases.setdefault((reason, later), []).append((contact, attempt))
        if later:
            wake_later.append((contact.account_id, now + timedelta(seconds=wait)))
        result = "retry_later" if later else "retry"
        batch.done[contact.id] = Delivery(contact.id, result, retry_in=wait, detail=why)
    return releases, wake_later


def _count_tries(
    failing: Sequence[tuple[Contact, HistoryEntry, TransientDeliveryError]], settings: Settings, client: redis.Redis
) -> list[int]:
    """Count one more transient failure for each contact, in one round trip; each one's count."""
    ttl = int(max(RETRIES_TTL, 2 * settings.retry_backoff_max_seconds))
    pipe = client.pipeline(transaction=False)
    for contact, _, _ in failing:
        pipe.hincrby(retries_key(contact.account_id), contact.id, 1)
        pipe.expire(retries_key(contact.account_id), ttl)
    return [int(count) for count in pipe.execute()[0::2]]
