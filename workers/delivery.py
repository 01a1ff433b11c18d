"""The send pipeline for a batch of contacts of one channel, in small steps, each testable alone:

    one read of the accounts → per contact: last look + claim → render → send with short retries, each
    request taking its rate-limit token at the adapter's last step before the wire → then, for the batch:
    end the claims → record the outcomes

What the caller (a Celery task) must do next comes back per contact as a `Delivery`: nothing, or retry in
N seconds. A contact id is never sent twice: the claim is the gate, and every path out of it ends or
releases the claim.

Waits: a contact the rate limit holds comes back on the broker within a second or so; one that met a
transient error waits longer each time it meets one in a row (channels.retry.transient_backoff: about
DISPATCHER_RETRY_BACKOFF_SECONDS, doubling up to DISPATCHER_RETRY_BACKOFF_MAX_SECONDS, less a random share),
or as long as the provider's Retry-After says; up to a minute on the broker, longer on the schedule. A
contact an open circuit holds goes back to the schedule (workers/circuit.py says why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from channels import spec_of
from channels.base import (
    ChannelAdapter,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    RateLimited,
    Receipt,
    TransientDeliveryError,
    request_gate,
)
from channels.render import Renderer, TemplateContextError
from channels.retry import retry_transient, transient_backoff
from config.settings import Settings
from dispatcher.claims import ClaimStatus
from dispatcher.engine import Engine
from dispatcher.events import Event, Outcome
from dispatcher.gate import ClaimResult
from dispatcher.metrics import CONTACTS, tally
from dispatcher.models import Contact, HistoryEntry, OutcomeKind
from dispatcher.redis_keys import retries_key
from workers.circuit import CircuitBreaker
from workers.limiter import RateLimiter
from workers.messages import build_message
from workers.metrics import timed_send, waited

# A wait longer than this goes back to the schedule instead of the broker: no long ETAs on Redis.
MAX_REQUEUE_SECONDS = 60.0
# A run of transient failures of one contact is forgotten once it has met none for this long (or for twice
# the longest back-off, if that is longer): its next failure waits the first back-off again.
RETRIES_TTL = 3600


@dataclass(frozen=True)
class Delivery:
    contact_id: str
    result: str  # sent | failed | unknown | deferred | denied | claimed_elsewhere | throttled | retry |
    # retry_later | template_error | circuit_open
    retry_in: float | None = None
    detail: str | None = None


@dataclass
class _Endings:
    """What a batch's sends ended in, written together once the sends are done."""

    ended: list[tuple[Contact, ClaimStatus, dict[str, str]]] = field(default_factory=list)
    outcomes: list[tuple[str, Event]] = field(default_factory=list)
    released: list[tuple[Contact, HistoryEntry]] = field(default_factory=list)
    forgotten: list[tuple[Contact, HistoryEntry]] = field(default_factory=list)
    wake_later: list[tuple[str, datetime]] = field(default_factory=list)
    failing: list[tuple[Contact, HistoryEntry, TransientDeliveryError]] = field(default_factory=list)

    def note_ending(
        self, contact: Contact, status: ClaimStatus, detail: dict[str, str], outcome: OutcomeKind | None
    ) -> None:
        self.ended.append((contact, status, detail))
        if outcome is not None:
            event = Outcome(contact_id=contact.id, outcome=outcome, channel=contact.channel, detail=detail)
            self.outcomes.append((contact.account_id, event))


