"""Properties of payment arrangements: random debtors (zone, days past due, balance), random plans and random
payers (on time, late, short, nothing, a lump sum), run through the pure event rules and planner on a clock
advanced a few hours at a time, every contact the planner wants taken as sent.

- while an arrangement is kept, the only contacts are its reminders: no dunning;
- a missed instalment (unpaid at its due day plus grace) breaks it, and the ladder resumes at once at the
  stage the days past due give;
- a plan paid off resolves the account;
- no contact, ever, after the account is resolved;
- every send, a reminder as much as the ladder's, inside its window, off rest days and under its caps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import DEFAULT_STRATEGY
from dispatcher.core.arrangements.events import ArrangementBroken, ArrangementMade, ended_entries
from dispatcher.core.arrangements.terms import ARRANGEMENT_STAGE, Instalment, active_arrangement
from dispatcher.core.events import Event, Payment, apply_event, event_detail, lapsed_events
from dispatcher.core.models import AccountRecord, Channel, HistoryEntry, zone
from dispatcher.core.planner import plan
from dispatcher.core.strategy import load_strategy
from tests.conftest import make_account
from tests.property.test_compliance_invariants import allowed_independently

STRATEGY = load_strategy(Path(DEFAULT_STRATEGY))
START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
STEP = timedelta(hours=4)
ZONES = ("Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Sydney")
GRACE = STRATEGY.arrangements.grace_days


@dataclass(frozen=True)
class Payer:
    """What the debtor pays for one instalment: on which day relative to its due date, and how much of it."""

    day: int  # days after the due date (negative: before)
    share: str  # "full", "half", "none", "lump" (everything left, and more)


@dataclass(frozen=True)
class Case:
    timezone: str
    days_past_due: int
    balance: Decimal
    first_due: int  # days after the start
    gaps: tuple[int, ...]
    shares: tuple[int, ...]  # each instalment's weight in the plan's total
    plan_share: Decimal  # the plan's total as a share of the balance (at most all of it)
    payers: tuple[Payer, ...]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 5))
    return Case(
        timezone=draw(st.sampled_from(ZONES)),
        days_past_due=draw(st.integers(1, 80)),
        balance=Decimal(draw(st.integers(100, 500_000))) / 100,
        first_due=draw(st.integers(0, 20)),
        gaps=tuple(draw(st.lists(st.integers(1, 40), min_size=count - 1, max_size=count - 1))),
        shares=tuple(draw(st.lists(st.integers(1, 5), min_size=count, max_size=count))),
        plan_share=Decimal(draw(st.integers(30, 100))) / 100,
        payers=tuple(
            Payer(draw(st.integers(-4, GRACE + 3)), draw(st.sampled_from(["full", "full", "half", "none", "lump"])))
            for _ in range(count)
        ),
    )


class Run:
    """One account on the pure rules: events applied as the engine applies them, every plan's contacts sent."""

    def __init__(self, case: Case):
        self.case = case
        tz = zone(case.timezone)
        due = START.astimezone(tz).date() - timedelta(days=case.days_past_due)
        account = make_account(timezone=case.timezone, extra_timezones=(), balance=case.balance, due_date=due)
        self.record = AccountRecord(account=account)
        self.history: list[HistoryEntry] = []
        self.now = START
        self.start_day = START.astimezone(tz).date()
        self.sent: list[tuple[datetime, str, Channel]] = []  # (when, contact id, channel)

    def apply(self, event: Event) -> None:
        before = self.record.state
        entry = HistoryEntry(kind="event", at=self.now, event=event.kind, detail=event_detail(event))
        self.record = self.record.model_copy(update={"state": apply_event(self.record, event, STRATEGY, self.now)})
        self.history += [entry, *ended_entries(before, self.record.state, self.now)]

    def instalments(self) -> tuple[Instalment, ...]:
        case, today = self.case, self.now.astimezone(zone(self.case.timezone)).date()
        total = (case.balance * case.plan_share).quantize(Decimal("0.01"))
        weights = sum(case.shares)
        amounts = [max((total * w / weights).quantize(Decimal("0.01")), Decimal("0.01")) for w in case.shares]
        # Rounding each share (and the 0.01 floor) can put the sum a few cents above the total: the largest
        # instalment gives them back, so the plan never asks more than is owed (the API would refuse it).
        excess = sum(amounts, Decimal(0)) - total
        if excess > 0:
            largest = amounts.index(max(amounts))
            amounts[largest] -= excess
        days = [case.first_due]
        for gap in case.gaps:
            days.append(days[-1] + gap)
        return tuple(Instalment(due=today + timedelta(days=d), amount=a) for d, a in zip(days, amounts, strict=True))

    def payments_due(self, day: date, plan: tuple[Instalment, ...]) -> list[Decimal]:
        found = []
        for instalment, payer in zip(plan, self.case.payers, strict=True):
            if max(instalment.due + timedelta(days=payer.day), self.start_day) == day:  # not before the plan
                if payer.share == "full":
                    found.append(instalment.amount)
                elif payer.share == "half":
                    found.append(max((instalment.amount / 2).quantize(Decimal("0.01")), Decimal("0.01")))
                elif payer.share == "lump":
                    found.append(self.case.balance)
        return found


