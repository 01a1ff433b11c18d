"""The send pipeline: one list of steps that every channel's contacts pass, each a small function of one
contact in one batch, testable alone. A channel contributes only its spec (channels.spec.ChannelSpec) and
its providers' (channels.spec.ProviderSpec): adapter, who it sends as, how its message is composed.

    read the batch's accounts (one round trip)
    per contact, in order:  choose provider → breaker → last look → claim → limiter → compose → send
    for the batch:          record (back-offs, the claims' endings, the outcomes: one round trip each)

A step returns None to pass the contact on, or the contact's `Delivery` to stop it there. A contact id is
never sent twice: the claim is the gate, and every step after it ends or releases the claim (a definite
non-send releases it, an ambiguous one ends it `unknown`). The breaker comes before the last look and the
claim so that an open circuit claims nothing and writes no attempt: its contacts go back to the schedule.
The limiter's token is taken at the adapter's last step before the wire (channels.base.request_gate), for
every request, each short retry included.

Providers under a channel (workers/routing.py): `choose provider` picks one of the contact's route (the
debtor's country in DISPATCHER_ROUTES; the channel's own provider alone by default) whose circuit is not
open, by the health weights every worker shares; `One.provider` names it on the attempt the claim writes,
and `One.key` keys its breaker, rate limit and adapter. A definite non-send (the provider misconfigured or
refusing the contact for a reason of its own, a request that never reached it) releases the claim and the
steps run again from the choice with the route's next provider: a new attempt naming it. An ambiguous one
(the request may have left) ends the claim `unknown` with the provider it went to, which alone is asked
later (workers/reconcile.py); it never fails over. A deferral for one recipient (ContactDeferred) neither
fails over nor moves a weight.

Waits: a contact the rate limit holds comes back on the broker within a second or so; one that met a
transient error waits longer each time it meets one in a row (channels.retry.transient_backoff), or as long
as the provider's Retry-After (or deferral) says; up to a minute on the broker, longer on the schedule. A
contact an open circuit holds goes back to the schedule (workers/circuit.py says why).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from channels import PROVIDERS, own_provider_of, spec_of
from channels.base import (
    ChannelAdapter,
    ContactDeferred,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderRefused,
    RateLimited,
    Receipt,
    TransientDeliveryError,
    request_gate,
)
from channels.render import Renderer, TemplateContextError
from channels.retry import retry_transient
from config.settings import Settings
from dispatcher.core.events import Outcome
from dispatcher.core.models import ClaimStatus, Contact, HistoryEntry, OutcomeKind
from dispatcher.engine import Engine
from dispatcher.state.gate import ClaimResult
from dispatcher.state.metrics import CONTACTS, tally
from dispatcher.state.provider_health import ProviderHealth
from workers.circuit import Admission, CircuitBreaker
from workers.limiter import RateLimiter, TokenRun
from workers.messages import build_message
from workers.metrics_exporter import timed_send, waited
from workers.routing import Router
from workers.send_batch import FAILOVER, MAX_REQUEUE_SECONDS, Batch, Delivery, One, back_off

__all__ = ["MAX_REQUEUE_SECONDS", "STEPS", "Batch", "Deliverer", "Delivery", "One", "Step"]  # One, Batch: the tests'

Step = Callable[["Deliverer", Batch, One], Delivery | None]


def _attempt_of(one: One) -> HistoryEntry:
    assert one.attempt is not None, "a claimed contact carries its attempt"
    return one.attempt


# The steps, in order. Each takes the deliverer (its parts), the batch and the contact.
def choose_provider(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """The provider of the contact's route that carries it: the only one (no Redis asked), else one not yet
    tried whose circuit is not open (a half-open one this batch probes goes first), picked by the shared
    health weights (read once per channel and batch). With every one open, the first: the breaker holds it."""
    channel = one.contact.channel.value
    if not one.route:
        one.route = run.router.route(one.contact, batch.account(one.contact.account_id))
    if len(one.route) == 1:
        one.provider = one.route[0]
        one.key = run.router.key_of(channel, one.provider)
        return None
    left = [provider for provider in one.route if provider not in one.tried]
    admitted: list[str] = []
    for provider in left:
        key = run.router.key_of(channel, provider)
        admission = batch.admissions.get(key)
        if admission is None:
            admission = batch.admissions[key] = run.breaker.admit(key)
        if admission.probe:
            admitted = [provider]
            break
        if admission.wait <= 0:
            admitted.append(provider)
    weights = batch.weights.get(channel)
    if weights is None and len(admitted) > 1:
        weights = batch.weights[channel] = run.router.weights(channel)
    one.provider = run.router.pick(admitted, weights or {}) if admitted else left[0]
    one.key = run.router.key_of(channel, one.provider)
    return None


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
        one.claim = gate.claim(contact, one.provider)
        return None
    looked = gate.look(account, contact, run.engine.clock.now(), one.provider)
    if isinstance(looked, ClaimResult):
        one.claim = looked
        return None
    one.attempt = looked
    one.claim = gate.claim_looked(account, contact, looked) or gate.claim(contact, one.provider)  # None: it moved
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
    channel = one.contact.channel.value
    provider, sender = one.provider, run.sender(channel, one.provider)
    tokens = batch.tokens.get((one.key, sender))
    if tokens is None:
        tokens = batch.tokens[one.key, sender] = TokenRun(run.limiter, one.key, sender)
    pending = batch.pending[one.key] + 1  # this contact and those after it: asked for together

    def token() -> None:
        wait = tokens.take(pending)
        if wait > 0:
            waited(channel, provider, wait)
            raise RateLimited(wait)

    one.token = token
    return None


def compose(run: Deliverer, batch: Batch, one: One) -> Delivery | None:
    """The channel's message from the account as claimed; a template that cannot render gives the claim back
    (forgotten, for the planner) and is raised once the batch has ended."""
    try:
        one.message = run.message(one.contact, one.claim, one.provider)
    except TemplateContextError as exc:
        run.engine.gate.release(one.contact, _attempt_of(one), "template_error", forget=True)
        batch.broken.append(exc)
        return Delivery(one.contact.id, "template_error", detail=str(exc))
    return None


def send(run: Deliverer, batch: Batch, one: One) -> Delivery:
    """The adapter's send with short retries (channels.retry), and what its answer means for the claim. While
    another provider of the route is untried, a definite non-send fails over to it at once (it is the retry)."""
    contact, channel, provider = one.contact, one.contact.channel.value, one.provider
    adapter, message, token = run.adapters[one.key], one.message, one.token
    assert message is not None and token is not None, "compose and limiter come before send"
    router, onward = run.router, one.alternatives()

    def one_try() -> Receipt:
        started = time.perf_counter()
        try:
            with request_gate(token):
                return timed_send(channel, provider, adapter.send, message)
        finally:
            router.timed(channel, provider, started)  # slow requests count towards a burst

    attempts = 1 if onward else run.settings.send_retries
    try:
        receipt = retry_transient(one_try, attempts=attempts, initial_wait=run.retry_wait, max_wait=MAX_REQUEUE_SECONDS)
    except RateLimited as exc:  # the request never left: back to queued, the rest of the batch waits
        gate, waiting = run.engine.gate, contact.id in batch.already_waiting
        gate.release(contact, _attempt_of(one), None if waiting else "rate_limited")
        batch.already_waiting |= {contact.id}
        batch.stop = ("throttled", exc.retry_after or 1.0)
        return Delivery(contact.id, "throttled", retry_in=min(exc.retry_after or 1.0, MAX_REQUEUE_SECONDS))
    except ContactDeferred as exc:  # this recipient, for now: no failover, no penalty; the record step waits it
        batch.answered.add(one.key)
        batch.deferred.append((contact, _attempt_of(one), exc))
        return Delivery(contact.id, "retry", retry_in=exc.retry_after, detail=str(exc))
    except ProviderMisconfigured as exc:  # our configuration, not the debtor: the claim goes back
        router.failed(channel, provider)
        wait = run.breaker.trip(exc, one.key)
        batch.admissions[one.key] = Admission(wait, probe=False)
        if onward:
            return _fail_over(run, one, str(exc))
        run.engine.gate.release(contact, _attempt_of(one), None)  # queued again, then parked with the rest
        batch.held.setdefault(one.key, []).append(contact)
        return Delivery(contact.id, "circuit_open", detail=f"{wait:.1f} s")
    except PermanentDeliveryError as exc:
        batch.answered.add(one.key)
        if isinstance(exc, ProviderRefused) and onward:  # the provider's own refusal, never the debtor's
            return _fail_over(run, one, str(exc))
        one.ending = (ClaimStatus.FAILED, {"error": str(exc)}, OutcomeKind(exc.outcome_kind))
        return Delivery(contact.id, "failed", detail=exc.outcome_kind)
    except TransientDeliveryError as exc:
        batch.answered.add(one.key)
        router.failed(channel, provider)
        if exc.ambiguous:  # it may have reached the provider: never resend blind, nor through another provider
            one.ending = (ClaimStatus.UNKNOWN, {"error": str(exc)}, None)
            return Delivery(contact.id, "unknown", detail=str(exc))
        if onward:  # it never reached the provider, or the provider refused it before accepting
            return _fail_over(run, one, str(exc))
        batch.failing.append((contact, _attempt_of(one), exc))  # the record step says how long it waits
        return Delivery(contact.id, "retry", detail=str(exc))
    batch.answered.add(one.key)
    detail = {"provider_id": receipt.provider_id, "provider_status": receipt.status}
    if receipt.segments is not None:
        detail["segments"] = str(receipt.segments)
    kind = OutcomeKind.HANDED_OFF if receipt.status == "handed_off" else OutcomeKind.SENT
    one.ending = (ClaimStatus.SENT, detail, kind)
    return Delivery(contact.id, "sent", detail=receipt.provider_id)


def _fail_over(run: Deliverer, one: One, why: str) -> Delivery:
    """The provider definitely did not send it: the claim goes back (audited, naming the provider) and the
    runner takes the contact through the steps again, from the choice, without this provider."""
    run.engine.gate.release(one.contact, _attempt_of(one), FAILOVER)
    structlog.get_logger("workers.delivery").warning(
        "provider.failover", provider=one.provider, channel=one.contact.channel.value, reason=why[:300]
    )
    one.again()
    return Delivery(one.contact.id, FAILOVER, detail=why)


STEPS: tuple[Step, ...] = (choose_provider, breaker, last_look, claim, limiter, compose, send)


class Deliverer:
    """Runs the steps over a batch; its parts are what the steps use. `adapters` are by provider key
    (channels.provider_key: a channel's own provider under the channel's name)."""

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
        router: Router | None = None,
    ):
        self.breaker = breaker or CircuitBreaker(engine.store.redis)
        self.engine = engine
        self.adapters = adapters
        self.renderer = renderer
        self.limiter = limiter
        self.settings = settings
        self.retry_wait = retry_wait
        self.steps = steps
        # The weights' steps run on the deployment's clock, as the schedule does (faster in the demo and chaos runs).
        self.router = router or Router(settings, ProviderHealth(
            engine.store.redis, settings.provider_weights, burst=settings.provider_error_burst,
            now=lambda: engine.clock.now().timestamp(),
        ))  # fmt: skip

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
            batch.done[contact.id] = self.run_steps(batch, One(contact, own_provider_of(channel), channel))
            if batch.stop is not None:
                self.wait_unclaimed(batch, contacts[index + 1 :])
                break
        structlog.contextvars.unbind_contextvars("contact_id")
        self.record(batch)
        went = batch.providers
        ended = ((c.channel.value, went.get(c.id), batch.done[c.id].result) for c in contacts if c.id in batch.done)
        tally(CONTACTS, ((channel, provider or own_provider_of(channel), done) for channel, provider, done in ended))
        if batch.broken:
            # Loudly, once the rest of the batch has ended: a strategy names a template that cannot render;
            # its claim was given back, so nothing half-filled went out.
            raise batch.broken[0]
        return [batch.done[contact.id] for contact in contacts]

    def run_steps(self, batch: Batch, one: One) -> Delivery:
        """The steps for one contact, until one answers (from the first again after a failover, which leaves
        one provider fewer); a claim that ended is noted for the record step."""
        batch.pending[one.key] -= 1
        while True:
            for step in self.steps:
                delivery = step(self, batch, one)
                if delivery is not None:
                    break
            else:
                raise AssertionError("the send step always answers")
            if delivery.result != FAILOVER:
                break
        batch.providers[one.contact.id] = one.provider
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

    def message(self, contact: Contact, claim: ClaimResult | None, provider: str | None = None) -> OutboundMessage:
        """The provider's message (its own composition); the channel's step before a send is its own
        provider's (a call's scripts are Twilio's)."""
        assert claim is not None and claim.record is not None, "a claim that says send carries its record"
        channel = contact.channel.value
        own = own_provider_of(channel)
        compose = None if provider in (None, own) else PROVIDERS[channel, provider or own].compose
        message = build_message(
            contact, claim.record, claim.history, self.renderer, self.settings, self.engine.strategy,
            self.engine.clock.now(), compose,
        )  # fmt: skip
        prepare = spec_of(channel).prepare if compose is None else None
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
        breaker, gate, now = self.breaker, self.engine.gate, self.engine.clock.now()
        releases, wake_later = back_off(batch, self.settings, self.engine.store.redis, now)
        newly_held = {p: breaker.hold(p, (c.account_id for c in held)) for p, held in batch.held.items()}
        probed = [p for p in batch.answered if batch.admissions[p].probe and p not in batch.held]
        woken = [account_id for provider in probed for account_id in breaker.succeeded(provider)]
        gate.end_claims(batch.ended, batch.providers)
        for (reason, forget), claimed in releases.items():
            gate.release_many(claimed, reason, forget=forget)
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

    def sender(self, channel: str, provider: str | None = None) -> str:
        """Who a provider of a channel (its own by default) sends as: the rate limit is per provider and sender."""
        return self.router.sender(channel, provider or own_provider_of(channel))
