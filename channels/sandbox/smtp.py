"""An SMTP stand-in (aiosmtpd) that stores each accepted message as an .eml file.

Recipients are judged by local part: 'bounce…' gets 550 (mailbox unavailable), 'badaddr…' 553 (bad
address), 'tempfail…' 451 (try again later); anything else is accepted.

The message itself is refused (550 5.7.1, as Gmail and Yahoo refuse bulk mail that breaks their sender
rules) when a header is not plain ASCII or is an RFC 2047 encoded word where a URI list belongs
(List-Unsubscribe), when List-Unsubscribe lacks an https URI or List-Unsubscribe-Post is not
`List-Unsubscribe=One-Click` (RFC 8058; http to loopback or to a compose service passes, for development),
when From, Date or Message-ID is missing (RFC 5322), or when a line is longer than 998 characters.

Eight-bit data is refused (550 5.6.0, as a strict relay such as Postfix with strict_8bitmime does) unless
the client declared it on MAIL FROM (BODY=8BITMIME or SMTPUTF8, RFC 6152) after the server offered it;
`offer_8bitmime=False` leaves 8BITMIME out of the EHLO reply, as a server without the extension does.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from channels.sandbox.server import EventLog, free_port

RECIPIENT_REPLIES = (
    ("bounce", "550 5.1.1 Mailbox unavailable"),
    ("badaddr", "553 5.1.3 Bad destination mailbox address"),
    ("tempfail", "451 4.3.0 Temporary failure, try again later"),
)


def is_one_click_uri(uri: str) -> bool:
    """RFC 8058 wants https. A development deployment has none, so its own API over http is accepted too: on
    loopback, or at a single-label name such as compose's `api` service (no public host has one)."""
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and (host in ("127.0.0.1", "localhost", "::1") or (host != "" and "." not in host))


def eight_bit_problem(data: bytes, mail_options: list[str], offered: bool) -> str | None:
    """Why a relay that follows RFC 6152 refuses 8-bit data: not declared on MAIL FROM, or never offered."""
    if data.isascii():
        return None
    declared = {option.upper() for option in mail_options} & {"BODY=8BITMIME", "SMTPUTF8"}
    if not declared:
        return "8-bit data without BODY=8BITMIME on MAIL FROM (RFC 6152)"
    if not offered:
        return "8-bit data to a server that does not offer 8BITMIME (RFC 6152)"
    return None


def message_problem(data: bytes) -> str | None:
    """Why a receiver following RFC 5322, RFC 2369/8058 and the bulk-sender rules would refuse the message."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if any(len(line) > 998 for line in data.splitlines()):
        return "a line is longer than 998 characters (RFC 5322)"
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return "a header is not ASCII"
    headers: dict[str, str] = {}
    for line in re.sub(r"\r?\n[ \t]+", " ", text).splitlines():
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    missing = [name for name in ("from", "date", "message-id") if name not in headers]
    if missing:
        return f"missing {', '.join(missing)} (RFC 5322)"
    unsubscribe = headers.get("list-unsubscribe")
    if unsubscribe is not None:
        uris = re.findall(r"<([^>]*)>", unsubscribe)
        if "=?" in unsubscribe or not uris:
            return "List-Unsubscribe is not a list of <URI>s (RFC 2369)"
        if (
            not any(is_one_click_uri(uri) for uri in uris)
            or headers.get("list-unsubscribe-post") != "List-Unsubscribe=One-Click"
        ):
            return "no one-click unsubscribe: an https URI and List-Unsubscribe-Post (RFC 8058)"
    return None


class MailboxHandler:
    """aiosmtpd handler: refuses recipients by pattern, stores the rest under `maildir`."""

    def __init__(self, maildir: Path, log: EventLog, *, offer_8bitmime: bool = True) -> None:
        maildir.mkdir(parents=True, exist_ok=True)
        self.maildir = maildir
        self.log = log
        self.offer_8bitmime = offer_8bitmime
        self._counter = itertools.count(1)

    async def handle_EHLO(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when no hook is given
        if self.offer_8bitmime:
            return responses
        return [line for line in responses if line[4:].upper() != "8BITMIME"]

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        local_part = address.partition("@")[0].lower()
        for prefix, reply in RECIPIENT_REPLIES:
            if local_part.startswith(prefix):
                self.log.append({"event": "smtp.refused", "to": address, "reply": reply})
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content: Any = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode("utf-8")
        options = list(envelope.mail_options)
        problem = message_problem(data)
        reply = f"550 5.7.1 {problem}"
        if problem is None:
            problem = eight_bit_problem(data, options, self.offer_8bitmime)
            reply = f"550 5.6.0 {problem}"
        if problem is not None:
            self.log.append({"event": "smtp.refused_message", "from": envelope.mail_from, "reason": problem})
            return reply
        path = self.maildir / f"{next(self._counter):06d}.eml"
        path.write_bytes(data)
        self.log.append(
            {
                "event": "smtp.stored", "from": envelope.mail_from, "to": envelope.rcpt_tos, "file": path.name,
                "mail_options": options,
            }
        )  # fmt: skip
        return "250 Message accepted for delivery"


class SmtpHandle:
    """A running SMTP sandbox: `host`, `port`, `url` (smtp://host:port), `maildir`, `stop()`."""

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 0, *, offer_8bitmime: bool = True) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"smtp://{host}:{self.port}"
        self.maildir = state_dir / "mail"
        self.log = EventLog(state_dir / "smtp.ndjson")
        handler = MailboxHandler(self.maildir, self.log, offer_8bitmime=offer_8bitmime)
        self._controller = Controller(handler, hostname=host, port=self.port, enable_SMTPUTF8=True)
        self._controller.start()

    def stored(self) -> list[Path]:
        return sorted(self.maildir.glob("*.eml"))

    def stop(self) -> None:
        self._controller.stop()
