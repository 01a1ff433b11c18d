"""Twilio's Message and Call create as Twilio documents them (twilio/twilio-oai: spec/json/twilio_api_v2010.json,
operations CreateMessage and CreateCall, with the limits their parameter descriptions state, and Twilio's error
dictionary for the refusals), the real SmsAdapter and VoiceAdapter against the sandbox, and the sandbox refusing
what Twilio would refuse.

Set TWILIO_OAI_SPEC to a copy of twilio_api_v2010.json to check the facts below against the spec itself."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from channels.base import OutboundMessage
from channels.sandbox import Sandboxes
from channels.sms import SmsAdapter
from channels.voice import VoiceAdapter
from config.settings import Settings
from tests import channel_fixtures

pytestmark = pytest.mark.integration

recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

# Every form field of CreateMessage's request body (application/x-www-form-urlencoded).
MESSAGE_FIELDS = frozenset({
    "To", "StatusCallback", "ApplicationSid", "MaxPrice", "ProvideFeedback", "Attempt", "ValidityPeriod",
    "ForceDelivery", "ContentRetention", "AddressRetention", "SmartEncoded", "PersistentAction", "TrafficType",
    "ShortenUrls", "ScheduleType", "SendAt", "SendAsMms", "ContentVariables", "RiskCheck", "From", "FallbackFrom",
    "MessagingServiceSid", "Body", "MediaUrl", "ContentSid",
})  # fmt: skip
MESSAGE_REQUIRED = frozenset({"To"})
# x-twilio `conditional`: at least one of each group.
MESSAGE_ONE_OF = (frozenset({"From", "MessagingServiceSid"}), frozenset({"Body", "MediaUrl", "ContentSid"}))

# Every form field of CreateCall's request body.
CALL_FIELDS = frozenset({
    "To", "From", "Method", "FallbackUrl", "FallbackMethod", "StatusCallback", "StatusCallbackEvent",
    "StatusCallbackMethod", "SendDigits", "Timeout", "Record", "RecordingChannels", "RecordingStatusCallback",
    "RecordingStatusCallbackMethod", "SipAuthUsername", "SipAuthPassword", "MachineDetection",
    "MachineDetectionTimeout", "RecordingStatusCallbackEvent", "Trim", "CallerId", "MachineDetectionSpeechThreshold",
    "MachineDetectionSpeechEndThreshold", "MachineDetectionSilenceTimeout", "AsyncAmd", "AsyncAmdStatusCallback",
    "AsyncAmdStatusCallbackMethod", "Byoc", "CallReason", "CallToken", "RecordingTrack", "TimeLimit",
    "ClientNotificationUrl", "Url", "Twiml", "ApplicationSid",
})  # fmt: skip
CALL_REQUIRED = frozenset({"To", "From"})
CALL_ONE_OF = (frozenset({"Url", "Twiml", "ApplicationSid"}),)

# Enums: the http-method ones are schema enums; the others are the values the parameter descriptions allow.
HTTP_METHODS = frozenset({"GET", "POST"})
MACHINE_DETECTION = frozenset({"Enable", "DetectMessageEnd"})
ASYNC_AMD = frozenset({"true", "false"})
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
VALIDITY_PERIOD = range(1, 36001)  # seconds, "integers from 1 to 36000"
BODY_MAX = 1600  # characters
TWIML_MAX = 4000  # characters

E164 = re.compile(r"\+[1-9][0-9]{1,14}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")  # the schema's pattern, 34 characters


def _uri(value: str, underscore_ok: bool = True) -> bool:
    """format: uri, as Twilio reads it: absolute http(s) with a host name (StatusCallback: no underscores)."""
    parts = urlsplit(value)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and bool(host) and (underscore_ok or "_" not in host)


def _twiml(value: str) -> bool:
    """format: twiml: a <Response> document, at most 4,000 characters."""
    try:
        root = ElementTree.fromstring(value)
    except ElementTree.ParseError:
        return False
    return root.tag == "Response" and len(value) <= TWIML_MAX


def _integer(allowed: range | None = None) -> Callable[[str], object]:
    return lambda value: value.lstrip("-").isdigit() and (allowed is None or int(value) in allowed)


def _one_of(values: frozenset[str]) -> Callable[[str], object]:
    return lambda value: value in values


# Field -> the check of its documented format or enum, for the fields our adapters send.
MESSAGE_FORMATS: dict[str, Callable[[str], object]] = {
    "To": E164.fullmatch,  # phone-number (we send E.164 numbers, not channel addresses)
    "From": E164.fullmatch,  # phone-number
    "MessagingServiceSid": MESSAGING_SERVICE_SID.fullmatch,
    "Body": lambda value: 0 < len(value) <= BODY_MAX,
    "StatusCallback": lambda value: _uri(value, underscore_ok=False),
    "ValidityPeriod": _integer(VALIDITY_PERIOD),
}
CALL_FORMATS: dict[str, Callable[[str], object]] = {
    "To": E164.fullmatch,  # endpoint: a phone number here, so From must be one too
    "From": E164.fullmatch,
    "Url": _uri,
    "Method": _one_of(HTTP_METHODS),
    "Twiml": _twiml,
    "StatusCallback": _uri,
    "StatusCallbackMethod": _one_of(HTTP_METHODS),
    "MachineDetection": _one_of(MACHINE_DETECTION),
    "MachineDetectionTimeout": _integer(),
    "AsyncAmd": _one_of(ASYNC_AMD),
}


def conforms(
    form: Mapping[str, str],
    fields: frozenset[str],
    required: frozenset[str],
    one_of: tuple[frozenset[str], ...],
    formats: Mapping[str, Callable[[str], object]],
) -> list[str]:
    """What is wrong with a create form against the operation's facts; empty when it conforms."""
    problems = [f"{name} is not a field of the operation" for name in form if name not in fields]
    problems += [f"{name} is required" for name in sorted(required - set(form))]
    problems += [f"one of {sorted(group)} is required" for group in one_of if not group & set(form)]
    problems += [
        f"{name}={form[name]!r} breaks its format" for name in form if name in formats and not formats[name](form[name])
    ]
    unchecked = set(form) - set(formats)
    problems += [f"{name} is sent but its format is not checked here" for name in sorted(unchecked)]
    return problems


