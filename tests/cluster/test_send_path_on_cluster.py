"""The whole plan → claim → send path on a real three-primary Redis Cluster: the single-Redis tests of the
send path imported as they are, their `store`, `engine` and `worker_settings` the cluster's
(tests/cluster/conftest.py), and the cluster's own checks: the keys of one account and its shard share a slot,
the shards spread over every primary, a claim waits for a replica."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis

from dispatcher.core.clock import ManualClock
from dispatcher.state.redis_keys import account_keys, moved_key, queued_key, wake_key
from dispatcher.state.store import Store
from tests.cluster.conftest import CLUSTER_SHARDS
from tests.conftest import make_account
from tests.integration.test_workers_send import (  # noqa: F401  (collected here, on the cluster)
    test_a_letter_and_an_agency_hand_off_reach_their_sandboxes,
    test_a_payment_before_the_send_means_the_queued_contact_is_never_sent,
    test_a_reminder_sms_goes_through_the_twilio_sdk_to_the_sandbox_once,
    test_an_email_with_a_chinese_subject_reaches_the_smtp_sandbox,
    test_the_same_send_delivered_three_times_sends_once,
)
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration


def test_an_accounts_keys_and_its_shards_share_one_slot_and_the_shards_spread_over_every_primary(
    store: Store,
) -> None:
    cluster = store.redis
    for account_id in ("A1", "ACC0000001", "王小明"):
        shard = store.shard_of(account_id)
        slots = {cluster.keyslot(key) for key in (*account_keys(account_id), wake_key(shard), queued_key(shard))}
        assert len(slots | {cluster.keyslot(moved_key(shard))}) == 1
    owners = {cluster.get_node_from_key(wake_key(shard)).name for shard in range(CLUSTER_SHARDS)}
    assert len(owners) == 3


def test_a_planned_account_is_stored_on_the_cluster_and_its_claim_waits_for_a_replica(
    runtime: WorkerRuntime, clock: ManualClock
) -> None:
    store = runtime.engine.store
    assert store.ledger.replicas == 1  # the default on a cluster
    due = clock.now().date() - timedelta(days=1)
    queued = runtime.engine.upsert(make_account("CL1", due_date=due)).queued
    contact = queued[0]
    runtime.engine.gate.claim(contact)
    assert store.claim_status("CL1", contact.id) == "sending"
    assert store.ledger.unreplicated == 0
    # The replica of the primary that holds the claim has it already.
    claims = account_keys("CL1")[2]
    assert "sending" in [_replica_read(node.port, claims, contact.id) for node in store.redis.get_replicas()]


def _replica_read(port: int, key: str, field: str) -> str | None:
    client = redis.Redis(port=port, decode_responses=True)
    client.execute_command("READONLY")
    try:
        return client.hget(key, field)
    except redis.exceptions.MovedError:  # a replica of another primary
        return None
