"""Provider webhooks through a real uvicorn server, signed exactly as Twilio (RequestValidator) and the print
vendor (HMAC-SHA256) sign them: outcomes re-plan the account, out-of-order statuses are ignored, and a bad
signature is a 403 that changes nothing."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from channels import callbacks
from channels.signatures import EMAIL_SIGNATURE, LOB_SIGNATURE
from channels.voice import twiml_url
from tests.api_fixtures import PUBLIC_BASE_URL, Api, account_body, api, api_keys, api_settings  # noqa: F401

pytestmark = pytest.mark.integration

SMS = "A1/reminder/sms/0"


@pytest.fixture
def sent_sms(api: Api) -> str:
    """A1 created and its first SMS claimed, as a worker does before calling Twilio."""
    result = api.engine.upsert_many([_account("A1")])[0]
    assert api.engine.gate.claim(result.queued[0]).verdict == "send"
    return result.queued[0].id


def _account(account_id: str, **overrides):
    from tests.conftest import make_account

    return make_account(account_id, **overrides)


def claimed(api: Api, *contact_ids: str) -> None:
    """Each contact claimed and sent, as a worker's claim and end_claim leave it."""
    for contact_id in contact_ids:
        api.store.redis.hset(f"{{a:{contact_id.split('/')[0]}}}:claims", contact_id, "sent")


def status_path(kind: str, contact_id: str) -> str:
    return f"/v1/webhooks/twilio/{kind}?contact_id={quote(contact_id, safe='')}"


def message_status(api: Api, status: str, **extra: str):
    params = {"MessageSid": "SM1", "MessageStatus": status, "AccountSid": api.settings.twilio_account_sid, **extra}
    return api.twilio(status_path("message-status", SMS), params)


def outcomes(api: Api, account_id: str = "A1") -> list[str]:
    return [e.outcome.value for e in api.store.load(account_id).history if e.kind == "outcome" and e.outcome]


def test_a_signed_delivery_callback_is_recorded(api: Api, sent_sms: str) -> None:
    response = message_status(api, "delivered")
    assert response.status_code == 200
    assert response.json() == {"status": "recorded", "reason": None, "outcomes": ["delivered"]}
    assert outcomes(api) == ["delivered"]


def test_a_status_arriving_after_a_later_one_is_ignored(api: Api, sent_sms: str) -> None:
    assert message_status(api, "delivered").json()["status"] == "recorded"
    late = message_status(api, "sent")
    assert (late.json()["status"], late.json()["reason"]) == ("ignored", "a later status was already recorded")
    assert message_status(api, "delivered").json()["status"] == "ignored"  # a repeat too
    assert outcomes(api) == ["delivered"]


def test_in_flight_statuses_record_nothing(api: Api, sent_sms: str) -> None:
    assert message_status(api, "queued").json()["status"] == "ignored"
    assert outcomes(api) == []


def test_an_undeliverable_number_invalidates_the_phone(api: Api, sent_sms: str) -> None:
    message_status(api, "undelivered", ErrorCode="30006")
    assert outcomes(api) == ["invalid_address"]
    assert "phone" in api.store.load("A1").record.state.invalid_addresses


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl"])
def test_a_bad_twilio_signature_is_403_and_changes_nothing(api: Api, sent_sms: str, signature: str) -> None:
    before = api.store.load("A1")
    response = api.client.post(
        status_path("message-status", SMS), data={"MessageSid": "SM1", "MessageStatus": "delivered"},
        headers={"X-Twilio-Signature": signature} if signature else {},
    )  # fmt: skip
    assert response.status_code == 403
    assert response.json()["fields"][0]["field"] == "X-Twilio-Signature"
    after = api.store.load("A1")
    assert (after.version, after.history) == (before.version, before.history)


def test_a_signature_made_with_another_token_or_for_other_params_is_refused(api: Api, sent_sms: str) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    assert api.twilio(status_path("message-status", SMS), params, token="not-our-token").status_code == 403
    from twilio.request_validator import RequestValidator

    token = api.settings.twilio_auth_token.get_secret_value()
    signed = RequestValidator(token).compute_signature(
        "https://dispatcher.example-bank.test" + status_path("message-status", SMS), params
    )
    tampered = api.client.post(status_path("message-status", SMS), data={**params, "MessageStatus": "failed"},
                               headers={"X-Twilio-Signature": signed})  # fmt: skip
    assert tampered.status_code == 403
    assert outcomes(api) == []


def test_a_human_answered_call_is_a_conversation(api: Api) -> None:
    api.engine.upsert(_account("A1"))
    claimed(api, "A1/reminder/call/0")
    params = {"CallSid": "CA1", "CallStatus": "completed", "AnsweredBy": "human", "CallDuration": "42"}
    assert api.twilio(status_path("call-status", "A1/reminder/call/0"), params).json()["outcomes"] == ["answered"]
    ringing = api.twilio(status_path("call-status", "A1/reminder/call/0"), {"CallSid": "CA1", "CallStatus": "ringing"})
    assert ringing.json()["status"] == "ignored"
    assert outcomes(api) == ["answered"]


