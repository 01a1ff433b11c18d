"""The send pipeline: one list of steps that every channel's contacts pass, each a small function of one
contact in one batch, testable alone. A channel contributes only its spec (channels.spec.ChannelSpec):
its adapter, who it sends as, how its message is composed and the step it takes before the send.

    read the batch's accounts (one round trip)
    per contact, in order:  breaker → last look → claim → limiter → compose → send
    for the batch:          record (back-offs, the claims' endings, the outcomes: one round trip each)

A step returns None to pass the contact on, or the contact's `Delivery` to stop it there. A contact id is
never sent twice: the claim is the gate, and every step after it ends or releases the claim (a definite
non-send releases it, an ambiguous one ends it `unknown`). The breaker comes before the last look and the
claim so that an open circuit claims nothing and writes no attempt: its contacts go back to the schedule.
The limiter's token is taken at the adapter's last step before the wire (channels.base.request_gate), for
every request, each short retry included. Providers under a channel (a choice by country, failover after
a definite non-send) slot in as one step, `choose provider`, before the breaker: the breaker's and the
limiter's keys become the provider's (`One.key`, today the channel itself; `One.provider` already names
the provider every attempt goes to).

Waits: a contact the rate limit holds comes back on the broker within a second or so; one that met a
transient error waits longer each time it meets one in a row (channels.retry.transient_backoff), or as long
as the provider's Retry-After says; up to a minute on the broker, longer on the schedule. A contact an open
circuit holds goes back to the schedule (workers/circuit.py says why).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
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
from dispatcher.core.events import Event, Outcome
from dispatcher.core.models import ClaimStatus, Contact, HistoryEntry, OutcomeKind
from dispatcher.engine import Engine
from dispatcher.state.gate import ClaimResult
from dispatcher.state.metrics import CONTACTS, tally
from dispatcher.state.redis_keys import retries_key
from dispatcher.state.store import Loaded
from workers.circuit import Admission, CircuitBreaker
from workers.limiter import RateLimiter, TokenRun
from workers.messages import build_message
from workers.metrics_exporter import timed_send, waited

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
class One:
    """One contact on its way through the steps; each step fills in what the next needs."""

    contact: Contact
    provider: str  # the provider it goes to (its channel spec's), named on its attempt, audit and metrics
    key: str  # whose breaker and rate limit it passes: the channel's name, as the circuits kept in Redis and
    # the rate-limit settings are keyed
    claim: ClaimResult | None = None
    attempt: HistoryEntry | None = None  # the attempt the last look wrote down, claimed by the claim step
    token: Callable[[], None] | None = None  # the limiter's gate, run before each request leaves
    message: OutboundMessage | None = None
    ending: tuple[ClaimStatus, dict[str, str], OutcomeKind | None] | None = None  # how its claim ends, if it does


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
    broken: list[TemplateContextError] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)  # breaker keys whose provider answered (a probe closes)
    tokens: dict[tuple[str, str], TokenRun] = field(default_factory=dict)  # by rate-limit key and sender
    pending: Counter[str] = field(default_factory=Counter)  # contacts not yet past the limiter, by key


Step = Callable[["Deliverer", Batch, One], Delivery | None]


def _attempt_of(one: One) -> HistoryEntry:
    assert one.attempt is not None, "a claimed contact carries its attempt"
    return one.attempt


# The steps, in order. Each takes the deliverer (its parts), the batch and the contact.
def breaker(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """An open circuit holds the contact unclaimed; the record step parks it on the schedule. The breaker is
    asked once per key and batch (one HGET), and the half-open probe is this batch's first send."""
    admission = batch.admissions.get(one.key)
    if admission is None:
        admission = batch.admissions[one.key] = run.breaker.admit(one.key)
    if admission.wait <= 0:
        return None
    batch.held.setdefault(one.key, []).append(one.contact)
    return Delivery(one.contact.id, "circuit_open", detail=f"{admission.wait:.1f} s")


