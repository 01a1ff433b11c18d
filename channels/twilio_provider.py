"""What SMS and voice share about Twilio: the client, error translation, signatures, callback parsing, and
finding a contact in doubt in Twilio's own lists.

Twilio's errors are translated into DeliveryErrors in `call_twilio` (sends) and `lookup_twilio` (lookups)
and nowhere else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import urllib3
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.base.page import Page
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from channels.base import (
    MISCONFIGURED_STATUSES,
    DeliveryError,
    LookupUnavailable,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderRefused,
    SentQuery,
    TransientDeliveryError,
    WebhookRejected,
)
from channels.twilio_http import PooledHttpClient, transport_error
from config.settings import Settings

T = TypeVar("T")
FORM_TYPE = "application/x-www-form-urlencoded"

# Error code -> outcome kind for errors that no retry will fix.
PERMANENT_CODES: dict[int, str] = {
    21211: "invalid_address",  # invalid To
    21612: "invalid_address",  # unroutable
    21614: "invalid_address",  # not a mobile number
    21635: "invalid_address",  # landline
    30005: "invalid_address",  # unknown handset
    30006: "invalid_address",  # landline or unreachable carrier
    21610: "opted_out",  # recipient sent STOP; permanent until START
    30007: "failed",  # carrier filtered: retrying blindly worsens it, an operator must look
}
TRANSIENT_CODES: frozenset[int] = frozenset({20429, 30003, 30008})
# Twilio will not carry the message for a reason of its own account, not the debtor's: another provider may.
REFUSED_CODES: frozenset[int] = frozenset({21408})  # permission to send to the region is not enabled
BACK_PRESSURE_CODES: frozenset[int] = frozenset({21611, 30001})  # sender queue full: slow down
BACK_PRESSURE_WAIT = 5.0  # seconds, when Twilio asks us to slow down without a Retry-After

# Lookups (find_sent). Twilio stamps date_created to the second on its own clock: widen the window by this.
LOOKUP_CLOCK_SKEW = timedelta(seconds=5)
LOOKUP_PAGE_SIZE = 1000  # Twilio's maximum PageSize
LOOKUP_MAX_PAGES = 5  # 5,000 records to one number from us; past that the list is not read to the end


def build_client(settings: Settings, timeout: float) -> tuple[Client, PooledHttpClient]:
    """A Twilio client pointed at the configured API host (the real one, or a sandbox)."""
    http = PooledHttpClient(timeout, settings.twilio_api_base_url or "https://api.twilio.com")
    client = Client(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(), http_client=http)
    if settings.twilio_api_base_url:
        # Every domain resolves URLs against its own base_url; only the Api domain is used here.
        client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client, http


class MessageCreate:
    """Twilio's Message create (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`), sent through the
    SDK's own HTTP client with the SDK's own URL, headers, credentials and error parsing, but without its
    keyword mapping and response model: those took about a tenth of a worker's CPU per SMS (parsing three
    dates, for one id and a status). Returns the created message's JSON; a non-2xx answer raises the
    SDK's TwilioRestException (or TwilioServiceException), as `messages.create` would."""

    def __init__(self, client: Client, http: PooledHttpClient) -> None:
        self._version = client.api.v2010
        self._uri = f"/Accounts/{client.account_sid}/Messages.json"
        self._url = client.get_hostname(self._version.absolute_url(self._uri))  # edge and region, if set
        self._headers = client.get_headers("POST", {"Content-Type": FORM_TYPE, "Accept": "application/json"})
        self._auth = client.get_auth(None)
        self._http = http

    def __call__(self, form: Mapping[str, object]) -> dict[str, Any]:
        response = self._http.request("POST", self._url, data=form, headers=dict(self._headers), auth=self._auth)
        if not 200 <= response.status_code < 300:
            raise self._version.exception("POST", self._uri, response, "Unable to create record")
        created: dict[str, Any] = json.loads(response.text)
        return created


def call_twilio(request: Callable[[], T], http: PooledHttpClient) -> T:
    """Run one Twilio API request, translating every failure into a DeliveryError."""
    try:
        return request()
    except (TwilioRestException, TwilioServiceException) as exc:
        raise translate_rest_error(exc.status, exc.code, str(exc), http.last_retry_after()) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise transport_error(exc) from exc


