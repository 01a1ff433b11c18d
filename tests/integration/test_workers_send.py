"""The send path through a real Celery worker, the real Redis and the sandboxes over real HTTP and SMTP."""

from __future__ import annotations

import email
from datetime import timedelta
from email.policy import default as default_policy

import pytest

from channels.sandbox import Sandboxes
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.core.models import Contact
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.process_runtime import WorkerRuntime
from workers.tasks import dispatch

pytestmark = pytest.mark.integration


def _due(
    runtime: WorkerRuntime, days_past_due: int, account_id: str, clock: ManualClock, **fields: object
) -> list[Contact]:
    due = clock.now().date() - timedelta(days=days_past_due)
    result = runtime.engine.upsert(make_account(account_id, due_date=due, **fields))
    return list(result.queued)


def _texts_to(sandboxes: Sandboxes, number: str) -> list[dict[str, str]]:
    return [r["form"] for r in sandboxes.twilio.state.messages() if r["form"].get("To") == number]


def _status(runtime: WorkerRuntime, contact: Contact) -> str | None:
    return runtime.engine.store.claim_status(contact.account_id, contact.id)


def test_a_reminder_sms_goes_through_the_twilio_sdk_to_the_sandbox_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _due(runtime, 1, "SMS1", clock)
    assert [c.id for c in contacts] == ["SMS1/reminder/sms/0"]
    dispatch(contacts, batch=10)
    eventually(lambda: [e for e in runtime.engine.store.load("SMS1").history if e.kind == "outcome"])
    assert _status(runtime, contacts[0]) == "sent"
    messages = _texts_to(worker_sandboxes, "+8613800138000")
    assert len(messages) == 1
    assert "王小明" in messages[0]["Body"]
    outcomes = [e for e in runtime.engine.store.load("SMS1").history if e.kind == "outcome"]
    assert [(o.contact_id, o.outcome) for o in outcomes] == [("SMS1/reminder/sms/0", "sent")]


def test_the_same_send_delivered_three_times_sends_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _due(runtime, 1, "DUP1", clock, phone="+8613911112222")
    for _ in range(3):
        dispatch(contacts, batch=10)
    eventually(lambda: _status(runtime, contacts[0]) == "sent")
    eventually(lambda: len([a for a in runtime.engine.store.audit("DUP1") if a["type"] == "contact"]) >= 1)
    assert len(_texts_to(worker_sandboxes, "+8613911112222")) == 1
    attempts = [e for e in runtime.engine.store.load("DUP1").history if e.kind == "attempt"]
    assert len(attempts) == 1


def test_a_payment_before_the_send_means_the_queued_contact_is_never_sent(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    runtime.engine.on_queued = lambda contacts: None  # queued, not handed to the worker before the payment
    contacts = _due(runtime, 1, "PAID1", clock, phone="+8613922223333")
    runtime.engine.record_event("PAID1", Payment(amount=make_account().balance))
    dispatch(contacts, batch=10)
    eventually(lambda: any(a.get("verdict") == "deny" for a in runtime.engine.store.audit("PAID1")))
    assert _status(runtime, contacts[0]) is None
    assert not _texts_to(worker_sandboxes, "+8613922223333")


def test_an_email_with_a_chinese_subject_reaches_the_smtp_sandbox(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = [c for c in _due(runtime, 16, "MAIL1", clock, email="mail1@example.com") if c.channel == "email"]
    assert [c.id for c in contacts] == ["MAIL1/early/email/0"]
    dispatch(contacts, batch=10)
    eventually(lambda: _status(runtime, contacts[0]) == "sent")
    stored = [p for p in worker_sandboxes.smtp.stored() if "mail1@example.com" in p.read_text(errors="ignore")]
    assert len(stored) == 1
    parsed = email.message_from_bytes(stored[0].read_bytes(), policy=default_policy)
    assert "王小明" in parsed.get_body(("plain",)).get_content()
    assert any("\u4e00" <= ch <= "\u9fff" for ch in str(parsed["Subject"]))
    assert parsed["List-Unsubscribe"]


def test_a_letter_and_an_agency_hand_off_reach_their_sandboxes(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    letters = [c for c in _due(runtime, 60, "LTR1", clock) if c.channel == "letter"]
    handoffs = [c for c in _due(runtime, 90, "LEG1", clock) if c.channel == "agency"]
    dispatch(letters + handoffs, batch=10)
    eventually(lambda: _status(runtime, letters[0]) == "sent" and _status(runtime, handoffs[0]) == "sent")
    eventually(lambda: runtime.engine.store.load("LEG1").record.state.status == "handed_off")
    letters_created = [r for r in worker_sandboxes.print_vendor.state.log.read() if r["event"] == "letter.created"]
    assert len(letters_created) == 1


def test_nothing_more_is_planned_after_the_agency_accepted_the_case(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    handoffs = [c for c in _due(runtime, 90, "LEG2", clock, phone="+8613933334444") if c.channel == "agency"]
    dispatch(handoffs, batch=10)
    eventually(lambda: runtime.engine.store.load("LEG2").record.state.status == "handed_off")
    clock.advance(timedelta(days=3))
    assert runtime.engine.replan_many(["LEG2"])[0].plan.contacts == ()
    assert runtime.engine.store.next_wakeup("LEG2") is None


def test_services_on_the_broker_push_events_through_the_celery_entry_with_the_same_validation(
    runtime: WorkerRuntime, celery_worker: object, clock: ManualClock
) -> None:
    from workers.app import app

    runtime.engine.upsert(make_account("CEL1", due_date=clock.now().date()))
    app.send_task("dispatcher.ingest_event", args=["CEL1", {"kind": "payment", "amount": "-5"}], queue="plan")
    app.send_task("dispatcher.ingest_event", args=["CEL1", {"kind": "payment", "amount": "5000.00"}], queue="plan")
    eventually(lambda: runtime.engine.store.load("CEL1").record.state.status == "resolved")
    events = [e.event for e in runtime.engine.store.load("CEL1").history if e.kind == "event"]
    assert events == ["account_created", "payment"]  # the negative amount was refused, nothing written
    app.send_task("dispatcher.upsert_account", args=[{**make_account("CEL2").model_dump(mode="json")}], queue="plan")
    eventually(lambda: runtime.engine.store.load("CEL2").record is not None)
