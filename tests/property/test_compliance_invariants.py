"""Properties of the compliance policy, checked against an independent re-statement of the rules.

`allowed_independently` restates the timed rules from the strategy's numbers without the policy's code: the
window in every one of the debtor's zones, holidays, rolling caps and the quiet period counted in calendar days.
The policy must send exactly when it is allowed, and a deferral must land on the earliest allowed moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays as holiday_calendars
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import DEFAULT_STRATEGY
from dispatcher.core.compliance import ContactLog, evaluate, violations
from dispatcher.core.models import Account, AccountState, Channel, HistoryEntry, OutcomeKind
from dispatcher.core.strategy import CompliancePolicy, HolidayRule, load_strategy
from tests.conftest import make_account

ZONES = ("Asia/Shanghai", "America/New_York", "Pacific/Auckland", "Europe/London")
START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
STRATEGY = load_strategy(Path(DEFAULT_STRATEGY))
POLICY = STRATEGY.compliance
TIMED = (Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.LETTER)


def zones_of(account: Account) -> tuple[str, ...]:
    return (account.timezone, *account.extra_timezones)


def in_window(channel: Channel, account: Account, at: datetime, policy: CompliancePolicy) -> bool:
    window = policy.windows.get(channel)
    if window is None:
        return True
    return all(window.start <= at.astimezone(ZoneInfo(name)).time() < window.end for name in zones_of(account))


def on_holiday(channel: Channel, account: Account, at: datetime, policy: CompliancePolicy) -> bool:
    if not policy.holidays.enabled or channel not in policy.holidays.channels:
        return False
    calendar = _calendar(account.country)
    return any(_rests(calendar, at.astimezone(ZoneInfo(name)).date()) for name in zones_of(account))


def _rests(calendar: holiday_calendars.HolidayBase, day: date) -> bool:
    """A holiday, or a weekend day (not a working one) joined to a holiday by other days off."""
    if day in calendar:
        return True

    def off(d: date) -> bool:
        return d in calendar or (d.weekday() in calendar.weekend and d not in calendar.weekend_workdays)

    if not off(day):
        return False
    for direction in (1, -1):
        probe = day
        while off(probe):
            if probe in calendar:
                return True
            probe += timedelta(days=direction)
    return False


@lru_cache(maxsize=8)
def _calendar(country: str) -> holiday_calendars.HolidayBase:
    return holiday_calendars.country_holidays(country)


def over_cap(channel: Channel, past: Sequence[datetime], at: datetime, policy: CompliancePolicy) -> bool:
    """True when one more contact at `at` would put a rolling window over its cap."""
    for cap in policy.caps.get(channel, ()):
        recent = [t for t in past if at - timedelta(days=cap.days) < t <= at]
        if len(recent) + 1 > cap.max:
            return True
    return False


def in_quiet_period(
    channel: Channel, account: Account, conversations: Sequence[datetime], at: datetime, policy: CompliancePolicy
) -> bool:
    quiet = policy.quiet_after_conversation
    if quiet is None or channel is not quiet.channel:
        return False
    for talked in conversations:
        for name in zones_of(account):
            tz = ZoneInfo(name)
            day_number = (at.astimezone(tz).date() - talked.astimezone(tz).date()).days + 1
            if talked <= at and day_number <= quiet.days:
                return True
    return False


def allowed_independently(
    channel: Channel,
    account: Account,
    attempts: Sequence[datetime],
    conversations: Sequence[datetime],
    at: datetime,
    policy: CompliancePolicy = POLICY,
) -> bool:
    return (
        in_window(channel, account, at, policy)
        and not on_holiday(channel, account, at, policy)
        and not over_cap(channel, attempts, at, policy)
        and not in_quiet_period(channel, account, conversations, at, policy)
    )


@st.composite
def debtors(draw: st.DrawFn) -> Account:
    main = draw(st.sampled_from(ZONES))
    extra = draw(st.lists(st.sampled_from([z for z in ZONES if z != main]), max_size=2, unique=True))
    return make_account(timezone=main, extra_timezones=tuple(extra))


moments = st.integers(min_value=0, max_value=400 * 24 * 60).map(lambda minutes: START + timedelta(minutes=minutes))
policies = st.sampled_from([POLICY, POLICY.model_copy(update={"holidays": HolidayRule(enabled=True)})])


@st.composite
def situations(draw: st.DrawFn) -> tuple[Channel, Account, list[datetime], list[datetime], datetime, CompliancePolicy]:
    channel = draw(st.sampled_from(TIMED))
    account = draw(debtors())
    now = draw(moments)
    before_now = st.integers(min_value=1, max_value=10 * 24 * 60).map(lambda m: now - timedelta(minutes=m))
    attempts = draw(st.lists(before_now, max_size=9))
    conversations = draw(st.lists(before_now, max_size=2)) if channel is Channel.VOICE else []
    return channel, account, attempts, conversations, now, draw(policies)


def log_from(channel: Channel, attempts: Sequence[datetime], conversations: Sequence[datetime]) -> ContactLog:
    history = [HistoryEntry(kind="attempt", at=t, channel=channel, contact_id=f"c{i}") for i, t in enumerate(attempts)]
    history += [HistoryEntry(kind="outcome", at=t, outcome=OutcomeKind.ANSWERED) for t in conversations]
    return ContactLog.from_history(history)


@settings(max_examples=300, deadline=None)
@given(situations())
def test_the_policy_sends_exactly_when_every_timed_rule_allows_it(
    situation: tuple[Channel, Account, list[datetime], list[datetime], datetime, CompliancePolicy],
) -> None:
    channel, account, attempts, conversations, now, policy = situation
    log = log_from(channel, attempts, conversations)
    ruling = evaluate(channel, account, AccountState(), log, now, policy)
    expected = allowed_independently(channel, account, attempts, conversations, now, policy)
    assert (ruling.verdict == "send") == expected, ruling
    assert (violations(channel, account, log, now, policy) == []) == expected


@settings(max_examples=200, deadline=None)
@given(situations())
def test_a_deferral_lands_on_the_earliest_allowed_moment(
    situation: tuple[Channel, Account, list[datetime], list[datetime], datetime, CompliancePolicy],
) -> None:
    channel, account, attempts, conversations, now, policy = situation
    log = log_from(channel, attempts, conversations)
    ruling = evaluate(channel, account, AccountState(), log, now, policy)
    if ruling.verdict != "defer":
        return
    until = ruling.until
    assert until is not None and until > now and ruling.rule
    assert allowed_independently(channel, account, attempts, conversations, until, policy)
    assert evaluate(channel, account, AccountState(), log, until, policy).verdict == "send"
    assert not allowed_independently(channel, account, attempts, conversations, until - timedelta(seconds=1), policy)
    probe = now
    while probe < until:
        assert not allowed_independently(channel, account, attempts, conversations, probe, policy), probe
        probe += timedelta(minutes=20)


@settings(max_examples=150, deadline=None)
@given(situations())
def test_timed_rules_deny_only_when_the_zones_share_no_hours(
    situation: tuple[Channel, Account, list[datetime], list[datetime], datetime, CompliancePolicy],
) -> None:
    channel, account, attempts, conversations, now, policy = situation
    ruling = evaluate(channel, account, AccountState(), log_from(channel, attempts, conversations), now, policy)
    if ruling.verdict == "deny":
        assert ruling.rule == f"window:{channel}:no_common_hours"
        assert len(zones_of(account)) > 1


denying_states = st.sampled_from(
    [AccountState(status="resolved"), AccountState(status="handed_off"), AccountState(do_not_contact=True),
     AccountState(holds={"dispute": None})]
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(situations(), denying_states)
def test_a_stopped_account_is_denied_on_every_channel_at_every_moment(
    situation: tuple[Channel, Account, list[datetime], list[datetime], datetime, CompliancePolicy],
    state: AccountState,
) -> None:
    channel, account, attempts, conversations, now, policy = situation
    ruling = evaluate(channel, account, state, log_from(channel, attempts, conversations), now, policy)
    assert ruling.verdict == "deny" and ruling.until is None
