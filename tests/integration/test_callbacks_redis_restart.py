"""Outcome callbacks across a Redis SHUTDOWN and restart (AOF on, as deployed): the relay's cursors, the queues,
the retries and the breaker come back with the data, so nothing is lost or queued twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from config.settings import DEFAULT_STRATEGY, load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import OptOut, Payment
from dispatcher.core.models import Channel
from dispatcher.core.strategy import load_strategy
from dispatcher.engine import Engine
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from dispatcher.webhook_sender import callbacks_for
from tests.callback_fixtures import audit_event_ids, drain
from tests.callback_receiver import Receiver
from tests.conftest import make_account

pytestmark = pytest.mark.integration
ACCOUNTS = [f"RR{i}" for i in range(6)]


def test_cursors_queues_and_retries_survive_a_redis_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    receiver = Receiver().start()
    clock = ManualClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    try:
        store = Store(redis.Redis.from_url(server.url, decode_responses=True), shards=16)
        engine = Engine(store, load_strategy(Path(DEFAULT_STRATEGY)), clock, on_queued=lambda contacts: None)
        relay, sender = callbacks_for(store, clock, load_settings(webhook_allowed_hosts="127.0.0.1", _env_file=None))
        _, secret = relay.registry.create(receiver.url)
        receiver.secrets.append(secret)
        engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
        for account_id in ACCOUNTS:
            engine.record_event(account_id, Payment(amount=Decimal("10")))
        relay.run()
        sender.deliver_due()  # the first events delivered
        for account_id in ACCOUNTS:
            engine.record_event(account_id, OptOut(channel=Channel.SMS))
        receiver.status = 503
        relay.run()
        sender.deliver_due()  # queued, failed once, waiting on the schedule
        delivered_before = len(receiver.received)
        assert delivered_before == len(ACCOUNTS)

        server.stop()  # SHUTDOWN: the AOF is flushed
        server = EmbeddedRedis(server.data_dir, port=server.port).start()  # back with its data

        for account_id in ACCOUNTS:
            engine.record_event(account_id, Payment(amount=Decimal("11")))
        receiver.status = 204
        clock.advance(timedelta(minutes=6))  # past the first retry's wait
        drain(relay, sender, rounds=20)
        assert receiver.by_account() == audit_event_ids(store)  # nothing lost, in order per account
        assert len(receiver.ids()) == len(set(receiver.ids()))  # nothing queued twice: the cursors came back
        sender.close()
    finally:
        receiver.stop()
        server.stop()
