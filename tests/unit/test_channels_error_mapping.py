"""Each provider's errors translate into what the caller should do next, in one place per provider."""

from __future__ import annotations

import json
import time

import aiosmtplib
import pytest
from aiosmtplib.errors import SMTPRecipientRefused

from channels.base import PermanentDeliveryError, TransientDeliveryError, WebhookRejected
from channels.email import translate_smtp_error
from channels.letter import tracking_outcomes
from channels.retry import retry_transient
from channels.signatures import LOB_SIGNATURE
from channels.twilio_provider import translate_rest_error
from channels.voice import answered_kind, call_outcome_kind


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 21211, "invalid_address"),
        (400, 21612, "invalid_address"),
        (400, 21614, "invalid_address"),
        (400, 21635, "invalid_address"),
        (400, 30005, "invalid_address"),
        (400, 30006, "invalid_address"),
        (400, 21610, "opted_out"),
        (400, 30007, "failed"),
        (400, 21604, "failed"),
    ],
)
def test_twilio_permanent_errors(status: int, code: int, kind: str) -> None:
    error = translate_rest_error(status, code, "x", None)
    assert isinstance(error, PermanentDeliveryError) and error.outcome_kind == kind


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (400, 30003), (400, 30008), (503, 20503), (500, None)])
def test_twilio_transient_errors_keep_retry_after(status: int, code: int | None) -> None:
    error = translate_rest_error(status, code, "x", 3.0)
    assert isinstance(error, TransientDeliveryError) and error.retry_after == 3.0


@pytest.mark.parametrize("code", [21611, 30001])
def test_twilio_back_pressure_always_asks_to_wait(code: int) -> None:
    error = translate_rest_error(400, code, "queue full", None)
    assert isinstance(error, TransientDeliveryError) and error.retry_after and error.retry_after > 0


@pytest.mark.parametrize(
    ("answered_by", "kind"),
    [
        ("human", "answered"),
        (None, "answered"),
        ("machine_end_beep", "voicemail"),
        ("machine_start", "no_answer"),
        ("machine_end_silence", "no_answer"),
        ("machine_end_other", "no_answer"),
        ("fax", "no_answer"),
        ("unknown", "no_answer"),
    ],
)
def test_answered_by_maps_to_an_outcome(answered_by: str | None, kind: str) -> None:
    assert answered_kind(answered_by) == kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [("busy", "busy"), ("no-answer", "no_answer"), ("failed", "failed"), ("canceled", "failed"), ("ringing", None)],
)
def test_call_status_maps_to_an_outcome(status: str, kind: str | None) -> None:
    assert call_outcome_kind(status, None, None) == kind


def test_smtp_replies_map_by_class_and_code() -> None:
    def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
        return aiosmtplib.SMTPRecipientsRefused([SMTPRecipientRefused(code, "no", "x@example.test")])

    assert isinstance(translate_smtp_error(refused(451)), TransientDeliveryError)
    assert translate_smtp_error(refused(550)).outcome_kind == "bounced"  # type: ignore[attr-defined]
    assert translate_smtp_error(refused(553)).outcome_kind == "invalid_address"  # type: ignore[attr-defined]
    assert isinstance(translate_smtp_error(aiosmtplib.SMTPConnectError("refused")), TransientDeliveryError)


def test_lob_signature_is_verified_and_staleness_rejected() -> None:
    body = json.dumps(
        {"event_type": {"id": "letter.delivered"}, "body": {"id": "ltr_1", "metadata": {"contact_id": "c"}}}
    ).encode()
    now = time.time()
    fresh = str(int(now * 1000))
    sign, verify = LOB_SIGNATURE.sign, LOB_SIGNATURE.verify
    verify("s", {"Lob-Signature": sign("s", fresh, body), "Lob-Signature-Timestamp": fresh}, body, now)
    with pytest.raises(WebhookRejected, match="Lob-Signature does not match"):
        verify("s", {"Lob-Signature": sign("other", fresh, body), "Lob-Signature-Timestamp": fresh}, body, now)
    stale = str(int((now - 3600) * 1000))
    with pytest.raises(WebhookRejected, match="stale Lob-Signature-Timestamp"):
        verify("s", {"Lob-Signature": sign("s", stale, body), "Lob-Signature-Timestamp": stale}, body, now)
    assert [o.kind for o in tracking_outcomes(json.loads(body))] == ["delivered"]


def test_retries_stop_at_ambiguous_failures_and_long_waits() -> None:
    calls: list[int] = []

    def ambiguous() -> None:
        calls.append(1)
        raise TransientDeliveryError("read timeout", ambiguous=True)

    with pytest.raises(TransientDeliveryError):
        retry_transient(ambiguous, attempts=3, initial_wait=0)
    assert len(calls) == 1  # never resend what may already have been sent

    def slow_down() -> None:
        calls.append(2)
        raise TransientDeliveryError("429", retry_after=600)

    with pytest.raises(TransientDeliveryError):
        retry_transient(slow_down, attempts=3, initial_wait=0, max_wait=1)
    assert calls.count(2) == 1  # a long wait goes back to the schedule instead of blocking the worker
