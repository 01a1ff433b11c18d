"""Twilio's webhooks: message and call status, answering-machine results, a connected call's TwiML and
inbound SMS (STOP / START / HELP). Each is verified against `X-Twilio-Signature` over the public URL
Twilio called (`public_base_url` + path + query) before anything is read or written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio
import structlog
from fastapi import APIRouter, Depends, Request, Response

from channels import callbacks
from channels.base import ProviderOutcome, WebhookRejected
from channels.sms import inbound_intent, message_status_outcomes
from channels.twilio_provider import contact_id_of, verified_params
from channels.voice import HANGUP_TWIML, answered_kind, call_status_outcomes, script_for
from dispatcher.api.accounts import engine_of
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.api.webhooks.recorder import (
    FINAL_RANK,
    FORM_BODY,
    STATUS_ROUTE,
    TWIML_RESPONSE,
    AppSettings,
    Callbacks,
    WebhookResult,
    account_of,
    verified,
)
from dispatcher.core.models import Channel
from dispatcher.engine import Engine

router = APIRouter(tags=["webhooks"])
TWILIO = "twilio"  # the provider whose callbacks these routes take (sms and voice both send through it)
log = structlog.get_logger("dispatcher.api.webhooks")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass(frozen=True)
class SignedForm:
    """A Twilio request whose signature checked out: the public URL Twilio signed, and its form."""

    url: str
    params: dict[str, str]

    @property
    def contact_id(self) -> str:
        """The contact the callback URL names; 422 when it names none or not a whole contact id."""
        try:
            contact_id = contact_id_of(self.url)
        except WebhookRejected as exc:
            raise ApiError(422, "validation", str(exc), [FieldError(field="contact_id", message=str(exc))]) from None
        account_of(contact_id)
        return contact_id


async def signed_form(request: Request, settings: AppSettings) -> SignedForm:
    """The verified form of a Twilio request; 403 on a bad signature."""
    token = settings.twilio_auth_token.get_secret_value()
    query = request.scope.get("query_string", b"").decode("latin-1")
    url = settings.public_base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")
    body = await request.body()
    params = verified(lambda: verified_params(token, url, request.headers, body), "X-Twilio-Signature")
    return SignedForm(url, params)


Signed = Annotated[SignedForm, Depends(signed_form)]


def _rank(outcomes: list[ProviderOutcome]) -> int:
    return max((int(o.detail.get("rank", 0)) for o in outcomes), default=0)


@router.post(callbacks.TWILIO_MESSAGE_STATUS, summary="Twilio message status callback",
             operation_id="twilioMessageStatus", **STATUS_ROUTE)  # fmt: skip
async def message_status(form: Signed, recorder: Callbacks) -> WebhookResult:
    status = form.params.get("MessageStatus") or form.params.get("SmsStatus") or ""
    outcomes = message_status_outcomes(form.contact_id, form.params)
    return await recorder.outcomes(outcomes, Channel.SMS, _rank(outcomes), f"twilio:{status}", TWILIO)


@router.post(callbacks.TWILIO_CALL_STATUS, summary="Twilio call status callback", operation_id="twilioCallStatus",
             **STATUS_ROUTE)  # fmt: skip
async def call_status(form: Signed, recorder: Callbacks) -> WebhookResult:
    outcomes = call_status_outcomes(form.contact_id, form.params)
    return await recorder.outcomes(
        outcomes, Channel.VOICE, _rank(outcomes), f"twilio:{form.params.get('CallStatus')}", TWILIO
    )


@router.post(callbacks.TWILIO_AMD, summary="Twilio answering-machine detection result (AsyncAmd)",
             operation_id="twilioAmdResult", **STATUS_ROUTE)  # fmt: skip
async def amd(form: Signed, recorder: Callbacks) -> WebhookResult:
    params = form.params
    kind = answered_kind(params.get("AnsweredBy"))
    detail = {"answered_by": params.get("AnsweredBy")}
    outcome = ProviderOutcome(form.contact_id, kind, params.get("CallSid", ""), detail)
    return await recorder.outcomes([outcome], Channel.VOICE, FINAL_RANK, "twilio:amd", TWILIO)


@router.post(
    callbacks.TWILIO_VOICE_TWIML, summary="The TwiML of a connected call: the message, or for a machine the voicemail",
    response_class=Response, responses={**TWIML_RESPONSE, **responses(403, 422)}, openapi_extra=FORM_BODY,
    operation_id="twilioVoiceTwiml",
)  # fmt: skip
async def voice_twiml(form: Signed, engine: Annotated[Engine, Depends(engine_of)]) -> Response:
    contact_id, answered_by = form.contact_id, form.params.get("AnsweredBy")
    stored = await anyio.to_thread.run_sync(engine.store.voice_scripts, account_of(contact_id), contact_id)
    which = script_for(answered_by)
    if stored is None or which not in stored:
        log.warning("voice.no_script", contact_id=contact_id, answered_by=answered_by)
        return Response(HANGUP_TWIML, media_type="text/xml")
    log.info("voice.script", contact_id=contact_id, answered_by=answered_by, script=which)
    return Response(stored[which], media_type="text/xml")


@router.post(
    callbacks.TWILIO_INBOUND_SMS, summary="Inbound SMS: STOP / START / HELP (退订, 订阅, 帮助 too)",
    response_class=Response, responses={**TWIML_RESPONSE, **responses(403)}, openapi_extra=FORM_BODY,
    operation_id="twilioInboundSms",
)  # fmt: skip
async def inbound_sms(form: Signed, recorder: Callbacks) -> Response:
    intent = inbound_intent(form.params.get("Body", ""))
    phone, sid = form.params.get("From", "").strip(), form.params.get("MessageSid", "")
    if intent in ("opt_out", "opt_in") and phone:
        accounts = await recorder.consent(phone, intent, sid)
        log.info("sms.inbound", intent=intent, phone=phone, accounts=accounts)
    else:
        log.info("sms.inbound", intent=intent, phone=phone)
    return Response(EMPTY_TWIML, media_type="text/xml")
