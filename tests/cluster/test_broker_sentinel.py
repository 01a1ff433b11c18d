"""The broker behind Sentinel (one primary, one replica, three sentinels), SENTINEL FAILOVER in the middle of a
run through a real Celery worker: the worker follows the sentinels to the new primary, and what the switch
lost is offered again by the stranded sweep: every contact reaches the provider, none twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from channels.sandbox import Sandboxes
from config.settings import Settings, load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.state.redis_server import SentinelSet
from tests.conftest import make_account
from workers.housekeeping import offer_stranded
from workers.process_runtime import WorkerRuntime
from workers.queueing import dispatch
from workers.reconcile import reconcile

pytestmark = pytest.mark.integration
CONTACTS = 1000
PASSWORD = "sentinels-own-secret"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with SentinelSet(tmp_path_factory.mktemp("sentinels"), master_name="broker", password=PASSWORD) as running:
        yield running


@pytest.fixture
def worker_settings(
    redis_url: str, sentinels: SentinelSet, worker_sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    environment = {
        "DISPATCHER_REDIS_URL": redis_url, "DISPATCHER_BROKER_URL": sentinels.url,
        "DISPATCHER_BROKER_MASTER_NAME": "broker", "DISPATCHER_BROKER_SENTINEL_PASSWORD": PASSWORD,
    }  # fmt: skip
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings(rate_limits={"sms": 2000.0}, send_retries=3, **worker_sandboxes.settings_overrides())


def _phone(account_id: str) -> str:
    """One number per account, never one of the sandbox's magic endings (0001 to 0006)."""
    return f"+86135{int(account_id[2:]):07d}9"


def _texts(sandboxes: Sandboxes, numbers: set[str]) -> Counter[str]:
    return Counter(r["form"]["To"] for r in sandboxes.twilio.state.messages() if r["form"]["To"] in numbers)


def _until_idle(runtime: WorkerRuntime, sandboxes: Sandboxes, numbers: set[str], deadline: float) -> None:
    """Until nothing waits on the broker's queues and no text arrived for a second. Not `unacked`: a message
    the worker held when the master switched stays there until the visibility timeout (its ack went to the
    demoted master); its contact, if it never left, is the stranded sweep's."""
    seen = -1
    while time.monotonic() < deadline:
        count = sum(_texts(sandboxes, numbers).values())
        try:
            broker = runtime.engine.store.broker
            waiting = sum(broker.llen(q) for q in ("sms", "plan"))
        except Exception:  # the broker between primaries
            waiting = -1
        if count == seen and waiting == 0:
            return
        seen = count
        time.sleep(1.0)


def test_the_broker_failed_over_by_sentinel_mid_run_loses_no_contact(
    runtime: WorkerRuntime, celery_worker: object, fresh_producers: None, worker_sandboxes: Sandboxes,
    clock: ManualClock,
    sentinels: SentinelSet,
) -> None:  # fmt: skip
    first = sentinels.master_port()
    due = clock.now().date() - timedelta(days=1)
    ids = [f"SN{i:05d}" for i in range(CONTACTS)]
    numbers = {_phone(account_id) for account_id in ids}
    for start in range(0, CONTACTS, 250):
        batch = ids[start : start + 250]
        runtime.engine.upsert_many([make_account(a, phone=_phone(a), due_date=due) for a in batch])
        if start == CONTACTS // 2:
            sentinels.failover()  # mid-run: half the dispatches made, the worker sending
    fault, deadline = time.monotonic(), time.monotonic() + 60
    while sentinels.master_port() == first:
        assert time.monotonic() < deadline, "the sentinels did not fail over"
        time.sleep(0.1)
    failed_over_at = sum(_texts(worker_sandboxes, numbers).values())

    deadline, rounds = time.monotonic() + 240, 0
    while True:
        _until_idle(runtime, worker_sandboxes, numbers, deadline)
        texts = _texts(worker_sandboxes, numbers)
        if len(texts) == CONTACTS:
            break
        assert time.monotonic() < deadline, f"{CONTACTS - len(texts)} contacts never sent"
        rounds += 1
        later = time.time() + 3600  # the worker idle: no task can still be sending, no message still waiting
        reconcile(runtime, now=later)
        offer_stranded(runtime, now=later)
        dispatch(runtime.engine.pump(limit=5000), batch=50)
    texts = _texts(worker_sandboxes, numbers)
    assert [number for number, count in texts.items() if count > 1] == []
    assert len(texts) == CONTACTS
    assert sentinels.master_port() != first
    held = runtime.engine.store.broker.hlen("unacked")
    print(
        f"\nbroker failed over with {failed_over_at} of {CONTACTS} texts sent; all sent "
        f"{time.monotonic() - fault:.0f} s after the failover, {rounds} housekeeping rounds; {held} messages "
        "left in unacked (redelivered after the visibility timeout, then skipped by the claim)"
    )
