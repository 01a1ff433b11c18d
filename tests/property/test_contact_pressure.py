"""Contact pressure over random accounts, events and clocks: the pure planner run forward like the engine,
every contact it returns made at once. Whatever happens, no two contacts to one debtor come closer than the
spacing (exempt templates aside), no rolling total is exceeded, nothing goes on a rest day, and contacts
that waited go at the debtor's own stable place in the spread."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import DEFAULT_STRATEGY
from dispatcher.core import calendar
from dispatcher.core.compliance import spread_offset
from dispatcher.core.events import Dispute, DisputeResolved, Event, Outcome, apply_event, lapsed_events
from dispatcher.core.models import AccountRecord, Channel, HistoryEntry, OutcomeKind, zone
from dispatcher.core.planner import plan
from dispatcher.core.strategy import load_strategy
from tests.conftest import make_account

STRATEGY = load_strategy(Path(DEFAULT_STRATEGY))
PRESSURE = STRATEGY.compliance.pressure
START = datetime(2026, 9, 20, 0, 0, tzinfo=UTC)  # Mid-Autumn, National Day and Golden Week ahead
ZONES = ("Asia/Shanghai", "America/New_York", "Europe/London")
OUTCOMES = {
    Channel.SMS: [OutcomeKind.DELIVERED, OutcomeKind.UNDELIVERED],
    Channel.VOICE: [OutcomeKind.NO_ANSWER, OutcomeKind.BUSY, OutcomeKind.ANSWERED, OutcomeKind.VOICEMAIL],
    Channel.EMAIL: [OutcomeKind.DELIVERED, OutcomeKind.BOUNCED],
    Channel.LETTER: [OutcomeKind.DELIVERED],
    Channel.AGENCY: [OutcomeKind.HANDED_OFF],
}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[AccountRecord, datetime, list[tuple[datetime, Event]], int]:
    country, tz = draw(st.sampled_from([("CN", "Asia/Shanghai"), ("US", "America/New_York"), ("GB", ZONES[2])]))
    start = START + timedelta(minutes=draw(st.integers(0, 20 * 24 * 60)))
    account = make_account(
        draw(st.from_regex(r"[A-Z][A-Z0-9]{3,9}", fullmatch=True)),
        timezone=tz, country=country, due_date=start.date() - timedelta(days=draw(st.integers(0, 70))),
    )  # fmt: skip
    events: list[tuple[datetime, Event]] = []
    if draw(st.booleans()):
        held = start + timedelta(hours=draw(st.integers(0, 72)))
        events = [(held, Dispute()), (held + timedelta(hours=draw(st.integers(1, 240))), DisputeResolved())]
    return AccountRecord(account=account), start, events, draw(st.integers(0, 2**16))


def run(record: AccountRecord, start: datetime, events: list[tuple[datetime, Event]], seed: int, days: int = 21):
    """The engine's loop on the pure parts: apply events and lapses, plan, make every contact returned."""
    rng, now, history = random.Random(seed), start, [HistoryEntry(kind="event", at=start, event="account_created")]
    pending, end = sorted(events, key=lambda e: e[0]), start + timedelta(days=days)
    while now < end and record.state.status == "active":
        while pending and pending[0][0] <= now:
            _, event = pending.pop(0)
            record = record.model_copy(update={"state": apply_event(record, event, STRATEGY, now)})
            history.append(HistoryEntry(kind="event", at=now, event=event.kind))
        for event in lapsed_events(record, STRATEGY, now, history):
            record = record.model_copy(update={"state": apply_event(record, event, STRATEGY, now)})
            history.append(HistoryEntry(kind="event", at=now, event=event.kind))
        result = plan(record, history, STRATEGY, now)
        for contact in result.contacts:
            history.append(HistoryEntry(kind="attempt", at=now, contact_id=contact.id, channel=contact.channel,
                                        detail={"template": contact.template}))  # fmt: skip
            outcome = Outcome(contact_id=contact.id, outcome=rng.choice(OUTCOMES[contact.channel]),
                              channel=contact.channel)  # fmt: skip
            record = record.model_copy(update={"state": apply_event(record, outcome, STRATEGY, now)})
            history.append(HistoryEntry(kind="outcome", at=now, contact_id=contact.id, channel=contact.channel,
                                        outcome=outcome.outcome))  # fmt: skip
        upcoming = [t for t in (result.next_wakeup, pending[0][0] if pending else None) if t is not None]
        following = min(upcoming, default=end)
        now = max(following, now + timedelta(seconds=1)) if not result.contacts else now + timedelta(seconds=1)
    return record, [e for e in history if e.kind == "attempt"]


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_no_two_contacts_come_closer_than_the_spacing(scenario) -> None:
    record, start, events, seed = scenario
    _, attempts = run(record, start, events, seed)
    spaced = [a.at for a in attempts if a.channel in PRESSURE.channels
              and a.detail["template"] not in PRESSURE.spacing_exempt_templates]  # fmt: skip
    gap = timedelta(minutes=PRESSURE.spacing_minutes)
    assert all(after - before >= gap for before, after in zip(spaced, spaced[1:], strict=False)), spaced


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_no_rolling_total_across_channels_is_exceeded(scenario) -> None:
    record, start, events, seed = scenario
    _, attempts = run(record, start, events, seed)
    counted = [a.at for a in attempts if a.channel in PRESSURE.channels]
    for cap in PRESSURE.totals:
        span = timedelta(days=cap.days)
        for at in counted:
            assert sum(1 for t in counted if at - span < t <= at) <= cap.max, (cap, counted)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_nothing_goes_on_a_rest_day_of_the_debtors_country(scenario) -> None:
    record, start, events, seed = scenario
    account, rest = record.account, STRATEGY.compliance.holidays
    _, attempts = run(record, start, events, seed)
    for attempt in attempts:
        if attempt.channel in rest.channels:
            day = attempt.at.astimezone(zone(account.timezone)).date()
            assert not calendar.is_holiday(account.country, day, rest.rest_periods), (attempt, day)


@settings(max_examples=150, deadline=None)
@given(
    ids=st.lists(st.from_regex(r"[A-Z][A-Z0-9]{3,9}", fullmatch=True), min_size=2, max_size=6, unique=True),
    night=st.integers(0, 7 * 60 - 1),
    days_late=st.integers(2, 70),
)
def test_contacts_that_waited_for_the_morning_go_at_each_debtors_own_place_in_the_spread(
    ids: list[str], night: int, days_late: int
) -> None:
    # Acceptance: an account imported at night got an SMS, an email and a call at 08:00 sharp.
    tz = zone("Asia/Shanghai")
    now = datetime.combine(date(2026, 3, 10), datetime.min.time(), tz).astimezone(UTC) + timedelta(minutes=night)
    opening = datetime.combine(date(2026, 3, 10), datetime.min.time().replace(hour=8), tz).astimezone(UTC)
    history = [HistoryEntry(kind="event", at=now, event="account_created")]
    for account_id in ids:
        account = make_account(account_id, due_date=date(2026, 3, 10) - timedelta(days=days_late))
        result = plan(AccountRecord(account=account), history, STRATEGY, now)
        timed = [d.until for d in result.decisions if d.until is not None and d.until.date() == opening.date()]
        if not timed:
            continue  # nothing waited for this morning (a rest day, or nothing due)
        first = min(timed)
        assert first >= opening + spread_offset(account_id, PRESSURE.spread_hours)
        again = plan(AccountRecord(account=account), history, STRATEGY, now)
        assert again == result  # stable: the same debtor gets the same place however often it is planned
