"""The dispatcher's HTTP API over httpx: accounts, events, ad-hoc contacts, the change feed, the callback
endpoints.

Every POST carries an Idempotency-Key, made once per call and kept across its retries, so a retried payment
counts once. 429 and 503 are retried after what Retry-After says (seconds or an HTTP date; `backoff` when it
says nothing), at most `retries` times; any other error is an ApiError with the API's body (`error`,
`message`, `fields`).
"""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypedDict
from urllib.parse import quote

import httpx

# The operations this client calls: operationId -> (method, path). The dispatcher's tests hold this table
# against the server's /openapi.json, so a route renamed or moved fails there, not in a bank's service.
ROUTES: dict[str, tuple[str, str]] = {
    "upsertAccount": ("PUT", "/v1/accounts/{account_id}"),
    "getAccount": ("GET", "/v1/accounts/{account_id}"),
    "postEvent": ("POST", "/v1/accounts/{account_id}/events"),
    "requestContact": ("POST", "/v1/contacts"),
    "postArrangement": ("POST", "/v1/accounts/{account_id}/arrangements"),
    "cancelArrangement": ("DELETE", "/v1/accounts/{account_id}/arrangements/{arrangement_id}"),
    "listChanges": ("GET", "/v1/changes"),
    "createWebhookEndpoint": ("POST", "/v1/admin/webhook-endpoints"),
    "listWebhookEndpoints": ("GET", "/v1/admin/webhook-endpoints"),
    "deleteWebhookEndpoint": ("DELETE", "/v1/admin/webhook-endpoints/{endpoint_id}"),
    "rotateWebhookSecret": ("POST", "/v1/admin/webhook-endpoints/{endpoint_id}/rotate-secret"),
}
RETRIED = (429, 503)


class Change(TypedDict):
    id: str
    type: str
    timestamp: str
    data: dict[str, Any]


class ChangePage(TypedDict):
    items: list[Change]
    next: str


class ApiError(Exception):
    """An answer other than 2xx (after the retries): its status and the API's error body."""

    def __init__(self, status: int, body: Mapping[str, Any]):
        super().__init__(f"{status} {body.get('error', '')}: {body.get('message', '')}")
        self.status = status
        self.error = str(body.get("error", ""))
        self.fields: list[dict[str, str]] = list(body.get("fields", []))


def retry_after(value: str | None, default: float, now: float) -> float:
    """Seconds to wait per a Retry-After header (delta-seconds or an HTTP date); `default` when absent."""
    if not value:
        return default
    if value.strip().isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return default


class DispatcherClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ):
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}, transport=transport
        )
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep

    def __enter__(self) -> DispatcherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _call(
        self,
        operation: str,
        path_params: Mapping[str, str] | None = None,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        method, template = ROUTES[operation]
        path = template.format(**{key: quote(value, safe="") for key, value in (path_params or {}).items()})
        headers = {}
        if method == "POST":  # one key for the call and every retry of it
            headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        for attempt in range(self.retries + 1):
            response = self.http.request(method, path, json=json, params=params, headers=headers)
            if response.status_code not in RETRIED or attempt == self.retries:
                break
            self.sleep(retry_after(response.headers.get("retry-after"), self.backoff * 2**attempt, time.time()))
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"error": "http", "message": response.text[:500]}
            raise ApiError(response.status_code, body if isinstance(body, dict) else {})
        return None if response.status_code == 204 else response.json()

    # Accounts and events.
    def upsert_account(self, account: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("upsertAccount", {"account_id": str(account["id"])}, json=dict(account))
        return result

    def get_account(self, account_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("getAccount", {"account_id": account_id})
        return result

    def post_event(
        self, account_id: str, event: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "postEvent", {"account_id": account_id}, json=dict(event), idempotency_key=idempotency_key
        )
        return result

    def post_arrangement(
        self, account_id: str, arrangement: Mapping[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """An agreed plan: `{"arrangement_id", "offer"}` or `{"arrangement_id", "instalments", "currency"}`."""
        result: dict[str, Any] = self._call(
            "postArrangement", {"account_id": account_id}, json=dict(arrangement), idempotency_key=idempotency_key
        )
        return result

    def cancel_arrangement(self, account_id: str, arrangement_id: str) -> None:
        self._call("cancelArrangement", {"account_id": account_id, "arrangement_id": arrangement_id})

    def request_contact(self, request: Mapping[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call("requestContact", json=dict(request), idempotency_key=idempotency_key)
        return result

    # The change feed.
    def changes(self, after: str | None = None, types: Sequence[str] = (), limit: int = 100) -> ChangePage:
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        if types:
            params["types"] = ",".join(types)
        page: ChangePage = self._call("listChanges", params=params)
        return page

    def iter_changes(
        self, after: str | None = None, types: Sequence[str] = (), limit: int = 100, cursor: list[str] | None = None
    ) -> Iterator[Change]:
        """Every change after `after`, page after page, until the feed is read to its end for now; the cursor
        to read on from later is left in `cursor[0]` when a list is given."""
        while True:
            page = self.changes(after, types, limit)
            yield from page["items"]
            after = page["next"]
            if cursor is not None:
                cursor[:] = [after]
            if len(page["items"]) < limit:
                return

    # Outcome callback endpoints (an admin key).
    def create_webhook_endpoint(self, url: str, types: Sequence[str] = (), description: str = "") -> dict[str, Any]:
        """The endpoint, with its `secret` (shown this once)."""
        body = {"url": url, "types": list(types), "description": description}
        result: dict[str, Any] = self._call("createWebhookEndpoint", json=body)
        return result

    def list_webhook_endpoints(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("listWebhookEndpoints")
        return result

    def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        self._call("deleteWebhookEndpoint", {"endpoint_id": endpoint_id})

    def rotate_webhook_secret(self, endpoint_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("rotateWebhookSecret", {"endpoint_id": endpoint_id})
        return result
