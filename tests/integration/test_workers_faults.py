"""Provider faults through a real Celery worker: retries, back-off to the schedule, and the rate limit."""

from __future__ import annotations

from datetime import timedelta

import pytest

from channels.sandbox import Sandboxes
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Contact
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.process_runtime import WorkerRuntime
from workers.tasks import dispatch

pytestmark = pytest.mark.integration


def _queued_sms(runtime: WorkerRuntime, account_id: str, phone: str, clock: ManualClock) -> Contact:
    result = runtime.engine.upsert(
        make_account(account_id, phone=phone, due_date=clock.now().date() - timedelta(days=1))
    )
    [contact] = result.queued
    return contact


def _texts_to(sandboxes: Sandboxes, number: str) -> list[dict[str, str]]:
    return [r["form"] for r in sandboxes.twilio.state.messages() if r["form"].get("To") == number]


def test_a_provider_answering_503_twice_then_201_sends_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    # Faults first: the upsert already hands the contact to the worker (the runtime's on_queued).
    before = worker_sandboxes.twilio.request_count
    worker_sandboxes.twilio.faults.set(fail_503=2)
    contact = _queued_sms(runtime, "F503", "+8613955556666", clock)
    dispatch([contact], batch=1)  # delivered twice: the second finds it claimed
    eventually(lambda: runtime.engine.store.claim_status("F503", contact.id) == "sent")
    assert worker_sandboxes.twilio.request_count - before == 3
    assert len(_texts_to(worker_sandboxes, "+8613955556666")) == 1
    attempts = [e for e in runtime.engine.store.load("F503").history if e.kind == "attempt"]
    assert len(attempts) == 1


def test_a_long_retry_after_hands_the_contact_back_to_the_schedule(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    worker_sandboxes.twilio.faults.set(fail_429=10, retry_after=600)
    try:
        # The upsert hands the contact to the worker (the runtime's on_queued): one delivery only. A second one
        # arriving after the first gave the claim back would claim it again, and send it once the faults end.
        contact = _queued_sms(runtime, "F429", "+8613966667777", clock)
        eventually(lambda: any(a.get("reason") == "transient_error" for a in runtime.engine.store.audit("F429")))
    finally:
        worker_sandboxes.twilio.faults.set(fail_429=0, retry_after=None)
    store = runtime.engine.store
    assert store.claim_status("F429", contact.id) is None  # forgotten: the planner will queue it again
    assert not [e for e in store.load("F429").history if e.kind == "attempt"]  # a non-send costs no cap
    assert store.next_wakeup("F429") == clock.now() + timedelta(seconds=600)
    assert not _texts_to(worker_sandboxes, "+8613966667777")
    clock.advance(timedelta(seconds=601))
    assert [c.id for c in runtime.engine.pump()] == [contact.id]


def test_an_invalid_number_becomes_an_outcome_the_strategy_answers(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contact = _queued_sms(runtime, "FBAD", "+8613900000005", clock)  # the sandbox answers 21211
    dispatch([contact], batch=1)
    eventually(lambda: runtime.engine.store.load("FBAD").record.state.invalid_addresses)
    assert runtime.engine.store.claim_status("FBAD", contact.id) == "failed"
    loaded = runtime.engine.store.load("FBAD")
    assert "phone" in loaded.record.state.invalid_addresses
    outcomes = [(e.contact_id, e.outcome) for e in loaded.history if e.kind == "outcome"]
    assert outcomes == [(contact.id, "invalid_address")]
    fallback = f"{contact.id}/fb"  # the strategy's answer: an email instead, once the spacing has passed
    clock.advance(timedelta(minutes=runtime.engine.strategy.compliance.pressure.spacing_minutes))
    dispatch(runtime.engine.pump(), batch=10)
    eventually(lambda: runtime.engine.store.claim_status("FBAD", fallback) == "sent")
    attempts = [(e.contact_id, e.channel) for e in runtime.engine.store.load("FBAD").history if e.kind == "attempt"]
    assert attempts == [(contact.id, "sms"), (fallback, "email")]


def test_a_throttled_batch_waits_for_the_limiter_and_still_sends_each_contact_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    runtime.deliverer.limiter._limits["sms"] = type(runtime.deliverer.limiter._limits["sms"])(rate=2)
    contacts = [_queued_sms(runtime, f"RL{i}", f"+861397777{i}120", clock) for i in range(6)]
    dispatch(contacts, batch=6)
    for contact in contacts:
        eventually(lambda c=contact: runtime.engine.store.claim_status(c.account_id, c.id) == "sent", timeout=15)
    for index in range(6):
        assert len(_texts_to(worker_sandboxes, f"+861397777{index}120")) == 1
    throttles = [a for i in range(6) for a in runtime.engine.store.audit(f"RL{i}") if a.get("reason") == "rate_limited"]
    assert throttles, "with 2 per second, six contacts must have met the limiter"
