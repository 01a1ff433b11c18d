"""Fixtures for the API tests: API keys per scope, a real uvicorn server on a free loopback port (in a
thread) serving the app over the real Redis and a manual clock, and an httpx client. Test modules import
these names so pytest sees them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from config.settings import Settings, load_settings
from dispatcher.api import create_app, new_api_key
from dispatcher.api.app import ServerThread
from dispatcher.core.clock import ManualClock
from dispatcher.engine import Engine
from dispatcher.state.store import Store

PUBLIC_BASE_URL = "https://dispatcher.example-bank.test"
SCOPES = {
    "admin": ["admin"],
    "writer": ["accounts:write"],
    "events": ["events:write"],
    "reader": ["accounts:read"],
    "ops": ["accounts:write", "events:write", "accounts:read"],
}


@pytest.fixture(scope="session")
def api_keys() -> dict[str, tuple[str, str]]:
    """name → (the key a client sends, its configuration entry)."""
    return {name: new_api_key(scopes) for name, scopes in SCOPES.items()}


@pytest.fixture
def api_settings(redis_url: str, api_keys: dict[str, tuple[str, str]], tmp_path: Path) -> Settings:
    return load_settings(
        redis_url=redis_url,
        state_dir=tmp_path / "state",
        api_keys=",".join(entry for _, entry in api_keys.values()),
        public_base_url=PUBLIC_BASE_URL,
        _env_file=None,
    )


@dataclass
class Api:
    """A running server and what the tests need to talk to it and look behind it."""

    url: str
    client: httpx.Client
    keys: dict[str, tuple[str, str]]
    settings: Settings
    engine: Engine
    store: Store
    clock: ManualClock

    def auth(self, name: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name][0]}"}

    def post(self, path: str, body: Any = None, key: str = "admin", idempotency: str | None = None,
             **kwargs: Any) -> httpx.Response:  # fmt: skip
        headers = {**self.auth(key), "Idempotency-Key": idempotency or uuid.uuid4().hex, **kwargs.pop("headers", {})}
        return self.client.post(path, json=body, headers=headers, **kwargs) if body is not None else (
            self.client.post(path, headers=headers, **kwargs))  # fmt: skip

    def put_account(self, account_id: str, body: Mapping[str, Any], key: str = "admin") -> httpx.Response:
        return self.client.put(f"/v1/accounts/{account_id}", json=dict(body), headers=self.auth(key))

    def get_account(self, account_id: str, key: str = "admin") -> httpx.Response:
        return self.client.get(f"/v1/accounts/{account_id}", headers=self.auth(key))

    def twilio(self, path: str, params: dict[str, str], token: str | None = None) -> httpx.Response:
        """POST a webhook signed exactly as Twilio signs it: the public URL and the form parameters."""
        secret = token or self.settings.twilio_auth_token.get_secret_value()
        signature = RequestValidator(secret).compute_signature(PUBLIC_BASE_URL + path, params)
        return self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})


@pytest.fixture
def api(api_settings: Settings, engine: Engine, store: Store, clock: ManualClock,
        api_keys: dict[str, tuple[str, str]]) -> Iterator[Api]:  # fmt: skip
    app = create_app(engine, api_settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield Api(server.url, client, api_keys, api_settings, engine, store, clock)


def account_body(account_id: str = "A1", **overrides: Any) -> dict[str, Any]:
    """The JSON of tests.conftest.make_account: a Shanghai debtor one day past due on the test clock."""
    body: dict[str, Any] = {
        "id": account_id,
        "name": "王小明",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "country": "CN",
        "phone": "+8613800138000",
        "email": "xiaoming@example.com",
        "address": {"line1": "1 Nanjing Rd", "city": "Shanghai", "postal_code": "200000", "country": "CN"},
        "currency": "CNY",
        "balance": "5000.00",
        "minimum_payment": "500.00",
        "due_date": "2026-03-01",
    }
    body.update(overrides)
    return body
