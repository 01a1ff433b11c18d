"""What the provider webhooks share: the signature check's 403, the contact id's shape, and the recorder
that turns verified outcomes into engine events.

Callbacks arrive out of order: per contact the rank of the last recorded status is kept (`Store.ranks`)
and a status that does not rank above it is ignored. An outcome is taken only for a contact the
dispatcher claimed: a signed callback naming a contact that never existed (a mistake at the provider, a
replayed or invented id) is acknowledged and ignored. While Redis is away a verified callback goes to
the callback spool and is recorded when Redis answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import structlog
from fastapi import Depends, Request
from pydantic import BaseModel

from channels.base import ProviderOutcome, WebhookRejected
from config.settings import Settings
from dispatcher.api.callback_spool import REDIS_AWAY, CallbackSpool
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.core import models
from dispatcher.core.events import EventRejected, OptIn, OptOut, Outcome
from dispatcher.core.models import CONTACT_ID, Channel, OutcomeKind
from dispatcher.core.timeline import attempt_provider
from dispatcher.engine import Engine, UnknownAccount
from dispatcher.state import phone_index

log = structlog.get_logger("dispatcher.api.webhooks")

FINAL_RANK = 4


class WebhookResult(BaseModel):
    status: Literal["recorded", "ignored", "spooled"]
    reason: str | None = None
    outcomes: list[str] = []


FORM_BODY = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}}  # fmt: skip
JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
TWIML_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "TwiML", "content": {"text/xml": {"schema": {"type": "string"}}}}
}
STATUS_ROUTE: dict[str, Any] = {
    "response_model": WebhookResult,
    "responses": responses(403, 422),
    "openapi_extra": FORM_BODY,
}


class CallbackRecorder:
    """Turns verified provider outcomes into engine events, in a worker thread (the engine is synchronous).
    One per app (`app.state.callbacks`), with the app's spool."""

    def __init__(self, engine: Engine, spool_path: Path, routed: frozenset[str] = frozenset()) -> None:
        self.engine = engine
        # Channels with more than one provider (DISPATCHER_ROUTES): a callback there counts only from the
        # provider the contact's attempt names.
        self.routed = routed
        self.spool = CallbackSpool(spool_path, self._replay)
        self.spool.start_replaying()  # what a previous process left, if anything

    @classmethod
    def for_settings(cls, engine: Engine, settings: Settings) -> CallbackRecorder:
        return cls(engine, settings.state_dir / "spool" / "callbacks.ndjson", frozenset(settings.routes))

    async def outcomes(
        self, found: list[ProviderOutcome], channel: Channel, rank: int, source: str, provider: str | None = None
    ) -> WebhookResult:
        """Record a provider's verified outcomes; `provider`: who sent the callback (on a channel with routes, a
        callback from a provider the contact's attempt does not name is acknowledged and ignored)."""
        if not found:
            return WebhookResult(status="ignored", reason="no outcome in this status")
        record = {"kind": "outcomes", "found": [asdict(o) for o in found], "channel": channel.value, "rank": rank,
                  "source": source, "provider": provider}  # fmt: skip
        result: WebhookResult = await anyio.to_thread.run_sync(self._now_or_spooled, record)
        return result

    async def consent(self, phone: str, intent: str, sid: str, source: str = "twilio") -> list[str]:
        """Opt every account of `phone` out of (or back into) sms; `sid` is the provider's id of the reply."""
        record = {"kind": "consent", "phone": phone, "intent": intent, "sid": sid, "source": source}
        result = await anyio.to_thread.run_sync(self._now_or_spooled, record)
        return [] if isinstance(result, WebhookResult) else list(result)

    def _now_or_spooled(self, record: dict[str, Any]) -> Any:
        """Record a verified callback now; while Redis is away, keep it on disk for the replayer."""
        try:
            return self._replay(record)
        except REDIS_AWAY:
            self.spool.append(record)
            return WebhookResult(status="spooled", reason="the store is unavailable; recorded when it returns")

    def _replay(self, record: dict[str, Any]) -> Any:
        if record["kind"] == "consent":
            return self._consent(record["phone"], record["intent"], record["sid"], record.get("source", "twilio"))
        found = [ProviderOutcome(**outcome) for outcome in record["found"]]
        channel, provider = Channel(record["channel"]), record.get("provider")
        return self._record(found, channel, int(record["rank"]), record["source"], provider)

    def _record(
        self, found: list[ProviderOutcome], channel: Channel, rank: int, source: str, provider: str | None = None
    ) -> WebhookResult:
        contact_id = found[0].contact_id
        account_id = account_of(contact_id)
        if self.engine.store.claim_status(account_id, contact_id) is None:  # checked before any write
            log.warning("webhook.unknown_contact", account_id=account_id, contact_id=contact_id, source=source)
            return WebhookResult(status="ignored", reason="no such contact")
        if (
            provider is not None
            and channel.value in self.routed
            and not self._went_to(account_id, contact_id, provider)
        ):
            log.warning("webhook.other_provider", account_id=account_id, contact_id=contact_id, provider=provider)
            return WebhookResult(
                status="ignored", reason=f"the contact's attempt went through another provider than {provider}"
            )
        if not self.engine.store.ranks.raise_to(account_id, contact_id, rank):
            log.info("webhook.out_of_order", account_id=account_id, contact_id=contact_id, source=source)
            return WebhookResult(status="ignored", reason="a later status was already recorded")
        recorded = []
        for outcome in found:
            detail = {key: str(value) for key, value in outcome.detail.items() if value is not None}
            event_key = f"{source}:{outcome.provider_id}:{outcome.kind}"
            event = Outcome(
                contact_id=outcome.contact_id, outcome=OutcomeKind(outcome.kind), channel=channel,
                detail={**detail, "provider_id": outcome.provider_id},
                event_id=hashlib.sha256(event_key.encode()).hexdigest()[:40] if outcome.provider_id else None,
            )  # fmt: skip
            try:
                self.engine.record_event(account_id, event)
            except (UnknownAccount, EventRejected) as exc:
                log.warning("webhook.unrecorded", account_id=account_id, contact_id=contact_id, reason=str(exc))
                return WebhookResult(status="ignored", reason=str(exc))
            recorded.append(outcome.kind)
        log.info("webhook.recorded", account_id=account_id, contact_id=contact_id, outcomes=recorded, source=source)
        return WebhookResult(status="recorded", outcomes=recorded)

    def _went_to(self, account_id: str, contact_id: str, provider: str) -> bool:
        """Whether the contact's last attempt names `provider` (its claim recorded the one it went to)."""
        history = self.engine.store.load(account_id).history
        attempts = [e for e in history if e.kind == "attempt" and e.contact_id == contact_id]
        return bool(attempts) and attempt_provider(attempts[-1]) == provider

    def _consent(self, phone: str, intent: str, sid: str, source: str) -> list[str]:
        accounts = phone_index.accounts_for(self.engine.store, phone)
        for account_id in accounts:
            kind = OptOut if intent == "opt_out" else OptIn
            event_id = f"{source}:{sid}:{intent}" if sid else None
            self.engine.record_event(account_id, kind(channel=Channel.SMS, event_id=event_id))
        return accounts