def sent_message(sandboxes: Sandboxes, sid: str) -> dict[str, str]:
    return next(m["form"] for m in sandboxes.twilio.state.messages() if m["message"]["sid"] == sid)


def sent_call(sandboxes: Sandboxes, sid: str) -> dict[str, str]:
    return next(c["form"] for c in sandboxes.twilio.state.calls() if c["call"]["sid"] == sid)


def text(
    contact_id: str, body: str = "Reminder: payment due. Reply STOP to opt out.", **extra: object
) -> OutboundMessage:
    return OutboundMessage(contact_id, "acct-9", "+15551110000", "en", body, extra=dict(extra))


@pytest.mark.parametrize(
    ("service", "message", "validity"),
    [
        (False, text("acct-9/reminder/sms/0"), None),
        (False, text("acct-9/reminder/sms/1", validity_period=600), "600"),
        (False, text("acct-9/reminder/sms/2", validity_period=10**6), "36000"),  # clamped to Twilio's maximum
        (False, text("acct-9/reminder/sms/3", validity_period=0), "1"),  # and to its minimum
        (True, text("acct-9/reminder/sms/4", body="您的账户已逾期，请尽快还款。回复TD退订。"), None),
    ],
)
def test_the_sms_adapter_sends_what_create_message_documents(
    settings: Settings, sandboxes: Sandboxes, service: bool, message: OutboundMessage, validity: str | None
) -> None:
    if service:
        settings = settings.model_copy(update={"twilio_messaging_service_sid": "MG" + "a1" * 16})
    receipt = SmsAdapter(settings).send(message)
    form = sent_message(sandboxes, receipt.provider_id)
    assert conforms(form, MESSAGE_FIELDS, MESSAGE_REQUIRED, MESSAGE_ONE_OF, MESSAGE_FORMATS) == []
    assert form.get("ValidityPeriod") == validity
    assert ("MessagingServiceSid" in form) is service and ("From" in form) is not service