def test_an_answering_machine_result_records_a_voicemail_once(api: Api) -> None:
    api.engine.upsert(_account("A1"))
    claimed(api, "A1/reminder/call/0")
    path = status_path("amd", "A1/reminder/call/0")
    assert api.twilio(path, {"CallSid": "CA1", "AnsweredBy": "machine_end_beep"}).json()["outcomes"] == ["voicemail"]
    completed = {"CallSid": "CA1", "CallStatus": "completed", "AnsweredBy": "machine_end_beep"}
    assert api.twilio(status_path("call-status", "A1/reminder/call/0"), completed).json()["status"] == "ignored"
    assert outcomes(api) == ["voicemail"]


@pytest.mark.parametrize("word", ["STOP", "stop.", "退订", " 取消 "])
def test_an_inbound_stop_opts_every_account_of_that_phone_out_of_sms(api: Api, word: str) -> None:
    for account_id in ("A1", "A2"):
        api.put_account(account_id, account_body(account_id))
    api.put_account("OTHER", account_body("OTHER", phone="+8613911112222"))
    params = {"MessageSid": "SMin1", "From": "+8613800138000", "To": "+15005550006", "Body": word}
    response = api.twilio("/v1/webhooks/twilio/inbound-sms", params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    opted = {aid: api.store.load(aid).record.state.opted_out for aid in ("A1", "A2", "OTHER")}
    assert opted == {"A1": {"sms"}, "A2": {"sms"}, "OTHER": set()}


def test_start_opts_back_in_and_help_changes_nothing(api: Api) -> None:
    api.put_account("A1", account_body())
    base = {"From": "+8613800138000", "To": "+15005550006"}
    api.twilio("/v1/webhooks/twilio/inbound-sms", {**base, "MessageSid": "S1", "Body": "STOP"})
    api.twilio("/v1/webhooks/twilio/inbound-sms", {**base, "MessageSid": "S2", "Body": "HELP"})
    assert api.store.load("A1").record.state.opted_out == {"sms"}
    api.twilio("/v1/webhooks/twilio/inbound-sms", {**base, "MessageSid": "S3", "Body": "START"})
    assert api.store.load("A1").record.state.opted_out == set()


def test_a_stop_from_a_number_whose_account_changed_phone_touches_nothing(api: Api) -> None:
    api.put_account("A1", account_body())
    api.put_account("A1", account_body(phone="+8613955556666"))
    params = {"MessageSid": "S1", "From": "+8613800138000", "Body": "STOP"}
    api.twilio("/v1/webhooks/twilio/inbound-sms", params)
    assert api.store.load("A1").record.state.opted_out == set()


def lob_event(event_type: str, contact_id: str = "A1/letter/demand/0") -> bytes:
    event = {"id": f"evt_{event_type}", "event_type": {"id": event_type},
             "body": {"id": "ltr_1", "metadata": {"contact_id": contact_id, "account_id": "A1"}}}  # fmt: skip
    return json.dumps(event).encode()


def lob_post(api: Api, body: bytes, secret: str | None = None, timestamp: int | None = None):
    secret = secret or api.settings.print_vendor_webhook_secret.get_secret_value()
    stamp = str(timestamp or int(time.time()))
    headers = {"Lob-Signature": LOB_SIGNATURE.sign(secret, stamp, body), "Lob-Signature-Timestamp": stamp,
               "Content-Type": "application/json"}  # fmt: skip
    return api.client.post("/v1/webhooks/print-vendor", content=body, headers=headers)


def test_returned_mail_invalidates_the_postal_address_and_a_late_mailed_is_ignored(api: Api) -> None:
    api.engine.upsert(_account("A1"))
    claimed(api, "A1/letter/demand/0")
    assert lob_post(api, lob_event("letter.returned_to_sender")).json()["outcomes"] == ["returned"]
    assert lob_post(api, lob_event("letter.mailed")).json()["status"] == "ignored"
    assert "postal" in api.store.load("A1").record.state.invalid_addresses


@pytest.mark.parametrize("case", ["wrong_secret", "stale"])
def test_a_bad_print_vendor_signature_is_403_and_changes_nothing(api: Api, case: str) -> None:
    api.engine.upsert(_account("A1"))
    before = api.store.load("A1").version
    body = lob_event("letter.returned_to_sender")
    response = (lob_post(api, body, secret="guess") if case == "wrong_secret"
                else lob_post(api, body, timestamp=int(time.time()) - 3600))  # fmt: skip
    assert response.status_code == 403
    assert api.store.load("A1").version == before


def test_a_hard_email_bounce_invalidates_the_email_address(api: Api) -> None:
    api.engine.upsert(_account("A1"))
    claimed(api, "A1/early/email/0")
    body = json.dumps({"id": "b1", "type": "hard", "contact_id": "A1/early/email/0"}).encode()
    secret = api.settings.email_webhook_secret.get_secret_value()
    headers = {**EMAIL_SIGNATURE.headers(secret, body, time.time()), "Content-Type": "application/json"}
    assert api.client.post("/v1/webhooks/email-bounce", content=body, headers=headers).json()["outcomes"] == ["bounced"]
    assert "email" in api.store.load("A1").record.state.invalid_addresses
    forged = {**EMAIL_SIGNATURE.headers("guess", body, time.time()), "Content-Type": "application/json"}
    assert api.client.post("/v1/webhooks/email-bounce", content=body, headers=forged).status_code == 403


def test_a_callback_for_an_unknown_account_is_acknowledged_and_ignored(api: Api) -> None:
    response = api.twilio(status_path("message-status", "GHOST/reminder/sms/0"),
                          {"MessageSid": "SM9", "MessageStatus": "delivered"})  # fmt: skip
    assert (response.status_code, response.json()["status"]) == (200, "ignored")


def test_a_connected_call_gets_the_script_for_who_answered_and_nothing_without_one(api: Api) -> None:
    contact_id = "V1/reminder/call/0"
    scripts = {
        kind: f"<Response><Say>{said}</Say></Response>"
        for kind, said in [("human", "message"), ("machine", "voicemail")]
    }
    api.store.stash_voice_scripts("V1", contact_id, scripts, ttl=60)
    path = f"/v1/webhooks/twilio/voice-twiml?contact_id={quote(contact_id, safe='')}"
    answered = {"CallSid": "CA1", "CallStatus": "in-progress"}
    for answered_by, expected in [("human", "message"), ("machine_end_beep", "voicemail"), ("unknown", "message"),
                                  ("machine_end_silence", "voicemail")]:  # fmt: skip
        response = api.twilio(path, {**answered, "AnsweredBy": answered_by})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
        assert f"<Say>{expected}</Say>" in response.text, answered_by
    other = "/v1/webhooks/twilio/voice-twiml?contact_id=V2%2Freminder%2Fcall%2F0"
    assert "<Hangup" in api.twilio(other, {**answered, "AnsweredBy": "human"}).text  # nothing stored: say nothing
    assert api.twilio(path, answered, token="not-the-auth-token").status_code == 403


def test_a_signed_print_vendor_event_for_a_contact_that_never_existed_is_ignored(api: Api) -> None:
    api.engine.upsert(_account("A1"))
    before = api.store.load("A1")
    response = lob_post(api, lob_event("letter.delivered", contact_id="A1/letter/demand/7"))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "reason": "no such contact", "outcomes": []}
    after = api.store.load("A1")
    assert (after.version, after.history) == (before.version, before.history)
    assert not api.store.redis.exists("{a:A1}:ranks")


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("message-status", {"MessageSid": "SM1", "MessageStatus": "delivered"}),
        ("call-status", {"CallSid": "CA1", "CallStatus": "completed", "AnsweredBy": "human"}),
        ("amd", {"CallSid": "CA1", "AnsweredBy": "machine_end_beep"}),
    ],
)
def test_a_twilio_status_for_a_contact_never_claimed_is_ignored(api: Api, kind: str, params: dict) -> None:
    api.engine.upsert(_account("A1"))
    response = api.twilio(status_path(kind, "A1/reminder/call/5"), params)
    assert (response.status_code, response.json()["reason"]) == (200, "no such contact")
    assert outcomes(api) == []
    assert not api.store.redis.exists("{a:A1}:ranks")


