"""Closed accounts leave Redis for the record after their retention there, read back intact months later
(through the library, the API and the CLI), and lose their personal data after the retention period while
the audit of what was sent stays."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool
from typer.testing import CliRunner

from config.settings import load_settings
from dispatcher.api import create_app, new_api_key
from dispatcher.claims import ClaimStatus
from dispatcher.cli import app as cli
from dispatcher.clock import ManualClock
from dispatcher.engine import Engine
from dispatcher.events import Payment
from dispatcher.planner import plan
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.closed import ClosedMover, RecordRestorer
from dispatcher.record.history import HistoryTrimmer
from dispatcher.record.lookback import lookback
from dispatcher.record.readers import RecordReader, read_account
from dispatcher.record.retention import ERASED_NAME, pseudonymise_closed
from dispatcher.redis_keys import account_record_key, history_key
from dispatcher.strategy import Strategy
from dispatcher.timeline import timeline
from tests.conftest import make_account, work
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration
IN_REDIS = timedelta(days=30)


def _worked_and_paid(engine: Engine, clock: ManualClock, account_id: str = "A1", days: int = 6) -> None:
    """An account contacted for some days (every queued contact claimed and sent), then paid in full."""
    engine.upsert(make_account(account_id))
    work(engine, clock, [account_id], days, timedelta(days=1))
    engine.record_event(account_id, Payment(amount=Decimal("5000.00")))


def test_a_timeline_archived_months_ago_reads_back_intact(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    _worked_and_paid(engine, clock)
    before = engine.store.load("A1")
    assert before.record is not None and before.record.state.status == "resolved"
    attempts = [entry for entry in before.history if entry.kind == "attempt"]
    assert attempts, "the account was contacted before it paid"
    mover = ClosedMover(engine.store, record_pool, IN_REDIS)
    clock.advance(IN_REDIS - timedelta(days=1))
    assert mover.run_all(clock.now()) == 0  # closed, but not long enough: it stays in Redis
    clock.advance(timedelta(days=2))
    assert mover.run_all(clock.now()) == 1
    assert not engine.store.redis.exists(account_record_key("A1"), history_key("A1"))
    clock.advance(timedelta(days=150))
    found = read_account(engine.store, RecordReader(record_pool), "A1")
    assert found is not None and found.archived
    assert found.record == before.record
    assert found.history == before.history
    assert timeline(found.record, found.history) == timeline(before.record, before.history)


def test_active_accounts_stay_in_redis(engine: Engine, clock: ManualClock, record_pool: ConnectionPool) -> None:
    engine.upsert(make_account("A2"))
    clock.advance(timedelta(days=90))
    assert ClosedMover(engine.store, record_pool, IN_REDIS).run_all(clock.now()) == 0
    assert engine.store.load("A2").record is not None


def test_a_reopened_account_reads_its_closed_past_before_its_live_present(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    engine.restorer = RecordRestorer(engine.store, record_pool)  # as the composition root wires it
    _worked_and_paid(engine, clock)
    old = engine.store.load("A1").history
    clock.advance(IN_REDIS + timedelta(days=1))
    ClosedMover(engine.store, record_pool, IN_REDIS).run_all(clock.now())
    engine.upsert(make_account("A1", balance=Decimal("800.00")))  # the bank sends it again: it reopens
    found = read_account(engine.store, RecordReader(record_pool), "A1")
    assert found is not None and not found.archived
    assert found.history[: len(old)] == old
    assert found.history[len(old)].event == "account_updated"
    assert found.record.state.status == "active"


def test_retention_erases_personal_data_and_keeps_the_audit_of_sends(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    _worked_and_paid(engine, clock)
    AuditArchiver(engine.store, record_pool).run()
    clock.advance(IN_REDIS + timedelta(days=1))
    ClosedMover(engine.store, record_pool, IN_REDIS).run_all(clock.now())
    sends = _sends(record_pool)
    assert sends
    retention = timedelta(days=3 * 365)
    assert pseudonymise_closed(record_pool, clock.now(), retention) == 0  # not yet
    clock.advance(retention)
    assert pseudonymise_closed(record_pool, clock.now(), retention) == 1
    assert pseudonymise_closed(record_pool, clock.now(), retention) == 0  # once
    (closure,) = RecordReader(record_pool).closures("A1")
    account = closure.record.account
    assert (account.name, account.phone, account.email, account.address) == (ERASED_NAME, None, None, None)
    assert closure.pseudonymised and account.balance == Decimal("5000.00")
    assert _sends(record_pool) == sends
    assert "王小明" not in json.dumps(_all_rows(record_pool), ensure_ascii=False)


def _sends(pool: ConnectionPool) -> list[tuple[object, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT at, contact_id, channel, status FROM contact_attempts WHERE account_id = 'A1' ORDER BY 1, 2"
        ).fetchall()


def _all_rows(pool: ConnectionPool) -> list[object]:
    with pool.connection() as conn:
        rows = conn.execute("SELECT record, history FROM closed_accounts").fetchall()
        return [*rows, *conn.execute("SELECT entry FROM audit_entries").fetchall()]


def test_the_api_and_the_cli_read_a_closed_account_from_the_record(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, database_url: str, redis_url: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _worked_and_paid(engine, clock)
    live = engine.store.load("A1")
    assert live.record is not None
    expected = timeline(live.record, live.history)
    AuditArchiver(engine.store, record_pool).run()
    clock.advance(IN_REDIS + timedelta(days=100))
    ClosedMover(engine.store, record_pool, IN_REDIS).run_all(clock.now())

    key, entry = new_api_key(["accounts:read"])
    settings = load_settings(
        redis_url=redis_url, database_url=database_url, state_dir=tmp_path, api_keys=entry, _env_file=None
    )
    with TestClient(create_app(engine, settings)) as client:
        response = client.get("/v1/accounts/A1", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["archived"] is True and body["state"]["status"] == "resolved"
    assert body["timeline"] == json.loads(json.dumps(expected))
    assert {d["type"] for d in body["decisions"]} >= {"decision", "contact"}

    monkeypatch.setenv("DISPATCHER_REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path))
    shown = CliRunner().invoke(cli, ["account", "show", "A1", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["archived"] is True


def _worked(engine: Engine, clock: ManualClock, account_id: str, days: int) -> None:
    engine.upsert(make_account(account_id))
    work(engine, clock, [account_id], days, timedelta(hours=8))


def test_history_past_the_look_back_leaves_redis_and_the_timeline_stays_whole(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, strategy: Strategy
) -> None:
    _worked(engine, clock, "A1", days=3 * 40)  # forty days of an active account, three plans a day
    before = engine.store.load("A1")
    assert before.record is not None and before.record.state.status == "active"
    claims = engine.store.claims("A1")
    trimmer = HistoryTrimmer(engine.store, record_pool, strategy)
    assert trimmer.run_all(clock.now()).entries > 0
    assert trimmer.run_all(clock.now()).entries == 0  # once
    after = engine.store.load("A1")
    horizon = clock.now() - lookback(strategy)
    gone = [entry for entry in before.history if entry not in after.history]
    assert gone and all(entry.at < horizon for entry in gone)
    assert after.history[0].event != "account_created"  # the oldest entry left Redis ...
    found = read_account(engine.store, RecordReader(record_pool), "A1")
    assert found is not None and not found.archived
    assert found.history == before.history  # ... and is back in its place for the readers
    assert len(engine.store.claims("A1")) < len(claims)  # ended claims of old attempts left with them
    assert found.claims == claims
    assert timeline(found.record, found.history) == timeline(before.record, before.history)
    for moment in (clock.now(), clock.now() + timedelta(days=3)):
        assert plan(after.record, after.history, strategy, moment) == plan(
            before.record, before.history, strategy, moment
        )

    _worked(engine, clock, "A1", days=3 * 20)  # it goes on, is trimmed again, then pays and leaves Redis
    engine.record_event("A1", Payment(amount=Decimal("5000.00")))
    whole = read_account(engine.store, RecordReader(record_pool), "A1")
    assert whole is not None
    trimmer.run_all(clock.now())
    clock.advance(IN_REDIS + timedelta(days=1))
    assert ClosedMover(engine.store, record_pool, IN_REDIS).run_all(clock.now()) == 1
    closed = read_account(engine.store, RecordReader(record_pool), "A1")
    assert closed is not None and closed.archived
    assert closed.history == whole.history


class Crash(Exception):
    """The trimmer stopped between its commit and the trim in Redis."""


def test_a_trim_stopped_after_its_commit_loses_and_repeats_nothing(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, strategy: Strategy, monkeypatch: pytest.MonkeyPatch
) -> None:
    _worked(engine, clock, "A1", days=3 * 20)
    before = engine.store.load("A1")

    def crash(*_: object, **__: object) -> bool:
        raise Crash

    trimmer = HistoryTrimmer(engine.store, record_pool, strategy)
    with monkeypatch.context() as patched:
        patched.setattr(engine.store, "trim_history", crash)
        with pytest.raises(Crash):
            trimmer.run_all(clock.now())
    assert engine.store.load("A1").history == before.history  # Redis untouched, rows of a pass that never was
    found = read_account(engine.store, RecordReader(record_pool), "A1")
    assert found is not None and found.history == before.history  # ... which the readers leave out
    clock.advance(timedelta(hours=1))
    assert trimmer.run_all(clock.now()).entries > 0  # the next run replaces them and trims
    found = read_account(engine.store, RecordReader(record_pool), "A1")
    assert found is not None and found.history == before.history
    with record_pool.connection() as conn:
        (rows,) = conn.execute("SELECT count(*) FROM history_entries").fetchone() or (0,)
    assert rows == len(before.history) - len(engine.store.load("A1").history)


def test_an_account_moved_back_to_its_first_stage_after_a_trim_repeats_no_contact(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, strategy: Strategy
) -> None:
    _worked(engine, clock, "A1", days=3 * 45)  # worked through its first stages for 45 days
    before = engine.store.load("A1")
    attempted = {entry.contact_id for entry in before.history if entry.kind == "attempt"}
    assert any("/reminder/" in contact_id for contact_id in attempted if contact_id)
    assert HistoryTrimmer(engine.store, record_pool, strategy).run_all(clock.now()).entries > 0
    assert not any("/reminder/" in (entry.contact_id or "") for entry in engine.store.load("A1").history)

    # The bank re-ages the account: due yesterday, so it is back in its first stage.
    result = engine.upsert(make_account("A1", due_date=clock.now().date() - timedelta(days=1)))
    assert result.plan is not None and result.plan.stage == strategy.stages[0].name
    planned = {contact.id for contact in result.plan.contacts} | {d.contact_id for d in result.plan.decisions}
    for _ in range(3 * 60):  # worked again through the days it was worked before, and on past them
        for replanned in engine.replan_many(["A1"]):
            planned |= {contact.id for contact in replanned.queued}
            for contact in replanned.queued:
                if engine.gate.claim(contact).verdict == "send":
                    engine.gate.end_claim(contact, ClaimStatus.SENT)
        clock.advance(timedelta(hours=8))
    assert planned, "past the occurrences made before, it is contacted again"
    assert not planned & attempted  # no contact id attempted before is planned again