def run(case: Case, days: int = 150) -> Run:
    """The whole run, checking the properties at every step."""
    r = Run(case)
    plan_terms = r.instalments()
    r.apply(ArrangementMade(arrangement_id="P1", instalments=plan_terms))
    paid_days: set[date] = set()
    end = START + timedelta(days=days)
    while r.now < end:
        tz = zone(case.timezone)
        today = r.now.astimezone(tz).date()
        if today not in paid_days and r.record.state.status == "active":
            paid_days.add(today)
            for amount in r.payments_due(today, plan_terms):
                r.apply(Payment(amount=amount))
        broken: ArrangementBroken | None = None
        for event in lapsed_events(r.record, STRATEGY, r.now, r.history):
            r.apply(event)
            broken = event if isinstance(event, ArrangementBroken) else broken
        state = r.record.state
        kept = active_arrangement(state.arrangements)
        result = plan(r.record, r.history, STRATEGY, r.now)
        for contact in result.contacts:
            r.sent.append((r.now, contact.id, contact.channel))
            r.history.append(HistoryEntry(kind="attempt", at=r.now, contact_id=contact.id, channel=contact.channel,
                                          detail={"template": contact.template}))  # fmt: skip
        # No dunning while kept: the plan's own reminders only.
        if kept is not None:
            assert result.stage == ARRANGEMENT_STAGE
            assert all(c.stage == ARRANGEMENT_STAGE and c.id.startswith(f"{r.record.account.id}/arrangement/P1/")
                       for c in result.contacts), result.contacts  # fmt: skip
        # A missed instalment: the ladder resumes at the stage the days past due give, at once.
        if broken is not None:
            days_past_due = (today - r.record.account.due_date).days
            index = STRATEGY.stage_index(days_past_due)
            expected = None if index is None else STRATEGY.stages[index].name
            assert (broken.days_past_due, broken.stage, result.stage) == (days_past_due, expected, expected)
            assert all(c.stage == expected for c in result.contacts)
        # Paid off: resolved.
        if any(a.status in ("kept", "paid_off") for a in state.arrangements):
            assert state.status == "resolved"
        if state.status == "resolved":
            assert result.contacts == () and result.next_wakeup is None
        r.now += STEP
    return r


@settings(max_examples=80, deadline=None)
@given(case=cases())
def test_arrangements_pause_dunning_break_into_the_right_stage_and_resolve(case: Case) -> None:
    r = run(case)
    arrangement = r.record.state.arrangements[0]
    # Never a contact after resolution.
    resolved_at = next((e.at for e in r.history if e.event in ("arrangement_kept", "arrangement_paid_off")), None)
    if resolved_at is not None:
        assert all(at < resolved_at for at, _, _ in r.sent)
    # Every payer that paid each instalment in full by its grace kept the plan, and it resolved the account.
    on_time = all(p.share in ("full", "lump") and p.day <= GRACE for p in case.payers)
    if on_time:
        assert arrangement.status in ("kept", "paid_off") and r.record.state.status == "resolved"
    if arrangement.status == "broken":
        assert arrangement.missed is not None
    # Every send, reminders included, inside its window, off rest days and under its caps, judged apart from
    # the policy's code.
    for index, (at, contact_id, channel) in enumerate(r.sent):
        before = [when for when, _, other in r.sent[:index] if other == channel]
        assert allowed_independently(channel, r.record.account, before, [], at, STRATEGY.compliance), contact_id
    # Reminders: at most one per instalment.
    reminders = [cid for _, cid, _ in r.sent if "/arrangement/" in cid]
    assert len(reminders) == len(set(reminders)) <= len(arrangement.instalments)
