"""The planner, pure: which contacts are due, under which ids, and when the account must be looked at again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dispatcher.core.compliance import spread_offset
from dispatcher.core.events import (
    DoNotContact,
    Event,
    Outcome,
    Payment,
    PromiseBroken,
    PromiseToPay,
    apply_event,
    lapsed_events,
)
from dispatcher.core.models import (
    Account,
    AccountRecord,
    AccountState,
    AddressKind,
    Channel,
    ContactRef,
    HistoryEntry,
    OutcomeKind,
    Plan,
)
from dispatcher.core.planner import plan
from dispatcher.core.strategy import BestTime, Strategy
from tests.conftest import make_account

SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 3, 2)  # the default clock's day in Shanghai
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
def unpressed(strategy: Strategy) -> Strategy:
    """The shipped strategy without contact pressure (spacing, totals, spread): the ladder's own behaviour."""
    pressure = strategy.compliance.pressure.model_copy(update={"spacing_minutes": 0, "totals": (), "spread_hours": 0})
    return strategy.model_copy(update={"compliance": strategy.compliance.model_copy(update={"pressure": pressure})})


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI).astimezone(UTC)


def late(days: int, **overrides: object) -> Account:
    """An account that is `days` past due today."""
    return make_account(due_date=TODAY - timedelta(days=days), **overrides)


def attempt(contact_id: str, channel: Channel, at: datetime) -> HistoryEntry:
    return HistoryEntry(kind="attempt", at=at, contact_id=contact_id, channel=channel)


def outcome(contact_id: str, channel: Channel, kind: OutcomeKind, at: datetime) -> HistoryEntry:
    return HistoryEntry(kind="outcome", at=at, contact_id=contact_id, channel=channel, outcome=kind)


def after(record: AccountRecord, event: Event, strategy: Strategy, now: datetime = NOW) -> AccountRecord:
    return record.model_copy(update={"state": apply_event(record, event, strategy, now)})


def ids(result: Plan) -> list[str]:
    return [contact.id for contact in result.contacts]


def drive(
    record: AccountRecord,
    strategy: Strategy,
    start: datetime,
    until: datetime,
    history: list[HistoryEntry] | None = None,
) -> list[tuple[str, datetime]]:
    """Plan at every wake-up from `start` to `until`, treating each planned contact as sent at once."""
    history = history if history is not None else []
    sent: list[tuple[str, datetime]] = []
    now = start
    while now < until:
        result = plan(record, history, strategy, now)
        for contact in result.contacts:
            history.append(attempt(contact.id, contact.channel, now))
            sent.append((contact.id, now))
        if result.next_wakeup is None:
            break
        assert result.next_wakeup > now
        now = result.next_wakeup
    return sent


# Stages.
@pytest.mark.parametrize(
    ("days", "stage"),
    [(1, "reminder"), (7, "reminder"), (8, "second_notice"), (16, "early"), (31, "continuous"), (59, "continuous"),
     (60, "letter"), (90, "legal"), (400, "legal")],
)  # fmt: skip
def test_an_account_enters_the_stage_its_days_past_due_fall_in(strategy: Strategy, days: int, stage: str) -> None:
    assert plan(AccountRecord(account=late(days)), [], strategy, NOW).stage == stage


def test_an_account_not_yet_past_due_plans_nothing_and_wakes_for_the_first_reminder(strategy: Strategy) -> None:
    result = plan(AccountRecord(account=late(0)), [], strategy, NOW)
    assert (result.stage, result.contacts, result.note) == (None, (), "not yet past due")
    assert result.next_wakeup == local(TODAY + timedelta(days=1), 10)


def test_days_past_due_count_in_the_debtors_zone(strategy: Strategy) -> None:
    # 17:00 UTC on 1 March is already 2 March in Shanghai but still 1 March in London.
    moment = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)
    due = date(2026, 3, 1)
    assert plan(AccountRecord(account=make_account(due_date=due)), [], strategy, moment).stage == "reminder"
    in_london = make_account(due_date=due, timezone="Europe/London")
    assert plan(AccountRecord(account=in_london), [], strategy, moment).stage is None


