"""The archiver and a lagging callback relay: the archiver copies everything to the record but trims no audit
stream past the slowest enabled endpoint's cursor, so the relay, however far behind, finds every entry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from psycopg_pool import ConnectionPool

from config.settings import load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Dispute, Event, OptOut, Payment
from dispatcher.core.models import Channel
from dispatcher.engine import Engine
from dispatcher.record.archive import ArchivedStream, AuditArchiver
from dispatcher.state.store import Store
from dispatcher.webhook_relay import Relay, stream_events
from dispatcher.webhook_sender import CallbackSender, callbacks_for
from tests.callback_fixtures import drain
from tests.callback_receiver import Receiver
from tests.conftest import make_account
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = pytest.mark.integration
ACCOUNTS = [f"AR{i}" for i in range(8)]


@pytest.fixture
def callbacks(store: Store, clock: ManualClock) -> Iterator[tuple[Relay, CallbackSender]]:
    relay, sender = callbacks_for(store, clock, load_settings(webhook_allowed_hosts="127.0.0.1"))
    yield relay, sender
    sender.close()


def _length(store: Store) -> int:
    return sum(store.redis.xlen(store.audit_key(shard)) for shard in range(store.shards))


def _events(store: Store) -> list[str]:
    return [e.id for s in range(store.shards) for _, e in stream_events(s, store.redis.xrange(store.audit_key(s)))]


@contextmanager
def _receiving(relay: Relay) -> Iterator[Receiver]:
    """A callback receiver registered as an endpoint, holding its signing secret; stopped afterwards."""
    receiver = Receiver().start()
    try:
        _, secret = relay.registry.create(receiver.url)
        receiver.secrets.append(secret)
        yield receiver
    finally:
        receiver.stop()


def _record_on_each_account(engine: Engine, events: Callable[[], list[Event]]) -> None:
    """ACCOUNTS upserted, then `events()` recorded on each in turn (new ones per account: an event id counts once)."""
    engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
    for account_id in ACCOUNTS:
        for event in events():
            engine.record_event(account_id, event)


def test_the_archiver_never_trims_past_the_slowest_relay_and_the_relay_then_delivers_everything(
    engine: Engine,
    record_pool: ConnectionPool,
    callbacks: tuple[Relay, CallbackSender],  # noqa: F811
) -> None:
    relay, sender = callbacks
    with _receiving(relay) as receiver:
        _record_on_each_account(
            engine, lambda: [Payment(amount=Decimal("10")), Dispute(), OptOut(channel=Channel.EMAIL)]
        )
        expected, length = _events(engine.store), _length(engine.store)
        archived = AuditArchiver(engine.store, record_pool, batch=5).run()  # the relay has read nothing yet
        assert archived.rows > 0 and archived.trimmed == 0 and _length(engine.store) == length
        assert AuditArchiver(engine.store, record_pool, batch=5).run().rows == 0  # nothing copied twice

        drain(relay, sender, rounds=20)
        assert sorted(receiver.ids()) == sorted(expected) and receiver.unverified == 0
        AuditArchiver(engine.store, record_pool, batch=5).run()  # the relay has read it all: trimmed now
        assert _length(engine.store) == 0


def test_without_endpoints_the_archiver_trims_as_before(engine: Engine, record_pool: ConnectionPool) -> None:  # noqa: F811
    engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
    engine.record_event("AR1", Payment(amount=Decimal("10")))
    AuditArchiver(engine.store, record_pool, batch=5).run()
    assert _length(engine.store) == 0


def test_a_relay_the_stream_was_trimmed_past_reads_the_record_then_the_stream(
    engine: Engine,
    store: Store,
    clock: ManualClock,
    record_pool: ConnectionPool,  # noqa: F811
) -> None:
    relay, sender = callbacks_for(
        store, clock, load_settings(webhook_allowed_hosts="127.0.0.1"), archive=ArchivedStream(record_pool)
    )
    try:
        with _receiving(relay) as receiver:
            _record_on_each_account(engine, lambda: [Payment(amount=Decimal("10")), Dispute()])
            archived = _events(store)
            AuditArchiver(store, record_pool, batch=5).run()
            # an operator's trim past the relay (or a stream lost without its cursors)
            for shard in range(store.shards):
                store.redis.xtrim(store.audit_key(shard), maxlen=0)
            for account_id in ACCOUNTS[:3]:  # and the tail, in Redis only
                engine.record_event(account_id, OptOut(channel=Channel.SMS))
            expected = archived + _events(store)
            drain(relay, sender, rounds=30)
            assert sorted(receiver.ids()) == sorted(expected) and receiver.unverified == 0
            order = {event_id: place for place, event_id in enumerate(expected)}
            for account_id, ids in receiver.by_account().items():  # in order per account
                assert ids == sorted(ids, key=order.__getitem__), account_id
    finally:
        sender.close()
