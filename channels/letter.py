"""Postal letters: render a PDF with reportlab, submit it to a Lob-shaped print vendor, parse tracking.

Chinese text uses reportlab's built-in CID font STSong-Light, whose text extracts back from the PDF
(checked in the tests with pypdf), so no font file ships with the project.

Every letter carries our ids in `metadata` (`contact_id`, `account_id`) and the contact id as its
Idempotency-Key, so a letter in doubt is found again by Lob's documented metadata filter on the letter list
(`find_sent`).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import httpx
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer

from channels.base import (
    DeliveryError,
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderOutcome,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    WebhookRejected,
    parse_retry_after,
    pass_request_gate,
)
from config.settings import Settings

CJK_FONT = "STSong-Light"
LATIN_FONT = "Helvetica"
SIGNATURE_MAX_AGE = 300.0  # seconds; an older signed webhook may be a replay
TRACKING_KIND = {
    "letter.mailed": "sent",
    "letter.delivered": "delivered",
    "letter.returned_to_sender": "returned",
}

LOOKUP_LIMIT = 100  # Lob's maximum page size for lists
LOOKUP_MAX_PAGES = 5

pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


def render_pdf(text: str, locale: str) -> bytes:
    """A4 letter: one paragraph per blank-line-separated block, line breaks kept."""
    chinese = locale.lower().startswith("zh")
    style = ParagraphStyle(
        "letter",
        fontName=CJK_FONT if chinese else LATIN_FONT,
        fontSize=11,
        leading=17,
        wordWrap="CJK" if chinese else None,
    )
    story: list[Any] = []
    for block in text.strip().split("\n\n"):
        story.append(Paragraph(escape(block).replace("\n", "<br/>"), style))
        story.append(Spacer(1, 4 * mm))
    buffer = io.BytesIO()
    document = SimpleDocTemplate(buffer, pagesize=A4, leftMargin=25 * mm, rightMargin=25 * mm)
    document.build(story)
    return buffer.getvalue()


class LetterAdapter:
    """Submits letters to the print vendor; `message.to` is the postal address dict."""

    name = "letter"

    def __init__(self, settings: Settings, *, timeout: float = 30.0, sender: Mapping[str, str] | None = None) -> None:
        self._settings = settings
        self._sender = dict(sender or {"name": "Collections", "address_line1": "1 Bank Street"})
        self._http = httpx.Client(
            base_url=settings.print_vendor_url.rstrip("/"),
            auth=(settings.print_vendor_api_key.get_secret_value(), ""),
            timeout=timeout,
        )

    def send(self, message: OutboundMessage) -> Receipt:
        if not isinstance(message.to, dict):
            raise PermanentDeliveryError("a letter needs a postal address", "invalid_address")
        pdf = render_pdf(message.text, message.locale)
        fields = self._fields(message)
        headers = {"Idempotency-Key": message.contact_id}
        pass_request_gate()
        try:
            response = self._http.post(
                "/v1/letters", data=fields, files={"file": ("letter.pdf", pdf, "application/pdf")}, headers=headers
            )
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"print vendor: {exc!r}", ambiguous=_ambiguous(exc)) from exc
        if response.status_code >= 300:
            raise translate_vendor_error(response)
        letter = response.json()
        return Receipt(provider_id=letter["id"], status="accepted", detail={"pages": letter.get("pages")})

    def find_sent(self, query: SentQuery) -> Evidence:
        """Whether the vendor holds a letter for this contact, from Lob's documented letter list filtered
        by metadata (`GET /v1/letters?metadata[contact_id]=...&limit=100`, Lob's `metadata` deepObject
        query parameter; paged by `next_url`).

        The contact id is unique to the contact and travels in the letter's metadata, so any letter
        carrying it is this contact's, whenever it was created (the window does not matter here). Each
        letter's metadata is checked again on our side, so a vendor that ignored the filter cannot make
        another letter count; a list that runs past LOOKUP_MAX_PAGES pages is LookupUnavailable.
        """
        params: dict[str, str | int] | None = {"metadata[contact_id]": query.contact_id, "limit": LOOKUP_LIMIT}
        url: str | None = "/v1/letters"
        for _ in range(LOOKUP_MAX_PAGES):
            if url is None:
                return Evidence.absent()
            listing = self._list_page(url, params)
            for letter in listing.get("data") or []:
                if isinstance(letter, dict) and (letter.get("metadata") or {}).get("contact_id") == query.contact_id:
                    return Evidence(found=True, provider_id=str(letter["id"]), status=letter_status(letter))
            url, params = listing.get("next_url") or None, None  # next_url carries the filters and the cursor
        if url is None:
            return Evidence.absent()
        raise LookupUnavailable(f"print vendor lookup: more than {LOOKUP_MAX_PAGES} pages, not read to the end")

    def _list_page(self, url: str, params: Mapping[str, str | int] | None) -> dict[str, Any]:
        """One page of the letter list; every failure to get a readable 200 is translated here."""
        try:
            response = self._http.get(url, params=params)
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"print vendor lookup: {exc!r}") from exc
        if response.status_code != 200:
            raise translate_lookup_error(response)
        try:
            listing = response.json()
        except ValueError as exc:
            raise TransientDeliveryError(f"print vendor lookup: unreadable answer: {exc}") from exc
        if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
            raise TransientDeliveryError("print vendor lookup: the answer is not a list object")
        return listing

    def parse_callback(self, url: str, headers: Mapping[str, str], body: bytes) -> list[ProviderOutcome]:
        """Verify a tracking webhook and map it to an outcome (in-transit events give none)."""
        secret = self._settings.print_vendor_webhook_secret.get_secret_value()
        verify_signature(secret, headers, body, now=time.time())
        return tracking_outcomes(json.loads(body))

    def close(self) -> None:
        self._http.close()

    def _fields(self, message: OutboundMessage) -> dict[str, str]:
        extra = message.extra
        return {
            "to": json.dumps(message.to, ensure_ascii=False),
            "from": json.dumps(extra.get("from") or self._sender, ensure_ascii=False),
            "color": json.dumps(bool(extra.get("color", False))),
            "double_sided": json.dumps(bool(extra.get("double_sided", True))),
            "mail_type": str(extra.get("mail_type", "usps_first_class")),
            "use_type": "operational",  # collections are operational mail, not marketing
            "metadata": json.dumps({"contact_id": message.contact_id, "account_id": message.account_id}),
        }


def translate_vendor_error(response: httpx.Response) -> DeliveryError:
    """429/5xx transient (honouring Retry-After); 422 a bad address; any other 4xx our fault, permanent."""
    status = response.status_code
    label = f"print vendor {status}: {response.text[:200]}"
    if status == 429 or status >= 500:
        return TransientDeliveryError(label, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return PermanentDeliveryError(label, "invalid_address" if status == 422 else "failed")


def translate_lookup_error(response: httpx.Response) -> DeliveryError:
    """For find_sent: 429, 5xx and also 401/403/404 mean ask again later (a wrong key or URL is never
    evidence of absence); any other 4xx means asking this way cannot tell (LookupUnavailable)."""
    status = response.status_code
    label = f"print vendor lookup {status}: {response.text[:200]}"
    if status in (401, 403, 404, 429) or status >= 500:
        return TransientDeliveryError(label, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return LookupUnavailable(label)


def letter_status(letter: Mapping[str, Any]) -> str:
    """The letter's latest tracking event, else its render status; 'canceled' once deleted."""
    if letter.get("deleted"):
        return "canceled"
    events = letter.get("tracking_events") or []
    if events and isinstance(events[-1], Mapping) and events[-1].get("name"):
        return str(events[-1]["name"])
    return str(letter.get("status") or "created")


