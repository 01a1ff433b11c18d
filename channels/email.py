"""Email over SMTP with aiosmtplib, on one long-lived event loop per process.

Workers are synchronous; each send is handed to a background loop thread, so connections and the loop
are not rebuilt per message. After a fork (Celery prefork) the child starts its own loop.

SMTP has no way to ask a relay what it accepted: `find_sent` raises LookupUnavailable, and a claim in doubt
stays `unknown` (counted against caps, reported), never promoted to sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import ssl
import threading
from collections.abc import Coroutine
from email.message import EmailMessage
from email.policy import SMTP, EmailPolicy
from email.utils import formatdate
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import aiosmtplib
import dkim

from channels import spec
from channels.base import (
    DeliveryError,
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    misconfiguration_of,
    pass_request_gate,
)
from config.settings import Settings

T = TypeVar("T")

# Every part is 7-bit: a non-ASCII (or long-lined) part is encoded as quoted-printable or base64 when it is
# set, in lines of at most 76 characters (RFC 2045). The signed bytes are then what any relay takes, with or
# without 8BITMIME, and no relay has to convert them (which would break the DKIM body hash).
BODY = SMTP.clone(cte_type="7bit", max_line_length=76)
UNFOLDED_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})


class _HeaderPolicy(EmailPolicy):
    """SMTP's policy, but the List-Unsubscribe pair is written unfolded up to RFC 5322's 998 characters:
    folding a long List-Unsubscribe made the email package write it as an RFC 2047 encoded word, which no
    receiver parses as URIs. Every other header folds at 78, which keeps an encoded word (a Chinese
    Subject) within RFC 2047's 75 characters."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in UNFOLDED_HEADERS:
            return _UNFOLDED.fold(name, value)
        return super().fold(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in UNFOLDED_HEADERS:
            return _UNFOLDED.fold_binary(name, value)
        return super().fold_binary(name, value)


_UNFOLDED = SMTP.clone(cte_type="7bit", max_line_length=998)
HEADERS = _HeaderPolicy(linesep="\r\n", cte_type="7bit")
SIGNED_HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe", b"list-unsubscribe-post",
    b"mime-version", b"content-type",
]  # fmt: skip

# 5xx reply code -> outcome kind; any other 5xx is a plain bounce.
PERMANENT_REPLY_KIND = {553: "invalid_address", 501: "invalid_address", 550: "bounced", 551: "bounced"}


class _LoopThread:
    """One asyncio loop in a daemon thread, shared by every email send in this process."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="email-loop", daemon=True)
        self._thread.start()

    @classmethod
    def get(cls) -> _LoopThread:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = cls()
            return cls._instance

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    blocks = (hmac.new(key, nonce + bytes([i]), hashlib.sha256).digest() for i in range(length // 32 + 1))
    return b"".join(blocks)[:length]


def _message_key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"message-id/v1", hashlib.sha256).digest()


def message_id_for(contact_id: str, sender: str, secret: str = "") -> str:
    """Deterministic Message-ID that reveals no account but can be read back with the secret (a bounce
    names the contact through it): a synthetic IV (8 bytes of HMAC of the id) and the id encrypted with
    an HMAC keystream, both base32. A resent contact carries the same id."""
    key, raw = _message_key(secret), contact_id.encode("utf-8")
    nonce = hmac.new(key, raw, hashlib.sha256).digest()[:8]
    sealed = bytes(a ^ b for a, b in zip(raw, _keystream(key, nonce, len(raw)), strict=True))
    local = base64.b32encode(nonce + sealed).decode("ascii").rstrip("=").lower()
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<c.{local}@{domain}>"


def contact_of_message_id(message_id: str, secret: str = "") -> str | None:
    """The contact id a Message-ID of ours names; None for anyone else's (or a forged) id."""
    local = message_id.strip().strip("<>").partition("@")[0]
    if not local.startswith("c."):
        return None
    text = local[2:].upper()
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except (ValueError, binascii.Error):
        return None
    key, nonce, sealed = _message_key(secret), data[:8], data[8:]
    raw = bytes(a ^ b for a, b in zip(sealed, _keystream(key, nonce, len(sealed)), strict=True))
    if len(nonce) != 8 or not hmac.compare_digest(hmac.new(key, raw, hashlib.sha256).digest()[:8], nonce):
        return None
    return raw.decode("utf-8", errors="replace")


