"""Email over SMTP with aiosmtplib, on one long-lived event loop per process.

Workers are synchronous; each send is handed to a background loop thread, so connections and the loop
are not rebuilt per message. After a fork (Celery prefork) the child starts its own loop.

SMTP has no way to ask a relay what it accepted: `find_sent` raises LookupUnavailable, and a claim in doubt
stays `unknown` (counted against caps, reported), never promoted to sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Coroutine
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import quote

import aiosmtplib

from channels.base import (
    DeliveryError,
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    pass_request_gate,
)
from config.settings import Settings

T = TypeVar("T")

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


def message_id_for(contact_id: str, sender: str) -> str:
    """Deterministic Message-ID: a resent contact carries the same id, and the id reveals no account."""
    digest = hashlib.sha256(contact_id.encode("utf-8")).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<contact.{digest}@{domain}>"


def build_email(message: OutboundMessage, sender: str) -> EmailMessage:
    """multipart/alternative with List-Unsubscribe; the text always carries the unsubscribe link."""
    unsubscribe_url = str(message.extra.get("unsubscribe_url") or "")
    if not unsubscribe_url:
        raise PermanentDeliveryError("a collection email needs an unsubscribe_url (Regulation F)", "failed")
    email = EmailMessage(policy=SMTP)
    email["From"] = sender
    email["To"] = str(message.to)
    email["Subject"] = message.subject or ""
    email["Date"] = formatdate(localtime=False, usegmt=True)
    email["Message-ID"] = message_id_for(message.contact_id, sender)
    mailto = f"mailto:{sender}?subject={quote('unsubscribe ' + message.contact_id)}"
    email["List-Unsubscribe"] = f"<{mailto}>, <{unsubscribe_url}>"
    email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058 one-click
    text = message.text if unsubscribe_url in message.text else f"{message.text}\n{unsubscribe_url}\n"
    email.set_content(text, charset="utf-8")
    if message.html:
        email.add_alternative(message.html, subtype="html", charset="utf-8")
    return email


class EmailAdapter:
    """Sends one email per contact through the configured SMTP server."""

    name = "email"

    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        self._settings = settings
        self._timeout = timeout

    def send(self, message: OutboundMessage) -> Receipt:
        email = build_email(message, self._settings.email_from)
        pass_request_gate()  # here, in the sending thread: the loop thread does not see its context
        _LoopThread.get().run(self._deliver(email, str(message.to)), self._timeout + 5)
        return Receipt(provider_id=str(email["Message-ID"]), status="accepted")

    def find_sent(self, query: SentQuery) -> Evidence:
        """SMTP cannot be asked whether a relay took a message (there is no list or status command, and the
        deterministic Message-ID only helps where a relay offers a search API, which plain SMTP does not)."""
        message_id = message_id_for(query.contact_id, self._settings.email_from)
        raise LookupUnavailable(f"smtp: a relay cannot be asked whether it accepted {message_id}")

    def close(self) -> None:
        """Nothing per adapter: the loop is shared by the process and dies with it."""

    async def _deliver(self, email: EmailMessage, recipient: str) -> None:
        settings = self._settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            await aiosmtplib.send(
                email.as_bytes(policy=SMTP),
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


def translate_smtp_error(exc: aiosmtplib.SMTPException) -> DeliveryError:
    """4xx and connection trouble are transient; 5xx are permanent, by reply code."""
    code = _reply_code(exc)
    if code is None or 400 <= code < 500:
        ambiguous = isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPServerDisconnected)
        return TransientDeliveryError(f"smtp {code}: {exc}", ambiguous=ambiguous)
    return PermanentDeliveryError(f"smtp {code}: {exc}", PERMANENT_REPLY_KIND.get(code, "bounced"))


def _reply_code(exc: aiosmtplib.SMTPException) -> int | None:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        return int(exc.recipients[0].code)
    code = getattr(exc, "code", None)
    return int(code) if isinstance(code, int) and code >= 400 else None
