"""The compliance policy, pure: may this channel reach this account now, later, or not at all?

The same function answers for the planner and for the last look before a send. It returns a `Ruling`:
send; defer until a time (outside a window, over a cap, in a quiet period); or deny by a named rule
(resolved, held, opted out, no consent ...). The rule's name is what the audit trail records.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

import holidays as holiday_calendars

from dispatcher.models import ADDRESS_OF_CHANNEL, Account, AccountState, Channel, HistoryEntry, OutcomeKind, zone
from dispatcher.strategy import Cap, CompliancePolicy, Window

_MAX_ADJUSTMENTS = 64  # each pass moves time forward; the constraints settle in a handful of passes


@dataclass(frozen=True, slots=True)
class Ruling:
    verdict: str  # "send" | "defer" | "deny"
    rule: str | None = None
    until: datetime | None = None


SEND = Ruling("send")


@dataclass(slots=True)
class ContactLog:
    """The past contacts the caps count: attempt times per channel (claimed ones included) and conversations."""

    attempts: dict[Channel, list[datetime]] = field(default_factory=dict)
    conversations: list[datetime] = field(default_factory=list)

    @classmethod
    def from_history(cls, history: Iterable[HistoryEntry]) -> ContactLog:
        log = cls()
        for entry in history:
            if entry.kind == "attempt" and entry.channel is not None:
                log.attempts.setdefault(entry.channel, []).append(entry.at)
            elif is_conversation(entry):
                log.conversations.append(entry.at)
        for times in log.attempts.values():
            times.sort()
        log.conversations.sort()
        return log

    def add(self, channel: Channel, at: datetime) -> None:
        times = self.attempts.setdefault(channel, [])
        times.insert(bisect_right(times, at), at)


CONVERSATION_DISPOSITIONS = frozenset({"right_party", "promise", "refused"})


def is_conversation(entry: HistoryEntry) -> bool:
    """An answered call, or an agent's disposition saying the debtor was spoken to."""
    if entry.kind == "outcome":
        return entry.outcome is OutcomeKind.ANSWERED
    return (
        entry.kind == "event"
        and entry.event == "agent_disposition"
        and entry.detail.get("disposition") in CONVERSATION_DISPOSITIONS
    )


def evaluate(
    channel: Channel,
    account: Account,
    state: AccountState,
    log: ContactLog,
    now: datetime,
    policy: CompliancePolicy,
) -> Ruling:
    """Send now, defer until the earliest compliant moment, or deny with the rule that forbids it."""
    denied = denial(channel, account, state, policy)
    if denied:
        return Ruling("deny", denied)
    at, rule = earliest_allowed(channel, account, log, now, policy)
    if at is None:
        return Ruling("deny", rule)
    return SEND if at <= now else Ruling("defer", rule, at)


def denial(channel: Channel, account: Account, state: AccountState, policy: CompliancePolicy) -> str | None:
    """The rule that forbids this channel outright, whatever the time."""
    if state.status == "resolved":
        return "account_resolved"
    if state.status == "handed_off":
        return "handed_off"
    if state.do_not_contact:
        return "do_not_contact"
    if state.holds:
        return "hold:" + next(iter(state.holds))
    if channel in state.opted_out:
        return f"opted_out:{channel}"
    kind = ADDRESS_OF_CHANNEL[channel]
    if kind is not None and kind in state.invalid_addresses:
        return f"invalid_address:{kind}"
    if account.address_for(channel) is None:
        return f"no_address:{channel}"
    if channel in policy.require_consent and channel not in account.consent:
        return f"no_consent:{channel}"
    if any(cap.max == 0 for cap in policy.caps.get(channel, ())):
        return f"cap:{channel}:never"
    return None


def earliest_allowed(
    channel: Channel, account: Account, log: ContactLog, start: datetime, policy: CompliancePolicy
) -> tuple[datetime | None, str | None]:
    """The first moment from `start` at which every timed rule allows the channel, and the first rule hit."""
    at, first_rule = start, None
    for _ in range(_MAX_ADJUSTMENTS):
        moved_to, rule = _next_move(channel, account, log, at, policy)
        if moved_to is None:
            return at, first_rule
        at, first_rule = moved_to, first_rule or rule
    return None, f"window:{channel}:no_common_hours"