@pytest.mark.parametrize("contact_id", ["A1\n/reminder/sms/0", "A1/reminder/sms/0\n", "A1/reminder/sms/0\r\n"])
def test_a_contact_id_with_a_newline_is_422_and_writes_nothing(api: Api, contact_id: str) -> None:
    api.engine.upsert(_account("A1"))
    claimed(api, "A1/reminder/sms/0")
    keys = set(api.store.redis.keys("*"))
    delivered = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    response = api.twilio(status_path("message-status", contact_id), delivered)
    assert (response.status_code, response.json()["fields"][0]["field"]) == (422, "contact_id")
    body = json.dumps({"id": "b1", "type": "hard", "contact_id": contact_id}).encode()
    headers = {**EMAIL_SIGNATURE.headers(api.settings.email_webhook_secret.get_secret_value(), body, time.time()),
               "Content-Type": "application/json"}  # fmt: skip
    bounce = api.client.post("/v1/webhooks/email-bounce", content=body, headers=headers)
    assert (bounce.status_code, bounce.json()["fields"][0]["field"]) == (422, "contact_id")
    assert set(api.store.redis.keys("*")) == keys
    assert outcomes(api) == []


def test_the_webhook_routes_are_the_paths_the_providers_are_given(api: Api) -> None:
    given = {value for name, value in vars(callbacks).items() if name.isupper() and name != "WEBHOOK_PREFIX"}
    served = {path for path in api.client.get("/openapi.json").json()["paths"] if path.startswith("/v1/webhooks/")}
    assert served == given
    twiml = twiml_url(PUBLIC_BASE_URL, "A1/reminder/call/0").removeprefix(PUBLIC_BASE_URL)
    assert api.twilio(twiml, {"AnsweredBy": "human"}).status_code == 200  # no script stored: the hang-up TwiML