# Contact ids and cadences.
def test_the_first_day_past_due_sends_the_reminder_sms_and_wakes_for_the_call(strategy: Strategy) -> None:
    result = plan(AccountRecord(account=late(1)), [], strategy, NOW)
    assert ids(result) == ["A1/reminder/sms/0"]
    contact = result.contacts[0]
    assert (contact.channel, contact.template, contact.stage, contact.step) == (
        Channel.SMS, "reminder_sms", "reminder", "sms"
    )  # fmt: skip
    assert contact.due_at == local(TODAY, 10)
    assert result.next_wakeup == local(TODAY + timedelta(days=1), 11)


def test_contact_ids_are_the_same_however_often_the_account_is_planned(unpressed: Strategy) -> None:
    record = AccountRecord(account=late(20))
    assert plan(record, [], unpressed, NOW) == plan(record, [], unpressed, NOW)
    assert ids(plan(record, [], unpressed, NOW)) == ["A1/early/email/0", "A1/early/sms/0", "A1/early/call/1"]


def test_contact_ids_read_account_stage_step_occurrence() -> None:
    ref = ContactRef.parse("A-7.x/second_notice/call/3")
    assert ref == ContactRef("A-7.x", "second_notice", "call", 3)
    assert str(ref) == "A-7.x/second_notice/call/3"
    fallback = ContactRef("A1", "reminder", "call", 0, fallback=True)
    assert str(fallback) == "A1/reminder/call/0/fb"
    assert ContactRef.parse(str(fallback)) == fallback


@pytest.mark.parametrize("text", ["A1/reminder/call", "A1/reminder/call/x", "A1/reminder/call/0/zz", "adhoc-1"])
def test_strings_that_are_not_contact_ids_do_not_parse(text: str) -> None:
    assert ContactRef.parse(text) is None


def test_an_attempted_contact_is_not_planned_again(strategy: Strategy) -> None:
    history = [attempt("A1/reminder/sms/0", Channel.SMS, NOW)]
    result = plan(AccountRecord(account=late(1)), history, strategy, NOW + timedelta(minutes=5))
    assert result.contacts == ()
    assert result.next_wakeup == local(TODAY + timedelta(days=1), 11)


def test_the_reminder_stage_texts_on_days_0_and_4_and_calls_on_day_1(strategy: Strategy) -> None:
    sent = drive(AccountRecord(account=late(1)), strategy, NOW, local(TODAY + timedelta(days=7), 0))
    assert sent == [
        ("A1/reminder/sms/0", local(TODAY, 10)),
        ("A1/reminder/call/0", local(TODAY + timedelta(days=1), 11)),
        ("A1/reminder/sms/1", local(TODAY + timedelta(days=4), 10)),
    ]


def test_second_notice_calls_every_other_day_up_to_its_four_attempts(strategy: Strategy) -> None:
    sent = drive(AccountRecord(account=late(8)), strategy, local(TODAY, 0), local(TODAY + timedelta(days=8), 0))
    calls = [(cid, at) for cid, at in sent if "/call/" in cid]
    assert calls == [(f"A1/second_notice/call/{n}", local(TODAY + timedelta(days=2 * n), 14)) for n in range(4)]


def test_max_attempts_stops_an_every_cadence_before_the_stage_ends(strategy: Strategy) -> None:
    # Continuous calls every 2 days over a 29-day stage would be 15; max_attempts is 14.
    start = local(TODAY, 0)
    sent = drive(AccountRecord(account=late(31)), strategy, start, local(TODAY + timedelta(days=29), 0))
    calls = [cid for cid, _ in sent if cid.startswith("A1/continuous/call/")]
    assert calls == [f"A1/continuous/call/{n}" for n in range(14)]


