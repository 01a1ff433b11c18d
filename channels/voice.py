"""Voice calls through Twilio Calls: TwiML in the debtor's language, answering-machine detection, and a
voicemail variant for machines.

Twilio's synchronous detection (`MachineDetection=DetectMessageEnd`) waits for a greeting's beep, then
fetches the call's TwiML from `Url` with `AnsweredBy` in the request. The worker stores both scripts for
the contact before placing the call (`scripts`), and the API's `/v1/webhooks/twilio/voice-twiml` answers
with the one `script_for` picks: a person hears the step's message, a machine the limited-content
voicemail twice, with a pause, so a recorder that starts late still captures it. Without a `twiml_url`
in the message the call carries inline TwiML (the adapter used alone, as in the contract tests).

A call in doubt is looked up in Twilio's list of calls (`find_sent`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from channels import render, spec
from channels.base import Evidence, OutboundMessage, ProviderOutcome, Receipt, SentQuery
from channels.callbacks import TWILIO_CALL_STATUS, TWILIO_VOICE_TWIML, callback_url
from channels.twilio_provider import (
    LOOKUP_PAGE_SIZE,
    PERMANENT_CODES,
    build_client,
    call_twilio,
    contact_id_of,
    earliest,
    error_code_of,
    in_window,
    lookup_twilio,
    read_pages,
    verified_params,
)
from config.settings import Settings

HANGUP_TWIML = str(VoiceResponse().hangup())  # nothing stored for the call: say nothing rather than guess
SAY_LANGUAGE = {"zh": "zh-CN", "en": "en-US"}

CALL_STATUS_KIND = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "failed"}
CALL_STATUS_RANK = {
    "queued": 0,
    "initiated": 1,
    "ringing": 2,
    "in-progress": 3,
    "completed": 4,
    "busy": 4,
    "no-answer": 4,
    "failed": 4,
    "canceled": 4,
}


def say_language(locale: str) -> str:
    """Twilio <Say> language for a debtor's locale; Chinese variants speak Mandarin."""
    return SAY_LANGUAGE.get(locale.split("-")[0].lower(), "en-US")


def build_twiml(text: str, locale: str, voicemail: bool = False) -> str:
    response = VoiceResponse()
    response.say(text, language=say_language(locale))
    if voicemail:
        response.pause(length=1)
        response.say(text, language=say_language(locale))
    return str(response)


def scripts(message: OutboundMessage) -> dict[str, str]:
    """Both TwiML scripts of a call: `human` (the step's text) and `machine` (the voicemail variant)."""
    voicemail = str(message.extra.get("voicemail_text") or message.text)
    return {
        "human": build_twiml(message.text, message.locale),
        "machine": build_twiml(voicemail, message.locale, voicemail=True),
    }


def script_for(answered_by: str | None) -> str:
    """Which stored script a call gets once detection has decided: only a finished greeting gets the
    voicemail; a person, or detection that could not tell, gets the message meant for the debtor."""
    return "machine" if (answered_by or "").startswith("machine_end") else "human"


def twiml_url(public_base_url: str, contact_id: str) -> str:
    """Where Twilio fetches a connected call's TwiML (the call's `Url`)."""
    return callback_url(public_base_url, TWILIO_VOICE_TWIML, contact_id)


def call_status_rank(status: str) -> int:
    return CALL_STATUS_RANK.get(status, -1)


