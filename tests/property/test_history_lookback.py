"""History older than the planner's look-back leaves Redis: planning with what stays (and the record's marks
of the attempts that left) gives the same plan (and the same ad-hoc lapses) as planning with the whole
history, now and at any later moment; and should the bank move the due date afterwards, either way, the
plan names no contact the whole history shows attempted."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.models import AccountRecord, AccountState, Channel, ContactRef, HistoryEntry, OutcomeKind
from dispatcher.core.planner import plan
from dispatcher.core.stages import ADHOC_STAGE, adhoc_due_to_lapse
from dispatcher.core.strategy import BestTime, Strategy
from dispatcher.record.lookback import lookback, marked, trimmable
from tests.conftest import make_account

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Pacific/Auckland"]
EVENTS = ["account_created", "account_updated", "hold_lapsed", "promise_broken", "agent_disposition"]


@st.composite
def histories(draw: st.DrawFn, strategy: Strategy) -> tuple[AccountRecord, list[HistoryEntry], dict[str, str]]:
    due = date(2026, 6, 1) - timedelta(days=draw(st.integers(1, 150)))
    account = make_account("A1", due_date=due, timezone=draw(st.sampled_from(ZONES)))
    floor = draw(st.integers(0, len(strategy.stages) - 1)) if draw(st.booleans()) else 0
    state = AccountState(stage_floor=floor, floor_since=account.due_date if floor else None)
    steps = [(stage.name, step) for stage in strategy.stages for step in stage.steps]
    entries, claims = [], {}
    for _ in range(draw(st.integers(0, 40))):
        at = NOW - timedelta(minutes=draw(st.integers(0, 150 * 24 * 60)))
        kind = draw(st.sampled_from(["attempt", "outcome", "event", "adhoc"]))
        stage, step = draw(st.sampled_from(steps))
        ref = ContactRef("A1", stage, step.name, draw(st.integers(0, 12)), fallback=draw(st.booleans()))
        if kind == "attempt":
            entries.append(HistoryEntry(kind="attempt", at=at, contact_id=str(ref), channel=step.channel))
            claims[str(ref)] = draw(st.sampled_from(["sent", "sent", "failed", "sending", "unknown"]))
        elif kind == "outcome":
            outcome = draw(st.sampled_from(list(OutcomeKind)))
            entries.append(HistoryEntry(kind="outcome", at=at, contact_id=str(ref), channel=step.channel,
                                        outcome=outcome))  # fmt: skip
        elif kind == "event":
            event = draw(st.sampled_from(EVENTS))
            detail = {"disposition": draw(st.sampled_from(["right_party", "no_contact"]))}
            entries.append(HistoryEntry(kind="event", at=at, event=event, detail=detail))
        else:
            key = f"k{draw(st.integers(0, 5))}"
            channel = draw(st.sampled_from([Channel.SMS, Channel.EMAIL]))
            asked = {"key": key, "channel": channel.value, "template": "reminder"}
            entries.append(HistoryEntry(kind="event", at=at, event="adhoc_contact", detail=asked))
            done = draw(st.sampled_from(["open", "attempted", "lapsed"]))
            later = at + timedelta(hours=draw(st.integers(0, 30)))
            if done == "attempted":
                adhoc = f"A1/{ADHOC_STAGE}/{key}/0"
                entries.append(HistoryEntry(kind="attempt", at=later, contact_id=adhoc, channel=channel))
                claims[adhoc] = "sent"
            elif done == "lapsed":
                entries.append(HistoryEntry(kind="event", at=later, event="adhoc_lapsed", detail={"key": key}))
    entries.sort(key=lambda e: e.at)
    return AccountRecord(account=account, state=state), entries, claims


@st.composite
def worked(draw: st.DrawFn, strategy: Strategy) -> tuple[AccountRecord, list[HistoryEntry], dict[str, str]]:
    """An account worked as the engine works it: planned every eight hours, each planned contact made, some
    answered with an outcome (a fallback follows, if the step gives one)."""
    due = date(2026, 6, 1) - timedelta(days=draw(st.integers(1, 150)))
    record = AccountRecord(account=make_account("A1", due_date=due, timezone=draw(st.sampled_from(ZONES))))
    history: list[HistoryEntry] = []
    claims: dict[str, str] = {}
    moment = datetime.combine(due, datetime.min.time(), UTC) + timedelta(minutes=draw(st.integers(0, 479)))
    while moment < NOW:
        for contact in plan(record, history, strategy, moment).contacts:
            history.append(HistoryEntry(kind="attempt", at=moment, contact_id=contact.id, channel=contact.channel))
            claims[contact.id] = "sent"
            outcome = draw(st.sampled_from([None, *OutcomeKind]))
            if outcome is not None:
                at = moment + timedelta(minutes=1)
                history.append(HistoryEntry(kind="outcome", at=at, contact_id=contact.id, channel=contact.channel,
                                            outcome=outcome))  # fmt: skip
        moment += timedelta(hours=8)
    return record, history, claims


@settings(max_examples=60, deadline=None)
@given(data=st.data(), later=st.integers(1, 24 * 60), moved=st.integers(-60, 120))
def test_a_worked_account_trimmed_then_moved_repeats_nothing(
    strategy: Strategy, data: st.DataObject, later: int, moved: int
) -> None:
    _check(strategy, data.draw(worked(strategy)), later, moved)


def _check(
    strategy: Strategy, drawn: tuple[AccountRecord, list[HistoryEntry], dict[str, str]], later: int, moved: int
) -> None:
    record, history, claims = drawn
    drop = trimmable(record, history, claims, strategy, NOW)
    kept = [entry for index, entry in enumerate(history) if index not in set(drop)]
    trimmed = marked(record, history, drop)
    assert all(history[index].at < NOW - lookback(strategy) for index in drop)
    for moment in (NOW, NOW + timedelta(hours=later)):
        assert plan(trimmed, kept, strategy, moment) == plan(record, history, strategy, moment)
        assert adhoc_due_to_lapse(kept, strategy, moment) == adhoc_due_to_lapse(history, strategy, moment)
    # The bank moves the due date (a re-age, an arrangement, a correction): the stage may go back.
    account = record.account.model_copy(update={"due_date": record.account.due_date + timedelta(days=moved)})
    attempted = {entry.contact_id for entry in history if entry.kind == "attempt"}
    for moment in (NOW, NOW + timedelta(hours=later)):
        again = plan(trimmed.model_copy(update={"account": account}), kept, strategy, moment)
        assert not {contact.id for contact in again.contacts} & attempted


@settings(max_examples=150, deadline=None)
@given(data=st.data(), later=st.integers(1, 24 * 60), moved=st.integers(-60, 120))
def test_the_trimmed_history_plans_as_the_whole_one(
    strategy: Strategy, data: st.DataObject, later: int, moved: int
) -> None:
    _check(strategy, data.draw(histories(strategy)), later, moved)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), later=st.integers(1, 24 * 60), moved=st.integers(-60, 120))
def test_with_best_time_on_too(strategy: Strategy, data: st.DataObject, later: int, moved: int) -> None:
    best = strategy.model_copy(update={"best_time": BestTime(enabled=True, min_answers=2)})
    _check(best, data.draw(histories(best)), later, moved)


def test_the_look_back_of_the_default_policy_is_its_longest_window_and_a_day(strategy: Strategy) -> None:
    assert lookback(strategy) == timedelta(days=7 + 1)  # the 7-day caps, totals and quiet period, and a day
