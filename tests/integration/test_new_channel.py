"""A channel that exists only in this test, end to end on the real Redis, through the workers' own wiring and
the real deliverer: planned and sent for an account that consents to it; refused (no contact, the rule in the
audit) for an account stored before it existed, at planning and at the last look. Stored accounts read back
unchanged, from Redis and from the record, whatever channels are registered since."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg_pool import ConnectionPool
from rich.console import Console

from channels import REGISTRY, ChannelSpec
from channels.base import OutboundMessage, Receipt, pass_request_gate
from channels.sandbox import Sandboxes
from config.settings import DEFAULT_STRATEGY, Settings, load_settings
from dispatcher.commands.reports import SendAudit, simulation_tables
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.core.models import DEFAULT_CONSENT, Contact
from dispatcher.core.strategy import Strategy, parse_strategy
from dispatcher.engine import Engine
from dispatcher.record.closed import ClosedMover, RecordRestorer
from dispatcher.record.history import HistoryTrimmer
from dispatcher.record.readers import RecordReader, read_account
from dispatcher.simulate import OutcomeModel, Simulation
from dispatcher.state.redis_keys import account_record_key
from dispatcher.state.store import Store
from tests.conftest import make_account
from tests.fake_channel import PIGEON, registered_channel, strategy_with_pigeon
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401
from workers.process_runtime import WorkerRuntime, build_runtime
from workers.queueing import dispatch

pytestmark = pytest.mark.integration


class _Coop:
    """The pigeon's adapter: keeps what it was asked to send."""

    name = PIGEON
    sent: list[OutboundMessage] = []

    def __init__(self, settings: object, **options: object) -> None:
        pass

    def send(self, message: OutboundMessage) -> Receipt:
        pass_request_gate()
        self.sent.append(message)
        return Receipt(provider_id=f"coop-{len(self.sent)}", status="sent")

    def close(self) -> None:
        pass


def _stored(store: Store, account_id: str) -> dict[str, Any]:
    raw = store.redis.hget(account_record_key(account_id), "d")
    assert raw is not None
    document: dict[str, Any] = json.loads(raw)
    return document


