"""Ad-hoc requests answer the same through every entry (HTTP and Celery call this library function), on a real Redis."""

from __future__ import annotations

import pytest

from dispatcher.adhoc import AlreadyMade, request_contact
from dispatcher.core.events import AdhocContact, Dispute, DisputeResolved
from dispatcher.core.models import Channel
from dispatcher.engine import Engine
from tests.conftest import make_account


def sms(key: str) -> AdhocContact:
    return AdhocContact(channel=Channel.SMS, template="reminder_sms", key=key)


def test_a_request_on_a_disputed_account_records_only_its_denial_and_never_goes(engine: Engine) -> None:
    engine.upsert(make_account())
    engine.record_event("A1", Dispute())
    answer = request_contact(engine, "A1", sms("agent-1"))
    assert (answer.verdict, answer.rule, answer.queued) == ("deny", "hold:dispute", False)
    kinds = [e.event for e in engine.store.load("A1").history if e.kind == "event"]
    assert "adhoc_denied" in kinds and "adhoc_contact" not in kinds
    result = engine.record_event("A1", DisputeResolved())
    assert all("adhoc" not in c.id for c in result.queued)


def test_a_key_already_made_is_refused_and_nothing_recorded(engine: Engine) -> None:
    engine.upsert(make_account())
    answer = request_contact(engine, "A1", sms("k"))
    assert (answer.verdict, answer.queued) == ("send", True)
    [contact] = [c for c in engine.replan_many(["A1"])[0].plan.contacts if c.id == answer.contact_id]  # type: ignore[union-attr]
    assert engine.gate.claim(contact).verdict == "send"
    before = len(engine.store.load("A1").history)
    with pytest.raises(AlreadyMade):
        request_contact(engine, "A1", sms("k"))
    assert len(engine.store.load("A1").history) == before
