"""Hand a case file to a third-party collection agency; the agency's acceptance ends our own contacts."""

from __future__ import annotations

import httpx

from channels.base import (
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    Receipt,
    TransientDeliveryError,
    parse_retry_after,
)
from config.settings import Settings


class AgencyAdapter:
    """POSTs `message.extra["case_file"]` (account, balance, contact history, letters) to the agency."""

    name = "agency"

    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self._url = settings.agency_url
        self._http = httpx.Client(
            timeout=timeout,
            headers={"Authorization": f"Bearer {settings.agency_api_key.get_secret_value()}"},
        )

    def send(self, message: OutboundMessage) -> Receipt:
        case_file = message.extra.get("case_file")
        if not isinstance(case_file, dict):
            raise PermanentDeliveryError("an agency hand-off needs extra['case_file'] as a dict", "failed")
        body = {"contact_id": message.contact_id, "account_id": message.account_id, **case_file}
        try:
            response = self._http.post(self._url, json=body, headers={"Idempotency-Key": message.contact_id})
        except httpx.TransportError as exc:
            ambiguous = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            raise TransientDeliveryError(f"agency: {exc!r}", ambiguous=ambiguous) from exc
        if response.status_code == 409:
            # The agency already holds this case (a resend after an unknown result): the hand-off happened.
            return Receipt(provider_id=_case_id(response), status="handed_off", detail={"duplicate": True})
        if response.status_code >= 300:
            raise translate_agency_error(response)
        return Receipt(
            provider_id=_case_id(response), status="handed_off", detail={"duplicate": response.status_code == 200}
        )

    def close(self) -> None:
        self._http.close()


def translate_agency_error(response: httpx.Response) -> DeliveryError:
    status = response.status_code
    label = f"agency {status}: {response.text[:200]}"
    if status == 429 or status >= 500:
        return TransientDeliveryError(label, retry_after=parse_retry_after(response.headers.get("Retry-After")))
    return PermanentDeliveryError(label, "refused")


def _case_id(response: httpx.Response) -> str:
    try:
        return str(response.json().get("id", ""))
    except ValueError:
        return ""
