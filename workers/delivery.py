"""The send pipeline for one contact, in small steps, each testable alone:

    last look + claim (Engine.claim) → rate limit → render → send with short retries → settle → outcome

What the caller (a Celery task) must do next comes back as a `Delivery`: nothing, or retry in N seconds.
A contact id is never sent twice: the claim is the gate, and every path out of it settles the claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.base import ChannelAdapter, PermanentDeliveryError, TransientDeliveryError
from channels.render import Renderer, TemplateContextError
from channels.retry import send_with_retries
from config.settings import Settings
from dispatcher.engine import Engine
from dispatcher.events import Outcome
from dispatcher.models import Contact, OutcomeKind
from workers.limiter import RateLimiter
from workers.messages import build_message

# A wait longer than this goes back to the schedule instead of the broker: no long ETAs on Redis.
MAX_REQUEUE_SECONDS = 60.0


@dataclass(frozen=True)
class Delivery:
    contact_id: str
    result: str  # sent | failed | unknown | deferred | denied | claimed_elsewhere | throttled | retry
    retry_in: float | None = None
    detail: str | None = None


class Deliverer:
    def __init__(
        self,
        engine: Engine,
        adapters: dict[str, ChannelAdapter],
        renderer: Renderer,
        limiter: RateLimiter,
        settings: Settings,
        retry_wait: float = 0.5,
    ):
        self.engine = engine
        self.adapters = adapters
        self.renderer = renderer
        self.limiter = limiter
        self.settings = settings
        self.retry_wait = retry_wait

    def deliver(self, contact: Contact) -> Delivery:
        claim = self.engine.claim(contact)
        if claim.verdict != "send":
            result = {"defer": "deferred", "deny": "denied"}.get(claim.verdict, claim.verdict)
            return Delivery(contact.id, result, detail=claim.rule)
        assert claim.attempt is not None and claim.record is not None
        wait = self.limiter.acquire(contact.channel.value, self._sender(contact))
        if wait > 0:
            self.engine.release(contact, claim.attempt, "rate_limited")
            return Delivery(contact.id, "throttled", retry_in=wait)
        history = self.engine.store.load(contact.account_id).history
        try:
            message = build_message(
                contact,
                claim.record,
                history,
                self.renderer,
                self.settings,
                self.engine.strategy,
                self.engine.clock.now(),
            )
        except TemplateContextError:
            self.engine.release(contact, claim.attempt, "template_error", forget=True)
            raise  # loudly: a strategy names a template that cannot render; nothing half-filled goes out
        return self._send(contact, claim.attempt, message)

    def _send(self, contact: Contact, attempt: Any, message: Any) -> Delivery:
        adapter = self.adapters[contact.channel.value]
        try:
            receipt = send_with_retries(
                adapter, message, attempts=self.settings.send_retries, initial_wait=self.retry_wait,
                max_wait=MAX_REQUEUE_SECONDS,
            )  # fmt: skip
        except PermanentDeliveryError as exc:
            self.engine.settle(contact, "failed", {"error": str(exc)})
            self._outcome(contact, OutcomeKind(exc.outcome_kind), {"error": str(exc)})
            return Delivery(contact.id, "failed", detail=exc.outcome_kind)
        except TransientDeliveryError as exc:
            return self._transient(contact, attempt, exc)
        detail = {"provider_id": receipt.provider_id, "provider_status": receipt.status}
        if receipt.segments is not None:
            detail["segments"] = str(receipt.segments)
        self.engine.settle(contact, "sent", detail)
        kind = OutcomeKind.HANDED_OFF if receipt.status == "handed_off" else OutcomeKind.SENT
        self._outcome(contact, kind, detail)
        return Delivery(contact.id, "sent", detail=receipt.provider_id)

    def _transient(self, contact: Contact, attempt: Any, exc: TransientDeliveryError) -> Delivery:
        if exc.ambiguous:
            # The request may have reached the provider: never resend blind; callbacks or housekeeping decide.
            self.engine.settle(contact, "unknown", {"error": str(exc)})
            return Delivery(contact.id, "unknown", detail=str(exc))
        wait = exc.retry_after or self.settings.retry_backoff_seconds
        if wait <= MAX_REQUEUE_SECONDS:
            self.engine.release(contact, attempt, "transient_error")
            return Delivery(contact.id, "retry", retry_in=wait, detail=str(exc))
        self.engine.release(contact, attempt, "transient_error", forget=True)
        self.engine.store.wake_no_later(contact.account_id, self.engine.clock.now() + timedelta(seconds=wait))
        return Delivery(contact.id, "retry_later", detail=str(exc))

    def _outcome(self, contact: Contact, kind: OutcomeKind, detail: dict[str, str]) -> None:
        """Record it; a fallback it queues goes out through the engine's on_queued (the worker's dispatch)."""
        event = Outcome(contact_id=contact.id, outcome=kind, channel=contact.channel, detail=detail)
        self.engine.record_event(contact.account_id, event)

    def _sender(self, contact: Contact) -> str:
        settings = self.settings
        senders = {
            "sms": settings.twilio_messaging_service_sid or settings.twilio_from_number,
            "voice": settings.twilio_from_number,
            "email": settings.email_from,
        }
        return senders.get(contact.channel.value, "default")
