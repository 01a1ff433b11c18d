"""Non-ASCII email arrives 7-bit clean with a DKIM signature that verifies, whether or not the relay offers
8BITMIME: the real adapter, the real aiosmtplib send path, a real aiosmtpd server (the SMTP sandbox, with
8BITMIME left out of its EHLO reply or offered), dkimpy verifying the bytes the server received."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import dkim
import pytest

from channels.base import OutboundMessage
from channels.email import EmailAdapter
from channels.render import Renderer
from channels.sandbox.smtp import SmtpHandle
from config.settings import Settings, load_settings
from tests import channel_fixtures
from tests.unit.test_channels_render import CONTEXT

pytestmark = pytest.mark.integration

dkim_key = channel_fixtures.dkim_key

SELECTOR = "mail2026"
DOMAIN = "example-bank.test"


@pytest.fixture(params=[False, True], ids=["no-8bitmime", "8bitmime"])
def relay(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmtpHandle]:
    server = SmtpHandle(tmp_path / "smtp", offer_8bitmime=request.param)
    yield server
    server.stop()


def signing_settings(relay: SmtpHandle, key_path: Path) -> Settings:
    return load_settings(
        smtp_host=relay.host, smtp_port=relay.port, dkim_selector=SELECTOR, dkim_domain=DOMAIN,
        dkim_private_key_path=key_path,
    )  # fmt: skip


def rendered_mail(contact_id: str, locale: str) -> OutboundMessage:
    """The email a debtor gets: the real template, Chinese name and bank in both locales."""
    url = "https://collections.bank.test/v1/unsubscribe/tok"
    rendered = Renderer().render("early_email", locale, {**CONTEXT, "unsubscribe_url": url})
    return OutboundMessage(
        contact_id, "acct-8", "wang.xiaoming@example.test", locale, rendered.text, subject=rendered.subject,
        html=rendered.html, extra={"unsubscribe_url": url, "unsubscribe_token": "tok"},
    )  # fmt: skip


def received(relay: SmtpHandle) -> tuple[bytes, list[str]]:
    """The one message the relay stored and the MAIL FROM parameters it came with."""
    stored = [event for event in relay.log.read() if event["event"] == "smtp.stored"]
    refused = [event["reason"] for event in relay.log.read() if event["event"] == "smtp.refused_message"]
    assert refused == [] and len(stored) == 1
    return (relay.maildir / stored[0]["file"]).read_bytes(), stored[0]["mail_options"]


@pytest.mark.parametrize("locale", ["zh-CN", "en"])
def test_non_ascii_mail_arrives_7bit_clean_and_its_dkim_signature_verifies(
    relay: SmtpHandle, dkim_key: tuple[Path, bytes], locale: str
) -> None:
    key_path, record = dkim_key
    message = rendered_mail(f"acct-8/early/email/{locale}", locale)
    EmailAdapter(signing_settings(relay, key_path)).send(message)
    raw, mail_options = received(relay)

    assert raw.isascii(), "8-bit bytes on the wire"
    assert b"8bit" not in raw.lower()  # no part claims Content-Transfer-Encoding: 8bit
    assert all(len(line) <= 76 for line in raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))  # RFC 2045 body lines
    assert "BODY=8BITMIME" not in [option.upper() for option in mail_options]  # 7-bit needs no declaration
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert all(len(word) <= 75 for word in re.findall(r"=\?[^?]+\?[bq]\?[^?]*\?=", head, re.I))  # RFC 2047 2.
    unsubscribe = next(line for line in head.split("\r\n") if line.startswith("List-Unsubscribe:"))
    assert unsubscribe.endswith(">") and "=?" not in unsubscribe  # one line of <URI>s, never folded or encoded

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else b""

    assert dkim.verify(raw, dnsfunc=dns)
    parsed = message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    plain, html = parsed.get_body(preferencelist=("plain",)), parsed.get_body(preferencelist=("html",))
    assert plain is not None and html is not None
    assert plain["Content-Transfer-Encoding"] in ("base64", "quoted-printable")
    # Decodes back to exactly what was rendered (a base64 text part carries canonical CRLF line ends).
    assert plain.get_content().replace("\r\n", "\n") == message.text
    assert "示例银行" in html.get_content() and parsed["Subject"] == message.subject


def test_a_relay_without_8bitmime_refuses_8bit_data(tmp_path: Path) -> None:
    """The sandbox holds the line a strict relay holds, so an 8-bit regression fails every email test."""
    relay = SmtpHandle(tmp_path / "smtp", offer_8bitmime=False)
    try:
        raw = (
            "From: a@example-bank.test\r\nTo: b@example.test\r\nSubject: x\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
            "Message-ID: <x@example-bank.test>\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n您好\r\n"
        ).encode()
        with smtplib.SMTP(relay.host, relay.port) as client:
            client.ehlo()
            assert not client.has_extn("8bitmime")
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail("a@example-bank.test", ["b@example.test"], raw)
        assert refused.value.smtp_code == 550 and b"RFC 6152" in refused.value.smtp_error
    finally:
        relay.stop()