def test_a_missed_occurrence_is_skipped_for_the_latest_one_due(unpressed: Strategy) -> None:
    # Imported on day 6 of the reminder stage: the day-4 text is due, the day-0 one is not sent late.
    result = plan(AccountRecord(account=late(6)), [], unpressed, NOW)
    assert ids(result) == ["A1/reminder/call/0", "A1/reminder/sms/1"]


def test_contacts_of_a_stage_left_behind_are_not_planned(strategy: Strategy) -> None:
    result = plan(AccountRecord(account=late(8)), [], strategy, NOW)
    assert all(contact.stage == "second_notice" for contact in result.contacts)
    assert ids(result) == ["A1/second_notice/sms/0"]


def test_the_last_plan_of_a_stage_wakes_for_the_next_stage(strategy: Strategy) -> None:
    history = [attempt("A1/reminder/sms/1", Channel.SMS, NOW), attempt("A1/reminder/call/0", Channel.VOICE, NOW)]
    result = plan(AccountRecord(account=late(7)), history, strategy, NOW + timedelta(hours=1))
    assert result.contacts == ()
    assert result.next_wakeup == local(TODAY + timedelta(days=1), 10)  # second notice's first text


# Compliance inside the plan.
def test_a_contact_outside_an_extra_zones_window_is_deferred_and_the_account_wakes_then(strategy: Strategy) -> None:
    account = late(1, extra_timezones=("Europe/London",))  # 10:00 Shanghai is 02:00 London
    result = plan(AccountRecord(account=account), [], strategy, NOW)
    assert result.contacts == ()
    [decision] = result.decisions
    assert (decision.contact_id, decision.verdict, decision.rule) == ("A1/reminder/sms/0", "defer", "window:sms")
    assert decision.until == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert result.next_wakeup == decision.until
    assert ids(plan(AccountRecord(account=account), [], strategy, decision.until)) == ["A1/reminder/sms/0"]


def test_contacts_allowed_in_the_same_plan_count_against_the_cap(unpressed: Strategy) -> None:
    day4 = TODAY + timedelta(days=4)
    history = [
        attempt("A1/reminder/sms/0", Channel.SMS, local(TODAY, 10)),
        attempt("A1/reminder/call/0", Channel.VOICE, local(TODAY + timedelta(days=1), 11)),
        attempt("adhoc-1", Channel.SMS, local(day4, 8, 30)),
        outcome("A1/reminder/call/0", Channel.VOICE, OutcomeKind.NO_ANSWER, local(day4, 9)),
    ]
    result = plan(AccountRecord(account=late(1)), history, unpressed, local(day4, 10))
    assert ids(result) == ["A1/reminder/call/0/fb"]
    deferred = [d for d in result.decisions if d.verdict == "defer"]
    assert [(d.contact_id, d.rule, d.until) for d in deferred] == [
        ("A1/reminder/sms/1", "cap:sms:2/1d", local(day4 + timedelta(days=1), 8, 30))
    ]
    assert result.next_wakeup == local(day4 + timedelta(days=1), 8, 30)


def test_an_opted_out_channel_is_denied_in_the_plan(strategy: Strategy) -> None:
    record = AccountRecord(account=late(1), state=AccountState(opted_out=frozenset({Channel.SMS})))
    result = plan(record, [], strategy, NOW)
    assert result.contacts == ()
    assert [(d.contact_id, d.verdict, d.rule) for d in result.decisions] == [
        ("A1/reminder/sms/0", "deny", "opted_out:sms")
    ]