def unsubscribe_mailto(message: OutboundMessage, settings: Settings) -> str:
    """The mailto: URI of List-Unsubscribe: our unsubscribe mailbox, the signed token as the subject."""
    mailbox = settings.unsubscribe_mailto or f"unsubscribe@{settings.email_from.rpartition('@')[2]}"
    token = str(message.extra.get("unsubscribe_token") or message.contact_id)
    return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"


def build_email(message: OutboundMessage, settings: Settings) -> EmailMessage:
    """multipart/alternative with List-Unsubscribe (RFC 2369) and List-Unsubscribe-Post (RFC 8058) in plain
    ASCII; the text always carries the unsubscribe link. Written with `as_bytes(policy=HEADERS)` it is 7-bit
    throughout, so it needs no BODY=8BITMIME and survives any relay unchanged."""
    unsubscribe_url = str(message.extra.get("unsubscribe_url") or "")
    if not unsubscribe_url:
        raise PermanentDeliveryError("a collection email needs an unsubscribe_url (Regulation F)", "failed")
    mailto = unsubscribe_mailto(message, settings)
    if not (unsubscribe_url.isascii() and mailto.isascii()) or any(c in unsubscribe_url for c in "<> \t"):
        raise ProviderMisconfigured(
            f"List-Unsubscribe needs plain ASCII URIs, got {unsubscribe_url!r}", "email", "DISPATCHER_UNSUBSCRIBE_URL"
        )
    sender = settings.email_from
    email = EmailMessage(policy=BODY)  # the parts take their encoding from this policy; as_bytes folds headers
    email["From"] = sender
    email["To"] = str(message.to)
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = message_id_for(message.contact_id, sender, settings.unsubscribe_secret.get_secret_value())
    email["List-Unsubscribe"] = f"<{mailto}>, <{unsubscribe_url}>"
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058 one-click
    text = message.text if unsubscribe_url in message.text else f"{message.text}\n{unsubscribe_url}\n"
    email.set_content(text, charset="utf-8")
    if message.html:
        email.add_alternative(message.html, subtype="html", charset="utf-8")
    return email


class DkimSigner:
    """DKIM-Signature (RFC 6376, rsa-sha256, relaxed/relaxed) over the headers receivers check, the
    List-Unsubscribe pair included (RFC 8058 asks for both to be signed)."""

    def __init__(self, selector: str, domain: str, key_path: Path) -> None:
        self.selector, self.domain = selector.encode("ascii"), domain.encode("ascii")
        self.key = key_path.read_bytes()

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        if not (settings.dkim_selector and settings.dkim_private_key_path):
            return None
        domain = settings.dkim_domain or settings.email_from.rpartition("@")[2]
        return cls(settings.dkim_selector, domain, settings.dkim_private_key_path)

    def sign(self, data: bytes) -> bytes:
        signature = dkim.sign(
            data, self.selector, self.domain, self.key, canonicalize=(b"relaxed", b"relaxed"),
            include_headers=SIGNED_HEADERS,
        )  # fmt: skip
        return signature + data


