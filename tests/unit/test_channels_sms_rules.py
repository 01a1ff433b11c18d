"""SMS rules that need no provider: segments, keywords, status order, callback mapping."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from channels.base import WebhookRejected
from channels.sms import count_segments, inbound_intent, message_status_outcomes, message_status_rank
from channels.twilio_provider import verified_params
from config.settings import load_settings


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("您" * 70, 1),
        ("您" * 71, 2),
        ("您" * 134, 2),
        ("您" * 135, 3),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),
        ("€" * 81, 2),
        ("a" * 69 + "😀", 2),
    ],
)
def test_segments_follow_gsm7_and_ucs2_limits(text: str, segments: int) -> None:
    assert count_segments(text) == segments


@pytest.mark.parametrize(
    ("body", "intent"),
    [
        ("STOP", "opt_out"),
        (" stop ", "opt_out"),
        ("Unsubscribe.", "opt_out"),
        ("退订", "opt_out"),
        ("取消", "opt_out"),
        ("停止。", "opt_out"),
        ("TD", "opt_out"),
        ("START", "opt_in"),
        ("unstop", "opt_in"),
        ("订阅", "opt_in"),
        ("HELP", "help"),
        ("帮助", "help"),
        ("stop calling me at work", None),
        ("我下周还款", None),
    ],
)
def test_inbound_keywords_are_read_as_twilio_reads_them(body: str, intent: str | None) -> None:
    assert inbound_intent(body) == intent


def test_a_late_sent_callback_ranks_below_delivered() -> None:
    assert message_status_rank("delivered") > message_status_rank("sent") > message_status_rank("queued")
    assert message_status_rank("undelivered") == message_status_rank("delivered")  # both terminal
    assert message_status_rank("no-such-status") < message_status_rank("queued")


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        ("delivered", "", "delivered"),
        ("sent", "", "sent"),
        ("undelivered", "30003", "undelivered"),
        ("undelivered", "30006", "invalid_address"),
        ("failed", "21610", "opted_out"),
        ("failed", "30007", "failed"),
        ("failed", "", "undelivered"),
    ],
)
def test_message_status_maps_to_an_outcome(status: str, code: str, kind: str) -> None:
    [outcome] = message_status_outcomes("c-1", {"MessageSid": "SM1", "MessageStatus": status, "ErrorCode": code})
    assert outcome.kind == kind


def test_in_flight_statuses_give_no_outcome() -> None:
    assert message_status_outcomes("c-1", {"MessageSid": "SM1", "MessageStatus": "sending"}) == []


def test_inbound_stop_is_verified_then_read() -> None:
    """The inbound-SMS webhook's two steps: the signature check, then the keyword read from the body."""
    token = load_settings().twilio_auth_token.get_secret_value()
    url = "https://api.bank.test/v1/webhooks/twilio/inbound-sms"
    params = {"MessageSid": "SM9", "From": "+8613800000000", "To": "+15005550006", "Body": "退订"}
    signature = RequestValidator(token).compute_signature(url, params)
    verified = verified_params(token, url, {"X-Twilio-Signature": signature}, urlencode(params).encode())
    assert (inbound_intent(verified["Body"]), verified["From"]) == ("opt_out", "+8613800000000")
    with pytest.raises(WebhookRejected):
        verified_params(token, url, {"X-Twilio-Signature": "forged"}, urlencode(params).encode())