# Outcomes and their fallbacks.
def test_an_unanswered_call_falls_back_to_the_missed_call_sms(strategy: Strategy) -> None:
    call_at = local(TODAY + timedelta(days=1), 11)
    history = [
        attempt("A1/reminder/sms/0", Channel.SMS, local(TODAY, 10)),
        attempt("A1/reminder/call/0", Channel.VOICE, call_at),
        outcome("A1/reminder/call/0", Channel.VOICE, OutcomeKind.NO_ANSWER, call_at + timedelta(minutes=1)),
    ]
    result = plan(AccountRecord(account=late(1)), history, strategy, call_at + timedelta(minutes=2))
    [contact] = result.contacts
    assert (contact.id, contact.channel, contact.template) == ("A1/reminder/call/0/fb", Channel.SMS, "missed_call_sms")
    assert contact.due_at == call_at + timedelta(minutes=1)


def test_a_busy_line_falls_back_too_but_a_voicemail_does_not(strategy: Strategy) -> None:
    call_at = local(TODAY + timedelta(days=1), 11)
    base = [attempt("A1/reminder/sms/0", Channel.SMS, NOW), attempt("A1/reminder/call/0", Channel.VOICE, call_at)]
    later = call_at + timedelta(minutes=5)
    busy = base + [outcome("A1/reminder/call/0", Channel.VOICE, OutcomeKind.BUSY, later)]
    voicemail = base + [outcome("A1/reminder/call/0", Channel.VOICE, OutcomeKind.VOICEMAIL, later)]
    assert ids(plan(AccountRecord(account=late(1)), busy, strategy, later)) == ["A1/reminder/call/0/fb"]
    assert ids(plan(AccountRecord(account=late(1)), voicemail, strategy, later)) == []


def test_a_fallback_is_sent_once(strategy: Strategy) -> None:
    call_at = local(TODAY + timedelta(days=1), 11)
    history = [
        attempt("A1/reminder/sms/0", Channel.SMS, NOW),
        attempt("A1/reminder/call/0", Channel.VOICE, call_at),
        outcome("A1/reminder/call/0", Channel.VOICE, OutcomeKind.NO_ANSWER, call_at),
        attempt("A1/reminder/call/0/fb", Channel.SMS, call_at + timedelta(minutes=1)),
    ]
    assert plan(AccountRecord(account=late(1)), history, strategy, call_at + timedelta(hours=1)).contacts == ()


def test_an_outcome_of_a_fallback_contact_has_no_fallback_of_its_own(strategy: Strategy) -> None:
    call_at = local(TODAY + timedelta(days=1), 11)
    history = [
        attempt("A1/reminder/sms/0", Channel.SMS, NOW),
        attempt("A1/reminder/call/0", Channel.VOICE, call_at),
        attempt("A1/reminder/call/0/fb", Channel.SMS, call_at),
        outcome("A1/reminder/call/0/fb", Channel.SMS, OutcomeKind.UNDELIVERED, call_at + timedelta(minutes=1)),
    ]
    assert plan(AccountRecord(account=late(1)), history, strategy, call_at + timedelta(hours=1)).contacts == ()


def test_a_bounced_email_invalidates_the_address_and_falls_back_to_sms(strategy: Strategy) -> None:
    record = AccountRecord(account=late(16))
    email_at = local(TODAY, 9)
    history = [
        attempt("A1/early/email/0", Channel.EMAIL, email_at),
        attempt("A1/early/sms/0", Channel.SMS, local(TODAY, 10)),
    ]
    bounce_at = local(TODAY, 12)
    bounced = Outcome(contact_id="A1/early/email/0", outcome=OutcomeKind.BOUNCED, channel=Channel.EMAIL)
    record = after(record, bounced, strategy, bounce_at)
    assert AddressKind.EMAIL in record.state.invalid_addresses
    history.append(outcome("A1/early/email/0", Channel.EMAIL, OutcomeKind.BOUNCED, bounce_at))
    result = plan(record, history, strategy, bounce_at)
    [contact] = result.contacts
    assert (contact.id, contact.channel, contact.template) == ("A1/early/email/0/fb", Channel.SMS, "early_sms")
    # A week later the next email of the ladder is denied, not sent.
    week_later = local(TODAY + timedelta(days=7), 9)
    history.append(attempt("A1/early/email/0/fb", Channel.SMS, bounce_at))
    later = plan(record, history, strategy, week_later)
    assert "A1/early/email/1" not in ids(later)
    assert ("A1/early/email/1", "deny", "invalid_address:email") in [
        (d.contact_id, d.verdict, d.rule) for d in later.decisions
    ]