def _pigeon_runtime(
    tmp_path: Path, redis_url: str, sandboxes: Sandboxes, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> WorkerRuntime:
    """The workers' own wiring with a strategy that has a pigeon step and the pigeon's adapter registered."""
    path = tmp_path / "strategy.yaml"
    path.write_text(yaml.safe_dump(strategy_with_pigeon(), allow_unicode=True), encoding="utf-8")
    monkeypatch.setitem(REGISTRY, PIGEON, ChannelSpec(name=PIGEON, adapter=_Coop))
    monkeypatch.setattr(_Coop, "sent", [])
    settings = load_settings(redis_url=redis_url, strategy_path=path, **sandboxes.settings_overrides())
    runtime = build_runtime(settings, dispatch, clock=clock, retry_wait=0.01)
    runtime.engine.on_queued = lambda contacts: None  # the test sends them itself
    assert runtime.engine.active is not None
    runtime.engine.active.replace()  # a new strategy is published deliberately (`dispatcher experiment publish`)
    return runtime


def test_a_new_channel_is_sent_with_consent_and_refused_for_an_account_stored_before_it_existed(
    tmp_path: Path,
    redis_url: str,
    worker_settings: Settings,
    worker_sandboxes: Sandboxes,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    due = clock.now().date() - timedelta(days=1)
    before = build_runtime(worker_settings, dispatch, clock=clock)  # the deployment before the pigeon
    before.engine.on_queued = lambda contacts: None
    before.engine.upsert(make_account("OLD", phone="+8613800138001", due_date=due))
    stored_before = _stored(before.engine.store, "OLD")["account"]
    # Stored without a consent list (the store leaves defaults out), so it is read back with the default:
    # which must stay the channels it meant when the account was stored, never every channel registered now.
    assert "consent" not in stored_before

    with registered_channel():
        runtime = _pigeon_runtime(tmp_path, redis_url, worker_sandboxes, clock, monkeypatch)
        store = runtime.engine.store

        # An account that names the pigeon in its consent is planned on it and sent through its adapter.
        account = make_account("NEW", phone="+8613800138002", consent=["sms", PIGEON], due_date=due)
        queued = runtime.engine.upsert(account).queued
        [contact] = [c for c in queued if c.channel == PIGEON]
        assert [d.result for d in runtime.deliverer.deliver_many([contact])] == ["sent"]
        assert [(m.contact_id, m.to) for m in _Coop.sent] == [(contact.id, "+8613800138002")]
        assert store.claim_status("NEW", contact.id) == "sent"

        # The account stored before: planned again under the new strategy, the pigeon is denied by consent.
        replanned = runtime.engine.replan_many(["OLD"])
        assert not [c for r in replanned for c in r.queued if c.channel == PIGEON]
        decisions = [e for e in store.audit("OLD") if e.get("channel") == PIGEON]
        assert decisions and {(e.get("verdict"), e.get("rule")) for e in decisions} == {("deny", "no_consent:pigeon")}
        # And at the last look: a pigeon contact for it handed to the deliverer is denied, nothing sent.
        forged = Contact(f"OLD/{contact.stage}/{contact.step}/0", "OLD", contact.channel, contact.template,
                         contact.stage, contact.step, contact.due_at)  # fmt: skip
        [refused] = runtime.deliverer.deliver_many([forged])
        assert (refused.result, refused.detail) == ("denied", "no_consent:pigeon")
        assert len(_Coop.sent) == 1 and store.claim_status("OLD", forged.id) is None

        # Its stored description is what it was, and reads back as it did: no channel added to its consent.
        assert _stored(store, "OLD")["account"] == stored_before
        loaded = store.load("OLD").record
        assert loaded is not None and loaded.account.consent == DEFAULT_CONSENT


def _reopening(store: Store, strategy: Strategy, clock: ManualClock, pool: ConnectionPool) -> Engine:
    return Engine(store, strategy, clock, on_queued=lambda contacts: None, restorer=RecordRestorer(store, pool))


def test_stored_accounts_read_back_unchanged_from_redis_and_the_record_after_a_channel_is_added(
    store: Store, strategy: Strategy, clock: ManualClock, record_pool: ConnectionPool
) -> None:
    engine = _reopening(store, strategy, clock, record_pool)
    accounts = [make_account("D1"), make_account("E1", consent=["email", "letter"]), make_account("Z1", consent=[])]
    for account in accounts:
        engine.upsert(account)
    raw = {a.id: store.redis.hget(account_record_key(a.id), "d") for a in accounts}
    engine.record_event("Z1", Payment(amount=Decimal("5000.00")))  # resolved: it will move to the record
    closed = store.load("Z1").record
    assert closed is not None

    with registered_channel():
        for account in accounts[:2]:
            loaded = store.load(account.id).record
            assert loaded is not None and loaded.account == account
            assert store.redis.hget(account_record_key(account.id), "d") == raw[account.id]  # read, not rewritten
            assert PIGEON not in loaded.account.consent
        clock.advance(timedelta(days=31))
        HistoryTrimmer(store, record_pool, strategy).run_all(clock.now())
        assert ClosedMover(store, record_pool, timedelta(days=30)).move(["Z1"], clock.now()) == 1
        assert store.load("Z1").record is None
        view = read_account(store, RecordReader(record_pool), "Z1")
        assert view is not None and view.record.account == closed.account == accounts[2]
        assert view.record.account.consent == frozenset()


def test_the_strategy_check_command_refuses_a_channel_without_caps_and_names_it(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8"))
    del data["compliance"]["caps"]["letter"]  # the shipped ladder sends letters: they need an entry
    path = tmp_path / "strategy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "workers.cli", "strategy", "check", str(path)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert (
        "  compliance.caps: channel 'letter' (stages.3.steps.2.outcomes.bounced.fallback.channel) has no entry: "
        "give a list of {max, days}, or [] for none"
    ) in result.stderr.splitlines(), result.stderr


def test_the_simulation_plans_sends_and_reports_the_new_channel(store: Store, clock: ManualClock) -> None:
    with registered_channel():
        strategy = parse_strategy(yaml.safe_dump(strategy_with_pigeon(), allow_unicode=True))
        engine = Engine(store, strategy, clock, on_queued=lambda contacts: None)
        due = clock.now().date() - timedelta(days=1)
        accounts = [make_account("S1", consent=["sms", PIGEON], due_date=due), make_account("S2", due_date=due)]
        report = Simulation(engine, clock, OutcomeModel(), seed=7).run(accounts, days=3)
        assert report.sends[(PIGEON, "sent")] == 1  # S1's one pigeon (cadence [0]); S2 has not consented
        assert report.denials["no_consent"] >= 1
        console = Console(width=200, record=True)
        for table in simulation_tables(report, strategy, SendAudit()):
            console.print(table)
        rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
        assert [PIGEON, "sent", "1"] in rows