def _ambiguous(exc: httpx.TransportError) -> bool:
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Lob's webhook signature: hex HMAC-SHA256 over "{timestamp}.{raw body}"."""
    payload = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()


def verify_signature(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    lowered = {key.lower(): value for key, value in headers.items()}
    signature = lowered.get("lob-signature", "")
    timestamp = lowered.get("lob-signature-timestamp", "")
    if not signature or not timestamp.isdigit():
        raise WebhookRejected("missing Lob-Signature or Lob-Signature-Timestamp")
    if abs(now - _seconds(timestamp)) > SIGNATURE_MAX_AGE:
        raise WebhookRejected("stale Lob-Signature-Timestamp")
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise WebhookRejected("Lob-Signature does not match the body")


def _seconds(timestamp: str) -> float:
    value = int(timestamp)
    return value / 1000 if value > 10**11 else float(value)  # Lob sends milliseconds


def tracking_outcomes(event: Mapping[str, Any]) -> list[ProviderOutcome]:
    event_type = str(event.get("event_type", {}).get("id", ""))
    kind = TRACKING_KIND.get(event_type)
    letter = event.get("body") or {}
    contact_id = (letter.get("metadata") or {}).get("contact_id")
    if kind is None or not contact_id:
        return []
    detail = {"event_type": event_type, "event_id": event.get("id")}
    return [ProviderOutcome(str(contact_id), kind, str(letter.get("id", "")), detail)]