def test_a_returned_letter_invalidates_the_postal_address(strategy: Strategy) -> None:
    record = AccountRecord(account=late(60))
    returned = Outcome(contact_id="A1/letter/letter/0", outcome=OutcomeKind.RETURNED, channel=Channel.LETTER)
    record = after(record, returned, strategy)
    assert record.state.invalid_addresses == frozenset({AddressKind.POSTAL})
    # The continuous stage's bounced-email fallback is a letter: with the address invalid it is denied.
    continuous = record.model_copy(update={"account": late(40)})
    history = [
        attempt("A1/continuous/email/0", Channel.EMAIL, NOW - timedelta(days=6)),
        outcome("A1/continuous/email/0", Channel.EMAIL, OutcomeKind.BOUNCED, NOW - timedelta(hours=1)),
    ]
    result = plan(continuous, history, strategy, NOW)
    assert "A1/continuous/email/0/fb" not in ids(result)
    assert ("A1/continuous/email/0/fb", "deny", "invalid_address:postal") in [
        (d.contact_id, d.verdict, d.rule) for d in result.decisions
    ]


# Promises.
def test_a_promise_pauses_the_account_until_the_promised_date_plus_grace(strategy: Strategy) -> None:
    record = after(AccountRecord(account=late(3)), PromiseToPay(amount=Decimal("500"), due=date(2026, 3, 5)), strategy)
    result = plan(record, [], strategy, NOW)
    assert (result.contacts, result.note) == ((), "promise_to_pay")
    # Grace is 2 days: the promise is judged at the end of 7 March, debtor's time.
    assert result.next_wakeup == local(date(2026, 3, 8), 0)


def test_a_promise_kept_by_payment_is_found_kept_when_it_lapses(strategy: Strategy) -> None:
    record = after(AccountRecord(account=late(3)), PromiseToPay(amount=Decimal("500"), due=date(2026, 3, 5)), strategy)
    record = after(record, Payment(amount=Decimal("500")), strategy)
    assert [e.kind for e in lapsed_events(record, strategy, local(date(2026, 3, 8), 0))] == ["promise_kept"]
    assert lapsed_events(record, strategy, local(date(2026, 3, 7), 23)) == []


def test_a_broken_promise_escalates_the_account_one_stage(strategy: Strategy) -> None:
    record = after(AccountRecord(account=late(3)), PromiseToPay(amount=Decimal("500"), due=date(2026, 3, 3)), strategy)
    judged = local(date(2026, 3, 6), 10)  # day 7 past due: still the reminder stage by days
    assert [e.kind for e in lapsed_events(record, strategy, judged)] == ["promise_broken"]
    record = after(record, PromiseBroken(), strategy, judged)
    assert (record.state.stage_floor, record.state.floor_since, record.state.promise) == (1, date(2026, 3, 6), None)
    result = plan(record, [], strategy, judged)
    assert result.stage == "second_notice"
    assert ids(result) == ["A1/second_notice/sms/0"]


def test_an_escalated_account_keeps_its_floor_when_days_catch_up(unpressed: Strategy) -> None:
    record = AccountRecord(account=late(3), state=AccountState(stage_floor=1, floor_since=TODAY))
    history = [attempt("A1/second_notice/sms/0", Channel.SMS, NOW)]
    # Five days later the account is 8 days past due: the stage entered on the floor day keeps its cadence.
    result = plan(record, history, unpressed, local(TODAY + timedelta(days=5), 10))
    assert result.stage == "second_notice"
    assert ids(result) == ["A1/second_notice/call/2", "A1/second_notice/sms/1"]


