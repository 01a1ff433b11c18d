"""A bulk import plans each fresh shape once: the shared plan, rebased, must equal planning each account."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.models import AccountRecord, Channel, HistoryEntry, Plan
from dispatcher.core.planner import fresh_shape, plan, plan_shared, rebased
from dispatcher.core.strategy import Strategy
from tests.conftest import make_account

ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Pacific/Auckland"]
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@st.composite
def fresh_pair(draw: st.DrawFn) -> tuple[AccountRecord, AccountRecord, datetime]:
    fields = {
        "due_date": date(2026, 3, 1) - timedelta(days=draw(st.integers(0, 120))),
        "timezone": draw(st.sampled_from(ZONES)),
        "consent": frozenset(draw(st.sets(st.sampled_from(list(Channel))))),
    }
    if draw(st.booleans()):
        fields["email"] = None
    now = NOW + timedelta(minutes=draw(st.integers(0, 60 * 48)))
    first = AccountRecord(account=make_account("P1", **fields))
    second = AccountRecord(account=make_account("Q22", name="Other Person", **fields))
    return first, second, now


@settings(max_examples=300, deadline=None)
@given(pair=fresh_pair())
def test_a_rebased_shared_plan_is_the_plan_of_the_other_account(
    strategy: Strategy, pair: tuple[AccountRecord, AccountRecord, datetime]
) -> None:
    first, second, now = pair
    history = (HistoryEntry(kind="event", at=now, event="account_created"),)
    assert fresh_shape(first, history) == fresh_shape(second, history) is not None
    shapes: dict[tuple[object, ...], Plan] = {}
    assert plan_shared(shapes, first, history, strategy, now) == plan(first, history, strategy, now)
    assert plan_shared(shapes, second, history, strategy, now) == plan(second, history, strategy, now)
    first_plan = shapes[fresh_shape(first, history)]  # type: ignore[index]
    if not first_plan.extra.get("spread"):  # a plan that does not depend on the spread is shared as it is
        assert rebased(first_plan, "Q22") == plan(second, history, strategy, now)


def test_an_account_with_contacts_or_events_of_its_own_has_no_shared_shape() -> None:
    record = AccountRecord(account=make_account())
    attempt = HistoryEntry(kind="attempt", at=NOW, contact_id="A1/reminder/sms/0", channel=Channel.SMS)
    adhoc = HistoryEntry(kind="event", at=NOW, event="adhoc_contact", detail={"key": "k"})
    assert fresh_shape(record, (attempt,)) is None
    assert fresh_shape(record, (adhoc,)) is None