def violations(
    channel: Channel, account: Account, log: ContactLog, at: datetime, policy: CompliancePolicy
) -> list[str]:
    """Every timed rule a contact at `at` would break; empty when it is allowed."""
    found = []
    for constraint in _TIMED_RULES:
        moved = constraint(channel, account, log, at, policy)
        if moved is not None and moved[0] > at:
            found.append(moved[1])
    return found


def _next_move(
    channel: Channel, account: Account, log: ContactLog, at: datetime, policy: CompliancePolicy
) -> tuple[datetime | None, str | None]:
    for constraint in _TIMED_RULES:
        moved = constraint(channel, account, log, at, policy)
        if moved is not None and moved[0] > at:
            return moved
    return None, None


def _quiet_end(
    channel: Channel, account: Account, log: ContactLog, at: datetime, policy: CompliancePolicy
) -> tuple[datetime, str] | None:
    quiet = policy.quiet_after_conversation
    if quiet is None or quiet.channel is not channel or not log.conversations:
        return None
    last = log.conversations[-1]
    ends = max(_local_midnight(last, name, quiet.days) for name in _zones(account))
    return (ends, f"quiet:{channel}:{quiet.days}d") if at < ends else None


def _cap_free_at(
    channel: Channel, account: Account, log: ContactLog, at: datetime, policy: CompliancePolicy
) -> tuple[datetime, str] | None:
    times = log.attempts.get(channel)
    if not times:
        return None
    latest: tuple[datetime, str] | None = None
    for cap in policy.caps.get(channel, ()):
        free = _free_under(cap, times, at)
        if free > at and (latest is None or free > latest[0]):
            latest = (free, f"cap:{channel}:{cap.max}/{cap.days}d")
    return latest


def _free_under(cap: Cap, times: Sequence[datetime], at: datetime) -> datetime:
    span = timedelta(days=cap.days)
    inside = [t for t in times if at - span < t <= at]
    if len(inside) < cap.max:
        return at
    return inside[len(inside) - cap.max] + span


def _window_open_at(
    channel: Channel, account: Account, log: ContactLog, at: datetime, policy: CompliancePolicy
) -> tuple[datetime, str] | None:
    window = policy.windows.get(channel)
    check_holidays = policy.holidays.enabled and channel in policy.holidays.channels
    if window is None and not check_holidays:
        return None
    latest: tuple[datetime, str] | None = None
    for name in _zones(account):
        local = at.astimezone(zone(name))
        opens, rule = _opening_in_zone(local, window, account.country if check_holidays else None, channel)
        if opens is not None and opens > at and (latest is None or opens > latest[0]):
            latest = (opens, rule)
    return latest


def _opening_in_zone(
    local: datetime, window: Window | None, country: str | None, channel: Channel
) -> tuple[datetime | None, str]:
    """When the window next opens in this zone, or None when `local` is already inside it."""
    day, rule = local.date(), f"window:{channel}"
    in_hours = window is None or window.start <= local.time() < window.end
    if in_hours and not _is_holiday(country, day):
        return None, rule
    if window is not None and local.time() >= window.end:
        day += timedelta(days=1)
    elif in_hours:
        rule = f"holiday:{country}"
    while _is_holiday(country, day):
        day, rule = day + timedelta(days=1), f"holiday:{country}"
    opens_at = window.start if window is not None else time(0, 0)
    return datetime.combine(day, opens_at, local.tzinfo).astimezone(UTC), rule


def _is_holiday(country: str | None, day: date) -> bool:
    return country is not None and day in _calendar(country)


@lru_cache(maxsize=64)
def _calendar(country: str) -> Any:
    try:
        return holiday_calendars.country_holidays(country)
    except NotImplementedError:
        return {}


def _zones(account: Account) -> tuple[str, ...]:
    return (account.timezone, *account.extra_timezones)


def _local_midnight(moment: datetime, zone_name: str, days_after: int) -> datetime:
    tz = zone(zone_name)
    day = moment.astimezone(tz).date() + timedelta(days=days_after)
    return datetime.combine(day, time(0, 0), tz).astimezone(UTC)


_TIMED_RULES = (_quiet_end, _cap_free_at, _window_open_at)
