"""The send path's promises when things fail: nothing stranded, only evidence makes `sent`, the rate limit
holds at the provider, the audit stays proportional. Real Redis, real sandboxes, real adapters."""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from datetime import timedelta

import pytest

from channels.base import RateLimited, request_gate
from channels.sandbox import Sandboxes
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Contact
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.housekeeping import offer_stranded
from workers.limiter import Limit, RateLimiter
from workers.process_runtime import WorkerRuntime
from workers.queueing import DISPATCHED_AT, contact_payload
from workers.reconcile import reconcile
from workers.tasks import send

pytestmark = pytest.mark.integration


def _queued(runtime: WorkerRuntime, clock: ManualClock, prefix: str, count: int) -> list[Contact]:
    """Queued reminder SMS whose dispatch is lost: the runtime's hand-off drops them on the floor."""
    runtime.engine.on_queued = lambda contacts: None
    due = clock.now().date() - timedelta(days=1)
    accounts = [make_account(f"{prefix}{i}", phone=_phone(f"{prefix}{i}"), due_date=due) for i in range(count)]
    return [c for result in runtime.engine.upsert_many(accounts) for c in result.queued]


def _phone(account_id: str) -> str:
    """A number of the account's own, so the module's shared sandbox never mixes two tests' texts."""
    return f"+86139{zlib.crc32(account_id.encode()) % 10**8:08d}"


def _texts(sandboxes: Sandboxes, contacts: list[Contact]) -> Counter[str]:
    numbers = {_phone(c.account_id): c.id for c in contacts}
    return Counter(numbers[r["form"]["To"]] for r in sandboxes.twilio.state.messages() if r["form"]["To"] in numbers)


