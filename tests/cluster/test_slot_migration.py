"""A slot migrating between primaries while the store works on it. Mid-migration the node the client's map
names answers ASK for the keys already moved: reads follow it; a script whose keys are not all there yet
(a claim's first in-flight index) is refused with TRYAGAIN by Redis itself until the slot has moved, and
the store raises an error the task base gives back to the broker (retried later), having written nothing.
Once the slot is the other primary's, the old one answers MOVED: the client follows and refreshes its map,
and claims, events and leases go on (the scripts loaded where they were missing)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import redis

from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.engine import Engine
from dispatcher.state.redis_keys import wake_key
from dispatcher.state.store import Store
from tests.conftest import make_account
from workers.task_base import REDIS_OR_BROKER_DOWN

pytestmark = pytest.mark.integration


def _node(store: Store, port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True)


def test_commits_claims_and_leases_go_on_while_the_slot_moves(store: Store, engine: Engine, clock: ManualClock) -> None:
    cluster = store.redis
    due = clock.now().date() - timedelta(days=1)
    [first] = engine.upsert(make_account("MIG1", due_date=due)).queued
    slot = cluster.keyslot(wake_key(store.shard_of("MIG1")))
    source = cluster.get_node_from_key(wake_key(store.shard_of("MIG1")))
    target = next(node for node in cluster.get_primaries() if node.name != source.name)
    old, new = _node(store, source.port), _node(store, target.port)
    old_id, new_id = old.execute_command("CLUSTER", "MYID"), new.execute_command("CLUSTER", "MYID")
    new.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", old_id)
    old.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", new_id)
    keys = old.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    old.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)

    # Mid-migration: every key of the slot is on the target, the map still names the source (ASK).
    assert store.load("MIG1").record is not None
    try:
        engine.gate.claim(first)
    except REDIS_OR_BROKER_DOWN:  # TRYAGAIN: the claim's in-flight index does not exist on the target yet
        assert store.claim_status("MIG1", first.id) == "queued"  # nothing written

    for node in cluster.get_primaries():
        _node(store, node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", new_id)
    # Done: the source answers MOVED; the client follows and refreshes its map.
    engine.gate.claim(first)
    assert store.claim_status("MIG1", first.id) == "sending"
    engine.record_event("MIG1", Payment(amount=Decimal("10"), event_id="p-mig1"))
    store.wake_no_later("MIG1", clock.now())
    assert store.lease_due(clock.now(), 60, 100) == ["MIG1"]
    loaded = store.load("MIG1")
    assert loaded.record is not None and loaded.record.state.paid > 0
    assert cluster.get_node_from_key(wake_key(store.shard_of("MIG1"))).name == target.name
