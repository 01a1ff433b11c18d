"""The archiver killed with SIGKILL mid-run, again and again: once a last run finishes, every audit entry
is in PostgreSQL exactly once and the streams are empty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from psycopg_pool import ConnectionPool

from dispatcher.record.archive import AuditArchiver
from dispatcher.state.store import Store
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration

ENTRIES_PER_WRITE = 3
WRITES = 20_000  # 60,000 audit entries
KILLS = 3

ARCHIVER = """
import sys
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.db import open_pool
from dispatcher.state.store import Store
store = Store.from_url(sys.argv[1], shards=16)
AuditArchiver(store, open_pool(sys.argv[2]), batch=400).run()
"""


def _fill(store: Store) -> int:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    pipe = store.redis.pipeline(transaction=False)
    for write in range(WRITES):
        at = start + timedelta(minutes=write * 7)  # spans about three months: several partitions
        account = f"K{write % 2000}"
        pipe.xadd(store.audit_key(store.shard_of(account)), {"e": _payload(account, at, write)})
        if write % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return WRITES * ENTRIES_PER_WRITE


def _payload(account: str, at: datetime, write: int) -> str:
    entries = [
        f'{{"at":"{at.isoformat()}","type":"decision","account_id":"{account}","contact_id":"{account}/c/{write}/{n}",'
        f'"channel":"sms","verdict":"send","rule":null,"until":null}}'
        for n in range(ENTRIES_PER_WRITE)
    ]
    return "[" + ",".join(entries) + "]"


def _count(pool: ConnectionPool) -> tuple[int, int]:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (shard, stream_ms, stream_seq, position)) FROM audit_entries"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _kill_midway(redis_url: str, database_url: str, pool: ConnectionPool, after_rows: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen([sys.executable, "-c", ARCHIVER, redis_url, database_url], env=env)
    deadline = time.monotonic() + 60
    while _count(pool)[0] < after_rows and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_an_archiver_killed_mid_batch_loses_and_duplicates_nothing(
    store: Store, redis_url: str, database_url: str, record_pool: ConnectionPool
) -> None:
    total = _fill(store)
    for kill in range(1, KILLS + 1):
        _kill_midway(redis_url, database_url, record_pool, after_rows=kill * total // (KILLS + 2))
        rows, distinct = _count(record_pool)
        assert rows == distinct and 0 < rows < total  # killed part-way, nothing twice
    AuditArchiver(store, record_pool, batch=400).run()
    assert _count(record_pool) == (total, total)
    assert sum(store.redis.xlen(store.audit_key(shard)) for shard in range(store.shards)) == 0
