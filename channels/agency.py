"""Hand a case file to a third-party collection agency; the agency's acceptance ends our own contacts.

The agency endpoint (its shape is our sandbox's, channels/sandbox/agency.py):

    POST {agency_url}                      Bearer auth; JSON case file with `contact_id`; Idempotency-Key:
                                           the contact id. 201 new, 200 a replay, 409 the key with another body
    GET  {agency_url}?reference={id}       the cases whose reference (the contact id, which is also the
                                           Idempotency-Key) is `id`: {"object": "list", "data": [case...],
                                           "count": n}, each case {"id", "reference", "status", "received_at"}
"""

from __future__ import annotations

from typing import Any

import httpx

from channels import spec
from channels.base import (
    MISCONFIGURED_STATUSES,
    DeliveryError,
    Evidence,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    lookup_error,
    misconfiguration_of,
    parse_retry_after,
    pass_request_gate,
)
from config.agencies import Agency
from config.settings import Settings


class AgencyAdapter:
    """POSTs `message.extra["case_file"]` (account, balance, contact history, letters) to the agency."""

    name = "agency"

    def __init__(self, settings: Settings, *, timeout: float = 30.0, agency: Agency | None = None) -> None:
        """The single agency of DISPATCHER_AGENCY_URL, or `agency`, one of DISPATCHER_AGENCIES
        (channels/agencies.py)."""
        self._url = settings.agency_url if agency is None else agency.url
        key = settings.agency_api_key if agency is None else agency.api_key
        self._settings = ("DISPATCHER_AGENCY_URL", "DISPATCHER_AGENCY_API_KEY") if agency is None else (
            f"DISPATCHER_AGENCIES ({agency.name}: url)", f"DISPATCHER_AGENCIES ({agency.name}: api_key)"
        )  # fmt: skip
        self._http = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key.get_secret_value()}"})

    def send(self, message: OutboundMessage) -> Receipt:
        case_file = message.extra.get("case_file")
        if not isinstance(case_file, dict):
            raise PermanentDeliveryError("an agency hand-off needs extra['case_file'] as a dict", "failed")
        body = {"contact_id": message.contact_id, "account_id": message.account_id, **case_file}
        pass_request_gate()
        try:
            response = self._http.post(self._url, json=body, headers={"Idempotency-Key": message.contact_id})
        except httpx.TransportError as exc:
            reason = misconfiguration_of(exc)
            if reason is not None:
                raise ProviderMisconfigured(f"agency {reason}: {exc!r}", "agency", self._settings[0]) from exc
            ambiguous = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise TransientDeliveryError(f"agency: {exc!r}", ambiguous=ambiguous) from exc
        if response.status_code == 409:
            # The agency already holds this case (a resend after an unknown result): the hand-off happened.
            return Receipt(provider_id=_case_id(response), status="handed_off", detail={"duplicate": True})
        if response.status_code >= 300:
            raise translate_agency_error(response, self._settings)
        # What the record keeps of the hand-off (the `sent` audit entry): the placed balance the liquidation
        # report (dispatcher/record/liquidation.py) divides recoveries by.
        placed = {"placed_balance": str(case_file.get("balance", "")), "currency": str(case_file.get("currency", ""))}
        return Receipt(
            provider_id=_case_id(response), status="handed_off",
            detail={"duplicate": response.status_code == 200, "kept": placed},
        )  # fmt: skip

    def find_sent(self, query: SentQuery) -> Evidence:
        """Whether the agency holds a case for this contact: `GET {agency_url}?reference={contact_id}`.

        The reference is the contact id we send as `contact_id` and as the Idempotency-Key, so a case
        carrying it is this contact's hand-off whenever it arrived. The reference is checked again on our
        side, so an endpoint that ignored the filter cannot make another case count.
        """
        try:
            response = self._http.get(self._url, params={"reference": query.contact_id})
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"agency lookup: {exc!r}") from exc
        if response.status_code != 200:
            raise translate_lookup_error(response)
        try:
            listing: Any = response.json()
        except ValueError as exc:
            raise TransientDeliveryError(f"agency lookup: unreadable answer: {exc}") from exc
        if not isinstance(listing, dict) or not isinstance(listing.get("data"), list):
            raise TransientDeliveryError("agency lookup: the answer is not a list object")
        for case in listing["data"]:
            if isinstance(case, dict) and case.get("reference") == query.contact_id and case.get("id"):
                return Evidence(found=True, provider_id=str(case["id"]), status=str(case.get("status") or "accepted"))
        return Evidence.absent()

    def close(self) -> None:
        self._http.close()


def with_case_file(draft: spec.Draft) -> OutboundMessage:
    return draft.message(case_file=draft.case_file())


SPEC = spec.ChannelSpec(name="agency", provider="agency", adapter=AgencyAdapter, compose=with_case_file)


def translate_agency_error(
    response: httpx.Response, settings: tuple[str, str] = ("DISPATCHER_AGENCY_URL", "DISPATCHER_AGENCY_API_KEY")
) -> DeliveryError:
    """401/403 a wrong key and 404 a wrong URL are ours to fix (misconfigured: `settings` names the URL's
    and the key's setting); 429/5xx transient."""
    status = response.status_code
    label = f"agency {status}: {response.text[:200]}"
    if status in MISCONFIGURED_STATUSES:
        setting = settings[0] if status == 404 else settings[1]
        return ProviderMisconfigured(label, "agency", setting)
    if status == 429 or status >= 500:
        return TransientDeliveryError(label, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return PermanentDeliveryError(label, "refused")


def translate_lookup_error(response: httpx.Response) -> DeliveryError:
    label = f"agency lookup {response.status_code}: {response.text[:200]}"
    return lookup_error(label, response.status_code, response.headers.get("Retry-After"))


def _case_id(response: httpx.Response) -> str:
    try:
        return str(response.json().get("id", ""))
    except ValueError:
        return ""
