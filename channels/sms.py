"""SMS through Twilio Messages: send, count segments, parse status callbacks and inbound replies, and find a
message in doubt in Twilio's list of messages (`find_sent`)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from channels import spec
from channels.base import Evidence, LookupUnavailable, OutboundMessage, ProviderOutcome, Receipt, SentQuery
from channels.callbacks import TWILIO_MESSAGE_STATUS, callback_url
from channels.twilio_provider import (
    LOOKUP_PAGE_SIZE,
    PERMANENT_CODES,
    MessageCreate,
    build_client,
    call_twilio,
    contact_id_of,
    earliest,
    error_code_of,
    in_window,
    lookup_twilio,
    read_pages,
    verified_params,
)
from config.settings import Settings

_GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = "^{}\\[~]|€\f"  # each costs two septets (escape + char)
_GSM7 = frozenset(_GSM7_BASIC + _GSM7_EXTENSION)

# Callbacks arrive out of order: a status only counts if it ranks above the last one recorded.
MESSAGE_STATUS_RANK: dict[str, int] = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "canceled": 4,
    "read": 5,
}

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "TD", "退订", "取消", "停止"})
OPT_IN_WORDS = frozenset({"START", "UNSTOP", "YES", "订阅"})
HELP_WORDS = frozenset({"HELP", "INFO", "帮助"})
_EDGE_PUNCTUATION = re.compile(r"^[\s\W_]+|[\s\W_]+$")


def count_segments(text: str) -> int:
    """Segments Twilio bills for: GSM-7 160 (153 when split), otherwise UCS-2 70 (67 when split)."""
    if all(char in _GSM7 for char in text):
        septets = len(text) + sum(char in _GSM7_EXTENSION for char in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2  # characters outside the BMP take two units
    return 1 if units <= 70 else math.ceil(units / 67)


def message_status_rank(status: str) -> int:
    """Rank of a message status; unknown statuses rank lowest so they never overwrite a known one."""
    return MESSAGE_STATUS_RANK.get(status, -1)


class SmsAdapter:
    """Sends SMS through Twilio (or its sandbox, by settings.twilio_api_base_url)."""

    name = "sms"

    def __init__(self, settings: Settings, *, timeout: float = 10.0) -> None:
        self._settings = settings
        self._client, self._http = build_client(settings, timeout)
        self._create = MessageCreate(self._client, self._http)

    def send(self, message: OutboundMessage) -> Receipt:
        created = call_twilio(lambda: self._create(self._create_form(message)), self._http)
        return Receipt(
            provider_id=str(created["sid"]),
            status=str(created["status"]),
            segments=count_segments(message.text),
            detail={"num_segments": created.get("num_segments")},
        )

    def parse_callback(self, url: str, headers: Mapping[str, str], body: bytes) -> list[ProviderOutcome]:
        """Verify a message-status callback and turn it into outcomes (none for in-flight statuses)."""
        params = verified_params(self._auth_token(), url, headers, body)
        return message_status_outcomes(contact_id_of(url), params)

    def find_sent(self, query: SentQuery) -> Evidence:
        """Whether Twilio holds a message for this claim, from Twilio's documented Message list
        (`GET /2010-04-01/Accounts/{AccountSid}/Messages.json?To=...&From=...&PageSize=1000`, paged by
        `next_page_uri`), read through the SDK's `messages.page()`.

        A message is this claim's when it went to `query.to` from our sender (the From number; for a
        messaging service SID, `MG...`, the message's `messaging_service_sid`, since the pool picks the
        number) and Twilio created it within [since, until] (widened by a few seconds of clock skew). The
        list is not filtered by DateSent: a message still queued at Twilio has no date_sent yet, and a
        DateSent filter would hide exactly the message we are looking for. When `query.text` is given the
        body must match too; messages in the window with none matching are a question Twilio cannot
        answer for us (LookupUnavailable). `query.sender` None means the adapter's configured sender.
        Messages in `query.exclude_ids` (other contacts' receipts) are never this claim's; of several
        candidates left, the earliest is the evidence.
        """
        to = str(query.to)
        sender = query.sender or self._settings.twilio_messaging_service_sid or self._settings.twilio_from_number
        by_service = sender.startswith("MG")

        def ours(record: Any) -> bool:
            if record.to != to or record.sid in query.exclude_ids or not in_window(record.date_created, query):
                return False
            return (record.messaging_service_sid if by_service else record.from_) == sender

        def body_matches(records: list[Any]) -> bool:
            return query.text is not None and any(_same_body(record.body, query.text) for record in records)

        def read() -> list[Any]:
            first = self._client.messages.page(
                to=to, **({} if by_service else {"from_": sender}), page_size=LOOKUP_PAGE_SIZE
            )
            return read_pages(first, ours, body_matches if query.text is not None else bool)

        candidates = lookup_twilio(read, self._http)
        if query.text is not None and candidates:
            matching = [record for record in candidates if _same_body(record.body, query.text)]
            if not matching:
                raise LookupUnavailable(
                    f"twilio lookup: {len(candidates)} message(s) to {to} in the window, none with this body"
                )
            candidates = matching
        if not candidates:
            return Evidence.absent()
        found = earliest(candidates)
        return Evidence(found=True, provider_id=str(found.sid), status=str(found.status))

    def close(self) -> None:
        self._http.close()

    def _create_form(self, message: OutboundMessage) -> dict[str, Any]:
        """The Message create request's form, in the order the SDK writes it."""
        form: dict[str, Any] = {
            "To": str(message.to),
            "StatusCallback": callback_url(self._settings.public_base_url, TWILIO_MESSAGE_STATUS, message.contact_id),
        }
        validity = message.extra.get("validity_period")
        if validity is not None:
            # Twilio accepts 1..36000 s; past it, a queued collection text could land outside the window.
            form["ValidityPeriod"] = max(1, min(36000, int(validity)))
        if self._settings.twilio_messaging_service_sid:
            form["MessagingServiceSid"] = self._settings.twilio_messaging_service_sid
        else:
            form["From"] = self._settings.twilio_from_number
        form["Body"] = message.text
        return form

    def _auth_token(self) -> str:
        return self._settings.twilio_auth_token.get_secret_value()


def _with_validity(draft: spec.Draft) -> OutboundMessage:
    """A text still queued at the provider when the debtor's window closes expires rather than lands late."""
    return draft.message(validity_period=draft.window_seconds_left)


def _sender(settings: Settings) -> str:
    return settings.twilio_messaging_service_sid or settings.twilio_from_number


SPEC = spec.ChannelSpec(name="sms", provider="twilio", adapter=SmsAdapter, compose=_with_validity, sender=_sender)


def _same_body(stored: str | None, text: str) -> bool:
    """Twilio keeps the body as sent; line endings and edge whitespace are not worth a difference."""
    return (stored or "").replace("\r\n", "\n").strip() == text.replace("\r\n", "\n").strip()


def message_status_outcomes(contact_id: str, params: Mapping[str, str]) -> list[ProviderOutcome]:
    """Outcomes for one MessageStatus callback; queued/sending and unknown statuses give none."""
    status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    code = error_code_of(params)
    kind = _message_outcome_kind(status, code)
    if kind is None:
        return []
    detail = {"status": status, "rank": message_status_rank(status), "error_code": code}
    return [ProviderOutcome(contact_id, kind, params.get("MessageSid", ""), detail)]


def _message_outcome_kind(status: str, code: int | None) -> str | None:
    if status in ("sent", "delivered"):
        return status
    if status in ("undelivered", "failed"):
        return PERMANENT_CODES.get(code, "undelivered") if code is not None else "undelivered"
    return None


def inbound_intent(body: str) -> str | None:
    """Twilio's keyword rule: the whole message, trimmed and case-folded, is the keyword."""
    word = _EDGE_PUNCTUATION.sub("", body).upper()
    if word in OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    if word in HELP_WORDS:
        return "help"
    return None
