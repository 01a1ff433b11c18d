"""SMS and voice through the real twilio SDK, over loopback HTTP, against the Twilio sandbox."""

from __future__ import annotations

import socket
from urllib.parse import parse_qsl, quote

import pytest
from twilio.request_validator import RequestValidator

from channels.base import (
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    TransientDeliveryError,
    WebhookRejected,
)
from channels.retry import retry_transient
from channels.sandbox import Sandboxes
from channels.sms import SmsAdapter
from channels.twilio_http import PooledHttpClient, urlencode_form
from channels.voice import VoiceAdapter
from config.settings import Settings
from tests import channel_fixtures
from tests.channel_fixtures import CallbackRecorder

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so pytest finds them (no conftest or plugin needed).
recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings


def text(
    contact_id: str, to: str, body: str = "Reminder: payment due. Reply STOP to opt out.", **extra: object
) -> OutboundMessage:
    return OutboundMessage(contact_id, "acct-1", to, "en", body, extra=dict(extra))


def callbacks_for(recorder: CallbackRecorder, contact_id: str, count: int) -> list:
    quoted = quote(contact_id, safe="")
    return recorder.wait_for(lambda request: f"contact_id={quoted}" in request.url, count=count)


def test_sms_is_created_at_the_sandbox_with_basic_auth(settings: Settings, sandboxes: Sandboxes) -> None:
    receipt = SmsAdapter(settings).send(text("A1/reminder/sms/1", "+15551110000", validity_period=600))
    assert receipt.provider_id.startswith("SM") and receipt.status == "queued"
    form = next(m["form"] for m in sandboxes.twilio.state.messages() if m["message"]["sid"] == receipt.provider_id)
    assert form["ValidityPeriod"] == "600" and form["From"] == settings.twilio_from_number
    assert form["StatusCallback"].endswith("/v1/webhooks/twilio/message-status?contact_id=A1%2Freminder%2Fsms%2F1")


def test_sms_with_a_wrong_auth_token_is_our_misconfiguration_not_the_debtors(settings: Settings) -> None:
    wrong = settings.model_copy(update={"twilio_auth_token": type(settings.twilio_auth_token)("not-the-token")})
    with pytest.raises(ProviderMisconfigured) as caught:
        SmsAdapter(wrong).send(text("A1/reminder/sms/auth", "+15551110000"))
    assert "401" in str(caught.value) and caught.value.setting == "DISPATCHER_TWILIO_AUTH_TOKEN"


def test_sms_through_a_messaging_service_sends_no_from_number(settings: Settings, sandboxes: Sandboxes) -> None:
    service = settings.model_copy(update={"twilio_messaging_service_sid": "MG" + "0" * 32})
    receipt = SmsAdapter(service).send(text("A1/reminder/sms/mg", "+15551110000"))
    form = next(m["form"] for m in sandboxes.twilio.state.messages() if m["message"]["sid"] == receipt.provider_id)
    assert form["MessagingServiceSid"].startswith("MG") and "From" not in form


def test_status_callback_arrives_signed_and_parses_to_delivered(settings: Settings, recorder: CallbackRecorder) -> None:
    adapter = SmsAdapter(settings)
    receipt = adapter.send(text("A1/reminder/sms/cb", "+15551110000"))
    sent, delivered = callbacks_for(recorder, "A1/reminder/sms/cb", count=2)
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    params = dict(parse_qsl(delivered.body.decode()))
    assert validator.validate(delivered.url, params, delivered.headers["X-Twilio-Signature"])
    [outcome] = adapter.parse_callback(delivered.url, delivered.headers, delivered.body)
    assert (outcome.contact_id, outcome.kind, outcome.provider_id) == (
        "A1/reminder/sms/cb",
        "delivered",
        receipt.provider_id,
    )
    assert adapter.parse_callback(sent.url, sent.headers, sent.body)[0].kind == "sent"


def test_a_tampered_callback_is_rejected(settings: Settings, recorder: CallbackRecorder) -> None:
    adapter = SmsAdapter(settings)
    adapter.send(text("A1/reminder/sms/tamper", "+15551110000"))
    callback = callbacks_for(recorder, "A1/reminder/sms/tamper", count=2)[-1]
    with pytest.raises(WebhookRejected):
        adapter.parse_callback(callback.url, callback.headers, callback.body.replace(b"delivered", b"failed"))


def test_number_ending_0001_is_reported_undelivered(settings: Settings, recorder: CallbackRecorder) -> None:
    adapter = SmsAdapter(settings)
    adapter.send(text("A1/reminder/sms/undelivered", "+15551110001"))
    final = callbacks_for(recorder, "A1/reminder/sms/undelivered", count=2)[-1]
    [outcome] = adapter.parse_callback(final.url, final.headers, final.body)
    assert outcome.kind == "undelivered" and outcome.detail["error_code"] == 30003


def test_invalid_number_is_a_permanent_invalid_address(settings: Settings) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        SmsAdapter(settings).send(text("A1/reminder/sms/invalid", "+15551110005"))
    assert caught.value.outcome_kind == "invalid_address"


