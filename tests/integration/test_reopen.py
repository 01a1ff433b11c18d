"""An account that left Redis for the record is reopened from it when the bank or an event names it again:
the same account goes on (its state, its marks of attempts, its history, its claims), never a fresh one.
Whether or not the account had been moved, a change to it does the same."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from psycopg_pool import ConnectionPool

from config.settings import load_settings
from dispatcher.adhoc import request_contact
from dispatcher.claims import ClaimStatus
from dispatcher.clock import ManualClock
from dispatcher.engine import Engine, RecordRequired
from dispatcher.events import AdhocContact, Outcome, Payment
from dispatcher.models import AccountRecord, Channel, OutcomeKind
from dispatcher.record.closed import ClosedMover, RecordRestorer
from dispatcher.record.history import HistoryTrimmer
from dispatcher.record.readers import RecordReader, read_account
from dispatcher.redis_keys import account_record_key, history_key, moved_key
from dispatcher.runtime import build_engine
from dispatcher.store import Store
from dispatcher.strategy import Strategy
from tests.conftest import make_account
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration
IN_REDIS = timedelta(days=30)


def _reopening(store: Store, strategy: Strategy, clock: ManualClock, pool: ConnectionPool) -> Engine:
    """An engine wired as the composition root wires it when the deployment has a record."""
    return Engine(store, strategy, clock, on_queued=lambda contacts: None, restorer=RecordRestorer(store, pool))


@pytest.fixture
def reopening(store: Store, strategy: Strategy, clock: ManualClock, record_pool: ConnectionPool) -> Engine:
    return _reopening(store, strategy, clock, record_pool)


def _send(engine: Engine, results: list[object]) -> list[str]:
    """Claim and send what the results queued, as a worker would; a hand-off is accepted by the agency."""
    sent = []
    for result in results:
        for contact in getattr(result, "queued", ()):
            if engine.gate.claim(contact).verdict != "send":
                continue
            engine.gate.end_claim(contact, ClaimStatus.SENT)
            sent.append(contact.id)
            if contact.channel is Channel.AGENCY:
                engine.record_event(contact.account_id, Outcome(contact_id=contact.id, outcome=OutcomeKind.HANDED_OFF))
    return sent


def _work(engine: Engine, clock: ManualClock, account_ids: list[str], days: int) -> list[str]:
    """Run the pump day by day, sending whatever it queues."""
    sent = []
    for _ in range(days):
        sent += _send(engine, [engine.replan_many(account_ids)][0])
        clock.advance(timedelta(days=1))
    return sent


def _handed_off(engine: Engine, clock: ManualClock, account_id: str) -> list[str]:
    engine.upsert(make_account(account_id, due_date=date(2026, 3, 2)))
    sent: list[str] = []
    for _ in range(500):
        wake = engine.store.next_wakeup(account_id)
        if wake is None:
            break
        clock.set(max(wake, clock.now()))
        sent += _send(engine, engine.replan_many([account_id]))
    record = engine.store.load(account_id).record
    assert record is not None and record.state.status == "handed_off"
    return sent


def _move(engine: Engine, pool: ConnectionPool, clock: ManualClock, account_ids: list[str]) -> None:
    clock.advance(IN_REDIS + timedelta(days=1))
    HistoryTrimmer(engine.store, pool, engine.strategy).run_all(clock.now())
    assert ClosedMover(engine.store, pool, IN_REDIS).move(account_ids, clock.now()) == len(account_ids)
    for account_id in account_ids:
        assert not engine.store.redis.exists(account_record_key(account_id), history_key(account_id))


def test_a_handed_off_account_upserted_again_after_its_move_stays_handed_off(
    reopening: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    engine = reopening
    sent = _handed_off(engine, clock, "H1")
    assert sent[-1] == "H1/legal/handoff/0"
    reader = RecordReader(record_pool)
    clock.advance(timedelta(days=1))
    before = read_account(engine.store, reader, "H1")
    assert before is not None
    _move(engine, record_pool, clock, ["H1"])

    # The bank's routine refresh: the same data, once alone and once in a batch (an import's first try).
    again = engine.upsert(make_account("H1", due_date=date(2026, 3, 2)))
    assert again.status == "unchanged" and not again.queued
    engine._created_share = 1.0  # the next batch assumes its accounts are new and does not read them
    (batch,) = engine.upsert_many([make_account("H1", due_date=date(2026, 3, 2))])
    assert batch.status == "unchanged" and not batch.queued and not batch.created
    record = engine.store.load("H1").record
    assert record is not None and record.state.status == "handed_off"
    (closure,) = reader.closures("H1")
    assert record.trimmed == closure.record.trimmed and record.trimmed  # the marks of what the trimmer took
    clock.advance(timedelta(days=10))
    assert engine.pump() == []
    after = read_account(engine.store, reader, "H1")
    assert after is not None and not after.archived
    assert after.history == before.history
    assert after.claims == before.claims
    # A balance refresh of the agency's case: recorded, and still nothing sent.
    changed = engine.upsert(make_account("H1", due_date=date(2026, 3, 2), balance=Decimal("4200.00")))
    assert changed.status == "applied" and not changed.queued and not changed.created
    assert engine.store.load("H1").record.state.status == "handed_off"  # type: ignore[union-attr]
    assert engine.store.redis.smembers(moved_key(engine.store.shard_of("H1"))) == set()


def test_an_agents_ad_hoc_request_for_a_moved_handed_off_account_is_denied_by_its_rule_not_unknown(
    reopening: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    engine = reopening
    _handed_off(engine, clock, "H2")
    clock.advance(timedelta(days=1))
    _move(engine, record_pool, clock, ["H2"])
    answer = request_contact(engine, "H2", AdhocContact(channel=Channel.SMS, template="reminder_sms", key="k1"))
    assert answer.verdict == "deny" and answer.rule and not answer.queued
    assert engine.store.load("H2").record.state.status == "handed_off"  # type: ignore[union-attr]


def _paid_then_owing_again(engine: Engine, clock: ManualClock, pool: ConnectionPool, move: bool) -> Reopened:
    """Worked, paid in full, left alone past the retention (moved out or not), then a new delinquency."""
    engine.upsert(make_account("R1"))
    sent = _work(engine, clock, ["R1"], 8)
    engine.record_event("R1", Payment(amount=Decimal("5000.00")))
    clock.advance(IN_REDIS + timedelta(days=1))
    HistoryTrimmer(engine.store, pool, engine.strategy).run_all(clock.now())
    if move:
        assert ClosedMover(engine.store, pool, IN_REDIS).move(["R1"], clock.now()) == 1
        assert engine.store.load("R1").record is None
    owing = make_account("R1", balance=Decimal("800.00"), due_date=clock.now().date() - timedelta(days=1))
    (result,) = engine.upsert_many([owing])
    record = engine.store.load("R1").record
    assert record is not None and result.plan is not None
    later = _work(engine, clock, ["R1"], 40)
    return Reopened(result.status, result.created, record, [c.id for c in result.queued], sent, later)


@dataclass(frozen=True)
class Reopened:
    status: str
    created: bool
    record: AccountRecord
    queued: list[str]
    sent_before: list[str]
    sent_after: list[str]


def test_a_resolved_account_with_a_new_delinquency_does_the_same_moved_or_not(
    store: Store, strategy: Strategy, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    start = clock.now()
    kept = _paid_then_owing_again(_reopening(store, strategy, clock, record_pool), clock, record_pool, move=False)
    store.redis.flushall()
    with record_pool.connection() as conn:
        conn.execute("TRUNCATE audit_entries, closed_accounts, history_entries")
    again = ManualClock(start)  # the same days over again
    moved = _paid_then_owing_again(_reopening(store, strategy, again, record_pool), again, record_pool, move=True)
    assert kept.record.state.status == "active" and kept.sent_after  # what Redis does: the ladder again
    assert moved == kept
    assert set(moved.sent_before) & {*moved.queued, *moved.sent_after} == set()


def test_a_payment_for_a_moved_resolved_account_is_accepted_and_recorded(
    reopening: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    engine = reopening
    _send(engine, [engine.upsert(make_account("P1"))])
    engine.record_event("P1", Payment(amount=Decimal("5000.00")))
    _move(engine, record_pool, clock, ["P1"])
    result = engine.record_event("P1", Payment(amount=Decimal("20.00"), event_id="late-1"))
    assert result.status == "applied" and not result.queued
    loaded = engine.store.load("P1")
    assert loaded.record is not None and loaded.record.state.status == "resolved"
    assert loaded.history[-1].detail == {"amount": "20.00"}
    whole = read_account(engine.store, RecordReader(record_pool), "P1")
    assert whole is not None and not whole.archived
    assert [entry.event for entry in whole.history if entry.kind == "event"] == [
        "account_created", "payment", "payment"
    ]  # fmt: skip


def test_an_event_applied_before_the_move_and_resent_after_it_is_still_a_repeat(
    reopening: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    engine = reopening
    _send(engine, [engine.upsert(make_account("E1"))])
    paid = Payment(amount=Decimal("5000.00"), event_id="bank-991", reference="TX-991")
    assert engine.record_event("E1", paid).status == "applied"
    _move(engine, record_pool, clock, ["E1"])
    assert engine.store.load("E1").record is None  # it left Redis, event ids and all
    assert engine.record_event("E1", paid).status == "duplicate"  # the bank resent it after the move
    history = engine.store.load("E1").history
    assert [entry.event for entry in history if entry.kind == "event"].count("payment") == 1


def test_without_a_record_a_moved_account_is_refused_not_started_fresh(
    reopening: Engine, engine: Engine, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    reopening.upsert(make_account("N1", balance=Decimal("0")))
    _move(reopening, record_pool, clock, ["N1"])
    with pytest.raises(RecordRequired, match="DISPATCHER_DATABASE_URL"):
        engine.upsert(make_account("N1"))
    with pytest.raises(RecordRequired, match="DISPATCHER_DATABASE_URL"):
        engine.record_event("N1", Payment(amount=Decimal("1.00")))
    assert engine.store.load("N1").record is None
    fresh = engine.upsert(make_account("N2"))  # an account never seen still starts fresh
    assert fresh.created and fresh.record is not None and fresh.record.state.status == "active"


def test_the_composition_root_reopens_from_the_deployments_record_or_refuses_without_one(
    redis_url: str, database_url: str, record_pool: ConnectionPool, clock: ManualClock, tmp_path: Path
) -> None:
    settings = load_settings(redis_url=redis_url, database_url=database_url, state_dir=tmp_path, _env_file=None)
    runtime = build_engine(settings, redis_url, clock)
    _send(runtime.engine, [runtime.engine.upsert(make_account("C1"))])
    runtime.engine.record_event("C1", Payment(amount=Decimal("5000.00")))
    _move(runtime.engine, record_pool, clock, ["C1"])
    none = settings.model_copy(update={"database_url": None, "state_dir": tmp_path / "no-record"})
    with pytest.raises(RecordRequired, match="DISPATCHER_DATABASE_URL"):
        build_engine(none, redis_url, clock).engine.upsert(make_account("C1", balance=Decimal("0")))
    result = runtime.engine.upsert(make_account("C1", balance=Decimal("0")))
    assert (result.status, result.created) == ("applied", False)
    runtime.store.redis.close()
