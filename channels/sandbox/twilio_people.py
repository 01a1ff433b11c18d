"""The people behind the Twilio sandbox's numbers: who picks up a call, and the SMS they send back.

By default a call ends by the number's last digits (twilio_api's table). A demo or a test that models its
debtors sets `TwilioSandbox.callee`, a function of the To number that says how a call to it ends now —
`answered` (a person: `completed`, AnsweredBy `human`), `voicemail` (`completed`, `machine_end_beep`),
`no_answer`, `busy` or `failed` — or None for the last-digits rule. The status callback then says so, as
Twilio's would.

A reply comes in as Twilio delivers one: `POST {sandbox}/_sandbox/inbound` with JSON `{"From": "+86...",
"Body": "STOP"}` (and `To`, our number, optionally) makes the sandbox post the inbound message, signed with
X-Twilio-Signature, to the number's messaging webhook (`inbound_url`: the API's
/v1/webhooks/twilio/inbound-sms under the callback base URL); it answers with the status the webhook gave.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from twilio.request_validator import RequestValidator

from channels.sandbox.server import CONTROL_PREFIX, EventLog


class TwilioSandbox(Protocol):
    """What of twilio_api's sandbox state a reply needs (named here: twilio_api imports this module)."""

    account_sid: str
    validator: RequestValidator
    log: EventLog
    inbound_url: str | None


Callee = Callable[[str], str | None]
# How a callee's answer ends the call: (CallStatus, AnsweredBy).
CALL_ENDINGS: dict[str, tuple[str, str | None]] = {
    "answered": ("completed", "human"),
    "voicemail": ("completed", "machine_end_beep"),
    "no_answer": ("no-answer", None),
    "busy": ("busy", None),
    "failed": ("failed", None),
}
DEFAULT_OUR_NUMBER = "+15005550006"


def call_ending(callee: Callee | None, to: str) -> tuple[str, str | None] | None:
    """How the callee ends a call to `to`; None: the last-digits rule decides."""
    if callee is None:
        return None
    answer = callee(to)
    if answer is None:
        return None
    if answer not in CALL_ENDINGS:
        raise ValueError(f"callee: {answer!r} is not one of {', '.join(CALL_ENDINGS)}")
    return CALL_ENDINGS[answer]


def mount_inbound(app: FastAPI, sandbox: TwilioSandbox) -> None:
    @app.post(f"{CONTROL_PREFIX}/inbound")
    async def inbound(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": 'a JSON body: {"From": ..., "Body": ...}'}, 422)
        sender, text = body.get("From") if isinstance(body, dict) else None, body.get("Body", "")
        if not isinstance(sender, str) or not sender.startswith("+") or not isinstance(text, str):
            return JSONResponse({"error": "From: an E.164 number; Body: the message text"}, 422)
        if sandbox.inbound_url is None:
            return JSONResponse({"error": "no messaging webhook: start the sandbox with a callback base URL"}, 409)
        status = await post_inbound(sandbox, sandbox.inbound_url, sender, text, body.get("To") or DEFAULT_OUR_NUMBER)
        return JSONResponse({"webhook_status": status}, 200 if status is not None else 502)


async def post_inbound(sandbox: TwilioSandbox, url: str, sender: str, text: str, to: str) -> int | None:
    """Post one inbound SMS to `url` signed as Twilio signs it; the webhook's status, None if unreachable."""
    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": sandbox.account_sid,
        "From": sender,
        "To": to,
        "Body": text,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    signature = sandbox.validator.compute_signature(url, params)
    record: dict[str, Any] = {"event": "inbound.posted", "url": url, "params": params}
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
    except httpx.HTTPError as exc:
        sandbox.log.append({**record, "error": repr(exc)})
        return None
    sandbox.log.append({**record, "status": response.status_code})
    return response.status_code
