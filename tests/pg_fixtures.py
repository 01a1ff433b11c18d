"""The real embedded PostgreSQL for tests: one server per session (as conftest's Redis), migrated once;
each test that asks for `record_pool` or `database_url` starts from empty tables. Test modules import the
functions (`from tests.pg_fixtures import record_pool_fixture`, ...); the fixtures go by the names given here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from dispatcher.record.db import migrate, open_pool
from dispatcher.record.pg_server import EmbeddedPostgres


@pytest.fixture(scope="session", name="pg_server")
def pg_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "pg") as server:
        migrate(server.url)
        yield server


@pytest.fixture(name="database_url")
def database_url_fixture(pg_server: EmbeddedPostgres) -> str:
    with open_pool(pg_server.url, max_size=1) as pool, pool.connection() as conn:
        conn.execute("TRUNCATE audit_entries, closed_accounts, history_entries")
    return pg_server.url


@pytest.fixture(name="record_pool")
def record_pool_fixture(database_url: str) -> Iterator[ConnectionPool]:
    with open_pool(database_url) as pool:
        yield pool
