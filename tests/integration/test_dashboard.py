"""The operations dashboard's data: real accounts worked on real Redis, archived into the real PostgreSQL,
read through the real API; a breaker opened by the workers' own breaker shows as an open provider."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from psycopg_pool import ConnectionPool

from channels.base import ProviderMisconfigured
from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Outcome
from dispatcher.core.models import Channel, OutcomeKind
from dispatcher.engine import Engine
from dispatcher.record.archive import AuditArchiver
from tests.api_fixtures import Api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account, work
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401
from workers.circuit import CircuitBreaker

pytestmark = pytest.mark.integration
ACCOUNTS = ["D1", "D2", "D3", "D4"]


@pytest.fixture
def worked_api(
    engine: Engine,
    clock: ManualClock,
    record_pool: ConnectionPool,
    database_url: str,
    api_settings: Settings,
    api_keys: dict[str, tuple[str, str]],
) -> Iterator[Api]:
    """Four accounts worked for two weeks (sends; one account's SMS denied for want of consent), one delivery
    reported, one breaker open, the audit archived; the API reading that record."""
    no_sms = make_account(ACCOUNTS[-1], consent=["email", "letter", "agency", "voice"])  # its SMS are denied
    engine.upsert_many([*(make_account(account_id) for account_id in ACCOUNTS[:-1]), no_sms])
    sent = work(engine, clock, ACCOUNTS, rounds=4 * 14, every=timedelta(hours=6))
    assert sent
    engine.record_event(sent[0].split("/")[0], Outcome(contact_id=sent[0], outcome=OutcomeKind.DELIVERED,
                                                        channel=Channel("sms")))  # fmt: skip
    CircuitBreaker(engine.store.redis).trip(ProviderMisconfigured("401 from the provider", "email", "SMTP_PASSWORD"))
    AuditArchiver(engine.store, record_pool).run()
    settings = api_settings.model_copy(update={"database_url": database_url})
    with ServerThread(create_app(engine, settings)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield Api(server.url, client, api_keys, settings, engine, engine.store, clock)


def test_the_data_holds_every_figure_from_the_record_and_the_breakers(worked_api: Api) -> None:
    answer = worked_api.client.get("/v1/admin/dashboard/data", headers=worked_api.auth("admin"))
    assert answer.status_code == 200, answer.text
    data = answer.json()
    stages = {row["stage"] for row in data["funnel"]}
    assert stages and stages <= set(data["stages"]), data["funnel"]
    assert sum(row["accounts"] for row in data["funnel"]) >= len(ACCOUNTS)
    assert {(row["channel"], row["status"]) for row in data["attempts"]} >= {("sms", "sent")}
    assert all(row["provider"] for row in data["attempts"])
    assert {"channel": "sms", "outcome": "delivered", "count": 1} in data["outcomes"]
    assert {"verdict": "deny", "rule": "no_consent:sms", "where": "decision"} in [
        {key: row[key] for key in ("verdict", "rule", "where")} for row in data["rules"]
    ], data["rules"]
    health = {row["key"]: row for row in data["providers"]}
    assert health["email"]["state"] == "open" and health["email"]["setting"] == "SMTP_PASSWORD"
    assert (health["sms"]["provider"], health["sms"]["state"], health["sms"]["weight"]) == ("twilio", "closed", 50)
    assert (health["sms.aliyun"]["channel"], health["sms.aliyun"]["provider"]) == ("sms", "aliyun")


def test_the_data_needs_an_admin_key_and_the_page_reaches_nothing_outside(worked_api: Api) -> None:
    client = worked_api.client
    assert client.get("/v1/admin/dashboard/data").status_code == 401
    assert client.get("/v1/admin/dashboard/data", headers=worked_api.auth("reader")).status_code == 403
    assert client.get("/v1/admin/dashboard/data?days=0", headers=worked_api.auth("admin")).status_code == 422
    page = client.get("/v1/admin/dashboard")
    assert page.status_code == 200 and "Collections dispatcher" in page.text
    assert re.findall(r"""(?:src|href)=["'](?:https?:)?//""", page.text) == []
    for asset in re.findall(r"""(?:src|href)=["'](/v1/admin/dashboard/assets/[^"']+)""", page.text):
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.content) > 500, asset
    assert client.get("/v1/admin/dashboard/assets/secrets.txt").status_code == 404
