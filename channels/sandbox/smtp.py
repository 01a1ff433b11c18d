"""An SMTP stand-in (aiosmtpd) that stores each accepted message as an .eml file.

Recipients are judged by local part: 'bounce…' gets 550 (mailbox unavailable), 'badaddr…' 553 (bad
address), 'tempfail…' 451 (try again later); anything else is accepted.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from channels.sandbox.server import EventLog, free_port

RECIPIENT_REPLIES = (
    ("bounce", "550 5.1.1 Mailbox unavailable"),
    ("badaddr", "553 5.1.3 Bad destination mailbox address"),
    ("tempfail", "451 4.3.0 Temporary failure, try again later"),
)


class MailboxHandler:
    """aiosmtpd handler: refuses recipients by pattern, stores the rest under `maildir`."""

    def __init__(self, maildir: Path, log: EventLog) -> None:
        maildir.mkdir(parents=True, exist_ok=True)
        self.maildir = maildir
        self.log = log
        self._counter = itertools.count(1)

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
        path = self.maildir / f"{next(self._counter):06d}.eml"
        path.write_bytes(data)
        self.log.append(
            {"event": "smtp.stored", "from": envelope.mail_from, "to": envelope.rcpt_tos, "file": path.name}
        )
        return "250 Message accepted for delivery"


class SmtpHandle:
    """A running SMTP sandbox: `host`, `port`, `url` (smtp://host:port), `maildir`, `stop()`."""

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"smtp://{host}:{self.port}"
        self.maildir = state_dir / "mail"
        self.log = EventLog(state_dir / "smtp.ndjson")
        handler = MailboxHandler(self.maildir, self.log)
        self._controller = Controller(handler, hostname=host, port=self.port, enable_SMTPUTF8=True)
        self._controller.start()

    def stored(self) -> list[Path]:
        return sorted(self.maildir.glob("*.eml"))

    def stop(self) -> None:
        self._controller.stop()
