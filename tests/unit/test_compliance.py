"""The compliance policy, pure: windows in the debtor's zones, holidays, caps, the quiet period and the denials."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest

from dispatcher.core.compliance import ContactLog, Ruling, evaluate, spread_offset, violations
from dispatcher.core.models import Account, AccountState, AddressKind, Channel, HistoryEntry, OutcomeKind
from dispatcher.core.strategy import Cap, CompliancePolicy, HolidayRule, Strategy, Window
from tests.conftest import make_account

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")


def local(day: date, hour: int, minute: int = 0, tz: ZoneInfo = SHANGHAI) -> datetime:
    return datetime.combine(day, time(hour, minute), tz).astimezone(UTC)


MONDAY = date(2026, 3, 2)


@pytest.fixture
def policy(strategy: Strategy) -> CompliancePolicy:
    return strategy.compliance


def judge(
    channel: Channel,
    at: datetime,
    policy: CompliancePolicy,
    account: Account | None = None,
    state: AccountState | None = None,
    log: ContactLog | None = None,
) -> tuple[str, str | None, datetime | None]:
    ruling = evaluate(channel, account or make_account(), state or AccountState(), log or ContactLog(), at, policy)
    return ruling.verdict, ruling.rule, ruling.until


def log_of(channel: Channel, *moments: datetime) -> ContactLog:
    log = ContactLog()
    for moment in moments:
        log.add(channel, moment)
    return log


# Windows.
def test_a_call_at_ten_in_the_debtors_zone_is_sent(policy: CompliancePolicy) -> None:
    assert judge(Channel.VOICE, local(MONDAY, 10), policy) == ("send", None, None)


def test_a_call_before_eight_is_deferred_to_eight_local(policy: CompliancePolicy) -> None:
    assert judge(Channel.VOICE, local(MONDAY, 7, 59), policy) == ("defer", "window:voice", local(MONDAY, 8))


def test_a_text_at_nine_pm_is_deferred_to_eight_the_next_morning(policy: CompliancePolicy) -> None:
    verdict = judge(Channel.SMS, local(MONDAY, 21), policy)
    assert verdict == ("defer", "window:sms", local(MONDAY + timedelta(days=1), 8))


def test_the_window_is_read_in_the_debtors_zone_not_in_utc(policy: CompliancePolicy) -> None:
    new_yorker = make_account(timezone="America/New_York")
    # 15:00 UTC is 23:00 in Shanghai but 10:00 in New York (EST).
    at = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    assert judge(Channel.VOICE, at, policy, account=new_yorker)[0] == "send"
    assert judge(Channel.VOICE, at, policy)[0] == "defer"


def test_an_extra_time_zone_must_also_be_inside_the_window(policy: CompliancePolicy) -> None:
    # 10:00 in London is 23:00 in Auckland (NZDT): the call waits until both zones are in hours.
    account = make_account(timezone="Europe/London", extra_timezones=("Pacific/Auckland",))
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    verdict, rule, until = judge(Channel.VOICE, at, policy, account=account)
    assert (verdict, rule) == ("defer", "window:voice")
    assert until == datetime(2026, 3, 2, 19, 0, tzinfo=UTC)  # 19:00 London, 08:00 next day Auckland
    assert judge(Channel.VOICE, until, policy, account=account)[0] == "send"


def test_zones_with_no_common_hours_deny_the_channel(policy: CompliancePolicy) -> None:
    # Office hours 09-17: Shanghai is 01-09 UTC, New York (EST) 14-22 UTC; they never meet.
    office = policy.model_copy(update={"windows": {Channel.SMS: Window(start=time(9), end=time(17))}})
    account = make_account(timezone="Asia/Shanghai", extra_timezones=("America/New_York",))
    at = datetime(2025, 12, 1, 2, 0, tzinfo=UTC)
    assert judge(Channel.SMS, at, office, account=account) == ("deny", "window:sms:no_common_hours", None)


def test_a_text_to_two_far_apart_zones_waits_for_the_hours_they_share(policy: CompliancePolicy) -> None:
    # Shanghai 08-21 is 00-13 UTC, New York (EST) 08-21 is 13-02 UTC: they share 00-02 UTC.
    account = make_account(timezone="Asia/Shanghai", extra_timezones=("America/New_York",))
    at = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    assert judge(Channel.SMS, at, policy, account=account) == (
        "defer", "window:sms", datetime(2026, 3, 3, 0, 0, tzinfo=UTC)
    )  # fmt: skip


def test_the_window_follows_daylight_saving_time(policy: CompliancePolicy) -> None:
    account = make_account(timezone="America/New_York")
    # 2026-03-08 is the US spring-forward day: 08:00 EDT is 12:00 UTC, not 13:00.
    before_opening = local(date(2026, 3, 8), 7, tz=NEW_YORK)
    assert judge(Channel.VOICE, before_opening, policy, account=account)[2] == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def test_a_letter_may_be_posted_at_any_hour(policy: CompliancePolicy) -> None:
    assert judge(Channel.LETTER, local(MONDAY, 3), policy) == ("send", None, None)


def test_violations_name_the_window_broken_and_nothing_inside_it(policy: CompliancePolicy) -> None:
    account = make_account()
    assert violations(Channel.SMS, account, ContactLog(), local(MONDAY, 22), policy) == ["window:sms"]
    assert violations(Channel.SMS, account, ContactLog(), local(MONDAY, 12), policy) == []


# Holidays.
def with_holidays(policy: CompliancePolicy) -> CompliancePolicy:
    return policy.model_copy(update={"holidays": HolidayRule(enabled=True)})


def test_holidays_are_ignored_when_disabled(policy: CompliancePolicy) -> None:
    off = policy.model_copy(update={"holidays": HolidayRule(enabled=False)})
    assert judge(Channel.VOICE, local(date(2026, 1, 1), 10), off)[0] == "send"


def test_the_shipped_strategy_keeps_chinese_public_holidays(policy: CompliancePolicy) -> None:
    assert judge(Channel.VOICE, local(date(2026, 10, 1), 10), policy)[:2] == ("defer", "holiday:CN")


def test_no_call_on_new_year_until_the_adjusted_working_day_after_the_rest_period(policy: CompliancePolicy) -> None:
    calendar = holidays.country_holidays("CN", years=2026)
    # 2026-01-01..03 is the official rest period (the 3rd a Saturday); Sunday the 4th is a working day.
    assert date(2026, 1, 4) in calendar.weekend_workdays
    verdict = judge(Channel.VOICE, local(date(2026, 1, 1), 10), with_holidays(policy))
    assert verdict == ("defer", "holiday:CN", local(date(2026, 1, 4), 8))


def test_holidays_spare_channels_not_listed(policy: CompliancePolicy) -> None:
    rule = HolidayRule(enabled=True, channels=(Channel.VOICE, Channel.SMS))
    assert judge(Channel.EMAIL, local(date(2026, 1, 1), 10), policy.model_copy(update={"holidays": rule})) == (
        "send", None, None,
    )  # fmt: skip


def test_after_hours_before_a_holiday_the_call_waits_past_the_holiday(policy: CompliancePolicy) -> None:
    verdict, rule, until = judge(Channel.SMS, local(date(2025, 12, 31), 22), with_holidays(policy))
    assert (verdict, rule) == ("defer", "holiday:CN")
    assert until is not None and until.astimezone(SHANGHAI).date() > date(2026, 1, 1)


# Caps.
def test_a_third_text_in_a_day_waits_until_the_first_is_a_day_old(policy: CompliancePolicy) -> None:
    log = log_of(Channel.SMS, local(MONDAY, 9), local(MONDAY, 11))
    verdict = judge(Channel.SMS, local(MONDAY, 15), policy, log=log)
    assert verdict == ("defer", "cap:sms:2/1d", local(MONDAY + timedelta(days=1), 9))


def test_the_sms_cap_is_rolling_not_per_calendar_day(policy: CompliancePolicy) -> None:
    log = log_of(Channel.SMS, local(MONDAY, 20), local(MONDAY, 20, 30))
    # The next morning is a new calendar day but still inside 24 hours of both texts.
    verdict, rule, until = judge(Channel.SMS, local(MONDAY + timedelta(days=1), 8), policy, log=log)
    assert (verdict, rule, until) == ("defer", "cap:sms:2/1d", local(MONDAY + timedelta(days=1), 20))


def test_two_texts_a_day_are_allowed(policy: CompliancePolicy) -> None:
    log = log_of(Channel.SMS, local(MONDAY, 9))
    assert judge(Channel.SMS, local(MONDAY, 10), policy, log=log)[0] == "send"


def test_an_eighth_call_in_seven_days_waits_until_the_first_leaves_the_window(policy: CompliancePolicy) -> None:
    calls = [local(MONDAY + timedelta(days=n), 10) for n in range(7)]
    log = log_of(Channel.VOICE, *calls)
    verdict = judge(Channel.VOICE, local(MONDAY + timedelta(days=6), 15), policy, log=log)
    assert verdict == ("defer", "cap:voice:7/7d", calls[0] + timedelta(days=7))


def test_seven_calls_in_seven_days_are_allowed(policy: CompliancePolicy) -> None:
    log = log_of(Channel.VOICE, *[local(MONDAY + timedelta(days=n), 10) for n in range(6)])
    assert judge(Channel.VOICE, local(MONDAY + timedelta(days=6), 15), policy, log=log)[0] == "send"


def test_caps_count_each_channel_separately(policy: CompliancePolicy) -> None:
    log = log_of(Channel.SMS, local(MONDAY, 9), local(MONDAY, 10))
    assert judge(Channel.VOICE, local(MONDAY, 11), policy, log=log)[0] == "send"


def test_a_cap_that_frees_inside_the_window_defers_to_that_exact_moment(policy: CompliancePolicy) -> None:
    log = log_of(Channel.SMS, local(MONDAY, 8, 5), local(MONDAY, 20, 55))
    verdict = judge(Channel.SMS, local(MONDAY, 20, 56), policy, log=log)
    assert verdict == ("defer", "cap:sms:2/1d", local(MONDAY + timedelta(days=1), 8, 5))


def test_a_cap_that_frees_before_the_window_opens_waits_for_the_window_too(policy: CompliancePolicy) -> None:
    # Two texts logged at 05:00 and 05:30 (say, by an earlier system): free of the cap at 05:00, but the
    # window opens at 08:00. The deferral names the first rule hit.
    log = log_of(Channel.SMS, local(MONDAY, 5), local(MONDAY, 5, 30))
    verdict = judge(Channel.SMS, local(MONDAY, 20, 50), policy, log=log)
    assert verdict == ("defer", "cap:sms:2/1d", local(MONDAY + timedelta(days=1), 8))


def test_a_zero_cap_denies_the_channel_outright(policy: CompliancePolicy) -> None:
    never = policy.model_copy(update={"caps": {Channel.SMS: (Cap(max=0, days=1),)}})
    assert judge(Channel.SMS, local(MONDAY, 10), never) == ("deny", "cap:sms:never", None)


# The quiet period after a conversation.
def answered(at: datetime) -> ContactLog:
    return ContactLog.from_history([HistoryEntry(kind="outcome", at=at, outcome=OutcomeKind.ANSWERED)])


def test_no_call_for_seven_days_after_an_answered_call_the_conversation_day_counting_as_one(
    policy: CompliancePolicy,
) -> None:
    log = answered(local(MONDAY, 15))
    seventh_day = MONDAY + timedelta(days=6)
    assert judge(Channel.VOICE, local(seventh_day, 20), policy, log=log)[:2] == ("defer", "quiet:voice:7d")
    verdict, rule, until = judge(Channel.VOICE, local(MONDAY, 16), policy, log=log)
    assert (verdict, rule) == ("defer", "quiet:voice:7d")
    assert until == local(MONDAY + timedelta(days=7), 8)
    assert judge(Channel.VOICE, local(MONDAY + timedelta(days=7), 8), policy, log=log)[0] == "send"


def test_the_quiet_period_stops_calls_only(policy: CompliancePolicy) -> None:
    log = answered(local(MONDAY, 15))
    assert judge(Channel.SMS, local(MONDAY, 16), policy, log=log)[0] == "send"


def test_the_quiet_period_counts_from_the_latest_conversation(policy: CompliancePolicy) -> None:
    log = ContactLog.from_history(
        [HistoryEntry(kind="outcome", at=local(MONDAY + timedelta(days=3), 10), outcome=OutcomeKind.ANSWERED),
         HistoryEntry(kind="outcome", at=local(MONDAY, 10), outcome=OutcomeKind.ANSWERED)]
    )  # fmt: skip
    assert judge(Channel.VOICE, local(MONDAY + timedelta(days=8), 10), policy, log=log)[2] == local(
        MONDAY + timedelta(days=10), 8
    )


def test_an_unanswered_call_starts_no_quiet_period(policy: CompliancePolicy) -> None:
    log = ContactLog.from_history([HistoryEntry(kind="outcome", at=local(MONDAY, 10), outcome=OutcomeKind.NO_ANSWER)])
    assert judge(Channel.VOICE, local(MONDAY, 11), policy, log=log)[0] == "send"


def test_contact_log_counts_attempts_per_channel_in_time_order() -> None:
    later, earlier = local(MONDAY, 12), local(MONDAY, 9)
    log = ContactLog.from_history(
        [HistoryEntry(kind="attempt", at=later, channel=Channel.SMS, contact_id="x"),
         HistoryEntry(kind="attempt", at=earlier, channel=Channel.SMS, contact_id="y"),
         HistoryEntry(kind="event", at=earlier, event="payment")]
    )  # fmt: skip
    assert log.attempts == {Channel.SMS: [earlier, later]}
    assert log.conversations == []


# Denials, each by its named rule.
@pytest.mark.parametrize(
    ("state", "rule"),
    [
        (AccountState(status="resolved"), "account_resolved"),
        (AccountState(status="handed_off"), "handed_off"),
        (AccountState(do_not_contact=True), "do_not_contact"),
        (AccountState(holds={"dispute": None}), "hold:dispute"),
        (AccountState(holds={"hardship": date(2026, 4, 1)}), "hold:hardship"),
        (AccountState(opted_out=frozenset({Channel.SMS})), "opted_out:sms"),
        (AccountState(invalid_addresses=frozenset({AddressKind.PHONE})), "invalid_address:phone"),
    ],
)
def test_a_text_is_denied_by_the_named_rule(policy: CompliancePolicy, state: AccountState, rule: str) -> None:
    assert judge(Channel.SMS, local(MONDAY, 10), policy, state=state) == ("deny", rule, None)


def test_denials_hold_at_any_hour(policy: CompliancePolicy) -> None:
    assert judge(Channel.SMS, local(MONDAY, 23), policy, state=AccountState(do_not_contact=True))[:2] == (
        "deny",
        "do_not_contact",
    )


def test_resolved_outranks_every_other_denial(policy: CompliancePolicy) -> None:
    state = AccountState(status="resolved", do_not_contact=True, opted_out=frozenset({Channel.SMS}))
    assert judge(Channel.SMS, local(MONDAY, 10), policy, state=state)[1] == "account_resolved"


def test_opting_out_of_texts_leaves_calls_allowed(policy: CompliancePolicy) -> None:
    state = AccountState(opted_out=frozenset({Channel.SMS}))
    assert judge(Channel.VOICE, local(MONDAY, 10), policy, state=state)[0] == "send"


def test_calls_and_texts_need_prior_consent(policy: CompliancePolicy) -> None:
    account = make_account(consent=frozenset({Channel.EMAIL, Channel.LETTER}))
    assert judge(Channel.VOICE, local(MONDAY, 10), policy, account=account) == ("deny", "no_consent:voice", None)
    assert judge(Channel.SMS, local(MONDAY, 10), policy, account=account) == ("deny", "no_consent:sms", None)


def test_email_and_letters_need_no_consent(policy: CompliancePolicy) -> None:
    account = make_account(consent=frozenset())
    assert judge(Channel.EMAIL, local(MONDAY, 10), policy, account=account)[0] == "send"
    assert judge(Channel.LETTER, local(MONDAY, 10), policy, account=account)[0] == "send"


def test_a_channel_without_an_address_is_denied(policy: CompliancePolicy) -> None:
    account = make_account(email=None)
    assert judge(Channel.EMAIL, local(MONDAY, 10), policy, account=account) == ("deny", "no_address:email", None)


def test_a_bounced_email_address_denies_email_but_not_letters(policy: CompliancePolicy) -> None:
    state = AccountState(invalid_addresses=frozenset({AddressKind.EMAIL}))
    assert judge(Channel.EMAIL, local(MONDAY, 10), policy, state=state)[1] == "invalid_address:email"
    assert judge(Channel.LETTER, local(MONDAY, 10), policy, state=state)[0] == "send"


def test_the_agency_hand_off_needs_no_address_or_window(policy: CompliancePolicy) -> None:
    assert judge(Channel.AGENCY, local(MONDAY, 2), policy) == ("send", None, None)


# Defer returns the earliest compliant moment.
def test_a_deferral_lands_on_a_moment_that_is_itself_allowed(policy: CompliancePolicy) -> None:
    account = make_account(timezone="Europe/London", extra_timezones=("Pacific/Auckland",))
    log = log_of(Channel.SMS, datetime(2026, 3, 2, 19, 30, tzinfo=UTC), datetime(2026, 3, 2, 19, 40, tzinfo=UTC))
    at = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)
    verdict, _, until = judge(Channel.SMS, at, policy, account=account, log=log)
    assert verdict == "defer" and until is not None
    assert judge(Channel.SMS, until, policy, account=account, log=log)[0] == "send"
    assert judge(Channel.SMS, until - timedelta(seconds=1), policy, account=account, log=log)[0] == "defer"


# Contact pressure across channels.
def pressed(*sent: tuple[Channel, datetime, str], policy: CompliancePolicy) -> ContactLog:
    log = ContactLog(pressure=policy.pressure)
    for channel, at, template in sent:
        log.add(channel, at, template)
    return log


def ask(channel: Channel, at: datetime, policy: CompliancePolicy, log: ContactLog, **kwargs: object) -> Ruling:
    return evaluate(channel, make_account(), AccountState(), log, at, policy, **kwargs)  # type: ignore[arg-type]


def test_a_call_an_hour_after_a_text_waits_for_the_spacing_whatever_the_channel(policy: CompliancePolicy) -> None:
    log = pressed((Channel.SMS, local(MONDAY, 10), "reminder_sms"), policy=policy)
    ruling = ask(Channel.VOICE, local(MONDAY, 11), policy, log)
    assert (ruling.verdict, ruling.rule, ruling.until) == ("defer", "spacing", local(MONDAY, 12))


def test_the_missed_call_text_is_exempt_from_the_spacing_and_holds_nobody(policy: CompliancePolicy) -> None:
    log = pressed((Channel.VOICE, local(MONDAY, 11), "reminder_call"), policy=policy)
    assert ask(Channel.SMS, local(MONDAY, 11, 1), policy, log, template="missed_call_sms").verdict == "send"
    log.add(Channel.SMS, local(MONDAY, 11, 1), "missed_call_sms")
    later = ask(Channel.EMAIL, local(MONDAY, 13), policy, log)
    assert later.verdict == "send"  # two hours after the call; the exempt text does not restart the spacing


def test_a_daily_total_across_channels_defers_the_fourth_contact(policy: CompliancePolicy) -> None:
    log = pressed(
        (Channel.SMS, local(MONDAY, 8), "a"), (Channel.EMAIL, local(MONDAY, 10), "b"),
        (Channel.VOICE, local(MONDAY, 12), "c"), policy=policy,
    )  # fmt: skip
    ruling = ask(Channel.SMS, local(MONDAY, 15), policy, log)
    assert (ruling.verdict, ruling.rule) == ("defer", "total:3/1d")
    assert ruling.until == local(MONDAY + timedelta(days=1), 8)


def test_a_contact_that_waited_for_the_night_goes_at_the_debtors_own_place_in_the_spread(
    policy: CompliancePolicy,
) -> None:
    yesterday = local(MONDAY - timedelta(days=1), 16)
    ruling = ask(Channel.SMS, local(MONDAY, 6), policy, ContactLog(pressure=policy.pressure), due_at=yesterday)
    offset = spread_offset("A1", policy.pressure.spread_hours)
    assert (ruling.verdict, ruling.rule, ruling.until) == ("defer", "window:sms", local(MONDAY, 8) + offset)
    assert timedelta(0) <= offset < timedelta(hours=policy.pressure.spread_hours)
    # The last look at that moment sends it: the same policy gives the same answer.
    assert ask(Channel.SMS, local(MONDAY, 8) + offset, policy, ContactLog(pressure=policy.pressure),
               due_at=yesterday).verdict == "send"  # fmt: skip


def test_a_contact_due_today_is_not_spread(policy: CompliancePolicy) -> None:
    ruling = ask(Channel.SMS, local(MONDAY, 10), policy, ContactLog(pressure=policy.pressure), due_at=local(MONDAY, 10))
    assert ruling.verdict == "send"


def test_the_spread_is_stable_per_debtor_and_spreads_debtors() -> None:
    assert spread_offset("ACC0000001", 6) == spread_offset("ACC0000001", 6)
    offsets = {spread_offset(f"ACC{n:07d}", 6) for n in range(500)}
    assert len(offsets) == 24 and max(offsets) < timedelta(hours=6)


def test_contacts_released_by_a_resolved_dispute_are_spread_after_the_release(policy: CompliancePolicy) -> None:
    released = local(MONDAY, 14)
    log = ContactLog.from_history([HistoryEntry(kind="event", at=released, event="dispute_resolved")], policy.pressure)
    ruling = ask(Channel.EMAIL, released, policy, log, due_at=local(MONDAY - timedelta(days=3), 9))
    offset = spread_offset("A1", policy.pressure.spread_hours)
    if offset:
        assert (ruling.verdict, ruling.rule, ruling.until) == ("defer", "spread", released + offset)


# Rest days by country.
def test_golden_week_keeps_its_sunday_and_the_first_allowed_day_is_spread(policy: CompliancePolicy) -> None:
    # 2026-10-04 is a Sunday inside Golden Week: the calendar lists statutory days only (acceptance).
    sunday = date(2026, 10, 4)
    ruling = ask(
        Channel.VOICE, local(sunday, 10), policy, ContactLog(pressure=policy.pressure), due_at=local(sunday, 10)
    )
    offset = spread_offset("A1", policy.pressure.spread_hours)
    assert (ruling.verdict, ruling.rule, ruling.until) == ("defer", "holiday:CN", local(date(2026, 10, 8), 8) + offset)


def test_mid_autumn_and_national_day_are_rest_days_in_the_shipped_strategy(policy: CompliancePolicy) -> None:
    for day in (date(2026, 9, 25), date(2026, 10, 1)):
        assert judge(Channel.SMS, local(day, 10), policy)[:2] == ("defer", "holiday:CN")


def test_an_adjusted_working_saturday_is_a_working_day_even_for_weekend_channels(policy: CompliancePolicy) -> None:
    weekends = policy.model_copy(update={"holidays": HolidayRule(weekends=(Channel.VOICE,))})
    assert judge(Channel.VOICE, local(date(2026, 10, 10), 10), weekends)[0] == "send"  # 调休上班
    assert judge(Channel.VOICE, local(date(2026, 10, 11), 10), weekends)[:2] == ("defer", "weekend:CN")
    assert judge(Channel.SMS, local(date(2026, 10, 11), 10), weekends)[0] == "send"


def test_a_country_the_calendar_does_not_know_has_no_rest_days(policy: CompliancePolicy) -> None:
    account = make_account(country="XX")
    assert judge(Channel.VOICE, local(date(2026, 10, 1), 10), policy, account=account)[0] == "send"
