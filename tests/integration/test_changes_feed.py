"""GET /v1/changes over the real server, Redis and PostgreSQL: the callbacks' events, paged with an opaque
cursor, from the record for what the archiver moved and from Redis for the tail; an expired cursor is a 410
naming the oldest valid one."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures and tests.pg_fixtures come back as parameters

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from psycopg_pool import ConnectionPool

from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.core.models import Channel
from dispatcher.engine import Engine
from dispatcher.record.archive import AuditArchiver
from dispatcher.state.store import Store
from tests.api_fixtures import Api, api_keys, api_settings  # noqa: F401
from tests.callback_fixtures import audit_event_ids, record_activity
from tests.conftest import make_account
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration
ACCOUNTS = [f"CF{i}" for i in range(5)]


@pytest.fixture
def feed_api(api_settings: Settings, engine: Engine, store: Store, clock: ManualClock, database_url: str,
             api_keys: dict[str, tuple[str, str]]) -> Iterator[Api]:  # fmt: skip
    settings = api_settings.model_copy(update={"database_url": database_url})
    with ServerThread(create_app(engine, settings)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield Api(server.url, client, api_keys, settings, engine, store, clock)


def _activity(engine: Engine) -> None:
    engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
    record_activity(engine, ACCOUNTS, opt_out=Channel.VOICE)


def _read_all(api: Api, limit: int, after: str | None = None, **params: str) -> tuple[list[dict], str]:
    items: list[dict] = []
    while True:
        query = {"limit": str(limit), **params, **({"after": after} if after else {})}
        answer = api.client.get("/v1/changes", params=query, headers=api.auth("reader"))
        assert answer.status_code == 200, answer.text
        page = answer.json()
        items += page["items"]
        after = page["next"]
        if len(page["items"]) < limit:
            return items, after


def _by_account(items: list[dict]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in items:
        found.setdefault(item["data"]["account_id"], []).append(item["id"])
    return found


def test_the_feed_pages_every_event_in_order_per_account_from_the_record_then_redis(
    feed_api: Api, record_pool: ConnectionPool
) -> None:
    _activity(feed_api.engine)
    expected = audit_event_ids(feed_api.store)
    archived = AuditArchiver(feed_api.store, record_pool).run()  # no endpoint: the streams are trimmed
    assert archived.trimmed > 0 and audit_event_ids(feed_api.store) == {}
    feed_api.engine.record_event("CF1", Payment(amount=Decimal("11")))  # the tail, in Redis only
    tail = audit_event_ids(feed_api.store)["CF1"]
    items, cursor = _read_all(feed_api, limit=3)
    expected["CF1"] += tail
    assert _by_account(items) == expected
    assert len({item["id"] for item in items}) == len(items)
    assert items[0].keys() == {"id", "type", "timestamp", "data"}
    again, _ = _read_all(feed_api, limit=3, after=cursor)
    assert again == []  # read to its end
    feed_api.engine.record_event("CF2", Payment(amount=Decimal("12")))
    newer, _ = _read_all(feed_api, limit=3, after=cursor)
    assert [item["type"] for item in newer] == ["payment.recorded"] and newer[0]["data"]["amount"] == "12"


def test_types_filter_and_scopes(feed_api: Api) -> None:
    _activity(feed_api.engine)
    items, _ = _read_all(feed_api, limit=50, types="payment.recorded,account.opted_out")
    assert {item["type"] for item in items} == {"payment.recorded", "account.opted_out"} and len(items) == 10
    bad = feed_api.client.get("/v1/changes", params={"types": "contact.teleported"}, headers=feed_api.auth("reader"))
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "types"
    assert feed_api.client.get("/v1/changes", headers=feed_api.auth("writer")).status_code == 403


def test_an_expired_cursor_is_410_naming_the_oldest_valid_and_a_forged_one_is_422(feed_api: Api) -> None:
    _activity(feed_api.engine)  # written since the cursor: what it would have read is no longer kept
    old = {str(shard): "1000-0.0" for shard in range(feed_api.store.shards)}
    expired = base64.urlsafe_b64encode(json.dumps(old).encode()).decode().rstrip("=")
    answer = feed_api.client.get("/v1/changes", params={"after": expired}, headers=feed_api.auth("reader"))
    assert answer.status_code == 410, answer.text
    field = answer.json()["fields"][0]
    assert field["field"] == "after" and field["message"].startswith("oldest valid: ")
    oldest = field["message"].removeprefix("oldest valid: ")
    assert (
        feed_api.client.get("/v1/changes", params={"after": oldest}, headers=feed_api.auth("reader")).status_code == 200
    )
    forged = feed_api.client.get("/v1/changes", params={"after": "nope"}, headers=feed_api.auth("reader"))
    assert forged.status_code == 422 and forged.json()["fields"][0]["field"] == "after"
