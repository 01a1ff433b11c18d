"""The archiver moves the audit streams into PostgreSQL: every entry once, the streams trimmed only after
the commit, and a batch stopped at any point loses and repeats nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool
from pydantic_core import to_json

from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.engine import Engine
from dispatcher.record.archive import AuditArchiver
from dispatcher.state.metrics import ClusterCollector
from dispatcher.state.store import Store
from tests.conftest import make_account
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration


class Stop(Exception):
    """A fault injected at a named point of a batch."""


def _fill(engine: Engine, clock: ManualClock, accounts: int = 40, days: int = 5) -> list[dict[str, object]]:
    engine.upsert_many([make_account(f"A{i}") for i in range(accounts)])
    for _ in range(days):
        clock.advance(timedelta(days=1))
        engine.replan_many([f"A{i}" for i in range(accounts)])
    engine.record_event("A0", Payment(amount=Decimal("10")))
    return engine.store.audit()


def _keys(pool: ConnectionPool) -> list[tuple[object, ...]]:
    with pool.connection() as conn:
        return conn.execute("SELECT shard, stream_ms, stream_seq, position FROM audit_entries").fetchall()


def _stream_length(store: Store) -> int:
    return sum(store.redis.xlen(store.audit_key(shard)) for shard in range(store.shards))


def test_every_audit_entry_is_archived_once_and_the_streams_are_trimmed(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    entries = _fill(engine, clock)
    moved = AuditArchiver(engine.store, record_pool, batch=7).run()
    keys = _keys(record_pool)
    assert moved.rows == len(entries) == len(keys) == len(set(keys))
    assert _stream_length(engine.store) == 0
    assert AuditArchiver(engine.store, record_pool, batch=7).run().rows == 0


def test_archived_entries_keep_their_fields(engine: Engine, clock: ManualClock, record_pool: ConnectionPool) -> None:
    entries = _fill(engine, clock, accounts=3, days=2)
    AuditArchiver(engine.store, record_pool).run()
    with record_pool.connection() as conn:
        rows = conn.execute("SELECT entry FROM audit_entries").fetchall()
    archived = sorted(json.dumps(row[0], sort_keys=True) for row in rows)
    assert archived == sorted(json.dumps(json.loads(to_json(entry, fallback=str)), sort_keys=True) for entry in entries)


@pytest.mark.parametrize("point", ["copied", "committed"])
def test_a_batch_stopped_midway_loses_and_repeats_nothing(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, point: str
) -> None:
    entries = _fill(engine, clock)
    length = _stream_length(engine.store)

    def fault(at: str) -> None:
        if at == point:
            raise Stop(at)

    with pytest.raises(Stop):
        AuditArchiver(engine.store, record_pool, batch=5, fault=fault).run()
    assert _stream_length(engine.store) == length  # nothing trimmed that was not committed
    AuditArchiver(engine.store, record_pool, batch=5).run()
    keys = _keys(record_pool)
    assert len(keys) == len(set(keys)) == len(entries)
    assert _stream_length(engine.store) == 0


def test_partitions_are_made_for_the_months_of_the_entries(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    _fill(engine, clock, accounts=2, days=1)
    clock.advance(timedelta(days=62))
    engine.replan_many(["A1"])
    AuditArchiver(engine.store, record_pool).run()
    with record_pool.connection() as conn:
        months = conn.execute("SELECT DISTINCT tableoid::regclass::text FROM audit_entries ORDER BY 1").fetchall()
    assert [name for (name,) in months] == ["audit_entries_y2026m03", "audit_entries_y2026m05"]


def test_the_archiver_counts_what_it_moves_and_the_lag_of_what_waits(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    _fill(engine, clock, accounts=5, days=2)
    store = engine.store
    seconds, _ = store.redis.time()
    store.redis.xadd(store.audit_key(0), {"e": "[]"}, id=f"{(seconds - 120) * 1000}-0")  # waiting two minutes
    assert _lag(store) >= 120
    rows, batches = _sample("dispatcher_archived_total", kind="audit"), _batches()
    moved = AuditArchiver(store, record_pool).run()
    assert _sample("dispatcher_archived_total", kind="audit") - rows == moved.rows > 0
    assert _batches() - batches >= 1
    assert _lag(store) == 0


def _lag(store: Store) -> float:
    (family,) = [f for f in ClusterCollector(store).collect() if f.name == "dispatcher_archive_lag_seconds"]
    return float(family.samples[0].value)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _batches() -> float:
    return sum(_sample("dispatcher_archive_batches_total", shard=str(shard)) for shard in range(16))
