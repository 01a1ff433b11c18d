"""A primary of the state's cluster SIGKILLed in the middle of a 3,000-contact run through a real Celery worker
and the Twilio sandbox: its replica takes over, the worker's tasks that met the gap go back on the broker,
and once housekeeping has run (claims in doubt resolved from the sandbox's records, lost dispatches offered
again) every contact has reached the provider exactly once: 0 duplicates, 0 lost (docs/reliability.md)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis

from channels.sandbox import Sandboxes
from config.settings import Settings, load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.state.redis_server import LocalCluster
from tests.cluster.conftest import cluster_environment
from tests.conftest import make_account
from workers.housekeeping import offer_stranded
from workers.process_runtime import WorkerRuntime
from workers.queueing import dispatch
from workers.reconcile import reconcile

pytestmark = pytest.mark.integration
CONTACTS = int(os.environ.get("CLUSTER_FAILOVER_CONTACTS", "3000"))


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster of this module's own: a primary of it is killed for good."""
    with LocalCluster(tmp_path_factory.mktemp("failover-cluster")) as cluster:
        yield cluster


@pytest.fixture
def worker_settings(
    own_cluster: LocalCluster, redis_url: str, worker_sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    cluster_environment(monkeypatch, own_cluster.url, redis_url, 64)
    yield load_settings(
        redis_url=own_cluster.url, redis_cluster=True, broker_url=redis_url, schedule_shards=64,
        rate_limits={"sms": 2000.0}, send_retries=3, **worker_sandboxes.settings_overrides(),
    )  # fmt: skip
    from dispatcher.state.redis_keys import use_shard_layout

    use_shard_layout(None)


def _until_idle(broker: object, sandboxes: Sandboxes, numbers: set[str], deadline: float) -> None:
    """Until nothing waits on the broker, nothing is unacked and no text arrived for a second."""
    seen = -1
    while time.monotonic() < deadline:
        count = sum(_texts(sandboxes, numbers).values())
        queued = sum(broker.llen(q) for q in ("sms", "plan")) + broker.hlen("unacked")  # type: ignore[attr-defined]
        if count == seen and queued == 0:
            return
        seen = count
        time.sleep(1.0)


def _phone(account_id: str) -> str:
    """One number per account (FO00012 -> +8613700000129): never one of the sandbox's magic endings (0001 to
    0006 mean undelivered, invalid, opted out)."""
    return f"+861{37 - (account_id[:2] == 'CF')}{int(account_id[2:]):07d}9"


def _texts(sandboxes: Sandboxes, numbers: set[str]) -> Counter[str]:
    return Counter(r["form"]["To"] for r in sandboxes.twilio.state.messages() if r["form"]["To"] in numbers)


def test_a_primary_killed_mid_run_loses_and_duplicates_no_contact(
    runtime: WorkerRuntime, celery_worker: object, fresh_producers: None, worker_sandboxes: Sandboxes,
    clock: ManualClock,
    own_cluster: LocalCluster,
) -> None:  # fmt: skip
    due = clock.now().date() - timedelta(days=1)
    ids = [f"FO{i:05d}" for i in range(CONTACTS)]
    numbers = {_phone(account_id) for account_id in ids}
    assert len(numbers) == CONTACTS
    for start in range(0, CONTACTS, 500):  # planned and dispatched to the worker as an import does
        batch = ids[start : start + 500]
        runtime.engine.upsert_many([make_account(a, phone=_phone(a), due_date=due) for a in batch])
    deadline = time.monotonic() + 120
    while sum(_texts(worker_sandboxes, numbers).values()) < CONTACTS // 3:
        assert time.monotonic() < deadline, "the run did not get going"
        time.sleep(0.05)
    victim = own_cluster.primary_nodes()[0]
    victim.kill()  # SIGKILL, mid-run
    fault = time.monotonic()
    killed_at = sum(_texts(worker_sandboxes, numbers).values())
    own_cluster.wait_healthy(timeout=60)  # its replica promoted

    store = runtime.engine.store
    deadline, rounds = time.monotonic() + 300, 0
    while True:
        _until_idle(store.broker, worker_sandboxes, numbers, deadline)
        texts = _texts(worker_sandboxes, numbers)
        if len(texts) == CONTACTS:
            break
        assert time.monotonic() < deadline, f"{CONTACTS - len(texts)} contacts never sent"
        # The worker idle, housekeeping as beat would run it with the clock past every bound (no task can
        # still be sending): claims in doubt resolved from the sandbox's records, queued contacts whose
        # dispatch was lost offered again, and the due accounts planned and dispatched.
        later, rounds = time.time() + 3600, rounds + 1
        reconcile(runtime, now=later)
        offer_stranded(runtime, now=later)
        dispatch(runtime.engine.pump(limit=5000), batch=50)
    texts = _texts(worker_sandboxes, numbers)
    assert [number for number, count in texts.items() if count > 1] == []  # 0 duplicates
    assert len(texts) == CONTACTS  # 0 lost
    assert 0 < killed_at < CONTACTS
    statuses = Counter(store.claim_status(a, f"{a}/reminder/sms/0") for a in ids[:: max(1, CONTACTS // 300)])
    assert set(statuses) <= {"sent", "sending"}, statuses
    print(
        f"\nprimary killed after {killed_at} of {CONTACTS} texts; all sent {time.monotonic() - fault:.0f} s after "
        f"the kill, {rounds} housekeeping rounds; claims not waited for by a replica: {store.ledger.unreplicated}"
    )


def test_a_cluster_failover_mid_run_loses_and_duplicates_no_contact(
    runtime: WorkerRuntime, celery_worker: object, fresh_producers: None, worker_sandboxes: Sandboxes,
    clock: ManualClock, own_cluster: LocalCluster,
) -> None:  # fmt: skip
    """CLUSTER FAILOVER (the operator's planned switch) on a replica, mid-run: its primary steps down."""
    contacts = CONTACTS // 3
    due = clock.now().date() - timedelta(days=1)
    ids = [f"CF{i:05d}" for i in range(contacts)]
    numbers = {_phone(account_id) for account_id in ids}
    for start in range(0, contacts, 250):
        batch = ids[start : start + 250]
        runtime.engine.upsert_many([make_account(a, phone=_phone(a), due_date=due) for a in batch])
        if start == contacts // 2:  # half the accounts planned and dispatched, the worker sending
            replica = next(node for node in own_cluster.running_nodes() if node not in own_cluster.primary_nodes())
            redis.Redis(port=replica.port).execute_command("CLUSTER", "FAILOVER")
            fault, before = time.monotonic(), sum(_texts(worker_sandboxes, numbers).values())
    deadline = time.monotonic() + 60
    while replica not in own_cluster.primary_nodes():
        assert time.monotonic() < deadline, "the replica was not promoted"
        time.sleep(0.1)
    deadline = time.monotonic() + 240
    while True:
        _until_idle(runtime.engine.store.broker, worker_sandboxes, numbers, deadline)
        texts = _texts(worker_sandboxes, numbers)
        if len(texts) == contacts:
            break
        assert time.monotonic() < deadline, _missing(runtime, ids, texts)
        later = time.time() + 3600
        reconcile(runtime, now=later)
        offer_stranded(runtime, now=later)
        dispatch(runtime.engine.pump(limit=5000), batch=50)
    texts = _texts(worker_sandboxes, numbers)
    assert [number for number, count in texts.items() if count > 1] == []
    assert len(texts) == contacts
    print(f"\nCLUSTER FAILOVER after {before} of {contacts} texts; all sent {time.monotonic() - fault:.0f} s after it")


def _missing(runtime: WorkerRuntime, ids: list[str], texts: Counter[str]) -> str:
    """What the store says of the contacts never sent (a failing run's evidence)."""
    store = runtime.engine.store
    gone = [a for a in ids if _phone(a) not in texts]
    return "never sent: " + "; ".join(
        f"{a}: claims {store.claims(a)}, wake {store.next_wakeup(a)}, history "
        f"{[(e.kind, e.event or e.outcome) for e in store.load(a).history]}"
        for a in gone[:5]
    )