def last_look(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """The contact rules again on the state read for the batch, and the atomic claim against the version they
    looked at (the claim step reads its answer). A no gives the queued claim back (the gate audits why and
    wakes the account when it may go). An account whose version moved (an earlier contact of this batch
    claimed on it, or another writer) is read afresh and looked at again."""
    contact, gate = one.contact, run.engine.gate
    account = batch.loaded.pop(contact.account_id, None)
    if account is None:  # the account's version moved with this batch's earlier claim: read it again
        one.claim = gate.claim(contact)
        return None
    looked = gate.look(account, contact, run.engine.clock.now())
    if isinstance(looked, ClaimResult):
        one.claim = looked
        return None
    one.attempt = looked
    one.claim = gate.claim_looked(account, contact, looked) or gate.claim(contact)  # None: it moved, again
    return None


def claim(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """The gate: only the caller whose claim moved the id from queued to sending goes on; a deferral, a
    denial or a claim taken elsewhere ends the contact here, nothing sent."""
    result = one.claim
    assert result is not None, "the last look step claims or says why not"
    if result.verdict == "send":
        one.attempt = result.attempt
        return None
    verdict = {"defer": "deferred", "deny": "denied"}.get(result.verdict, result.verdict)
    return Delivery(one.contact.id, verdict, detail=result.rule)


def limiter(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """The contact's rate-limit token, per provider and sender, taken by each request at the adapter's last
    step before the wire: the provider sees the limit we keep, retries included."""
    channel, sender = one.contact.channel.value, run.sender(one.contact.channel.value)
    tokens = batch.tokens.get((one.key, sender))
    if tokens is None:
        tokens = batch.tokens[one.key, sender] = TokenRun(run.limiter, one.key, sender)
    pending = batch.pending[one.key] + 1  # this contact and those after it: asked for together

    def token() -> None:
        wait = tokens.take(pending)
        if wait > 0:
            waited(channel, wait)
            raise RateLimited(wait)

    one.token = token
    return None


def compose(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """The channel's message from the account as claimed; a template that cannot render gives the claim back
    (forgotten, for the planner) and is raised once the batch has ended."""
    try:
        one.message = run.message(one.contact, one.claim)
    except TemplateContextError as exc:
        run.engine.gate.release(one.contact, _attempt_of(one), "template_error", forget=True)
        batch.broken.append(exc)
        return Delivery(one.contact.id, "template_error", detail=str(exc))
    return None


def send(run: Deliverer, batch: Batch, one: One) -> Delivery:
    """The adapter's send with short retries (channels.retry), and what its answer means for the claim."""
    contact, channel = one.contact, one.contact.channel.value
    adapter, message, token = run.adapters[channel], one.message, one.token
    assert message is not None and token is not None, "compose and limiter come before send"

    def one_try() -> Receipt:
        with request_gate(token):
            return timed_send(channel, one.provider, adapter.send, message)

    settings = run.settings
    try:
        receipt = retry_transient(
            one_try, attempts=settings.send_retries, initial_wait=run.retry_wait, max_wait=MAX_REQUEUE_SECONDS
        )
    except RateLimited as exc:  # the request never left: back to queued, the rest of the batch waits
        gate, waiting = run.engine.gate, contact.id in batch.already_waiting
        gate.release(contact, _attempt_of(one), None if waiting else "rate_limited")
        batch.already_waiting |= {contact.id}
        batch.stop = ("throttled", exc.retry_after or 1.0)
        return Delivery(contact.id, "throttled", retry_in=min(exc.retry_after or 1.0, MAX_REQUEUE_SECONDS))
    except ProviderMisconfigured as exc:  # our configuration, not the debtor: the claim goes back
        run.engine.gate.release(contact, _attempt_of(one), None)  # queued again, then parked with the rest
        wait = run.breaker.trip(exc, one.key)  # sms and voice share Twilio's key
        batch.admissions[one.key] = Admission(wait, probe=False)
        batch.held.setdefault(one.key, []).append(contact)
        return Delivery(contact.id, "circuit_open", detail=f"{wait:.1f} s")
    except PermanentDeliveryError as exc:
        batch.answered.add(one.key)
        one.ending = (ClaimStatus.FAILED, {"error": str(exc)}, OutcomeKind(exc.outcome_kind))
        return Delivery(contact.id, "failed", detail=exc.outcome_kind)
    except TransientDeliveryError as exc:
        batch.answered.add(one.key)
        if exc.ambiguous:  # it may have reached the provider: never resend blind; callbacks or housekeeping decide
            one.ending = (ClaimStatus.UNKNOWN, {"error": str(exc)}, None)
            return Delivery(contact.id, "unknown", detail=str(exc))
        batch.failing.append((contact, _attempt_of(one), exc))  # the record step says how long it waits
        return Delivery(contact.id, "retry", detail=str(exc))
    batch.answered.add(one.key)
    detail = {"provider_id": receipt.provider_id, "provider_status": receipt.status}
    if receipt.segments is not None:
        detail["segments"] = str(receipt.segments)
    kind = OutcomeKind.HANDED_OFF if receipt.status == "handed_off" else OutcomeKind.SENT
    one.ending = (ClaimStatus.SENT, detail, kind)
    return Delivery(contact.id, "sent", detail=receipt.provider_id)


STEPS: tuple[Step, ...] = (breaker, last_look, claim, limiter, compose, send)


class Deliverer:
    """Runs the steps over a batch; its parts are what the steps use."""

    def __init__(
        self,
        engine: Engine,
        adapters: dict[str, ChannelAdapter],
        renderer: Renderer,
        limiter: RateLimiter,
        settings: Settings,
        retry_wait: float = 0.5,
        breaker: CircuitBreaker | None = None,
        steps: tuple[Step, ...] = STEPS,
    ):
        self.breaker = breaker or CircuitBreaker(engine.store.redis)
        self.engine = engine
        self.adapters = adapters
        self.renderer = renderer
        self.limiter = limiter
        self.settings = settings
        self.retry_wait = retry_wait
        self.steps = steps

    def deliver_many(
        self, contacts: Sequence[Contact], already_waiting: frozenset[str] = frozenset()
    ) -> list[Delivery]:
        """The pipeline for a batch, in the order given: each contact's token and claim go just before its
        send, so the provider sees no more than the limit in any second, and a worker killed mid-batch leaves
        at most one claim in doubt. `already_waiting`: contacts whose rate-limit wait is already audited (a
        re-queued batch), so a wait is recorded once, not at every re-check."""
        loaded = self.engine.store.load_many(sorted({contact.account_id for contact in contacts}))
        batch = Batch({one.account_id: one for one in loaded}, already_waiting)
        batch.pending.update(contact.channel.value for contact in contacts)
        for index, contact in enumerate(contacts):
            structlog.contextvars.bind_contextvars(contact_id=contact.id)  # on every line about this contact
            channel = contact.channel.value
            batch.done[contact.id] = self.run_steps(batch, One(contact, spec_of(channel).provider, channel))
            if batch.stop is not None:
                self.wait_unclaimed(batch, contacts[index + 1 :])
                break
        structlog.contextvars.unbind_contextvars("contact_id")
        self.record(batch)
        ended = ((c.channel.value, batch.done[c.id].result) for c in contacts if c.id in batch.done)
        tally(CONTACTS, ((channel, spec_of(channel).provider, result) for channel, result in ended))
        if batch.broken:
            # Loudly, once the rest of the batch has ended: a strategy names a template that cannot render;
            # its claim was given back, so nothing half-filled went out.
            raise batch.broken[0]
        return [batch.done[contact.id] for contact in contacts]

    def run_steps(self, batch: Batch, one: One) -> Delivery:
        """The steps for one contact, until one answers; a claim that ended is noted for the record step."""
        batch.pending[one.key] -= 1
        for step in self.steps:
            delivery = step(self, batch, one)
            if delivery is not None:
                break
        else:
            raise AssertionError("the send step always answers")
        if one.ending is not None:
            (status, detail, outcome), contact = one.ending, one.contact
            batch.ended.append((contact, status, detail))
            if outcome is not None:
                event = Outcome(contact_id=contact.id, outcome=outcome, channel=contact.channel, detail=detail)
                batch.outcomes.append((contact.account_id, event))
        return delivery

    def wait_unclaimed(self, batch: Batch, rest: Sequence[Contact]) -> None:
        """The rate limit is reached: the rest of the batch waits unclaimed, audited once per wait, and comes
        back in `wait` seconds (a minute at most: no long ETAs on the broker)."""
        assert batch.stop is not None
        result, wait = batch.stop
        started = [contact for contact in rest if contact.id not in batch.already_waiting]
        if started:
            self.engine.gate.waiting(started, "rate_limited")
        retry_in = min(wait, MAX_REQUEUE_SECONDS)
        batch.done.update((contact.id, Delivery(contact.id, result, retry_in=retry_in)) for contact in rest)

    def message(self, contact: Contact, claim: ClaimResult | None) -> OutboundMessage:
        assert claim is not None and claim.record is not None, "a claim that says send carries its record"
        message = build_message(
            contact, claim.record, claim.history, self.renderer, self.settings, self.engine.strategy,
            self.engine.clock.now(),
        )  # fmt: skip
        prepare = spec_of(contact.channel.value).prepare
        if prepare is None:
            return message
        return prepare(message, self.settings, self.engine.gate.stash_voice_scripts)

    # The record step, for the whole batch.
    def record(self, batch: Batch) -> None:
        """End the claims of what the batch sent or refused, give back what briefly failed (each after its
        back-off), park what an open circuit held, close a circuit whose probe got an answer, then record the
        outcomes (a fallback an outcome queues goes out through the engine's on_queued, the worker's dispatch).

        Parked contacts go back to the schedule unclaimed, their accounts woken when the opening ends (or at
        once when a probe succeeds or a worker starts: workers/circuit.py), never as delayed messages on the
        broker; audited once while the circuit holds their account."""
        released, forgotten, wake_later = self.back_off(batch)
        breaker, gate, now = self.breaker, self.engine.gate, self.engine.clock.now()
        newly_held = {p: breaker.hold(p, (c.account_id for c in held)) for p, held in batch.held.items()}
        probed = [p for p in batch.answered if batch.admissions[p].probe and p not in batch.held]
        woken = [account_id for provider in probed for account_id in breaker.succeeded(provider)]
        gate.end_claims(batch.ended)
        gate.release_many(released, "transient_error")
        gate.release_many(forgotten, "transient_error", forget=True)
        for account_id, moment in wake_later:
            gate.wake_no_later(account_id, moment)
        for provider, held in batch.held.items():
            # The opening is wall-clock time; the schedule runs on the deployment's clock (faster in the demo).
            until = now + timedelta(seconds=batch.admissions[provider].wait * self.settings.clock_factor)
            gate.park(held, until, audited=[c for c in held if c.account_id in newly_held[provider]])
        if woken:
            gate.wake_now(woken)  # what the circuit held goes now
        if batch.outcomes:
            self.engine.record_events(batch.outcomes)

    def back_off(
        self, batch: Batch
    ) -> tuple[list[tuple[Contact, HistoryEntry]], list[tuple[Contact, HistoryEntry]], list[tuple[str, datetime]]]:
        """How long each contact that definitely failed for now waits: what the provider's Retry-After says,
        or the back-off for the transient failures it met in a row (counted in Redis, so the count survives
        a re-plan); a minute at most on the broker (released, queued), longer on the schedule (forgotten)."""
        released: list[tuple[Contact, HistoryEntry]] = []
        forgotten: list[tuple[Contact, HistoryEntry]] = []
        wake_later: list[tuple[str, datetime]] = []
        if not batch.failing:
            return released, forgotten, wake_later
        settings = self.settings
        for (contact, attempt, exc), tries in zip(batch.failing, self._count_tries(batch.failing), strict=True):
            wait = exc.retry_after or transient_backoff(
                tries,
                first=settings.retry_backoff_seconds,
                cap=settings.retry_backoff_max_seconds,
                jitter=settings.retry_backoff_jitter,
            )
            if wait <= MAX_REQUEUE_SECONDS:
                released.append((contact, attempt))
                batch.done[contact.id] = Delivery(contact.id, "retry", retry_in=wait, detail=str(exc))
                continue
            forgotten.append((contact, attempt))
            wake_later.append((contact.account_id, self.engine.clock.now() + timedelta(seconds=wait)))
            batch.done[contact.id] = Delivery(contact.id, "retry_later", retry_in=wait, detail=str(exc))
        return released, forgotten, wake_later

    def _count_tries(self, failing: Sequence[tuple[Contact, HistoryEntry, TransientDeliveryError]]) -> list[int]:
        """Count one more transient failure for each contact, in one round trip; each one's count."""
        ttl = int(max(RETRIES_TTL, 2 * self.settings.retry_backoff_max_seconds))
        pipe = self.engine.store.redis.pipeline(transaction=False)
        for contact, _, _ in failing:
            pipe.hincrby(retries_key(contact.account_id), contact.id, 1)
            pipe.expire(retries_key(contact.account_id), ttl)
        return [int(count) for count in pipe.execute()[0::2]]

    def sender(self, channel: str) -> str:
        """Who a channel sends as: the rate limit is per provider and sender."""
        return spec_of(channel).sender(self.settings)
