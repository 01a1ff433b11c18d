"""Connecting to the record: a psycopg 3 pool, and the schema brought up to date by yoyo-migrations.

yoyo applies the numbered SQL files in migrations/ once each, records them in its own table and takes a
lock, so every process that opens the record migrates it first (`open_record`: the API, each worker, the
commands) and only the first does work; a fresh DISPATCHER_DATABASE_URL is never read before its tables
exist. A record that cannot be reached raises RecordUnavailable, which the API answers with a 503.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import structlog
from psycopg_pool import ConnectionPool
from yoyo import get_backend, read_migrations

from config.errors import DispatcherError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
log = structlog.get_logger("dispatcher.record")
# yoyo logs every step of every migration at INFO; one line of ours says what was applied.
logging.getLogger("yoyo").setLevel(logging.WARNING)
CONNECT_TIMEOUT = 5  # seconds; a host that does not answer is unavailable, not a hang


class RecordUnavailable(DispatcherError, ConnectionError):
    """The record (PostgreSQL) cannot be reached now: not running, refusing, too slow. It passes with time;
    retry later (the API answers 503 with Retry-After)."""


def _yoyo_url(url: str) -> str:
    """yoyo names its psycopg 3 backend by the URL's scheme."""
    scheme, sep, rest = url.partition("://")
    if "connect_timeout=" not in rest:  # yoyo hands the URL's query to psycopg.connect
        rest += f"{'&' if '?' in rest else '?'}connect_timeout={CONNECT_TIMEOUT}"
    return f"postgresql+psycopg://{rest}" if sep and scheme in ("postgresql", "postgres") else url


def migrate(url: str) -> list[str]:
    """Apply the migrations not yet applied; returns their ids."""
    backend = get_backend(_yoyo_url(url))
    migrations = read_migrations(str(MIGRATIONS))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    applied = [migration.id for migration in pending]
    if applied:
        log.info("record.migrated", migrations=applied)
    return applied


def open_pool(url: str, max_size: int = 4, timeout: float = 30) -> ConnectionPool:
    """A pool opened now and checked: a wrong URL fails here, with PostgreSQL's own message. `timeout`: how
    long opening, and later each wait for a connection, may take before PoolTimeout."""
    pool = ConnectionPool(
        url, min_size=1, max_size=max_size, open=False, timeout=timeout,
        kwargs={"autocommit": False, "connect_timeout": CONNECT_TIMEOUT},
    )  # fmt: skip
    pool.open(wait=True, timeout=timeout)
    return pool


def open_record(url: str, max_size: int = 4, timeout: float = 30) -> ConnectionPool:
    """The record migrated (or waited for: yoyo's lock), then a pool on it; RecordUnavailable when it cannot
    be reached. What every process that reads or writes the record opens it with."""
    try:
        migrate(url)
        return open_pool(url, max_size, timeout)
    except psycopg.OperationalError as exc:  # PoolTimeout is one
        raise RecordUnavailable(f"the record (PostgreSQL) cannot be reached: {exc}") from exc


def record_url(database_url: str | None, state_dir: Path) -> str | None:
    """Where the record is, for a process that does not run it: the configured URL, else the embedded
    server that runs under the state directory. None when this deployment has no record at all (no data
    directory: nothing was ever archived, so Redis holds everything). RecordUnavailable when the embedded
    record exists but its server does not run: its owner (`dispatcher up`, `dispatcher postgres`) starts it;
    this process never does, as nobody would stop it."""
    if database_url:
        return database_url
    data_dir = state_dir / "pg"
    if not (data_dir / "PG_VERSION").exists():
        return None
    from dispatcher.pg_server import running_url  # only a deployment with an embedded record loads the package

    url = running_url(data_dir)
    if url is None:
        raise RecordUnavailable(
            f"the embedded record in {data_dir.resolve()} is not running: start `dispatcher postgres` (or run "
            "`dispatcher up`), or set DISPATCHER_DATABASE_URL"
        )
    return url
