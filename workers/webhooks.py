"""Provider webhooks: Twilio message and call status, answering-machine results and inbound SMS, print-vendor
tracking, email bounces. Each is verified before anything is read or written; a bad signature is a 403
and changes nothing. Outcomes enter the engine as `Outcome` events and re-plan the account at once.

Here rather than in dispatcher/, because the parsers live in channels/ and dispatcher never imports
channels. `webhook_router(engine, settings)` is mounted by `dispatcher.api.create_app(extra_routers=...)`.

Callbacks arrive out of order: per contact the rank of the last recorded status is kept in
`{a:ID}:ranks` (hash-tagged with the account) and a status that does not rank above it is ignored.
An outcome is taken only for a contact the dispatcher claimed: a signed callback naming a contact that
never existed (a mistake at the provider, a replayed or invented id) is acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import anyio
import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from channels.base import ProviderOutcome, WebhookRejected
from channels.dsn import dsn_outcomes
from channels.letter import sign, tracking_outcomes, verify_signature
from channels.sms import inbound_intent, message_status_outcomes
from channels.twilio_common import contact_id_of, verified_params
from channels.voice import HANGUP_TWIML, answered_kind, call_status_outcomes, script_for
from config.settings import Settings
from dispatcher import phone_index
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.engine import Engine, UnknownAccount
from dispatcher.events import EventRejected, OptIn, OptOut, Outcome
from dispatcher.models import CONTACT_ID, Channel, OutcomeKind
from workers.callback_spool import REDIS_AWAY, CallbackSpool

log = structlog.get_logger("workers.webhooks")

FINAL_RANK = 4
RANKS_TTL = 30 * 86_400
EMAIL_SIGNATURE_MAX_AGE = 300.0
LETTER_RANK = {"sent": 1, "delivered": 2, "returned": 2}
EMAIL_BOUNCE_KIND = {"hard": OutcomeKind.BOUNCED, "complaint": OutcomeKind.OPTED_OUT}
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

# Raise the stored rank only if the new one is higher: 1 recorded, 0 out of order.
_GATE = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= current then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class WebhookResult(BaseModel):
    status: Literal["recorded", "ignored", "spooled"]
    reason: str | None = None
    outcomes: list[str] = []


_FORM = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
    "schema": {"type": "object", "additionalProperties": {"type": "string"}}}}}}  # fmt: skip
_JSON = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
_TWIML: dict[int | str, dict[str, Any]] = {
    200: {"description": "TwiML", "content": {"text/xml": {"schema": {"type": "string"}}}}
}


def webhook_router(engine: Engine, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
    recorder = _Recorder(engine, settings.state_dir / "spool" / "callbacks.ndjson")
    twilio_token = settings.twilio_auth_token.get_secret_value()
    letter_secret = settings.print_vendor_webhook_secret.get_secret_value()
    email_secret = settings.email_webhook_secret.get_secret_value()

    async def twilio(request: Request) -> tuple[str, dict[str, str]]:
        """The public URL Twilio signed and the verified form parameters; 403 on a bad signature."""
        query = request.scope.get("query_string", b"").decode("latin-1")
        url = settings.public_base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")
        body = await request.body()
        return url, _verified(lambda: verified_params(twilio_token, url, request.headers, body), "X-Twilio-Signature")

    status_route: dict[str, Any] = {
        "response_model": WebhookResult,
        "responses": responses(403, 422),
        "openapi_extra": _FORM,
    }

    @router.post("/twilio/message-status", summary="Twilio message status callback",
                 operation_id="twilioMessageStatus", **status_route)  # fmt: skip
    async def message_status(request: Request) -> WebhookResult:
        url, params = await twilio(request)
        status = params.get("MessageStatus") or params.get("SmsStatus") or ""
        outcomes = message_status_outcomes(_contact_id(url), params)
        return await recorder.outcomes(outcomes, Channel.SMS, _rank(outcomes), f"twilio:{status}")

    @router.post("/twilio/call-status", summary="Twilio call status callback", operation_id="twilioCallStatus",
                 **status_route)  # fmt: skip
    async def call_status(request: Request) -> WebhookResult:
        url, params = await twilio(request)
        outcomes = call_status_outcomes(_contact_id(url), params)
        return await recorder.outcomes(outcomes, Channel.VOICE, _rank(outcomes), f"twilio:{params.get('CallStatus')}")

    @router.post("/twilio/amd", summary="Twilio answering-machine detection result (AsyncAmd)",
                 operation_id="twilioAmdResult", **status_route)  # fmt: skip
    async def amd(request: Request) -> WebhookResult:
        url, params = await twilio(request)
        kind = answered_kind(params.get("AnsweredBy"))
        detail = {"answered_by": params.get("AnsweredBy")}
        outcome = ProviderOutcome(_contact_id(url), kind, params.get("CallSid", ""), detail)
        return await recorder.outcomes([outcome], Channel.VOICE, FINAL_RANK, "twilio:amd")

    @router.post(
        "/twilio/voice-twiml", summary="The TwiML of a connected call: the message, or for a machine the voicemail",
        response_class=Response, responses={**_TWIML, **responses(403, 422)}, openapi_extra=_FORM,
        operation_id="twilioVoiceTwiml",
    )  # fmt: skip
    async def voice_twiml(request: Request) -> Response:
        url, params = await twilio(request)
        contact_id = _contact_id(url)
        stored = await anyio.to_thread.run_sync(engine.store.voice_scripts, _account_of(contact_id), contact_id)
        which = script_for(params.get("AnsweredBy"))
        if stored is None or which not in stored:
            log.warning("voice.no_script", contact_id=contact_id, answered_by=params.get("AnsweredBy"))
            return Response(HANGUP_TWIML, media_type="text/xml")
        log.info("voice.script", contact_id=contact_id, answered_by=params.get("AnsweredBy"), script=which)
        return Response(stored[which], media_type="text/xml")

    @router.post(
        "/twilio/inbound-sms", summary="Inbound SMS: STOP / START / HELP (退订, 订阅, 帮助 too)",
        response_class=Response, responses={**_TWIML, **responses(403)}, openapi_extra=_FORM,
        operation_id="twilioInboundSms",
    )  # fmt: skip
    async def inbound_sms(request: Request) -> Response:
        _, params = await twilio(request)
        intent = inbound_intent(params.get("Body", ""))
        phone, sid = params.get("From", "").strip(), params.get("MessageSid", "")
        if intent in ("opt_out", "opt_in") and phone:
            accounts = await recorder.consent(phone, intent, sid)
            log.info("sms.inbound", intent=intent, phone=phone, accounts=accounts)
        else:
            log.info("sms.inbound", intent=intent, phone=phone)
        return Response(EMPTY_TWIML, media_type="text/xml")

    @router.post("/print-vendor", summary="Print-vendor letter tracking (Lob-Signature)",
                 operation_id="printVendorTracking", **{**status_route, "openapi_extra": _JSON})  # fmt: skip
    async def print_vendor(request: Request) -> WebhookResult:
        body = await request.body()
        _verified(lambda: verify_signature(letter_secret, request.headers, body, now=time.time()), "Lob-Signature")
        try:
            outcomes = tracking_outcomes(_json_object(body))
        except (AttributeError, TypeError, ValueError) as exc:  # signed, but not shaped like a tracking event
            raise ApiError(422, "validation", str(exc), [FieldError(field="body", message=str(exc))]) from None
        rank = max((LETTER_RANK.get(o.kind, 0) for o in outcomes), default=0)
        return await recorder.outcomes(outcomes, Channel.LETTER, rank, "lob")

    @router.post("/email-bounce", summary="Email bounce or complaint (X-Signature)",
                 operation_id="emailBounce", **{**status_route, "openapi_extra": _JSON})  # fmt: skip
    async def email_bounce(request: Request) -> WebhookResult:
        body = await request.body()
        _verified(lambda: verify_email_signature(email_secret, request.headers, body, time.time()), "X-Signature")
        payload = _json_object(body)
        kind = EMAIL_BOUNCE_KIND.get(str(payload.get("type", "")))
        contact_id = str(payload.get("contact_id") or "")
        if kind is None or not contact_id:
            return WebhookResult(status="ignored", reason="not a hard bounce or complaint with a contact_id")
        outcome = ProviderOutcome(contact_id, kind.value, str(payload.get("id", "")), {"type": payload["type"]})
        return await recorder.outcomes([outcome], Channel.EMAIL, FINAL_RANK, "email")

    @router.post("/email-dsn", summary="An RFC 3464 delivery status notification, raw (X-Signature)",
                 operation_id="emailDsn", **status_route)  # fmt: skip
    async def email_dsn(request: Request) -> WebhookResult:
        """The bounce mailbox's DSNs, as received: a permanent failure invalidates the address, as an SMTP
        rejection does; delays and reports about messages that are not ours are ignored."""
        body = await request.body()
        _verified(lambda: verify_email_signature(email_secret, request.headers, body, time.time()), "X-Signature")
        outcomes = dsn_outcomes(body, settings.unsubscribe_secret.get_secret_value())
        if not outcomes:
            return WebhookResult(status="ignored", reason="not a permanent failure of a message of ours")
        return await recorder.outcomes(outcomes, Channel.EMAIL, FINAL_RANK, "dsn")

    return router


def verify_email_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Hex HMAC-SHA256 over "{timestamp}.{raw body}" in X-Signature, X-Signature-Timestamp (epoch seconds)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    signature, timestamp = lowered.get("x-signature", ""), lowered.get("x-signature-timestamp", "")
    if not signature or not timestamp.isdigit():
        raise WebhookRejected("missing X-Signature or X-Signature-Timestamp")
    if abs(now - int(timestamp)) > EMAIL_SIGNATURE_MAX_AGE:
        raise WebhookRejected("stale X-Signature-Timestamp")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise WebhookRejected("X-Signature does not match the body")


def email_signature_headers(secret: str, body: bytes, now: float) -> dict[str, str]:
    """What a sender (or a test) puts on an email-bounce webhook."""
    timestamp = str(int(now))
    return {"X-Signature": sign(secret, timestamp, body), "X-Signature-Timestamp": timestamp}


class _Recorder:
    """Turns verified provider outcomes into engine events, in a worker thread (the engine is synchronous)."""

    def __init__(self, engine: Engine, spool_path: Path) -> None:
        self.engine = engine
        self._gate = engine.store.redis.register_script(_GATE)
        self.spool = CallbackSpool(spool_path, self._replay)
        self.spool.start_replaying()  # what a previous process left, if anything

    async def outcomes(self, found: list[ProviderOutcome], channel: Channel, rank: int, source: str) -> WebhookResult:
        if not found:
            return WebhookResult(status="ignored", reason="no outcome in this status")
        record = {"kind": "outcomes", "found": [asdict(o) for o in found], "channel": channel.value, "rank": rank,
                  "source": source}  # fmt: skip
        return await anyio.to_thread.run_sync(self._now_or_spooled, record)

    async def consent(self, phone: str, intent: str, sid: str) -> list[str]:
        record = {"kind": "consent", "phone": phone, "intent": intent, "sid": sid}
        result = await anyio.to_thread.run_sync(self._now_or_spooled, record)
        return [] if isinstance(result, WebhookResult) else result

    def _now_or_spooled(self, record: dict[str, Any]) -> Any:
        """Record a verified callback now; while Redis is away, keep it on disk for the replayer."""
        try:
            return self._replay(record)
        except REDIS_AWAY:
            self.spool.append(record)
            return WebhookResult(status="spooled", reason="the store is unavailable; recorded when it returns")

    def _replay(self, record: dict[str, Any]) -> Any:
        if record["kind"] == "consent":
            return self._consent(record["phone"], record["intent"], record["sid"])
        found = [ProviderOutcome(**outcome) for outcome in record["found"]]
        return self._record(found, Channel(record["channel"]), int(record["rank"]), record["source"])

    def _record(self, found: list[ProviderOutcome], channel: Channel, rank: int, source: str) -> WebhookResult:
        contact_id = found[0].contact_id
        account_id = _account_of(contact_id)
        if self.engine.store.claim_status(account_id, contact_id) is None:  # checked before any write
            log.warning("webhook.unknown_contact", account_id=account_id, contact_id=contact_id, source=source)
            return WebhookResult(status="ignored", reason="no such contact")
        if not self._gate(keys=[f"{{a:{account_id}}}:ranks"], args=[contact_id, rank, RANKS_TTL]):
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

    def _consent(self, phone: str, intent: str, sid: str) -> list[str]:
        accounts = phone_index.accounts_for(self.engine.store, phone)
        for account_id in accounts:
            kind = OptOut if intent == "opt_out" else OptIn
            event_id = f"twilio:{sid}:{intent}" if sid else None
            self.engine.record_event(account_id, kind(channel=Channel.SMS, event_id=event_id))
        return accounts


def _verified(check: Callable[[], Any], header: str) -> Any:
    """Run a signature check; a failure is a 403 naming the header, before anything is read or written."""
    try:
        return check()
    except (WebhookRejected, UnicodeDecodeError) as exc:
        message = str(exc) if isinstance(exc, WebhookRejected) else "the body is not valid UTF-8"
        log.warning("webhook.rejected", header=header, reason=message)
        raise ApiError(403, "forbidden", message, [FieldError(field=header, message=message)]) from None


def _contact_id(url: str) -> str:
    try:
        contact_id = contact_id_of(url)
    except WebhookRejected as exc:
        raise ApiError(422, "validation", str(exc), [FieldError(field="contact_id", message=str(exc))]) from None
    _account_of(contact_id)
    return contact_id


def _account_of(contact_id: str) -> str:
    """The account of a contact id, once the whole id (to its last character) has a contact id's shape."""
    if not CONTACT_ID.match(contact_id):
        message = f"{contact_id!r} is not a contact id (account/stage/step/occurrence)"
        raise ApiError(422, "validation", message, [FieldError(field="contact_id", message=message)])
    return contact_id.split("/", 1)[0]


def _rank(outcomes: list[ProviderOutcome]) -> int:
    return max((int(o.detail.get("rank", 0)) for o in outcomes), default=0)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, dict):
        message = "the body must be a JSON object"
        raise ApiError(422, "validation", message, [FieldError(field="body", message=message)])
    return value
