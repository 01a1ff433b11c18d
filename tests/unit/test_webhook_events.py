"""Outcome callbacks' pure parts: the signature (the spec's test vector), the retry schedule, the payloads
(thin, no personal data), the lifecycle entries the commit adds, and the targets refused."""

from __future__ import annotations

import random
import socket
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from config.settings_fields import DEFAULT_WEBHOOK_RETRY_SCHEDULE
from dispatcher.core.models import AccountRecord, AccountState
from dispatcher.core.privacy.personal_data import PERSONAL_FIELDS
from dispatcher.core.webhook_events import (
    EVENT_TYPES,
    event_of,
    lifecycle_audit,
    new_secret,
    payload_body,
    retry_after_seconds,
    retry_delay,
    sign,
    signature_header,
    verify,
)
from dispatcher.webhook_targets import TargetRefused, check_target, check_url
from tests.conftest import make_account

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def test_the_signature_is_the_specs_test_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE
    assert verify(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, VECTOR_SIGNATURE)
    assert not verify(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY + " ", VECTOR_SIGNATURE)


def test_the_standard_webhooks_library_verifies_a_signature_with_the_old_or_the_new_secret() -> None:
    old, new = new_secret(), new_secret()
    timestamp, body = int(time.time()), payload_body("promise.kept", NOW, {"account_id": "A1"})
    headers = {"webhook-id": "evt_1_1-0_0", "webhook-timestamp": str(timestamp)}
    headers["webhook-signature"] = signature_header([new, old], "evt_1_1-0_0", timestamp, body)
    assert Webhook(new).verify(body, headers) == {"type": "promise.kept", "timestamp": "2026-03-02T02:00:00Z",
                                                  "data": {"account_id": "A1"}}  # fmt: skip
    assert Webhook(old).verify(body, headers)["type"] == "promise.kept"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_a_secret_has_24_to_64_random_bytes() -> None:
    assert new_secret().startswith("whsec_") and new_secret() != new_secret()
    for size in (24, 64):
        assert len(Webhook(new_secret(size))._whsecret) == size
    with pytest.raises(ValueError):
        new_secret(16)


