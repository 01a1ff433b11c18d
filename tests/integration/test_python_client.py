"""The typed client in clients/python (installed from the checkout): its route table held against the server's
/openapi.json, its retries of 429 and 503 with one Idempotency-Key, the change feed paged through the real
API, and its webhook verifier against a real signed callback."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from dispatcher_client import ROUTES, ApiError, DispatcherClient, WebhookVerificationError, verify_webhook
from standardwebhooks.webhooks import Webhook

from dispatcher.core.webhook_events import new_secret, payload_body, signature_header
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401
from tests.callback_receiver import free_port

pytestmark = pytest.mark.integration


def _drift(openapi: dict, routes: dict[str, tuple[str, str]]) -> list[str]:
    served = {
        operation["operationId"]: (method.upper(), path)
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    }
    return [f"{op}: client {route}, server {served.get(op)}" for op, route in routes.items() if served.get(op) != route]


def test_the_clients_routes_are_the_servers(api: Api) -> None:
    """Fails on drift: a route renamed, moved or re-methoded on the server is named here."""
    openapi = api.client.get("/openapi.json").json()
    assert _drift(openapi, ROUTES) == []
    moved = {**ROUTES, "listChanges": ("GET", "/v1/feed")}
    assert _drift(openapi, moved) == ["listChanges: client ('GET', '/v1/feed'), server ('GET', '/v1/changes')"]


class _Throttling(BaseHTTPRequestHandler):
    """Answers 429 (Retry-After: 7), then 503 (an HTTP date two seconds on), then 200; notes each key sent."""

    keys: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        _Throttling.keys.append(self.headers["Idempotency-Key"])
        count = len(_Throttling.keys)
        if count < 3:
            self.send_response(429 if count == 1 else 503)
            later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 2))
            self.send_header("Retry-After", "7" if count == 1 else later)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        body = b'{"account_id": "A1", "status": "applied"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def throttling() -> Iterator[str]:
    _Throttling.keys = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Throttling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_429_and_503_are_retried_as_retry_after_says_with_one_idempotency_key(throttling: str) -> None:
    waits: list[float] = []
    with DispatcherClient(throttling, "dsp_test", sleep=waits.append) as client:
        answer = client.post_event("A1", {"kind": "payment", "amount": "10.00"})
    assert answer == {"account_id": "A1", "status": "applied"}
    assert len(_Throttling.keys) == 3 and len(set(_Throttling.keys)) == 1  # the same key on every retry
    assert waits[0] == 7 and 0 < waits[1] <= 2


def test_the_client_upserts_posts_and_pages_the_change_feed_through_the_real_api(api: Api) -> None:
    with DispatcherClient(api.url, api.keys["admin"][0]) as client:
        for number in range(4):
            assert client.upsert_account(account_body(f"PC{number}"))["status"] == "created"
            client.post_event(f"PC{number}", {"kind": "payment", "amount": "10.00"})
            client.post_event(f"PC{number}", {"kind": "opt_out", "channel": "sms"})
        assert client.get_account("PC1")["account"]["id"] == "PC1"
        cursor: list[str] = []
        changes = list(client.iter_changes(limit=3, cursor=cursor))
        assert sorted(change["type"] for change in changes) == ["account.opted_out"] * 4 + ["payment.recorded"] * 4
        assert list(client.iter_changes(after=cursor[0])) == []
        with pytest.raises(ApiError) as refused:
            client.post_event("PC1", {"kind": "payment", "amount": "-1"})
        assert refused.value.status == 422 and refused.value.fields[0]["field"] == "amount"
        made = client.create_webhook_endpoint("https://1.1.1.1/hooks", ["payment.recorded"])
        assert made["secret"].startswith("whsec_")
        assert client.rotate_webhook_secret(made["id"])["secret"] != made["secret"]
        assert [endpoint["id"] for endpoint in client.list_webhook_endpoints()] == [made["id"]]
        client.delete_webhook_endpoint(made["id"])
        assert client.list_webhook_endpoints() == []


def test_the_clients_verifier_agrees_with_the_standard_webhooks_library() -> None:
    secret, timestamp = new_secret(), int(time.time())
    body = payload_body("payment.recorded", datetime.now(UTC), {"account_id": "A1", "amount": "10"}).encode()
    headers = {"webhook-id": "evt_1_1-0_0", "webhook-timestamp": str(timestamp),
               "webhook-signature": signature_header([secret], "evt_1_1-0_0", timestamp, body)}  # fmt: skip
    assert verify_webhook(secret, headers, body) == Webhook(secret).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(new_secret(), headers, body)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body, now=timestamp + 301)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body + b" ")
