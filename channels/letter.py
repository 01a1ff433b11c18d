"""Postal letters: a PDF a printer accepts (channels.pdf), submitted to a Lob-shaped print vendor exactly as
Lob documents its letter create, and tracking parsed from Lob's webhooks.

`DISPATCHER_PRINT_VENDOR_URL` is the vendor's API root including its version (Lob: https://api.lob.com/v1);
letters are `POST {root}/letters`, multipart/form-data with the PDF as `file` and every object field in
Lob's deepObject form (`to[name]`, `from[address_city]`, `metadata[contact_id]`), HTTP Basic auth with the
API key as the username, and the contact id as the Idempotency-Key.

Why not the official lob-python SDK: it cannot upload a PDF made in memory or on disk (`file` must be a
string: a URL, an HTML string or a template id; lob/lob-python issue 211), it would add its own HTTP
stack and error types to translate, and the rate-limit gate must run right before the request leaves,
which a plain httpx request makes a one-liner.

Every letter carries our ids in `metadata` (`contact_id`, `account_id`), so a letter in doubt is found
again by Lob's documented metadata filter on the letter list (`find_sent`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

import httpx

from channels import spec
from channels.base import (
    MISCONFIGURED_STATUSES,
    DeliveryError,
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderOutcome,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    lookup_error,
    misconfiguration_of,
    parse_retry_after,
    pass_request_gate,
)
from channels.pdf import LetterContent, MissingGlyphs, PageSetup, render_letter
from channels.postal import address_lines, address_problems
from channels.signatures import LOB_SIGNATURE
from config.settings import Settings

TRACKING_KIND = {
    "letter.mailed": "sent",
    "letter.delivered": "delivered",
    "letter.returned_to_sender": "returned",
}

LOOKUP_LIMIT = 100  # Lob's maximum page size for lists
LOOKUP_MAX_PAGES = 5
ADDRESS_FIELDS = (
    "name", "company", "address_line1", "address_line2", "address_city", "address_state", "address_zip",
    "address_country",
)  # fmt: skip
URL_SETTING = "DISPATCHER_PRINT_VENDOR_URL"
KEY_SETTING = "DISPATCHER_PRINT_VENDOR_API_KEY"
FROM_SETTING = "DISPATCHER_LETTER_FROM_ADDRESS_LINE1"  # and the other DISPATCHER_LETTER_FROM_* fields


def return_address(settings: Settings) -> dict[str, str]:
    """The return address from settings, as a Lob address object."""
    fields = {
        "name": settings.letter_from_name,
        "address_line1": settings.letter_from_address_line1,
        "address_line2": settings.letter_from_address_line2 or "",
        "address_city": settings.letter_from_address_city,
        "address_state": settings.letter_from_address_state,
        "address_zip": settings.letter_from_address_zip,
        "address_country": settings.letter_from_address_country,
    }
    return {key: value for key, value in fields.items() if value}


def letter_content(message: OutboundMessage, settings: Settings) -> LetterContent:
    """What the PDF shows: the text, dated in the debtor's locale, and both addresses in their order."""
    assert isinstance(message.to, dict)
    sender = return_address(settings)
    raw_date = message.extra.get("letter_date")
    dated = date.fromisoformat(str(raw_date)) if raw_date else datetime.now(UTC).date()
    return LetterContent(
        text=message.text,
        locale=message.locale,
        dated=dated,
        recipient=address_lines(message.to, sender.get("address_country", "US")),
        sender=[", ".join(address_lines(sender, sender.get("address_country", "US")))],
    )


def form_fields(message: OutboundMessage, settings: Settings) -> dict[str, str]:
    """Lob's letter create, every field but `file`, flattened as Lob's deepObject form fields."""
    assert isinstance(message.to, dict)
    fields: dict[str, str] = {f"to[{k}]": str(v) for k, v in message.to.items() if k in ADDRESS_FIELDS and v}
    if settings.letter_from_address_id:
        fields["from"] = settings.letter_from_address_id
    else:
        fields.update({f"from[{key}]": value for key, value in return_address(settings).items()})
    fields.update(
        {
            "color": _flag(settings.letter_color),
            "double_sided": _flag(settings.letter_double_sided),
            "address_placement": settings.letter_address_placement,
            "mail_type": settings.letter_mail_type,
            "use_type": "operational",  # collections are operational mail, not marketing
            "metadata[contact_id]": message.contact_id,
            "metadata[account_id]": message.account_id,
        }
    )
    return fields


