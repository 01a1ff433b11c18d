"""Asynchronous bounces: RFC 3464 delivery status notifications read back to the contact they are about.

A relay that accepted a message and then failed to deliver it sends a DSN to the envelope sender: a
multipart/report; report-type=delivery-status with a human part, a message/delivery-status part (one block
per recipient: Final-Recipient, Action, Status) and usually the original message or its headers. The
original Message-ID is ours (channels.email.message_id_for), so it names the contact; a permanent failure
(Action: failed, Status 5.x.x) becomes the same outcome an SMTP rejection gives: 5.1.x (bad mailbox or
address) invalid_address, any other 5.x.x bounced. Delays (4.x.x, Action: delayed) and successes give none.
"""

from __future__ import annotations

from email import message_from_bytes
from email.message import Message
from email.policy import default

from channels.base import ProviderOutcome
from channels.email import contact_of_message_id


def dsn_outcomes(raw: bytes, secret: str) -> list[ProviderOutcome]:
    """The outcomes a DSN reports for our messages (none when it is not a DSN or not about ours)."""
    report = message_from_bytes(raw, policy=default)
    if report.get_content_type() != "multipart/report":
        return []
    contact_id, message_id = _original(report, secret)
    if contact_id is None:
        return []
    outcomes = []
    for fields in _recipient_blocks(report):
        action, status = fields.get("action", "").lower(), fields.get("status", "")
        if action != "failed" or not status.startswith("5"):
            continue
        kind = "invalid_address" if status.startswith("5.1.") else "bounced"
        recipient = fields.get("final-recipient", "").partition(";")[2].strip()
        detail = {"status": status, "recipient": recipient, "source": "dsn"}
        outcomes.append(ProviderOutcome(contact_id, kind, message_id, detail))
    return outcomes[:1]  # one contact, one outcome: several recipient blocks still mean one message


def _original(report: Message, secret: str) -> tuple[str | None, str]:
    """The contact id and Message-ID of the message the report is about."""
    for part in report.walk():
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "text/rfc822-headers"):
            headers = part.get_payload(0) if part.is_multipart() else message_from_bytes(_bytes(part), policy=default)
            message_id = str(headers.get("Message-ID", "")) if isinstance(headers, Message) else ""
            if message_id:
                return contact_of_message_id(message_id, secret), message_id
    return None, ""


def _recipient_blocks(report: Message) -> list[dict[str, str]]:
    """The per-recipient field blocks of the message/delivery-status part (the first block is per message)."""
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            text = _text_of(part)
            blocks = [block for block in text.replace("\r\n", "\n").split("\n\n") if block.strip()]
            return [_fields(block) for block in blocks[1:]]
    return []


def _text_of(part: Message) -> str:
    if part.is_multipart():  # the email package parses each block of a delivery-status as a sub-message
        blocks = [sub for sub in part.get_payload() if isinstance(sub, Message)]
        return "\n\n".join("\n".join(f"{k}: {v}" for k, v in sub.items()) for sub in blocks)
    return _bytes(part).decode("utf-8", errors="replace")


def _bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    return str(part.get_payload()).encode("utf-8", errors="replace")


def _fields(block: str) -> dict[str, str]:
    fields = {}
    for line in block.splitlines():
        name, _, value = line.partition(":")
        if value:
            fields[name.strip().lower()] = value.strip()
    return fields