def translate_rest_error(status: int, code: int | None, message: str, retry_after: float | None) -> DeliveryError:
    """Map Twilio's HTTP status and error code to what the caller should do next."""
    label = f"twilio {status} code {code}: {message}"
    if code in PERMANENT_CODES:
        return PermanentDeliveryError(label, PERMANENT_CODES[code])
    if code in REFUSED_CODES:
        return ProviderRefused(label)
    if code in BACK_PRESSURE_CODES:
        return TransientDeliveryError(label, retry_after=retry_after or BACK_PRESSURE_WAIT)
    if code in TRANSIENT_CODES or status == 429 or status >= 500:
        return TransientDeliveryError(label, retry_after=retry_after)
    if status in MISCONFIGURED_STATUSES:  # 20003 authenticate, 20404 not found: our SID, token or base URL
        setting = "DISPATCHER_TWILIO_API_BASE_URL" if status == 404 else "DISPATCHER_TWILIO_AUTH_TOKEN"
        return ProviderMisconfigured(label, "twilio", setting)
    # Any other 4xx means our request is wrong; sending it again will not fix it.
    return PermanentDeliveryError(label, "failed")


def verified_params(auth_token: str, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    """The form parameters of a Twilio webhook, after checking X-Twilio-Signature against the public URL."""
    params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    signature = _header(headers, "X-Twilio-Signature")
    if not signature or not RequestValidator(auth_token).validate(url, params, signature):
        raise WebhookRejected("X-Twilio-Signature does not match the URL and parameters")
    return params


def contact_id_of(url: str) -> str:
    """The contact id we put in the StatusCallback URL's query string: segments of id characters, matched
    to the last character (a `$`-anchored match would let "A1/reminder/sms/0\n" through). Only the shape:
    channels/ may not import dispatcher/, whose dispatcher.core.models.CONTACT_ID and account_of the caller applies."""
    for name, value in parse_qsl(urlsplit(url).query):
        if name == "contact_id" and value:
            if re.fullmatch(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+){3,4}", value) is None:
                raise WebhookRejected(f"callback URL carries a malformed contact_id {value!r}")
            return value
    raise WebhookRejected("callback URL carries no contact_id")


def error_code_of(params: Mapping[str, str]) -> int | None:
    raw = params.get("ErrorCode") or ""
    return int(raw) if raw.isdigit() else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


def lookup_twilio(request: Callable[[], T], http: PooledHttpClient) -> T:
    """Run one Twilio lookup (a list read, all its pages), translating every failure for find_sent.

    Only a 200 page is an answer. 429, 5xx, timeouts, refused connections, and also 401/403/404 are
    TransientDeliveryError (ask again later: a wrong credential or URL is never evidence of absence); any
    other 4xx is LookupUnavailable (asking the same way again will not help; the claim stays unknown).
    """
    try:
        return request()
    except TwilioRestException as exc:
        raise translate_lookup_error(exc.status, str(exc), http.last_retry_after()) from exc
    except TwilioException as exc:
        # A list page that did not answer 200: twilio's Page raises the bare TwilioException with the response.
        response = next((arg for arg in exc.args if isinstance(arg, Response)), None)
        status = response.status_code if response is not None else None
        text = response.text[:200] if response is not None else str(exc)
        raise translate_lookup_error(status, text, http.last_retry_after()) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise transport_error(exc) from exc
    except ValueError as exc:  # a 200 whose body is not the JSON of a list: no answer either
        raise TransientDeliveryError(f"twilio lookup: unreadable answer: {exc}") from exc


def translate_lookup_error(status: int | None, message: str, retry_after: float | None) -> DeliveryError:
    label = f"twilio lookup {status}: {message}"
    if status is None or status in (401, 403, 404, 429) or status >= 500:
        return TransientDeliveryError(label, retry_after=retry_after)
    return LookupUnavailable(label)


def in_window(created: datetime | None, query: SentQuery) -> bool:
    """Whether a record Twilio created at `created` can be the request of this claim (None: cannot rule out)."""
    if created is None:
        return True
    since = query.since.replace(microsecond=0) - LOOKUP_CLOCK_SKEW  # Twilio's stamps are whole seconds
    return since <= created <= query.until + LOOKUP_CLOCK_SKEW


def read_pages(first: Page, keep: Callable[[Any], bool], enough: Callable[[list[Any]], bool]) -> list[Any]:
    """The records of a list that `keep` accepts, page by page, until `enough` of them or the list ends.

    Raises LookupUnavailable when the list runs past LOOKUP_MAX_PAGES without `enough`: absence would then
    be a guess.
    """
    kept: list[Any] = []
    page: Page | None = first
    pages = 0
    while page is not None:
        pages += 1
        kept.extend(record for record in page if keep(record))
        if enough(kept):
            return kept
        page = page.next_page()
        if page is not None and pages >= LOOKUP_MAX_PAGES:
            raise LookupUnavailable(f"twilio lookup: more than {pages * LOOKUP_PAGE_SIZE} records, not read to the end")
    return kept


def earliest(records: Iterable[Any]) -> Any:
    """The record created first, of records in Twilio's list order (most recent first): within one second
    (Twilio's stamps are whole seconds) the one listed last."""
    return min(
        reversed(list(records)),
        key=lambda record: (record.date_created is None, record.date_created or datetime.max),
    )