# Nothing after the end.
def test_nothing_is_planned_after_payment_in_full(strategy: Strategy) -> None:
    record = after(AccountRecord(account=late(20)), Payment(amount=Decimal("5000.00")), strategy)
    result = plan(record, [], strategy, NOW)
    assert (result.contacts, result.decisions, result.next_wakeup, result.note) == ((), (), None, "resolved")


def test_a_partial_payment_keeps_the_ladder_going(strategy: Strategy) -> None:
    record = after(AccountRecord(account=late(1)), Payment(amount=Decimal("100")), strategy)
    assert ids(plan(record, [], strategy, NOW)) == ["A1/reminder/sms/0"]


def test_nothing_is_planned_for_a_do_not_contact_account(strategy: Strategy) -> None:
    record = after(AccountRecord(account=late(20)), DoNotContact(), strategy)
    result = plan(record, [], strategy, NOW)
    assert (result.contacts, result.next_wakeup, result.note) == ((), None, "do_not_contact")


def test_the_legal_stage_hands_the_case_to_the_agency_and_stops_after_the_hand_off(strategy: Strategy) -> None:
    record = AccountRecord(account=late(90))
    result = plan(record, [], strategy, NOW)
    [contact] = result.contacts
    assert (contact.id, contact.channel, contact.template) == ("A1/legal/handoff/0", Channel.AGENCY, "legal_handoff")
    history: Sequence[HistoryEntry] = [attempt(contact.id, Channel.AGENCY, NOW)]
    handed_off = Outcome(contact_id=contact.id, outcome=OutcomeKind.HANDED_OFF, channel=Channel.AGENCY)
    record = after(record, handed_off, strategy)
    assert record.state.status == "handed_off"
    later = plan(record, history, strategy, NOW + timedelta(days=30))
    assert (later.contacts, later.next_wakeup, later.note) == ((), None, "handed_off")


def test_an_open_dispute_plans_nothing_and_sets_no_wake_up(strategy: Strategy) -> None:
    record = AccountRecord(account=late(20), state=AccountState(holds={"dispute": None}))
    result = plan(record, [], strategy, NOW)
    assert (result.contacts, result.next_wakeup, result.note) == ((), None, "hold")


def test_a_hardship_hold_wakes_the_account_when_it_lapses(strategy: Strategy) -> None:
    record = AccountRecord(account=late(20), state=AccountState(holds={"hardship": date(2026, 4, 1)}))
    result = plan(record, [], strategy, NOW)
    assert (result.contacts, result.note) == ((), "hold")
    assert result.next_wakeup == local(date(2026, 4, 1), 0)


# Ad-hoc contacts.
def adhoc_request(key: str, at: datetime, channel: Channel = Channel.EMAIL) -> HistoryEntry:
    detail = {"channel": channel.value, "template": "reminder_email", "key": key}
    return HistoryEntry(kind="event", at=at, event="adhoc_contact", detail=detail)


def test_an_ad_hoc_request_is_planned_beside_the_ladder_under_its_key(unpressed: Strategy) -> None:
    history = [attempt("A1/reminder/sms/0", Channel.SMS, NOW), adhoc_request("agent-1", NOW)]
    result = plan(AccountRecord(account=late(1)), history, unpressed, NOW + timedelta(minutes=1))
    [contact] = result.contacts
    assert (contact.id, contact.stage, contact.step, contact.channel) == (
        "A1/adhoc/agent-1/0", "adhoc", "agent-1", Channel.EMAIL
    )  # fmt: skip
    history.append(attempt(contact.id, Channel.EMAIL, NOW + timedelta(minutes=1)))
    assert plan(AccountRecord(account=late(1)), history, unpressed, NOW + timedelta(minutes=2)).contacts == ()


