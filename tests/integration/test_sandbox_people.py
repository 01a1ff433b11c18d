"""The people behind the Twilio sandbox's numbers: a callee that decides how a call ends (what the demo's debtors
use in place of the last-digits rule), and a reply posted to the messaging webhook as Twilio posts one."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

import httpx
import pytest
from twilio.request_validator import RequestValidator

from channels.base import OutboundMessage
from channels.callbacks import TWILIO_INBOUND_SMS
from channels.sandbox import Sandboxes
from channels.voice import VoiceAdapter
from config.settings import Settings
from tests import channel_fixtures
from tests.channel_fixtures import CallbackRecorder

pytestmark = pytest.mark.integration

recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings


@pytest.mark.parametrize(("answer", "kind"), [("busy", "busy"), ("voicemail", "voicemail"), ("no_answer", "no_answer")])
def test_the_callee_decides_how_a_call_to_its_number_ends(
    settings: Settings, sandboxes: Sandboxes, recorder: CallbackRecorder, answer: str, kind: str
) -> None:
    number = "+15553330000"  # the last-digits rule would have a person answer it
    sandboxes.twilio.state.callee = lambda to: answer if to == number else None
    try:
        adapter = VoiceAdapter(settings)
        contact_id = f"A7/early/call/{answer}"
        adapter.send(OutboundMessage(contact_id, "acct-7", number, "en", "Hello", extra={"voicemail": True}))
        [callback] = recorder.wait_for(lambda r: f"contact_id={quote(contact_id, safe='')}" in r.url)
        [outcome] = adapter.parse_callback(callback.url, callback.headers, callback.body)
        assert outcome.kind == kind
    finally:
        sandboxes.twilio.state.callee = None


def test_a_reply_is_posted_signed_to_the_messaging_webhook(
    settings: Settings, sandboxes: Sandboxes, recorder: CallbackRecorder
) -> None:
    answer = httpx.post(f"{sandboxes.twilio.url}/_sandbox/inbound", json={"From": "+8613800138000", "Body": "STOP"})
    assert answer.status_code == 200 and answer.json() == {"webhook_status": 200}
    [posted] = recorder.wait_for(lambda r: r.url.endswith(TWILIO_INBOUND_SMS) and b"STOP" in r.body)
    form = dict(parse_qsl(posted.body.decode()))
    assert form["From"] == "+8613800138000" and form["Body"] == "STOP" and form["MessageSid"].startswith("SM")
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    assert validator.validate(posted.url, form, posted.headers["X-Twilio-Signature"])


def test_a_reply_without_a_sender_is_refused_naming_the_field(sandboxes: Sandboxes) -> None:
    answer = httpx.post(f"{sandboxes.twilio.url}/_sandbox/inbound", json={"Body": "STOP"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("From:")