def test_opted_out_recipient_is_a_permanent_opt_out(settings: Settings) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        SmsAdapter(settings).send(text("A1/reminder/sms/stop", "+15551110006"))
    assert caught.value.outcome_kind == "opted_out"


def test_429_gives_a_transient_error_with_retry_after(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.twilio.faults.set(fail_429=1, retry_after=7)
    with pytest.raises(TransientDeliveryError) as caught:
        SmsAdapter(settings).send(text("A1/reminder/sms/429", "+15551110000"))
    assert caught.value.retry_after == 7.0 and not caught.value.ambiguous


def test_two_503s_then_success_sends_exactly_once(settings: Settings, sandboxes: Sandboxes) -> None:
    before_requests = sandboxes.twilio.request_count
    sandboxes.twilio.faults.set(fail_503=2)
    adapter, message = SmsAdapter(settings), text("A1/reminder/sms/503", "+15551110000")
    receipt = retry_transient(lambda: adapter.send(message), attempts=3, initial_wait=0.01)
    stored = [
        m
        for m in sandboxes.twilio.state.messages()
        if m["form"]["StatusCallback"].endswith(quote("A1/reminder/sms/503", safe=""))
    ]
    assert sandboxes.twilio.request_count - before_requests == 3
    assert [m["message"]["sid"] for m in stored] == [receipt.provider_id]


def test_a_hung_provider_times_out_as_an_ambiguous_transient_error(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.twilio.faults.set(hang=3.0)
    try:
        with pytest.raises(TransientDeliveryError) as caught:
            SmsAdapter(settings, timeout=0.3).send(text("A1/reminder/sms/hang", "+15551110000"))
    finally:
        sandboxes.twilio.faults.set(hang=0.0)
    assert caught.value.ambiguous  # the request left: reconcile before resending


def test_a_provider_nobody_listens_on_is_a_definite_non_send(settings: Settings) -> None:
    with socket.socket() as probe:  # a loopback port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = settings.model_copy(update={"twilio_api_base_url": f"http://127.0.0.1:{port}"})
    with pytest.raises(TransientDeliveryError) as caught:
        SmsAdapter(closed, timeout=1.0).send(text("A1/reminder/sms/refused", "+15551110000"))
    assert not caught.value.ambiguous  # the request never left: safe to give the claim back and retry


def test_the_sdk_client_sends_query_strings_and_repeated_form_fields_as_requests_did(sandboxes: Sandboxes) -> None:
    client = PooledHttpClient(timeout=2.0, base_url=sandboxes.twilio.url)
    response = client.request("GET", sandboxes.twilio.url + "/_sandbox/stats", params={"a": "1", "b": None})
    assert response.status_code == 200 and '"requests"' in response.text
    form = {"To": "+1555", "MediaUrl": ["https://a.test/1", "https://a.test/2"], "Skip": None}
    assert urlencode_form(form) == "To=%2B1555&MediaUrl=https%3A%2F%2Fa.test%2F1&MediaUrl=https%3A%2F%2Fa.test%2F2"


def test_chinese_sms_reports_ucs2_segments(settings: Settings) -> None:
    receipt = SmsAdapter(settings).send(text("A1/reminder/sms/zh", "+15551110000", body="您" * 71))
    assert receipt.segments == 2 and receipt.detail["num_segments"] == "2"


def test_call_speaks_inline_twiml_in_the_debtors_language(settings: Settings, sandboxes: Sandboxes) -> None:
    message = OutboundMessage("A1/reminder/call/zh", "acct-1", "+15552220000", "zh-CN", "您好，这里是银行。")
    receipt = VoiceAdapter(settings).send(message)
    form = next(c["form"] for c in sandboxes.twilio.state.calls() if c["call"]["sid"] == receipt.provider_id)
    assert receipt.provider_id.startswith("CA")
    assert 'language="zh-CN"' in form["Twiml"] and "您好，这里是银行。" in form["Twiml"]
    assert form["MachineDetection"] == "DetectMessageEnd"


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("+15552220000", "answered"),
        ("+15552220002", "no_answer"),
        ("+15552220003", "busy"),
        ("+15552220004", "voicemail"),
        ("+15552220006", "no_answer"),
        ("+15552220001", "failed"),
    ],
)
def test_call_outcome_follows_the_number(
    settings: Settings, recorder: CallbackRecorder, number: str, kind: str
) -> None:
    adapter = VoiceAdapter(settings)
    contact_id = f"A1/reminder/call/{number[-4:]}"
    adapter.send(OutboundMessage(contact_id, "acct-1", number, "en", "Hello", extra={"voicemail": kind == "voicemail"}))
    [callback] = callbacks_for(recorder, contact_id, count=1)
    [outcome] = adapter.parse_callback(callback.url, callback.headers, callback.body)
    assert outcome.kind == kind


def test_call_to_an_invalid_number_is_a_permanent_invalid_address(settings: Settings) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        VoiceAdapter(settings).send(OutboundMessage("A1/reminder/call/bad", "acct-1", "+15552220005", "en", "Hello"))
    assert caught.value.outcome_kind == "invalid_address"
