"""What one contact costs the cluster, measured on the real one (the figures docs/scaling.md builds on; run with
-s to see them): Redis commands per contact on the send path (INFO commandstats summed over the primaries,
those inside scripts included) and the primaries' CPU per contact, and what the claim's WAIT for a replica
adds to a claim."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis

from dispatcher.core.clock import ManualClock
from dispatcher.state.redis_server import LocalCluster
from tests.conftest import make_account
from workers.limiter import Limit, RateLimiter
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration
CONTACTS = 300


def _counters(cluster: LocalCluster) -> tuple[int, float]:
    calls, cpu = 0, 0.0
    for node in cluster.primary_nodes():
        client = redis.Redis(port=node.port)
        calls += sum(int(stats["calls"]) for name, stats in client.info("commandstats").items()
                     if name not in ("cmdstat_info", "cmdstat_cluster", "cmdstat_ping"))  # fmt: skip
        usage = client.info("cpu")
        cpu += usage["used_cpu_user"] + usage["used_cpu_sys"]
    return calls, cpu


def _queued(runtime: WorkerRuntime, clock: ManualClock, prefix: str, count: int) -> list:
    runtime.engine.on_queued = lambda contacts: None
    due = clock.now().date() - timedelta(days=1)
    accounts = [
        make_account(f"{prefix}{i}", phone=f"+86134{i:07d}9", due_date=due)  # no sandbox magic ending
        for i in range(count)
    ]
    return [c for result in runtime.engine.upsert_many(accounts) for c in result.queued]


def test_commands_and_redis_cpu_per_contact_on_the_send_path(
    runtime: WorkerRuntime, clock: ManualClock, local_cluster: LocalCluster
) -> None:
    runtime.deliverer.limiter = RateLimiter(runtime.engine.store.redis, {"sms": Limit(5000.0)})  # not the subject
    contacts = _queued(runtime, clock, "CAP", CONTACTS)
    calls, cpu = _counters(local_cluster)
    for start in range(0, len(contacts), 50):  # as the send tasks take them: batches of 50
        results = runtime.deliverer.deliver_many(contacts[start : start + 50])
        assert {r.result for r in results} == {"sent"}
    after_calls, after_cpu = _counters(local_cluster)
    per_contact = (after_calls - calls) / CONTACTS
    print(f"\nsend path: {per_contact:.1f} Redis commands per contact (primaries, scripts' own included), "
          f"{(after_cpu - cpu) / CONTACTS * 1e6:.0f} us of the primaries' CPU per contact")  # fmt: skip
    assert per_contact < 60


def test_what_the_claims_wait_for_a_replica_costs(
    runtime: WorkerRuntime, clock: ManualClock, local_cluster: LocalCluster
) -> None:
    ledger = runtime.engine.store.ledger
    timings = {}
    for replicas in (0, 1):
        ledger.replicas = replicas
        contacts = _queued(runtime, clock, f"W{replicas}", 200)
        began = time.perf_counter()
        for contact in contacts:
            runtime.engine.gate.claim(contact)
        timings[replicas] = (time.perf_counter() - began) / len(contacts)
    assert ledger.unreplicated == 0
    print(f"\nclaim (last look + claim script): {timings[0] * 1e3:.2f} ms without WAIT, {timings[1] * 1e3:.2f} ms "
          f"with WAIT 1: +{(timings[1] - timings[0]) * 1e3:.2f} ms per claim")  # fmt: skip