class EmailAdapter:
    """Sends one email per contact through the configured SMTP server."""

    name = "email"

    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        self._settings = settings
        self._timeout = timeout
        self._signer: DkimSigner | None = None
        self._signer_problem: str | None = None
        try:
            self._signer = DkimSigner.from_settings(settings)
        except OSError as exc:  # a key that cannot be read is reported at each send, as the misconfiguration
            self._signer_problem = f"DKIM key: {exc}"

    def send(self, message: OutboundMessage) -> Receipt:
        if self._signer_problem:
            raise ProviderMisconfigured(self._signer_problem, "email", "DISPATCHER_DKIM_PRIVATE_KEY_PATH")
        email = build_email(message, self._settings)
        data = email.as_bytes(policy=HEADERS)
        if self._signer is not None:
            data = self._signer.sign(data)
        pass_request_gate()  # here, in the sending thread: the loop thread does not see its context
        _LoopThread.get().run(self._deliver(data, str(message.to)), self._timeout + 5)
        return Receipt(provider_id=str(email["Message-ID"]), status="accepted")

    def find_sent(self, query: SentQuery) -> Evidence:
        """SMTP cannot be asked whether a relay took a message (there is no list or status command, and the
        deterministic Message-ID only helps where a relay offers a search API, which plain SMTP does not)."""
        message_id = message_id_for(
            query.contact_id, self._settings.email_from, self._settings.unsubscribe_secret.get_secret_value()
        )
        raise LookupUnavailable(f"smtp: a relay cannot be asked whether it accepted {message_id}")

    def close(self) -> None:
        """Nothing per adapter: the loop is shared by the process and dies with it."""

    async def _deliver(self, data: bytes, recipient: str) -> None:
        settings = self._settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                data,
                sender=settings.email_from,
                recipients=[recipient],
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                start_tls=settings.smtp_use_tls,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPException as exc:
            raise translate_smtp_error(exc) from exc
        except (ssl.SSLError, OSError) as exc:  # a TLS handshake or socket failure outside aiosmtplib's own
            reason = misconfiguration_of(exc)
            if reason is None:
                raise TransientDeliveryError(f"smtp: {exc!r}") from exc
            raise ProviderMisconfigured(f"smtp {reason}: {exc!r}", "email", _transport_setting(reason)) from exc


def _sender(settings: Settings) -> str:
    return settings.email_from


SPEC = spec.ChannelSpec(name="email", provider="smtp", adapter=EmailAdapter, sender=_sender)


def translate_smtp_error(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """Our credentials, sender, host or TLS refused: misconfigured. 4xx and connection trouble transient;
    5xx about the recipient permanent, by reply code."""
    misconfigured = _misconfigured_smtp(exc)
    if misconfigured is not None:
        return misconfigured
    code = _reply_code(exc)
    if code is None or 400 <= code < 500:
        ambiguous = isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected)
        return TransientDeliveryError(f"smtp {code}: {exc}", ambiguous=ambiguous)
    return PermanentDeliveryError(f"smtp {code}: {exc}", PERMANENT_REPLY_KIND.get(code, "bounced"))


def _misconfigured_smtp(exc: aiosmtplib.SMTPException) -> ProviderMisconfigured | None:
    label = f"smtp: {exc}"
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError) or getattr(exc, "code", None) == 530:
        return ProviderMisconfigured(label, "email", "DISPATCHER_SMTP_PASSWORD")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return ProviderMisconfigured(label, "email", "DISPATCHER_EMAIL_FROM")
    if "STARTTLS" in str(exc):
        return ProviderMisconfigured(label, "email", "DISPATCHER_SMTP_USE_TLS")
    if isinstance(exc, aiosmtplib.SMTPDataError) and " 5.7." in f" {exc.message}":
        # The whole message refused by policy (authentication, headers): how we send, not who we send to.
        text = exc.message.lower()
        setting = "DISPATCHER_UNSUBSCRIBE_URL" if "unsubscribe" in text else "DISPATCHER_DKIM_SELECTOR"
        return ProviderMisconfigured(label, "email", setting)
    reason = misconfiguration_of(exc)
    if reason is not None:
        return ProviderMisconfigured(f"smtp {reason}: {exc}", "email", _transport_setting(reason))
    return None


def _transport_setting(reason: str) -> str:
    return "DISPATCHER_SMTP_HOST" if reason == "unknown host" else "DISPATCHER_SMTP_USE_TLS"


def _reply_code(exc: aiosmtplib.SMTPException) -> int | None:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return int(exc.recipients[0].code)
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) and code >= 400 else None
