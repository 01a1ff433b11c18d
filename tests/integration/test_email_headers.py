"""Email that inboxes accept: List-Unsubscribe (RFC 2369) and its one-click POST (RFC 8058) in plain ASCII,
a DKIM signature dkimpy verifies, the one-click endpoint opting the account out of email, and an RFC 3464
bounce invalidating the address. Real SMTP sandbox, real API over HTTP."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
import re
import smtplib
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiosmtplib
import dkim
import pytest

from channels.base import OutboundMessage, ProviderMisconfigured
from channels.email import EmailAdapter, message_id_for, translate_smtp_error
from channels.sandbox import Sandboxes
from channels.signatures import EMAIL_SIGNATURE
from config.settings import Settings
from dispatcher.core.privacy.unsubscribe import account_of_token, unsubscribe_token
from tests import channel_fixtures
from tests.api_fixtures import Api, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account

pytestmark = pytest.mark.integration

recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings
dkim_key = channel_fixtures.dkim_key

SELECTOR = "mail2026"


def mail(settings: Settings, contact_id: str, account_id: str = "acct-7") -> OutboundMessage:
    token = unsubscribe_token(settings.unsubscribe_secret.get_secret_value(), account_id)
    url = f"https://collections.bank.test/v1/unsubscribe/{token}"
    return OutboundMessage(
        contact_id, account_id, "wang.xiaoming@example.test", "zh-CN", "您的账户已逾期。\n",
        subject="还款提醒：您的信用卡账户已逾期，请尽快处理以免影响征信记录", html="<p>您的账户已逾期。</p>",
        extra={"unsubscribe_url": url, "unsubscribe_token": token},
    )  # fmt: skip


def stored(sandboxes: Sandboxes, message_id: str) -> bytes:
    for path in sandboxes.smtp.stored():
        raw = path.read_bytes()
        if message_id.encode() in raw:
            return raw
    raise AssertionError(f"{message_id} not stored")


def test_list_unsubscribe_has_a_usable_mailto_and_https_uri_in_plain_ascii(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    receipt = EmailAdapter(settings).send(mail(settings, "acct-7/early/email/0"))
    raw = stored(sandboxes, receipt.provider_id)
    header_lines = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # every header is ASCII on the wire
    assert "=?" not in next(line for line in header_lines.splitlines() if line.startswith("List-Unsubscribe:"))
    parsed = message_from_bytes(raw, policy=default)
    uris = re.findall(r"<([^>]+)>", str(parsed["List-Unsubscribe"]))
    mailto = next(uri for uri in uris if uri.startswith("mailto:"))
    https = next(uri for uri in uris if uri.startswith("https://"))
    assert urlsplit(mailto).path == "unsubscribe@example-bank.test"
    subject = parse_qs(urlsplit(mailto).query)["subject"][0]
    token = subject.removeprefix("unsubscribe ")
    secret = settings.unsubscribe_secret.get_secret_value()
    assert account_of_token(secret, token) == "acct-7"
    assert account_of_token(secret, urlsplit(https).path.rsplit("/", 1)[1]) == "acct-7"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "DKIM-Signature" not in parsed  # no key configured, nothing signed
    assert "还款提醒" in str(parsed["Subject"])  # the Chinese subject survives, as an encoded word


def test_with_a_key_every_email_carries_a_dkim_signature_dkimpy_verifies(
    settings: Settings, sandboxes: Sandboxes, dkim_key: tuple[Path, bytes]
) -> None:
    key_path, record = dkim_key
    signing = settings.model_copy(
        update={"dkim_selector": SELECTOR, "dkim_domain": "example-bank.test", "dkim_private_key_path": key_path}
    )
    receipt = EmailAdapter(signing).send(mail(signing, "acct-7/early/email/1"))
    raw = stored(sandboxes, receipt.provider_id)
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record if name == f"{SELECTOR}._domainkey.example-bank.test.".encode() else b""

    assert dkim.verify(raw, dnsfunc=dns)
    assert asked == [b"mail2026._domainkey.example-bank.test."]
    signature = message_from_bytes(raw, policy=default)["DKIM-Signature"]
    signed = re.search(r"h=([^;]+)", str(signature).replace("\r\n", "").replace(" ", ""))
    assert signed and {"list-unsubscribe", "list-unsubscribe-post", "from"} <= set(signed[1].lower().split(":"))
    tampered = raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: nope")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_one_click_post_opts_the_account_out_of_email_and_nothing_else(api: Api) -> None:
    api.engine.upsert(make_account("U1"))
    token = unsubscribe_token(api.settings.unsubscribe_secret.get_secret_value(), "U1")
    page = api.client.get(f"/v1/unsubscribe/{token}")  # a link scanner's GET changes nothing
    assert page.status_code == 200 and 'method="post"' in page.text
    assert "email" not in api.store.load("U1").record.state.opted_out
    body = "List-Unsubscribe=One-Click"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}  # no API key: the token is the credential
    response = api.client.post(f"/v1/unsubscribe/{token}", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["status"] == "unsubscribed"
    assert api.store.load("U1").record.state.opted_out == {"email"}
    again = api.client.post(f"/v1/unsubscribe/{token}", content=body, headers=headers)
    assert again.status_code == 200  # a second click is harmless
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert api.client.post(f"/v1/unsubscribe/{forged}", content=body, headers=headers).status_code == 404
    other = unsubscribe_token("not-our-secret", "U1")
    assert api.client.post(f"/v1/unsubscribe/{other}", content=body, headers=headers).status_code == 404


def dsn(original_message_id: str, recipient: str, status: str, action: str = "failed") -> bytes:
    """A delivery status notification as Postfix writes one (RFC 3464), with the original's headers."""
    return (
        "From: MAILER-DAEMON@mx.example.test\r\nTo: collections@example-bank.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be"
        " delivered.\r\n\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.test\r\nArrival-Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: collections@example-bank.test\r\nTo: {recipient}\r\nMessage-ID: {original_message_id}\r\n"
        "Subject: =?utf-8?b?5L2g5aW9?=\r\n\r\n--B--\r\n"
    ).encode()