def _attempt_of(claim: ClaimResult) -> HistoryEntry:
    assert claim.attempt is not None, "a claim that says send carries its attempt"
    return claim.attempt


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        adapters: dict[str, ChannelAdapter],
        renderer: Renderer,
        limiter: RateLimiter,
        settings: Settings,
        retry_wait: float = 0.5,
        breaker: CircuitBreaker | None = None,
    ):
        self.breaker = breaker or CircuitBreaker(engine.store.redis)
        self.engine = engine
        self.adapters = adapters
        self.renderer = renderer
        self.limiter = limiter
        self.settings = settings
        self.retry_wait = retry_wait

    def deliver(self, contact: Contact) -> Delivery:
        return self.deliver_many([contact])[0]

    def deliver_many(
        self, contacts: Sequence[Contact], already_waiting: frozenset[str] = frozenset()
    ) -> list[Delivery]:
        """The pipeline for a batch, in the order given. One round trip each for the read of the accounts, the
        claims' endings and the outcomes; each contact's token and claim go just before its send, so the provider
        sees no more than the limit in any second, and a worker killed mid-batch leaves at most one claim in
        doubt (the reconciler asks the provider about it). `already_waiting`: contacts whose rate-limit wait
        is already audited (a re-queued batch), so a wait is recorded once, not at every re-check."""
        gate = self.engine.gate
        done: dict[str, Delivery] = {}
        batch = _Endings()
        broken: list[TemplateContextError] = []
        admissions = {channel: self.breaker.admit(channel) for channel in {c.channel.value for c in contacts}}
        for channel, admission in admissions.items():
            if admission.wait > 0:  # the provider's circuit is open: nothing is claimed, back to the schedule
                self._park(channel, [c for c in contacts if c.channel.value == channel], admission.wait, done)
        admitted = [contact for contact in contacts if contact.id not in done]
        claims = gate.claim_each(admitted)
        for index, contact in enumerate(admitted):
            structlog.contextvars.bind_contextvars(contact_id=contact.id)  # on every line about this contact
            _, claim = next(claims)
            if claim.verdict != "send":
                result = {"defer": "deferred", "deny": "denied"}.get(claim.verdict, claim.verdict)
                done[contact.id] = Delivery(contact.id, result, detail=claim.rule)
                continue
            try:
                message = self._message(contact, claim)
            except TemplateContextError as exc:
                gate.release(contact, _attempt_of(claim), "template_error", forget=True)
                done[contact.id] = Delivery(contact.id, "template_error", detail=str(exc))
                broken.append(exc)
                continue
            try:
                done[contact.id] = self._send(contact, claim, message, batch)
            except RateLimited as exc:  # the request never left: back to queued, the rest of the batch waits
                wait = exc.retry_after or 1.0
                recorded = contact.id in already_waiting
                gate.release(contact, _attempt_of(claim), None if recorded else "rate_limited")
                self._throttled(admitted[index:], wait, already_waiting | {contact.id}, done)
                claims.close()
                break
            except ProviderMisconfigured as exc:  # our configuration, not the debtor: the claim goes back
                gate.release(contact, _attempt_of(claim), None)  # queued again, then parked with the rest
                wait = self.breaker.trip(exc, contact.channel.value)  # sms and voice share Twilio's key
                self._park(contact.channel.value, admitted[index:], wait, done)
                claims.close()
                break
            if admissions[contact.channel.value].probe:  # the half-open probe got an answer: the circuit closes
                gate.wake_now(self.breaker.succeeded(contact.channel.value))  # and what it held goes now
                admissions[contact.channel.value] = dataclasses.replace(admissions[contact.channel.value], probe=False)
        structlog.contextvars.unbind_contextvars("contact_id")
        self._back_off(batch, done)
        self._finish(batch)
        tally(CONTACTS, ((c.channel.value, done[c.id].result) for c in contacts if c.id in done))
        if broken:
            # Loudly, once the rest of the batch has ended: a strategy names a template that cannot render;
            # its claim was given back, so nothing half-filled went out.
            raise broken[0]
        return [done[contact.id] for contact in contacts]

    def _throttled(
        self, waiting: Sequence[Contact], wait: float, already_waiting: frozenset[str], done: dict[str, Delivery]
    ) -> None:
        """The limit is reached: the rest of the batch waits (the contact that met the limit was given back to
        queued, the others were never claimed)."""
        self._waiting(waiting, wait, already_waiting, done, "throttled", "rate_limited")

    def _waiting(
        self,
        waiting: Sequence[Contact],
        wait: float,
        already_waiting: frozenset[str],
        done: dict[str, Delivery],
        result: str,
        reason: str,
    ) -> None:
        """Contacts that wait unclaimed (a rate limit): audited once per wait, and handed back to the task to
        come again in `wait` seconds (a minute at most: no long ETAs on the broker)."""
        started = [contact for contact in waiting if contact.id not in already_waiting]
        if started:
            self.engine.gate.waiting(started, reason)
        retry_in = min(wait, MAX_REQUEUE_SECONDS)
        done.update((contact.id, Delivery(contact.id, result, retry_in=retry_in)) for contact in waiting)

    def _park(self, channel: str, held: Sequence[Contact], wait: float, done: dict[str, Delivery]) -> None:
        """Contacts an open circuit holds, unclaimed: back to the schedule, their accounts woken when the
        opening ends (or at once when a probe succeeds or a worker starts: workers/circuit.py), never a
        delayed message on the broker. Audited once while the circuit holds their account."""
        if not held:
            return
        newly_held = self.breaker.hold(channel, (contact.account_id for contact in held))
        started = [contact for contact in held if contact.account_id in newly_held]
        if started:
            self.engine.gate.waiting(started, "provider_unhealthy")
        # The opening is wall-clock time; the schedule runs on the deployment's clock (faster in the demo).
        self.engine.gate.park(held, self.engine.clock.now() + timedelta(seconds=wait * self.settings.clock_factor))
        done.update((contact.id, Delivery(contact.id, "circuit_open", detail=f"{wait:.1f} s")) for contact in held)

    def _message(self, contact: Contact, claim: ClaimResult) -> OutboundMessage:
        assert claim.record is not None, "a claim that says send carries the record it looked at"
        message = build_message(
            contact, claim.record, claim.history, self.renderer, self.settings, self.engine.strategy,
            self.engine.clock.now(),
        )  # fmt: skip
        prepare = spec_of(contact.channel.value).prepare
        if prepare is None:
            return message
        return prepare(message, self.settings, self.engine.gate.stash_voice_scripts)

    def _send(self, contact: Contact, claim: ClaimResult, message: OutboundMessage, batch: _Endings) -> Delivery:
        try:
            receipt = self._with_retries(contact, message)
        except (RateLimited, ProviderMisconfigured):
            raise
        except PermanentDeliveryError as exc:
            detail = {"error": str(exc)}
            batch.note_ending(contact, ClaimStatus.FAILED, detail, OutcomeKind(exc.outcome_kind))
            return Delivery(contact.id, "failed", detail=exc.outcome_kind)
        except TransientDeliveryError as exc:
            return self._transient(contact, _attempt_of(claim), exc, batch)  # "retry" until _back_off decides
        detail = {"provider_id": receipt.provider_id, "provider_status": receipt.status}
        if receipt.segments is not None:
            detail["segments"] = str(receipt.segments)
        kind = OutcomeKind.HANDED_OFF if receipt.status == "handed_off" else OutcomeKind.SENT
        batch.note_ending(contact, ClaimStatus.SENT, detail, kind)
        return Delivery(contact.id, "sent", detail=receipt.provider_id)

    def _with_retries(self, contact: Contact, message: OutboundMessage) -> Receipt:
        """The adapter's send with short retries. Every request, each retry included, takes its own token at
        the adapter's last step before the wire (channels.base.request_gate): the provider sees the limit we
        keep, and one coming back from an outage sees the limit, not the backlog of retries."""
        adapter, channel = self.adapters[contact.channel.value], contact.channel.value

        def token() -> None:
            wait = self.limiter.acquire(channel, self.sender(channel))
            if wait > 0:
                waited(channel, wait)
                raise RateLimited(wait)

        def one_try() -> Receipt:
            with request_gate(token):
                return timed_send(channel, adapter.send, message)

        return retry_transient(
            one_try, attempts=self.settings.send_retries, initial_wait=self.retry_wait, max_wait=MAX_REQUEUE_SECONDS
        )

    def _transient(
        self, contact: Contact, attempt: HistoryEntry, exc: TransientDeliveryError, batch: _Endings
    ) -> Delivery:
        if exc.ambiguous:
            # The request may have reached the provider: never resend blind; callbacks or housekeeping decide.
            batch.note_ending(contact, ClaimStatus.UNKNOWN, {"error": str(exc)}, None)
            return Delivery(contact.id, "unknown", detail=str(exc))
        batch.failing.append((contact, attempt, exc))
        return Delivery(contact.id, "retry", detail=str(exc))

    def _back_off(self, batch: _Endings, done: dict[str, Delivery]) -> None:
        """How long each contact that definitely failed for now waits: what the provider's Retry-After says,
        or the back-off for the transient failures it met in a row (counted in Redis, so the count survives
        a re-plan); a minute at most on the broker, longer on the schedule."""
        if not batch.failing:
            return
        settings = self.settings
        for (contact, attempt, exc), tries in zip(batch.failing, self._count_tries(batch.failing), strict=True):
            wait = exc.retry_after or transient_backoff(
                tries,
                first=settings.retry_backoff_seconds,
                cap=settings.retry_backoff_max_seconds,
                jitter=settings.retry_backoff_jitter,
            )
            if wait <= MAX_REQUEUE_SECONDS:
                batch.released.append((contact, attempt))
                done[contact.id] = Delivery(contact.id, "retry", retry_in=wait, detail=str(exc))
                continue
            batch.forgotten.append((contact, attempt))
            batch.wake_later.append((contact.account_id, self.engine.clock.now() + timedelta(seconds=wait)))
            done[contact.id] = Delivery(contact.id, "retry_later", retry_in=wait, detail=str(exc))

    def _count_tries(self, failing: Sequence[tuple[Contact, HistoryEntry, TransientDeliveryError]]) -> list[int]:
        """Count one more transient failure for each contact, in one round trip; each one's count."""
        ttl = int(max(RETRIES_TTL, 2 * self.settings.retry_backoff_max_seconds))
        pipe = self.engine.store.redis.pipeline(transaction=False)
        for contact, _, _ in failing:
            pipe.hincrby(retries_key(contact.account_id), contact.id, 1)
            pipe.expire(retries_key(contact.account_id), ttl)
        return [int(count) for count in pipe.execute()[0::2]]

    def _finish(self, batch: _Endings) -> None:
        """End the claims of what the batch sent or refused, give back what briefly failed, then record the outcomes
        (a fallback an outcome queues goes out through the engine's on_queued, the worker's dispatch)."""
        gate = self.engine.gate
        gate.end_claims(batch.ended)
        gate.release_many(batch.released, "transient_error")
        gate.release_many(batch.forgotten, "transient_error", forget=True)
        for account_id, moment in batch.wake_later:
            gate.wake_no_later(account_id, moment)
        if batch.outcomes:
            self.engine.record_events(batch.outcomes)

    def sender(self, channel: str) -> str:
        """Who a channel sends as: the rate limit is per provider and sender."""
        return spec_of(channel).sender(self.settings)
