"""The API's reads of the record (PostgreSQL): a fresh database is migrated before it is read, never a 500
for a table not made yet; a record that cannot be reached answers 503 with Retry-After on the reads that
need it, while everything that needs only Redis goes on."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread
from dispatcher.clock import ManualClock
from dispatcher.engine import Engine
from dispatcher.pg_server import EmbeddedPostgres
from dispatcher.runtime import build_engine
from tests.api_fixtures import account_body, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account
from tests.integration.test_reopen import _move
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def serve(engine: Engine, settings: Settings) -> Iterator[httpx.Client]:
    with ServerThread(create_app(engine, settings)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def auth(keys: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys['admin'][0]}"}


@pytest.fixture
def fresh_database(pg_server: EmbeddedPostgres) -> str:
    """A database nothing has migrated, as a new DISPATCHER_DATABASE_URL is."""
    name = f"fresh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.url.replace("/dispatcher?", f"/{name}?")


def test_a_fresh_database_url_is_migrated_before_the_first_read(
    engine: Engine, api_settings: Settings, api_keys: dict[str, tuple[str, str]], fresh_database: str
) -> None:
    settings = api_settings.model_copy(update={"database_url": fresh_database})
    with serve(engine, settings) as client:
        assert client.put("/v1/accounts/F1", json=account_body("F1"), headers=auth(api_keys)).status_code == 201
        answer = client.get("/v1/accounts/F1", headers=auth(api_keys))
        assert answer.status_code == 200, answer.text  # was 500: relation "closed_accounts" does not exist
        assert answer.json()["archived"] is False
        missing = client.get("/v1/accounts/NOPE", headers=auth(api_keys))
        assert missing.status_code == 404, missing.text  # the record was asked, and has none either
    with psycopg.connect(fresh_database) as conn:
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"audit_entries", "closed_accounts", "history_entries"} <= tables


def test_an_unreachable_record_answers_503_with_retry_after_on_reads_that_need_it(
    engine: Engine, api_settings: Settings, api_keys: dict[str, tuple[str, str]]
) -> None:
    settings = api_settings.model_copy(update={"database_url": f"postgresql://127.0.0.1:{closed_port()}/dispatcher"})
    with serve(engine, settings) as client:
        put = client.put("/v1/accounts/U1", json=account_body("U1"), headers=auth(api_keys))
        assert put.status_code == 201, put.text  # an upsert needs Redis alone
        for account_id in ("U1", "NOPE"):  # in Redis or not, its archived part is in the record
            started = time.monotonic()
            answer = client.get(f"/v1/accounts/{account_id}", headers=auth(api_keys))
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json()["error"] == "unavailable"
            assert "record" in answer.json()["message"]
            assert time.monotonic() - started < 10  # told at once, not after a pool's 30 s wait
        assert client.get("/readyz").status_code == 200  # the instance still serves everything else


def test_an_embedded_record_that_is_not_running_answers_503_and_is_not_started_by_the_api(
    engine: Engine, api_settings: Settings, api_keys: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    state = api_settings.state_dir
    with EmbeddedPostgres(state / "pg"):
        pass  # a record was made here, and its server has stopped (its owner went)
    with serve(engine, api_settings) as client:
        answer = client.get("/v1/accounts/A1", headers=auth(api_keys))
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        assert "record" in answer.json()["message"]
    assert not (state / "pg" / "postmaster.pid").exists()  # nobody left a server behind to stop


def test_a_running_embedded_record_is_read_by_the_api_without_being_owned_by_it(
    engine: Engine, api_settings: Settings, api_keys: dict[str, tuple[str, str]]
) -> None:
    state = api_settings.state_dir
    with EmbeddedPostgres(state / "pg") as server:  # what `dispatcher up` or `dispatcher postgres` runs
        with serve(engine, api_settings) as client:
            assert client.put("/v1/accounts/E1", json=account_body("E1"), headers=auth(api_keys)).status_code == 201
            answer = client.get("/v1/accounts/E1", headers=auth(api_keys))
            assert answer.status_code == 200, answer.text  # migrated first: the owner did not have to
        assert server.url  # still up: the API neither stopped nor took over the server


def test_the_api_answers_503_while_the_embedded_record_is_stopped_and_reads_it_again_once_it_is_back(
    engine: Engine, api_settings: Settings, api_keys: dict[str, tuple[str, str]]
) -> None:
    data_dir = api_settings.state_dir / "pg"
    owner = EmbeddedPostgres(data_dir, stop_at_exit=False).start()
    try:
        with serve(engine, api_settings) as client:
            assert client.put("/v1/accounts/B1", json=account_body("B1"), headers=auth(api_keys)).status_code == 201
            assert client.get("/v1/accounts/B1", headers=auth(api_keys)).status_code == 200
            owner.stop()  # `dispatcher postgres` told to stop, the API still holding connections
            for attempt in range(3):
                started = time.monotonic()
                away = client.get("/v1/accounts/B1", headers=auth(api_keys))
                assert away.status_code == 503, away.text
                assert away.headers["Retry-After"] == "5"
                assert time.monotonic() - started < (6 if attempt == 0 else 1)  # then told at once
            owner.start()
            time.sleep(1.1)  # past the moment a failed open is remembered
            back = client.get("/v1/accounts/B1", headers=auth(api_keys))
            assert back.status_code == 200, back.text  # the next read after it is back, not minutes later
    finally:
        owner.stop()


def test_a_change_to_an_account_moved_to_the_record_answers_503_while_the_record_is_away(
    redis_url: str, database_url: str, record_pool: ConnectionPool, clock: ManualClock, api_settings: Settings,
    api_keys: dict[str, tuple[str, str]],
) -> None:  # fmt: skip
    settings = api_settings.model_copy(update={"database_url": database_url})
    engine = build_engine(settings, redis_url, clock).engine
    engine.upsert(make_account("M1", balance=Decimal("0")))  # paid: resolved, and moved once closed long enough
    _move(engine, record_pool, clock, ["M1"])
    away = settings.model_copy(update={"database_url": f"postgresql://127.0.0.1:{closed_port()}/dispatcher"})
    with serve(build_engine(away, redis_url, clock).engine, away) as client:
        put = client.put("/v1/accounts/M1", json=account_body("M1"), headers=auth(api_keys))
        assert put.status_code == 503, put.text  # it must be reopened from the record, which is away
        assert put.headers["Retry-After"] == "5"
    assert engine.store.load("M1").record is None  # not started afresh under an id it had
    with serve(engine, settings) as client:  # the record back: the same change reopens it
        put = client.put("/v1/accounts/M1", json=account_body("M1"), headers=auth(api_keys))
        assert put.status_code == 200, put.text
        assert put.json()["status"] == "updated"
