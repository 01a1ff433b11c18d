"""Connecting to the record: a psycopg 3 pool, and the schema brought up to date by yoyo-migrations.

yoyo applies the numbered SQL files in migrations/ once each, records them in its own table and takes a
lock, so every process may call `migrate` at start (the API, each worker) and only the first does work.
"""

from __future__ import annotations

import logging
from pathlib import Path

import structlog
from psycopg_pool import ConnectionPool
from yoyo import get_backend, read_migrations

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
log = structlog.get_logger("dispatcher.record")
# yoyo logs every step of every migration at INFO; one line of ours says what was applied.
logging.getLogger("yoyo").setLevel(logging.WARNING)


def _yoyo_url(url: str) -> str:
    """yoyo names its psycopg 3 backend by the URL's scheme."""
    scheme, sep, rest = url.partition("://")
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


def open_pool(url: str, max_size: int = 4) -> ConnectionPool:
    """A pool opened now and checked: a wrong URL fails here, with PostgreSQL's own message."""
    pool = ConnectionPool(url, min_size=1, max_size=max_size, open=False, kwargs={"autocommit": False})
    pool.open(wait=True, timeout=30)
    return pool


def record_url(database_url: str | None, state_dir: Path) -> str | None:
    """Where the record is, for a reader: the configured URL, else the embedded server if this deployment
    has one (its data directory exists: an archiver has run); None when there is no record yet."""
    if database_url:
        return database_url
    if not (state_dir / "pg" / "PG_VERSION").exists():
        return None
    from dispatcher.record.pg_server import embedded_url  # only a deployment with an embedded record starts one

    return embedded_url(state_dir)