class VoiceAdapter:
    """Places calls through Twilio (or its sandbox, by settings.twilio_api_base_url)."""

    name = "voice"

    def __init__(self, settings: Settings, *, timeout: float = 10.0, machine_detection_timeout: int = 30) -> None:
        self._settings = settings
        self._amd_timeout = machine_detection_timeout
        self._client, self._http = build_client(settings, timeout)

    def send(self, message: OutboundMessage) -> Receipt:
        url = message.extra.get("twiml_url")
        if url:
            source: dict[str, str] = {"url": str(url), "method": "POST"}
        else:
            voicemail = bool(message.extra.get("voicemail"))
            source = {"twiml": build_twiml(message.text, message.locale, voicemail=voicemail)}
        call = call_twilio(
            lambda: self._client.calls.create(
                to=str(message.to),
                from_=self._settings.twilio_from_number,
                **source,
                machine_detection="DetectMessageEnd",
                machine_detection_timeout=self._amd_timeout,
                status_callback=callback_url(self._settings.public_base_url, TWILIO_CALL_STATUS, message.contact_id),
                status_callback_method="POST",
            ),
            self._http,
        )
        return Receipt(provider_id=str(call.sid), status=str(call.status))

    def parse_callback(self, url: str, headers: Mapping[str, str], body: bytes) -> list[ProviderOutcome]:
        """Verify a call-status callback and turn a final status into one outcome."""
        params = verified_params(self._settings.twilio_auth_token.get_secret_value(), url, headers, body)
        return call_status_outcomes(contact_id_of(url), params)

    def find_sent(self, query: SentQuery) -> Evidence:
        """Whether Twilio holds a call for this claim, from Twilio's documented Call list
        (`GET /2010-04-01/Accounts/{AccountSid}/Calls.json?To=...&From=...&PageSize=1000`, paged by
        `next_page_uri`), read through the SDK's `calls.page()`.

        A call is this claim's when it went to `query.to` from our number and Twilio created it within
        [since, until] (widened by a few seconds of clock skew). The list is not filtered by StartTime: a
        call still queued or ringing has no start_time yet. `query.sender` None means the configured number.
        Calls in `query.exclude_ids` (other contacts' receipts) are never this claim's; of several
        candidates left, the earliest is the evidence.
        """
        to = str(query.to)
        sender = query.sender or self._settings.twilio_from_number

        def ours(record: Any) -> bool:
            # The SDK's CallInstance keeps `from` as `_from` (MessageInstance says `from_`).
            caller = getattr(record, "from_", None) or getattr(record, "_from", None)
            if record.sid in query.exclude_ids:
                return False
            return bool(record.to == to and caller == sender and in_window(record.date_created, query))

        def read() -> list[Any]:
            first = self._client.calls.page(to=to, from_=sender, page_size=LOOKUP_PAGE_SIZE)
            return read_pages(first, ours, bool)

        candidates = lookup_twilio(read, self._http)
        if not candidates:
            return Evidence.absent()
        found = earliest(candidates)
        return Evidence(found=True, provider_id=str(found.sid), status=str(found.status))

    def close(self) -> None:
        self._http.close()


GENERIC_VOICEMAIL = "voicemail"
SCRIPT_TTL = 86_400  # a call connects within minutes; a day leaves room for a retried task


def voicemail_template(template: str, locale: str, renderer: render.Renderer) -> str:
    """`{step}_voicemail` for `{step}_call` when the locale has one, else the generic limited-content
    `voicemail`: a machine never gets the debt message, since anyone may play the recording back."""
    own = template.removesuffix("_call") + "_voicemail"
    return own if renderer.has(own, locale) else GENERIC_VOICEMAIL


def _with_voicemail(draft: spec.Draft) -> OutboundMessage:
    variant = voicemail_template(draft.template, draft.locale, draft.renderer)
    return draft.message(voicemail_text=draft.renderer.render(variant, draft.locale, draft.context).text)


def _stash_scripts(message: OutboundMessage, settings: Settings, stash: spec.Stash) -> OutboundMessage:
    """Twilio fetches the script once detection knows who answered: both are stored before the call, and
    the call carries the URL it fetches them from."""
    stash(message.account_id, message.contact_id, scripts(message), SCRIPT_TTL)
    url = twiml_url(settings.public_base_url, message.contact_id)
    return dataclasses.replace(message, extra={**message.extra, "twiml_url": url})


def _sender(settings: Settings) -> str:
    return settings.twilio_from_number


SPEC = spec.ChannelSpec(
    name="voice",
    provider="twilio",
    adapter=VoiceAdapter,
    compose=_with_voicemail,
    sender=_sender,
    prepare=_stash_scripts,
)


def call_status_outcomes(contact_id: str, params: Mapping[str, str]) -> list[ProviderOutcome]:
    """Outcomes for one call-status callback; calls still in progress give none."""
    status = params.get("CallStatus", "")
    kind = call_outcome_kind(status, params.get("AnsweredBy"), error_code_of(params))
    if kind is None:
        return []
    detail = {
        "status": status,
        "rank": call_status_rank(status),
        "answered_by": params.get("AnsweredBy"),
        "duration": params.get("CallDuration"),
    }
    return [ProviderOutcome(contact_id, kind, params.get("CallSid", ""), detail)]


def call_outcome_kind(status: str, answered_by: str | None, code: int | None) -> str | None:
    if status == "completed":
        return answered_kind(answered_by)
    if status == "failed" and code in PERMANENT_CODES:
        return PERMANENT_CODES[code]
    return CALL_STATUS_KIND.get(status)


def answered_kind(answered_by: str | None) -> str:
    """Only a human is a conversation; only machine_end_beep reliably took a voicemail."""
    if answered_by in (None, "", "human"):
        return "answered"
    if answered_by == "machine_end_beep":
        return "voicemail"
    return "no_answer"
