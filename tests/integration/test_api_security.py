"""Bearer keys and scopes (401 vs 403 with clear bodies), and Idempotency-Key on every POST."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
import threading
import uuid

import pytest

from dispatcher.api.auth import hash_key
from dispatcher.api.idempotency import _digest
from dispatcher.redis_keys import idempotency_meta_key
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401

pytestmark = pytest.mark.integration

PAYMENT = {"kind": "payment", "amount": "10.00"}


@pytest.fixture
def account(api: Api) -> str:
    api.put_account("A1", account_body())
    return "A1"


def test_no_key_is_401_saying_how_to_authenticate(api: Api) -> None:
    response = api.client.get("/v1/accounts/A1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": "unauthorized", "fields": [],
                               "message": "missing API key: send `Authorization: Bearer <key>`"}  # fmt: skip


def test_an_unknown_key_is_401(api: Api) -> None:
    response = api.client.get("/v1/accounts/A1", headers={"Authorization": "Bearer dsp_not-a-key"})
    assert (response.status_code, response.json()["message"]) == (401, "unknown API key")


@pytest.mark.parametrize(
    ("key", "method", "path", "scope"),
    [
        ("reader", "post", "/v1/accounts/A1/events", "events:write"),
        ("events", "put", "/v1/accounts/A1", "accounts:write"),
        ("writer", "get", "/v1/accounts/A1", "accounts:read"),
        ("reader", "post", "/v1/accounts:batch", "accounts:write"),
        ("writer", "post", "/v1/contacts", "events:write"),
    ],
)
def test_a_key_without_the_scope_is_403_naming_it(api: Api, account: str, key: str, method: str, path: str,
                                                  scope: str) -> None:  # fmt: skip
    headers = {**api.auth(key), "Idempotency-Key": uuid.uuid4().hex}
    response = api.client.request(method, path, json=account_body() if method == "put" else PAYMENT, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert repr(scope) in response.json()["message"]


def test_each_scope_opens_its_routes_and_admin_opens_all(api: Api, account: str) -> None:
    assert api.get_account("A1", key="reader").status_code == 200
    assert api.put_account("A1", account_body(), key="writer").status_code == 200
    assert api.post("/v1/accounts/A1/events", PAYMENT, key="events").status_code == 200
    assert api.post("/v1/accounts/A1/events", PAYMENT, key="admin").status_code == 200


def test_health_and_readiness_need_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert api.client.get("/readyz").json() == {"status": "ok", "checks": {"redis": "ok", "strategy": "ok"}}


def test_a_retried_post_gets_the_first_answer_and_has_no_second_effect(api: Api, account: str) -> None:
    first = api.post("/v1/accounts/A1/events", PAYMENT, idempotency="pay-1")
    again = api.post("/v1/accounts/A1/events", PAYMENT, idempotency="pay-1")
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert api.store.load("A1").record.state.paid == 10
    assert [e.event for e in api.store.load("A1").history].count("payment") == 1


def test_the_same_key_with_another_body_is_422_naming_the_header(api: Api, account: str) -> None:
    api.post("/v1/accounts/A1/events", PAYMENT, idempotency="pay-2")
    other = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "99.00"}, idempotency="pay-2")
    assert other.status_code == 422
    assert other.json()["fields"][0]["field"] == "Idempotency-Key"
    assert api.store.load("A1").record.state.paid == 10


def test_a_post_without_an_idempotency_key_is_422_naming_it(api: Api, account: str) -> None:
    response = api.client.post("/v1/accounts/A1/events", json=PAYMENT, headers=api.auth())
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "Idempotency-Key"
    assert api.store.load("A1").record.state.paid == 0


def test_keys_are_per_api_key_and_a_refused_request_does_not_use_one_up(api: Api, account: str) -> None:
    denied = api.post("/v1/accounts/A1/events", PAYMENT, key="reader", idempotency="shared")
    assert denied.status_code == 403
    assert api.post("/v1/accounts/A1/events", PAYMENT, key="events", idempotency="shared").status_code == 200
    assert api.post("/v1/accounts/A1/events", PAYMENT, key="admin", idempotency="shared").status_code == 200
    assert api.store.load("A1").record.state.paid == 20


def test_a_retry_while_the_first_is_running_is_409(api: Api, account: str) -> None:
    meta = idempotency_meta_key(hash_key(api.keys["admin"][0])[:16], _digest("busy"))
    api.store.redis.set(meta, json.dumps({"state": "processing"}))  # as the first request leaves it meanwhile
    response = api.post("/v1/accounts/A1/events", PAYMENT, idempotency="busy")
    assert (response.status_code, response.headers["retry-after"]) == (409, "1")
    assert response.json()["fields"][0]["field"] == "Idempotency-Key"
    assert api.store.load("A1").record.state.paid == 0


def test_concurrent_retries_apply_once(api: Api, account: str) -> None:
    codes: list[int] = []

    def send() -> None:
        codes.append(api.post("/v1/accounts/A1/events", PAYMENT, idempotency="race").status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(codes) <= {200, 409} and 200 in codes
    assert api.store.load("A1").record.state.paid == 10


def test_a_retried_batch_replays_every_line_without_importing_again(api: Api) -> None:
    body = "".join(json.dumps(account_body(f"B{i}")) + "\n" for i in range(50)) + "{bad\n"
    first = api.post("/v1/accounts:batch", content=body, idempotency="batch-1")
    version = api.store.load("B1").version
    again = api.post("/v1/accounts:batch", content=body, idempotency="batch-1")
    assert again.text == first.text
    assert json.loads(again.text.splitlines()[-1])["summary"]["created"] == 50
    assert api.store.load("B1").version == version
    changed = api.post("/v1/accounts:batch", content=body + "\n", idempotency="batch-1")
    assert changed.status_code == 422


def test_webhooks_need_no_idempotency_key(api: Api) -> None:
    response = api.twilio("/v1/webhooks/twilio/inbound-sms", {"From": "+8613800138000", "Body": "hello"})
    assert response.status_code == 200