@pytest.mark.parametrize(
    "message",
    [
        OutboundMessage("acct-9/reminder/call/0", "acct-9", "+15552220000", "zh-CN", "您好，这里是银行。"),
        OutboundMessage(
            "acct-9/reminder/call/1", "acct-9", "+15552220000", "en", "Please call us.", extra={"voicemail": True}
        ),
        OutboundMessage(
            "acct-9/reminder/call/2", "acct-9", "+15552220000", "en", "Please call us.",
            extra={"twiml_url": "https://dispatcher.example-bank.test/v1/webhooks/twilio/voice-twiml?contact_id=x"},
        ),
    ],
)  # fmt: skip
def test_the_voice_adapter_sends_what_create_call_documents(
    settings: Settings, sandboxes: Sandboxes, message: OutboundMessage
) -> None:
    receipt = VoiceAdapter(settings).send(message)
    form = sent_call(sandboxes, receipt.provider_id)
    assert conforms(form, CALL_FIELDS, CALL_REQUIRED, CALL_ONE_OF, CALL_FORMATS) == []
    assert form["MachineDetection"] == "DetectMessageEnd"  # the voicemail needs the end of the greeting
    assert ("Url" in form) is ("twiml_url" in message.extra) and ("Twiml" in form) is not ("Url" in form)


def test_a_long_chinese_voicemail_fits_twilios_inline_twiml_limit(settings: Settings, sandboxes: Sandboxes) -> None:
    """Inline TwiML is capped at 4,000 characters; the voicemail variant says the text twice."""
    message = OutboundMessage(
        "acct-9/reminder/call/3", "acct-9", "+15552220000", "zh-CN", "您" * 600, extra={"voicemail": True}
    )
    receipt = VoiceAdapter(settings).send(message)
    assert len(sent_call(sandboxes, receipt.provider_id)["Twiml"]) <= TWIML_MAX


def create(settings: Settings, kind: str, form: Mapping[str, str | list[str]]) -> httpx.Response:
    base = settings.twilio_api_base_url
    assert base is not None
    url = f"{base}/2010-04-01/Accounts/{settings.twilio_account_sid}/{kind}.json"
    return httpx.post(
        url, data=dict(form), auth=(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value())
    )


def changed(form: Mapping[str, str | list[str]], **changes: str | list[str] | None) -> dict[str, str | list[str]]:
    result = dict(form)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


MESSAGE = {"To": "+15551110000", "From": "+15005550006", "Body": "Reminder: payment due."}
CALL = {"To": "+15552220000", "From": "+15005550006", "Twiml": "<Response><Say>Hello</Say></Response>"}
SERVICE = "MG" + "0" * 32


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"To": None}, 21604),
        ({"From": None}, 21603),
        ({"Body": None}, 21602),
        ({"Body": None, "From": None, "MessagingServiceSid": SERVICE}, 21619),
        ({"Body": "x" * (BODY_MAX + 1)}, 21617),
        ({"ValidityPeriod": "0"}, 21624),
        ({"ValidityPeriod": "36001"}, 21624),
        ({"ValidityPeriod": "ten"}, 21624),
        ({"StatusCallback": "/v1/webhooks/twilio/message-status"}, 21609),
        ({"StatusCallback": "https://dispatcher_api.test/v1/webhooks/twilio/message-status"}, 21609),
    ],
)
def test_the_sandbox_refuses_a_message_create_as_twilio_does(
    settings: Settings, changes: dict[str, str | None], code: int
) -> None:
    response = create(settings, "Messages", changed(MESSAGE, **changes))
    assert response.status_code == 400, response.text
    error = response.json()
    assert (error["status"], error["code"]) == (400, code)
    assert error["more_info"].endswith(f"/errors/{code}") and error["message"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"From": None, "MessagingServiceSid": SERVICE},  # the service's pool picks the sender
        {"Body": None, "MediaUrl": "https://media.example-bank.test/notice.png"},
        {"ValidityPeriod": "1"},
        {"ValidityPeriod": "36000"},
        {"StatusCallback": "https://dispatcher.example-bank.test/v1/webhooks/twilio/message-status?contact_id=x"},
    ],
)
def test_the_sandbox_accepts_every_documented_alternative_of_a_message(
    settings: Settings, changes: dict[str, str | None]
) -> None:
    response = create(settings, "Messages", changed(MESSAGE, **changes))
    assert response.status_code == 201, response.text
    assert response.json()["sid"].startswith("SM")


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"To": None}, 21201),
        ({"From": None}, 21213),
        ({"Twiml": None}, 21205),
        ({"Twiml": None, "Url": "voice-twiml"}, 21205),
        ({"Twiml": "<Response><Say>" + "x" * TWIML_MAX + "</Say></Response>"}, 32018),
        ({"Twiml": None, "Url": "https://dispatcher.example-bank.test/twiml", "Method": "PUT"}, 21209),
        ({"StatusCallbackMethod": "PUT"}, 21209),
        ({"StatusCallbackEvent": ["completed", "hungup"]}, 21626),
        ({"MachineDetection": "Detect"}, 21234),
        ({"MachineDetection": "Enable", "AsyncAmd": "yes"}, 21234),
        ({"MachineDetection": "Enable", "MachineDetectionTimeout": "thirty"}, 21234),
    ],
)
def test_the_sandbox_refuses_a_call_create_as_twilio_does(
    settings: Settings, changes: dict[str, str | list[str] | None], code: int
) -> None:
    response = create(settings, "Calls", changed(CALL, **changes))
    assert response.status_code == 400, response.text
    error = response.json()
    assert (error["status"], error["code"]) == (400, code)
    assert error["more_info"].endswith(f"/errors/{code}") and error["message"]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"Twiml": None, "ApplicationSid": "AP" + "0" * 32},  # the application's VoiceUrl handles the call
        {"StatusCallbackEvent": sorted(CALL_EVENTS), "StatusCallbackMethod": "GET"},
        {"MachineDetection": "Enable", "AsyncAmd": "true", "MachineDetectionTimeout": "45"},
        {"MachineDetection": "DetectMessageEnd", "AsyncAmd": "false"},
    ],
)
def test_the_sandbox_accepts_every_documented_alternative_of_a_call(
    settings: Settings, changes: dict[str, str | list[str] | None]
) -> None:
    response = create(settings, "Calls", changed(CALL, **changes))
    assert response.status_code == 201, response.text
    assert response.json()["sid"].startswith("CA")


