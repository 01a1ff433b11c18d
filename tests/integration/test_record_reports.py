"""The send audit reads the record: over a period whose audit was archived and whose history was trimmed
from Redis (or left with a closed account), it gives the figures it gave before."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from psycopg_pool import ConnectionPool

from dispatcher.commands.reports import SendAudit, compliance_audit
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.core.strategy import Strategy
from dispatcher.engine import Engine
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.closed import ClosedMover
from dispatcher.record.history import HistoryTrimmer
from dispatcher.record.readers import RecordReader
from tests.conftest import make_account, work
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration
ACCOUNTS = ["R1", "R2", "R3"]


def _work(engine: Engine, clock: ManualClock, plans: int) -> None:
    work(engine, clock, ACCOUNTS, plans, timedelta(hours=6))


def _figures(audit: SendAudit) -> tuple[object, ...]:
    return (audit.sends, audit.outside_window, audit.over_cap, audit.in_quiet_period, audit.over_total,
            audit.too_close, audit.on_rest_day, dict(audit.hours))  # fmt: skip


def test_a_report_over_archived_and_trimmed_history_gives_the_same_figures(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, strategy: Strategy
) -> None:
    start = clock.now()
    engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
    _work(engine, clock, plans=4 * 45)
    engine.record_event("R3", Payment(amount=Decimal("5000.00")))
    first_month = (start, start + timedelta(days=30))
    store = engine.store
    before = [compliance_audit(store, strategy, ACCOUNTS, None, period=p) for p in (None, first_month)]
    assert before[1].sends > 0 and before[0].sends > before[1].sends

    AuditArchiver(store, record_pool).run()
    assert HistoryTrimmer(store, record_pool, strategy).run_all(clock.now()).entries > 0
    clock.advance(timedelta(days=31))
    assert ClosedMover(store, record_pool, timedelta(days=30)).run_all(clock.now()) == 1  # R3 leaves Redis
    redis_only = compliance_audit(store, strategy, ACCOUNTS, None, period=first_month)
    assert redis_only.sends < before[1].sends  # what Redis alone still holds of that month

    reader = RecordReader(record_pool)
    after = [compliance_audit(store, strategy, ACCOUNTS, None, reader, p) for p in (None, first_month)]
    assert [_figures(a) for a in after] == [_figures(b) for b in before]