def _flag(value: bool) -> str:
    return "true" if value else "false"


class LetterAdapter:
    """Submits letters to the print vendor; `message.to` is the postal address dict (Lob's fields)."""

    name = "letter"

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self._settings = settings
        self._page = PageSetup.from_settings(settings)
        self._http = httpx.Client(
            base_url=settings.print_vendor_url.rstrip("/") + "/",
            auth=(settings.print_vendor_api_key.get_secret_value(), ""),
            timeout=timeout,
        )

    def send(self, message: OutboundMessage) -> Receipt:
        if not isinstance(message.to, dict):
            raise PermanentDeliveryError("a letter needs a postal address", "invalid_address")
        problems = address_problems(message.to, "to")
        if problems:
            detail = "; ".join(problems)
            raise PermanentDeliveryError(f"the vendor would refuse the address: {detail}", "invalid_address")
        if not self._settings.letter_from_address_id:
            problems = address_problems(return_address(self._settings), "from")
            if problems:
                raise ProviderMisconfigured(f"return address: {'; '.join(problems)}", "letter", FROM_SETTING)
        try:
            pdf = render_letter(letter_content(message, self._settings), self._page)
        except MissingGlyphs as exc:
            raise PermanentDeliveryError(f"letter not rendered: {exc}", "failed") from exc
        headers = {"Idempotency-Key": message.contact_id}
        pass_request_gate()
        try:
            response = self._http.post(
                "letters",
                data=form_fields(message, self._settings),
                files={"file": ("letter.pdf", pdf, "application/pdf")},
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise transport_error(exc) from exc
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
        url: str | None = "letters"
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
        LOB_SIGNATURE.verify(secret, headers, body, now=time.time())
        return tracking_outcomes(json.loads(body))

    def close(self) -> None:
        self._http.close()


def _dated(draft: spec.Draft) -> OutboundMessage:
    """Dated in the debtor's own zone; the PDF writes the date in their locale."""
    return draft.message(letter_date=draft.local_today.isoformat())


SPEC = spec.ChannelSpec(name="letter", provider="print_vendor", adapter=LetterAdapter, compose=_dated)


def translate_vendor_error(response: httpx.Response) -> DeliveryError:
    """401/403 a wrong key, 404 a wrong URL: misconfigurations. 429/5xx transient (honouring Retry-After);
    422 about `from` our return address (misconfigured), else the debtor's address; other 4xx permanent."""
    status = response.status_code
    label = f"print vendor {status}: {response.text[:200]}"
    if status in MISCONFIGURED_STATUSES:
        return ProviderMisconfigured(label, "letter", URL_SETTING if status == 404 else KEY_SETTING)
    if status == 429 or status >= 500:
        return TransientDeliveryError(label, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if status == 422 and _error_message(response).startswith("from"):
        return ProviderMisconfigured(label, "letter", FROM_SETTING)
    if status == 422 and _error_message(response).startswith("file"):  # the page size, an unembedded font
        return ProviderMisconfigured(label, "letter", "DISPATCHER_LETTER_PAGE_SIZE")
    return PermanentDeliveryError(label, "invalid_address" if status == 422 else "failed")


def transport_error(exc: httpx.TransportError) -> TransientDeliveryError:
    """An unknown host or a TLS failure is our URL setting; anything else the network (ambiguous once the
    request may have left)."""
    reason = misconfiguration_of(exc)
    if reason is not None:
        return ProviderMisconfigured(f"print vendor {reason}: {exc!r}", "letter", URL_SETTING)
    return TransientDeliveryError(f"print vendor: {exc!r}", ambiguous=_ambiguous(exc))


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else ""


def translate_lookup_error(response: httpx.Response) -> DeliveryError:
    label = f"print vendor lookup {response.status_code}: {response.text[:200]}"
    return lookup_error(label, response.status_code, response.headers.get("Retry-After"))


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


def tracking_outcomes(event: Mapping[str, Any]) -> list[ProviderOutcome]:
    event_type = str(event.get("event_type", {}).get("id", ""))
    kind = TRACKING_KIND.get(event_type)
    letter = event.get("body") or {}
    contact_id = (letter.get("metadata") or {}).get("contact_id")
    if kind is None or not contact_id:
        return []
    detail = {"event_type": event_type, "event_id": event.get("id")}
    return [ProviderOutcome(str(contact_id), kind, str(letter.get("id", "")), detail)]
