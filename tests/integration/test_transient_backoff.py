"""Transient provider errors wait longer each time they come in a row, starting near 30 s, up to a cap, or
as long as the provider's Retry-After says. Real Redis, the Twilio sandbox answering 503 or 429 through the
real SDK, and a real Celery worker for the waits on the broker."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import timedelta

import pytest

from channels.sandbox import Sandboxes
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Contact
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.process_runtime import WorkerRuntime
from workers.queueing import contact_payload
from workers.tasks import send

pytestmark = pytest.mark.integration


@pytest.fixture
def outage(worker_sandboxes: Sandboxes) -> Iterator[Sandboxes]:
    """Twilio answers 503 (no Retry-After, as Twilio's own 503s) until the test says otherwise."""
    worker_sandboxes.twilio.faults.set(fail_503=10**6, retry_after=None)
    yield worker_sandboxes
    worker_sandboxes.twilio.faults.set(fail_503=0, fail_429=0, retry_after=1.0)


def _sms(runtime: WorkerRuntime, clock: ManualClock, account_id: str) -> Contact:
    """One queued reminder SMS whose dispatch the test makes itself."""
    runtime.engine.on_queued = lambda contacts: None
    due = clock.now().date() - timedelta(days=1)
    [contact] = runtime.engine.upsert(make_account(account_id, phone=_phone(account_id), due_date=due)).queued
    return contact


def _phone(account_id: str) -> str:
    """A number of the account's own: the module's sandbox is shared by its tests."""
    return f"+86139{zlib.crc32(account_id.encode()) % 10**8:08d}"


def _woken_in(runtime: WorkerRuntime, clock: ManualClock, contact: Contact) -> float | None:
    wake = runtime.engine.store.next_wakeup(contact.account_id)
    return None if wake is None else (wake - clock.now()).total_seconds()


def test_with_the_defaults_a_503_waits_about_30_s_then_twice_as_long_each_time_up_to_300_s(
    runtime: WorkerRuntime, outage: Sandboxes, clock: ManualClock
) -> None:
    runtime.deliverer.settings = runtime.settings.model_copy(update={"send_retries": 1})  # one request a try
    contact = _sms(runtime, clock, "BO1")
    store = runtime.engine.store
    first = runtime.deliverer.deliver_many([contact])[0]
    assert first.result == "retry" and first.retry_in is not None and 24 <= first.retry_in <= 30  # on the broker
    second = runtime.deliverer.deliver_many([contact])[0]
    assert second.result == "retry" and second.retry_in is not None and 48 <= second.retry_in <= 60
    assert store.claim_status(contact.account_id, contact.id) == "queued"
    waits = []
    for _ in range(4):  # longer than a minute: back to the schedule, and the count survives the re-plan
        delivery = runtime.deliverer.deliver_many([contact])[0]
        assert delivery.result == "retry_later" and delivery.retry_in is not None
        assert store.claim_status(contact.account_id, contact.id) is None  # forgotten, for the planner
        assert _woken_in(runtime, clock, contact) == pytest.approx(delivery.retry_in, abs=0.01)
        waits.append(delivery.retry_in)
        clock.advance(timedelta(seconds=delivery.retry_in))
        [contact] = [again for again in runtime.engine.pump() if again.id == contact.id]
    assert 96 <= waits[0] <= 120 and 192 <= waits[1] <= 240 and 240 <= waits[2] <= 300 and 240 <= waits[3] <= 300
    outage.twilio.faults.set(fail_503=0)
    assert runtime.deliverer.deliver_many([contact])[0].result == "sent"


def test_a_retry_after_from_the_provider_is_the_wait_on_the_broker_or_on_the_schedule(
    runtime: WorkerRuntime, outage: Sandboxes, clock: ManualClock
) -> None:
    runtime.deliverer.settings = runtime.settings.model_copy(update={"send_retries": 1})
    outage.twilio.faults.set(fail_503=0, fail_429=2, retry_after=7)
    contact = _sms(runtime, clock, "BO2")
    short = runtime.deliverer.deliver_many([contact])[0]
    assert (short.result, short.retry_in) == ("retry", 7)  # the provider's word, not the back-off
    outage.twilio.faults.set(retry_after=90)
    long = runtime.deliverer.deliver_many([contact])[0]
    assert (long.result, long.retry_in) == ("retry_later", 90)
    assert _woken_in(runtime, clock, contact) == pytest.approx(90, abs=0.01)


def test_through_a_worker_the_waits_between_tries_grow_to_the_cap_and_the_contact_goes_once(
    runtime: WorkerRuntime, celery_worker: object, outage: Sandboxes, clock: ManualClock
) -> None:
    """The same contact, re-queued by the send task itself: the provider sees its tries further and further
    apart (0.4-0.5 s, 0.8-1, 1.6-2, then at the 2 s cap), then a single success."""
    runtime.deliverer.settings = runtime.settings.model_copy(
        update={"send_retries": 1, "retry_backoff_seconds": 0.5, "retry_backoff_max_seconds": 2.0}
    )
    contact = _sms(runtime, clock, "BO3")
    faults = outage.twilio.faults
    faults.set(fail_503=5)  # five tries fail, the sixth is accepted
    before = len(faults.arrivals)
    send.apply_async(args=[[contact_payload(contact)]], queue="sms")
    store = runtime.engine.store
    eventually(lambda: store.claim_status(contact.account_id, contact.id) == "sent", timeout=30)
    tries = list(faults.arrivals)[before:]
    assert len(tries) == 6
    gaps = [later - earlier for earlier, later in zip(tries, tries[1:], strict=False)]
    slack = 1.0  # the re-queued task's way through the broker and the worker's timer, on a loaded machine
    for gap, (low, high) in zip(gaps, [(0.4, 0.5), (0.8, 1.0), (1.6, 2.0), (1.6, 2.0), (1.6, 2.0)], strict=True):
        assert low <= gap <= high + slack, gaps
    assert len([m for m in outage.twilio.state.messages() if m["form"]["To"] == _phone(contact.account_id)]) == 1