def test_the_facts_above_are_the_specs() -> None:
    """Against twilio_api_v2010.json itself when TWILIO_OAI_SPEC names a copy (the spec is not vendored)."""
    path = os.environ.get("TWILIO_OAI_SPEC")
    if not path:
        pytest.skip("TWILIO_OAI_SPEC is not set")
    spec = json.loads(Path(path).read_text())
    prefix = "/2010-04-01/Accounts/{AccountSid}"
    for kind, fields, required, one_of in (
        ("Messages", MESSAGE_FIELDS, MESSAGE_REQUIRED, MESSAGE_ONE_OF),
        ("Calls", CALL_FIELDS, CALL_REQUIRED, CALL_ONE_OF),
    ):
        operation = spec["paths"][f"{prefix}/{kind}.json"]["post"]
        schema = operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
        assert set(schema["properties"]) == fields, kind
        assert set(schema.get("required", [])) == required, kind
        conditional = [
            {"".join(part.capitalize() for part in name.split("_")) for name in group}
            for group in operation["x-twilio"]["conditional"]
        ]
        assert conditional == [set(group) for group in one_of], kind
    calls = spec["paths"][f"{prefix}/Calls.json"]["post"]["requestBody"]["content"]
    properties = calls["application/x-www-form-urlencoded"]["schema"]["properties"]
    for name in ("Method", "FallbackMethod", "StatusCallbackMethod"):
        assert set(properties[name]["enum"]) == HTTP_METHODS
    assert "`Enable` or `DetectMessageEnd`" in properties["MachineDetection"]["description"]
    assert "`true` or `false`" in properties["AsyncAmd"]["description"]
    for event in CALL_EVENTS:
        assert f"`{event}`" in properties["StatusCallbackEvent"]["description"]
    assert "4000" in properties["Twiml"]["description"] and properties["Twiml"]["format"] == "twiml"
    messages = spec["paths"][f"{prefix}/Messages.json"]["post"]["requestBody"]["content"]
    message_properties = messages["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert "`1` to `36000`" in message_properties["ValidityPeriod"]["description"]
    assert "1,600 characters" in message_properties["Body"]["description"]
    assert message_properties["MessagingServiceSid"]["pattern"] == f"^{MESSAGING_SERVICE_SID.pattern}$"