def test_an_rfc_3464_bounce_invalidates_the_email_address(api: Api) -> None:
    api.engine.upsert(make_account("D1"))
    contact_id = "D1/early/email/0"
    api.store.redis.hset("{a:D1}:claims", contact_id, "sent")
    secret = api.settings.email_webhook_secret.get_secret_value()
    message_id = message_id_for(contact_id, api.settings.email_from, api.settings.unsubscribe_secret.get_secret_value())

    def post(body: bytes) -> dict[str, object]:
        headers = {**EMAIL_SIGNATURE.headers(secret, body, time.time()), "Content-Type": "message/rfc822"}
        response = api.client.post("/v1/webhooks/email-dsn", content=body, headers=headers)
        assert response.status_code == 200, response.text
        return dict(json.loads(response.text))

    assert post(dsn(message_id, "xiaoming@example.com", "4.4.1", action="delayed"))["status"] == "ignored"
    assert post(dsn("<someone.else@elsewhere.test>", "x@example.com", "5.1.1"))["status"] == "ignored"
    assert "email" not in api.store.load("D1").record.state.invalid_addresses
    assert post(dsn(message_id, "xiaoming@example.com", "5.1.1"))["outcomes"] == ["invalid_address"]
    assert "email" in api.store.load("D1").record.state.invalid_addresses
    forged = {**EMAIL_SIGNATURE.headers("guess", b"x", time.time()), "Content-Type": "message/rfc822"}
    assert api.client.post("/v1/webhooks/email-dsn", content=b"x", headers=forged).status_code == 403


def _raw(list_unsubscribe: str) -> bytes:
    return (
        "From: collections@example-bank.test\r\nTo: a@example.test\r\nSubject: hi\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x.1@example-bank.test>\r\n"
        f"List-Unsubscribe: {list_unsubscribe}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n"
    ).encode()


def test_the_smtp_sandbox_refuses_what_bulk_sender_rules_refuse(sandboxes: Sandboxes) -> None:
    encoded = "=?utf-8?q?=3Cmailto=3Au=40example-bank=2Etest=3E=2C_=3Chttps=3A=2F=2Fb=2Etest=2Fu=3E?="
    with smtplib.SMTP(sandboxes.smtp.host, sandboxes.smtp.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("collections@example-bank.test", ["a@example.test"], _raw(encoded))
        assert refused.value.smtp_code == 550 and b"RFC 2369" in refused.value.smtp_error
        with pytest.raises(smtplib.SMTPDataError) as no_https:
            client.sendmail("collections@example-bank.test", ["a@example.test"], _raw("<mailto:u@example-bank.test>"))
        assert b"RFC 8058" in no_https.value.smtp_error
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("collections@example-bank.test", ["a@example.test"], _raw("<http://b.test/u>"))
        for one_click in ("<mailto:u@x.test>, <https://b.test/u>", "<http://127.0.0.1:8700/u>", "<http://api:8700/u>"):
            client.sendmail("collections@example-bank.test", ["a@example.test"], _raw(one_click))


def test_a_policy_refusal_of_the_whole_message_is_our_misconfiguration() -> None:
    refused = aiosmtplib.SMTPDataError(550, "5.7.26 This mail is unauthenticated: DKIM and SPF did not pass")
    translated = translate_smtp_error(refused)
    assert isinstance(translated, ProviderMisconfigured) and translated.setting == "DISPATCHER_DKIM_SELECTOR"
    mailbox = aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no such user", "a@b")])
    assert not isinstance(translate_smtp_error(mailbox), ProviderMisconfigured)  # the debtor's address
