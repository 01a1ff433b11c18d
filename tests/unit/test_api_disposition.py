"""A call-centre agent's disposition as an event: what each one does to the state and the contact log."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from dispatcher.core.compliance import ContactLog, is_conversation
from dispatcher.core.events import AgentDisposition, EventRejected, apply_event
from dispatcher.core.models import AccountRecord, AddressKind, HistoryEntry
from dispatcher.core.strategy import Strategy
from tests.conftest import make_account

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def applied(strategy: Strategy, **fields: object):
    return apply_event(AccountRecord(account=make_account()), AgentDisposition(**fields), strategy, NOW)


def test_wrong_number_invalidates_the_phone(strategy: Strategy) -> None:
    assert applied(strategy, disposition="wrong_number").invalid_addresses == {AddressKind.PHONE}


def test_a_promise_disposition_is_a_promise_to_pay(strategy: Strategy) -> None:
    state = applied(strategy, disposition="promise", amount="800", due=date(2026, 3, 9))
    assert (state.promise.amount, state.promise.due) == (800, date(2026, 3, 9))


def test_a_promise_beyond_the_horizon_is_rejected_naming_due(strategy: Strategy) -> None:
    with pytest.raises(EventRejected) as caught:
        applied(strategy, disposition="promise", amount="800", due=date(2027, 3, 9))
    assert caught.value.field == "due"


@pytest.mark.parametrize("disposition", ["right_party", "refused"])
def test_a_conversation_without_terms_leaves_the_state_alone(strategy: Strategy, disposition: str) -> None:
    assert applied(strategy, disposition=disposition) == AccountRecord(account=make_account()).state


def test_promise_terms_are_required_for_a_promise_and_refused_otherwise() -> None:
    with pytest.raises(ValidationError, match="required when the disposition is 'promise'"):
        AgentDisposition(disposition="promise", amount="10")
    with pytest.raises(ValidationError, match="only a 'promise' disposition"):
        AgentDisposition(disposition="refused", due=date(2026, 3, 9))


@pytest.mark.parametrize(
    ("disposition", "conversation"),
    [("right_party", True), ("promise", True), ("refused", True), ("wrong_number", False)],
)
def test_dispositions_that_reached_the_debtor_count_as_conversations(disposition: str, conversation: bool) -> None:
    entry = HistoryEntry(kind="event", at=NOW, event="agent_disposition", detail={"disposition": disposition})
    assert is_conversation(entry) is conversation
    other = HistoryEntry(kind="event", at=NOW + timedelta(hours=1), event="payment", detail={"amount": "1"})
    assert ContactLog.from_history([entry, other]).conversations == ([NOW] if conversation else [])