def test_a_queued_contact_whose_message_was_lost_is_offered_again_and_sent_once(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    [contact] = _queued(runtime, clock, "ST", 1)
    store = runtime.engine.store
    assert offer_stranded(runtime) == 0  # too young to judge
    later = time.time() + runtime.settings.stranded_after_seconds + 1
    assert offer_stranded(runtime, now=later) == 1
    assert store.claim_status(contact.account_id, contact.id) is None  # forgotten, for the planner
    assert store.next_wakeup(contact.account_id) == clock.now()  # planned again at the next pump
    [again] = runtime.engine.pump()
    assert again.id == contact.id
    assert runtime.deliverer.deliver_many([again])[0].result == "sent"
    assert offer_stranded(runtime, now=later + 3600) == 0
    assert _texts(worker_sandboxes, [contact]) == {contact.id: 1}
    audit = [e for e in store.audit(contact.account_id) if e.get("status") == "offered_again"]
    assert [e["reason"] for e in audit] == ["stranded"]


def test_a_queued_contact_whose_message_still_waits_behind_a_backlog_is_left_alone(
    runtime: WorkerRuntime, clock: ManualClock
) -> None:
    [contact] = _queued(runtime, clock, "SB", 1)
    # The oldest message on the sms queue was dispatched before this contact: the backlog is not drained.
    waiting = {"body": "", "headers": {DISPATCHED_AT: time.time() - 60}, "properties": {}}
    runtime.engine.store.redis.lpush("sms", json.dumps(waiting))
    later = time.time() + runtime.settings.stranded_after_seconds + 1
    assert offer_stranded(runtime, now=later) == 0
    assert runtime.engine.store.claim_status(contact.account_id, contact.id) == "queued"
    runtime.engine.store.redis.delete("sms")
    assert offer_stranded(runtime, now=later) == 1


def test_a_throttled_batch_re_queued_keeps_its_contacts_from_looking_stranded(
    runtime: WorkerRuntime, clock: ManualClock
) -> None:
    contacts = _queued(runtime, clock, "SR", 2)
    ledger = runtime.engine.store.ledger
    dispatched = {s.contact_id: s.dispatched_at for s in ledger.queued_before(time.time() + 1)}
    time.sleep(0.01)
    runtime.engine.gate.requeued(contacts)
    refreshed = {s.contact_id: s.dispatched_at for s in ledger.queued_before(time.time() + 1)}
    assert all(refreshed[c.id] > dispatched[c.id] for c in contacts)


def test_a_claim_killed_before_its_request_left_is_released_not_called_sent(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    [contact] = _queued(runtime, clock, "SK", 1)
    assert runtime.engine.gate.claim(contact).verdict == "send"  # ... and the worker is killed before sending
    assert reconcile(runtime) == {}  # a task could still be sending it: not judged yet
    assert reconcile(runtime, now=time.time() + 3600) == {"released": 1}
    store = runtime.engine.store
    assert store.claim_status(contact.account_id, contact.id) is None
    assert not [e for e in store.load(contact.account_id).history if e.kind == "attempt"]  # no cap spent
    assert not [e for e in store.audit(contact.account_id) if e.get("status") == "sent"]


def test_an_email_in_doubt_stays_unknown_and_is_reported_never_sent(runtime: WorkerRuntime, clock: ManualClock) -> None:
    runtime.engine.on_queued = lambda contacts: None
    account = make_account("SE", email="debtor@example.test", due_date=clock.now().date() - timedelta(days=20))
    contacts = runtime.engine.upsert(account).queued
    [email] = [c for c in contacts if c.channel.value == "email"]
    assert runtime.engine.gate.claim(email).verdict == "send"  # killed mid-SMTP-session
    assert reconcile(runtime, now=time.time() + 3600) == {"unverifiable": 1}
    store = runtime.engine.store
    assert store.claim_status("SE", email.id) == "unknown"
    assert [d.contact_id for d in store.ledger.unverified()] == [email.id]
    assert reconcile(runtime, now=time.time() + 7200) == {}  # reported once, not re-asked every minute
    assert runtime.engine.gate.claim(email).verdict == "claimed_elsewhere"


def test_a_provider_that_cannot_be_asked_now_is_asked_again_later(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    [contact] = _queued(runtime, clock, "SL", 1)
    runtime.engine.gate.claim(contact)
    worker_sandboxes.twilio.faults.set(fail_503=100)
    try:
        assert reconcile(runtime, now=time.time() + 3600) == {"asked_later": 1}
    finally:
        worker_sandboxes.twilio.faults.set(fail_503=0)
    assert runtime.engine.store.claim_status(contact.account_id, contact.id) == "sending"
    assert reconcile(runtime, now=time.time() + 3600) == {"released": 1}


def test_retries_take_tokens_so_the_provider_never_sees_more_than_the_limit(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _queued(runtime, clock, "SX", 12)
    runtime.deliverer.limiter = RateLimiter(runtime.settings.redis_url or "", {"sms": Limit(4)})
    runtime.deliverer.settings = runtime.settings.model_copy(update={"retry_backoff_seconds": 0.5})
    worker_sandboxes.twilio.faults.set(fail_503=8)  # the first eight requests fail, then it recovers
    first = len(worker_sandboxes.twilio.faults.arrivals)
    pending = contacts
    try:
        for _ in range(50):
            deliveries = runtime.deliverer.deliver_many(pending)
            retry = {d.contact_id for d in deliveries if d.result in ("throttled", "retry")}
            pending = [c for c in pending if c.id in retry]
            if not pending:
                break
            time.sleep(min(d.retry_in or 0.1 for d in deliveries if d.contact_id in retry))
    finally:
        worker_sandboxes.twilio.faults.set(fail_503=0)
    assert not pending
    seen = list(worker_sandboxes.twilio.faults.arrivals)[first:]  # the provider's own clock, faults included
    assert len(seen) == 12 + 8
    worst = max(sum(1 for t in seen if start <= t < start + 1.0) for start in seen)
    assert worst <= 4, f"{worst} requests reached the provider within one second against a limit of 4"
    assert _texts(worker_sandboxes, contacts) == {c.id: 1 for c in contacts}


def test_a_rate_limited_wait_is_audited_once_however_often_it_is_re_checked(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _queued(runtime, clock, "SW", 20)
    runtime.deliverer.limiter = RateLimiter(runtime.settings.redis_url or "", {"sms": Limit(5)})
    send.apply_async(args=[[contact_payload(c) for c in contacts]], queue="sms")
    store = runtime.engine.store
    eventually(lambda: all(store.claim_status(c.account_id, c.id) == "sent" for c in contacts), timeout=30)
    waits = Counter(
        e["contact_id"] for c in contacts for e in store.audit(c.account_id) if e.get("reason") == "rate_limited"
    )
    assert waits and max(waits.values()) == 1
    assert _texts(worker_sandboxes, contacts) == {c.id: 1 for c in contacts}


def test_a_send_task_bigger_than_the_bound_is_split_before_anything_is_sent(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _queued(runtime, clock, "SS", 3)
    payloads = [contact_payload(c) for c in contacts] * 201  # 603 entries, each contact 201 times
    result = send.run(payloads)
    assert result == {"split": 603}
    store = runtime.engine.store
    eventually(lambda: all(store.claim_status(c.account_id, c.id) == "sent" for c in contacts), timeout=30)
    assert _texts(worker_sandboxes, contacts) == {c.id: 1 for c in contacts}


def test_a_request_refused_at_the_gate_never_reaches_the_provider(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    [contact] = _queued(runtime, clock, "SG", 1)
    claim = runtime.engine.gate.claim(contact)
    message = runtime.deliverer.message(contact, claim)
    before = worker_sandboxes.twilio.request_count

    def refuse() -> None:
        raise RateLimited(0.5)

    with request_gate(refuse), pytest.raises(RateLimited):
        runtime.deliverer.adapters["sms"].send(message)
    assert worker_sandboxes.twilio.request_count == before  # a definite non-send: safe to give the claim back