async def callbacks_of(request: Request) -> CallbackRecorder:
    callbacks: CallbackRecorder = request.app.state.callbacks
    return callbacks


async def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Callbacks = Annotated[CallbackRecorder, Depends(callbacks_of)]
AppSettings = Annotated[Settings, Depends(settings_of)]


def verified(check: Callable[[], Any], header: str) -> Any:
    """Run a signature check; a failure is a 403 naming the header, before anything is read or written."""
    try:
        return check()
    except (WebhookRejected, UnicodeDecodeError) as exc:
        message = str(exc) if isinstance(exc, WebhookRejected) else "the body is not valid UTF-8"
        log.warning("webhook.rejected", header=header, reason=message)
        raise ApiError(403, "forbidden", message, [FieldError(field=header, message=message)]) from None


def account_of(contact_id: str) -> str:
    """The account of a contact id, once the whole id (to its last character) has a contact id's shape."""
    if not CONTACT_ID.match(contact_id):
        message = f"{contact_id!r} is not a contact id (account/stage/step/occurrence)"
        raise ApiError(422, "validation", message, [FieldError(field="contact_id", message=message)])
    return models.account_of(contact_id)


def json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        message = "the body must be a JSON object"
        raise ApiError(422, "validation", message, [FieldError(field="body", message=message)])
    return value