def test_the_retry_schedule_is_the_standards_with_jitter_and_ends() -> None:
    schedule = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    assert schedule == (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    draw = random.Random(7)
    for failures, base in enumerate(schedule, start=1):
        waits = [retry_delay(failures, schedule, 0.1, draw) for _ in range(50)]
        assert all(w is not None and base * 0.9 <= w <= base * 1.1 for w in waits)
        assert len(set(waits)) > 1  # jittered
    assert retry_delay(len(schedule) + 1, schedule, 0.1) is None
    assert retry_delay(1, schedule, 0.0) == 5.0


def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped() -> None:
    assert retry_after_seconds("120", NOW, 86400) == 120
    assert retry_after_seconds("999999", NOW, 86400) == 86400
    assert retry_after_seconds("Mon, 02 Mar 2026 02:10:00 GMT", NOW, 86400) == 600
    assert retry_after_seconds("soon", NOW, 86400) is None
    assert retry_after_seconds(None, NOW, 86400) is None


def _record(**state: Any) -> AccountRecord:
    return AccountRecord(account=make_account(), state=AccountState(**state.pop("account_state", {})), **state)


def test_the_commit_adds_stage_status_and_hold_entries_by_comparing_before_and_after() -> None:
    """None of their keys is a personal field (retention would erase it, the logs would mask it)."""
    before = _record(stage="early")
    after = _record(stage="late", account_state={"status": "resolved", "holds": {"dispute": None}})
    found = lifecycle_audit("A1", before, after, NOW)
    assert [(e["type"], e.get("previous"), e.get("stage", e.get("status")), e.get("change")) for e in found] == [
        ("stage", "early", "late", None), ("status", "active", "resolved", None), ("hold", None, None, "started"),
    ]  # fmt: skip
    ended = lifecycle_audit("A1", _record(account_state={"holds": {"hardship": date(2026, 4, 1)}}), _record(), NOW)
    assert [(e["type"], e["reason"], e["change"]) for e in ended] == [("hold", "hardship", "ended")]
    assert not PERSONAL_FIELDS & {key for entry in found for key in entry}
    assert lifecycle_audit("A1", None, after, NOW) == []  # a new account: the bank made it
    assert lifecycle_audit("A1", before, before, NOW) == []


ENTRIES: list[tuple[dict[str, Any], str]] = [
    ({"type": "contact", "status": "sent", "contact_id": "A1/early/sms/1", "channel": "sms", "provider": "twilio",
      "to": "+8613800138000"}, "contact.sent"),
    ({"type": "outcome", "outcome": "delivered", "contact_id": "A1/early/sms/1", "channel": "sms",
      "detail": {"provider_id": "SM1", "body": "你好 王小明"}}, "contact.delivered"),
    ({"type": "outcome", "outcome": "bounced", "contact_id": "A1/early/email/1", "channel": "email",
      "detail": {"reason": "mailbox xiaoming@example.com full, call +8613800138000", "recipient": "x@y.cn"}},
     "contact.failed"),
    ({"type": "outcome", "outcome": "answered", "contact_id": "A1/late/voice/1", "channel": "voice"},
     "contact.answered"),
    ({"type": "outcome", "outcome": "opted_out", "channel": "sms"}, "account.opted_out"),
    ({"type": "event", "event": "payment", "detail": {"amount": "500.00", "currency": "CNY", "note": "王小明 paid"}},
     "payment.recorded"),
    ({"type": "event", "event": "promise_kept"}, "promise.kept"),
    ({"type": "event", "event": "promise_broken"}, "promise.broken"),
    ({"type": "event", "event": "opt_out", "detail": {"channel": "email"}}, "account.opted_out"),
    ({"type": "stage", "previous": "early", "stage": "late"}, "account.stage_changed"),
    ({"type": "status", "previous": "active", "status": "resolved"}, "account.resolved"),
    ({"type": "status", "previous": "active", "status": "handed_off"}, "account.handed_off"),
    ({"type": "hold", "reason": "dispute", "change": "started", "until": None}, "account.hold_started"),
    ({"type": "hold", "reason": "dispute", "change": "ended"}, "account.hold_ended"),
    ({"type": "event", "event": "arrangement", "detail": {"arrangement_id": "ARR-1", "offer": "instalment_3",
      "instalments": "[{'due': '2026-04-01', 'amount': '100.00'}]"}}, "arrangement.made"),
    ({"type": "event", "event": "arrangement_cancelled", "detail": {"arrangement_id": "ARR-1"}},
     "arrangement.cancelled"),
    ({"type": "event", "event": "arrangement_broken", "detail": {"arrangement_id": "ARR-1", "instalment": "2",
      "days_past_due": "40", "stage": "early"}}, "arrangement.broken"),
]  # fmt: skip


@pytest.mark.parametrize(("entry", "expected"), ENTRIES, ids=[expected for _, expected in ENTRIES])
def test_each_audit_entry_is_its_event_with_a_thin_payload(entry: dict[str, Any], expected: str) -> None:
    found = event_of({"at": NOW.isoformat(), "account_id": "A1", **entry})
    assert found is not None and found[0] == expected and expected in EVENT_TYPES
    event_type, data = found
    assert data["account_id"] == "A1"
    assert not PERSONAL_FIELDS & data.keys()
    body = payload_body(event_type, NOW, data)
    for personal in ("王小明", "+8613800138000", "xiaoming@example.com", "x@y.cn", "Nanjing"):
        assert personal not in body
    assert ("amount" in data) == (expected == "payment.recorded")  # money only on payment events


def test_decisions_last_looks_and_a_providers_sent_are_no_events() -> None:
    entries = ({"type": "decision"}, {"type": "last_look"}, {"type": "outcome", "outcome": "sent"},
               {"type": "contact", "status": "not_sent"}, {"type": "event", "event": "account_created"})  # fmt: skip
    for entry in entries:
        assert event_of({"at": NOW.isoformat(), "account_id": "A1", **entry}) is None


def _resolving_to(*addresses: str) -> Any:
    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        family = socket.AF_INET6 if ":" in addresses[0] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    return resolve


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.9",
        "172.16.5.5",
        "100.64.0.1",
        "::1",
        "::ffff:169.254.169.254",
        "fd00::1",
        "0.0.0.0",
    ],  # fmt: skip
)
def test_a_name_resolving_inside_the_network_is_refused_unless_allowed(address: str) -> None:
    with pytest.raises(TargetRefused, match="url: hooks.bank.test resolves to"):
        check_target("https://hooks.bank.test/cb", (), False, _resolving_to("93.184.215.14", address))
    check_target("https://hooks.bank.test/cb", ("hooks.bank.test",), False, _resolving_to(address))


def test_literal_addresses_and_the_url_shape() -> None:
    with pytest.raises(TargetRefused, match="169.254.169.254"):
        check_target("http://169.254.169.254/latest/meta-data", (), False)
    with pytest.raises(TargetRefused, match="127.0.0.1"):
        check_target("http://127.0.0.1:8080/cb", (), False)
    check_target("http://127.0.0.1:8080/cb", ("127.0.0.1",), False)
    check_target("https://hooks.bank.test/cb", (), True, _resolving_to("93.184.215.14"))
    with pytest.raises(TargetRefused, match="production takes https"):
        check_url("http://hooks.bank.test/cb", production=True)
    for bad in ("ftp://x.test/", "https:///path", "https://user:pw@x.test/", "not a url"):
        with pytest.raises(TargetRefused):
            check_url(bad, production=False)


def test_the_body_is_stable_and_names_its_time_in_utc() -> None:
    body = payload_body("payment.recorded", NOW + timedelta(seconds=1), {"account_id": "A1", "amount": "5.00"})
    assert body == payload_body("payment.recorded", NOW + timedelta(seconds=1), {"account_id": "A1", "amount": "5.00"})
    assert body.startswith('{"type":"payment.recorded","timestamp":"2026-03-02T02:00:01Z"')
