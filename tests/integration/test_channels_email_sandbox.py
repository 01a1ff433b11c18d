"""Email through aiosmtplib over loopback SMTP against the aiosmtpd sandbox."""

from __future__ import annotations

import email
from email.message import EmailMessage
from email.policy import default

import pytest

from channels.base import OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from channels.email import EmailAdapter, message_id_for
from channels.sandbox import Sandboxes
from config.settings import Settings
from tests import channel_fixtures

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so pytest finds them (no conftest or plugin needed).
recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

UNSUBSCRIBE = "https://bank.test/unsubscribe/c-1"


def mail(contact_id: str, to: str, subject: str = "Payment reminder", body: str = "Please pay.") -> OutboundMessage:
    return OutboundMessage(
        contact_id,
        "acct-1",
        to,
        "zh-CN",
        body,
        subject=subject,
        html=f"<p>{body}</p>",
        extra={"unsubscribe_url": UNSUBSCRIBE},
    )


def stored_message(sandboxes: Sandboxes, message_id: str) -> EmailMessage:
    for path in sandboxes.smtp.stored():
        parsed = email.message_from_bytes(path.read_bytes(), policy=default)
        if parsed["Message-ID"] == message_id:
            return parsed  # type: ignore[return-value]
    raise AssertionError(f"no stored mail with Message-ID {message_id}")


def test_chinese_subject_and_body_decode_back_from_the_stored_eml(settings: Settings, sandboxes: Sandboxes) -> None:
    subject, body = "【示例银行】尾号1234信用卡还款提醒", "尊敬的张三：您的信用卡欠款¥1,234.56已到期。"
    receipt = EmailAdapter(settings).send(mail("c-mail-zh", "zhang.san@example.test", subject, body))
    stored = stored_message(sandboxes, receipt.provider_id)
    raw = next(p.read_bytes() for p in sandboxes.smtp.stored() if receipt.provider_id.encode() in p.read_bytes())
    assert b"=?utf-8?" in raw.lower()  # RFC 2047 encoded-word on the wire
    assert stored["Subject"] == subject
    assert body in stored.get_body(preferencelist=("plain",)).get_content()
    assert body in stored.get_body(preferencelist=("html",)).get_content()


def test_email_carries_list_unsubscribe_and_a_deterministic_message_id(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    receipt = EmailAdapter(settings).send(mail("c-mail-unsub", "li.si@example.test"))
    stored = stored_message(sandboxes, receipt.provider_id)
    secret = settings.unsubscribe_secret.get_secret_value()
    assert receipt.provider_id == message_id_for("c-mail-unsub", settings.email_from, secret)
    assert "mailto:" in stored["List-Unsubscribe"] and UNSUBSCRIBE in stored["List-Unsubscribe"]
    assert stored["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert UNSUBSCRIBE in stored.get_body(preferencelist=("plain",)).get_content()
    assert stored.get_content_type() == "multipart/alternative"


@pytest.mark.parametrize(
    ("address", "kind"), [("bounce.wang@example.test", "bounced"), ("badaddr.zhao@example.test", "invalid_address")]
)
def test_5xx_recipient_refusals_are_permanent(settings: Settings, address: str, kind: str) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        EmailAdapter(settings).send(mail("c-mail-5xx", address))
    assert caught.value.outcome_kind == kind


def test_4xx_recipient_refusal_is_transient(settings: Settings) -> None:
    with pytest.raises(TransientDeliveryError):
        EmailAdapter(settings).send(mail("c-mail-4xx", "tempfail.qian@example.test"))


def test_an_unreachable_smtp_server_is_transient(settings: Settings) -> None:
    closed = settings.model_copy(update={"smtp_port": 1})
    with pytest.raises(TransientDeliveryError):
        EmailAdapter(closed, timeout=2).send(mail("c-mail-down", "zhou@example.test"))