def test_an_ad_hoc_request_waits_for_the_window_like_any_contact(unpressed: Strategy) -> None:
    late_evening = local(TODAY, 22)
    history = [attempt("A1/reminder/sms/0", Channel.SMS, NOW), adhoc_request("agent-2", late_evening)]
    result = plan(AccountRecord(account=late(1)), history, unpressed, late_evening)
    assert result.contacts == ()
    assert [(d.contact_id, d.verdict, d.until) for d in result.decisions] == [
        ("A1/adhoc/agent-2/0", "defer", local(TODAY + timedelta(days=1), 8))
    ]


def test_an_ad_hoc_request_on_a_resolved_account_is_not_planned(strategy: Strategy) -> None:
    record = AccountRecord(account=late(1), state=AccountState(status="resolved"))
    assert plan(record, [adhoc_request("agent-3", NOW)], strategy, NOW).contacts == ()


# Contact pressure: the acceptance findings.
def test_after_a_dispute_is_resolved_the_waiting_contacts_do_not_all_go_in_the_same_minute(
    strategy: Strategy,
) -> None:
    # Acceptance: an email, an SMS, a call and the missed-call SMS went out in the same minute.
    held = local(TODAY, 10)
    record = AccountRecord(account=late(20), state=AccountState())
    history = [
        HistoryEntry(kind="event", at=held, event="dispute"),
        HistoryEntry(kind="event", at=held + timedelta(days=3, hours=4), event="dispute_resolved"),
    ]
    now = held + timedelta(days=3, hours=4)
    result = plan(record, history, strategy, now)
    waiting = [d for d in result.decisions if d.verdict != "deny"]
    assert len(waiting) >= 2
    assert len(result.contacts) <= 1
    offset = spread_offset("A1", strategy.compliance.pressure.spread_hours)
    assert all(d.until is None or d.until >= now + offset for d in result.decisions if d.verdict == "defer")


def test_an_account_imported_at_night_is_not_contacted_at_eight_sharp_nor_twice_by_one_step(
    strategy: Strategy,
) -> None:
    # Acceptance: imported at 59 days past due, an SMS, an email and a call at 08:00 sharp, then a second SMS
    # of the same step at 10:00.
    night = local(TODAY, 2)
    account = late(59)
    history = [HistoryEntry(kind="event", at=night, event="account_created")]
    result = plan(AccountRecord(account=account), history, strategy, night)
    sms = [d for d in result.decisions if "/continuous/sms/" in d.contact_id]
    assert [d.contact_id for d in sms] == []  # today's 10:00 text supersedes the catch-up of an earlier day
    untils = sorted(d.until for d in result.decisions if d.until is not None)
    offset = spread_offset("A1", strategy.compliance.pressure.spread_hours)
    assert untils and untils[0] == local(TODAY, 8) + offset
    assert all(b - a >= timedelta(hours=2) for a, b in zip(untils, untils[1:], strict=False)) or len(untils) == 1


def test_calls_move_to_the_hour_the_debtor_answers_when_best_time_is_on(strategy: Strategy) -> None:
    best = strategy.model_copy(update={"best_time": BestTime(enabled=True, min_answers=2)})
    history = [
        *(outcome(f"A1/x/call/{n}", Channel.VOICE, OutcomeKind.ANSWERED, local(TODAY - timedelta(days=20 - n), 19))
          for n in range(2)),
        attempt("A1/reminder/sms/0", Channel.SMS, local(TODAY, 10)),
    ]  # fmt: skip
    record = AccountRecord(account=late(1))
    tomorrow = TODAY + timedelta(days=1)
    assert plan(record, history, strategy, local(TODAY, 12)).next_wakeup == local(tomorrow, 11)  # the step's hour
    assert plan(record, history, best, local(TODAY, 12)).next_wakeup == local(tomorrow, 19)  # when they answer
