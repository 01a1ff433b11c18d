"""The compliance policy, pure: may this channel reach this account now, later, or not at all?

The same function answers for the planner and for the last look before a send. It returns a `Ruling`:
send; defer until a time (outside a window, over a cap, in a quiet period); or deny by a named rule
(resolved, held, opted out, no consent ...). The rule's name is what the audit trail records.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from dispatcher.core import calendar
from dispatcher.core.models import (
    Account,
    AccountState,
    Channel,
    HistoryEntry,
    OutcomeKind,
    Verdict,
    zone,
)
from dispatcher.core.strategy import Cap, CompliancePolicy, Pressure, Window

_MAX_ADJUSTMENTS = 64  # each pass moves time forward; the constraints settle in a handful of passes


@dataclass(frozen=True, slots=True)
class Ruling:
    verdict: Verdict
    rule: str | None = None
    until: datetime | None = None
    spread: bool = False  # the debtor's place in the spread may matter: the ruling is this account's own


SEND = Ruling("send")


@dataclass(slots=True)
class ContactLog:
    """The past contacts the rules count: attempt times per channel (claimed ones included), conversations,
    and, for contact pressure, every outbound attempt (`outbound`), the ones spacing holds others to
    (`spaced`: not exempt) and the moments a waiting account was released (`releases`)."""

    attempts: dict[Channel, list[datetime]] = field(default_factory=dict)
    conversations: list[datetime] = field(default_factory=list)
    pressure: Pressure | None = None
    outbound: list[datetime] = field(default_factory=list)
    spaced: list[datetime] = field(default_factory=list)
    releases: list[datetime] = field(default_factory=list)

    @classmethod
    def from_history(cls, history: Iterable[HistoryEntry], pressure: Pressure | None = None) -> ContactLog:
        log = cls(pressure=pressure)
        for entry in history:
            if entry.kind == "attempt" and entry.channel is not None:
                log.attempts.setdefault(entry.channel, []).append(entry.at)
                log._count(entry.channel, entry.detail.get("template"), entry.at, append=True)
            elif is_conversation(entry):
                log.conversations.append(entry.at)
            elif entry.kind == "event" and entry.event in RELEASE_EVENTS:
                log.releases.append(entry.at)
        for times in (*log.attempts.values(), log.conversations, log.outbound, log.spaced, log.releases):
            times.sort()
        return log

    def add(self, channel: Channel, at: datetime, template: str | None = None) -> None:
        times = self.attempts.setdefault(channel, [])
        times.insert(bisect_right(times, at), at)
        self._count(channel, template, at, append=False)

    def _count(self, channel: Channel, template: str | None, at: datetime, append: bool) -> None:
        pressure = self.pressure
        if pressure is None or channel not in pressure.channels:
            return
        lists = [self.outbound]
        if template not in pressure.spacing_exempt_templates:
            lists.append(self.spaced)
        for times in lists:
            if append:
                times.append(at)
            else:
                times.insert(bisect_right(times, at), at)


# Events after which contacts that waited go out: the end of a hold or of a promise.
RELEASE_EVENTS = frozenset({"dispute_resolved", "hold_lapsed", "promise_kept", "promise_broken"})


@dataclass(frozen=True, slots=True)
class Ask:
    """One question to the timed rules: this channel for this account, with what the contact is."""

    channel: Channel
    account: Account
    log: ContactLog
    policy: CompliancePolicy
    due_at: datetime | None = None  # when the contact became due: one that waited is spread
    exempt: bool = False  # exempt from spacing (a missed-call SMS)


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
    due_at: datetime | None = None,
    template: str | None = None,
) -> Ruling:
    """Send now, defer until the earliest compliant moment, or deny with the rule that forbids it.

    `due_at` (when the contact became due) lets a contact that waited be spread; `template` tells whether
    it is exempt from spacing."""
    denied = denial(channel, account, state, policy)
    if denied:
        return Ruling("deny", denied)
    ask = Ask(channel, account, log, policy, due_at, template in policy.pressure.spacing_exempt_templates)
    at, rule = earliest_allowed(ask, now)
    if at is None:
        return Ruling("deny", rule)
    spread = _spread_applies(ask, now) or (at > now and _spread_applies(ask, at))
    if at <= now:
        return Ruling("send", spread=True) if spread else SEND
    return Ruling("defer", rule, at, spread)


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
    kind = channel.address
    if kind is not None and kind in state.invalid_addresses:
        return f"invalid_address:{kind}"
    if account.address_for(channel) is None:
        return f"no_address:{channel}"
    # Both fail closed: a channel the account has not named, or the policy does not describe, is not used.
    if policy.needs_consent(channel) and channel not in account.consent:
        return f"no_consent:{channel}"
    if not policy.configured(channel):
        return f"no_policy:{channel}"
    if any(cap.max == 0 for cap in policy.caps.get(channel, ())):
        return f"cap:{channel}:never"
    return None


def earliest_allowed(ask: Ask, start: datetime) -> tuple[datetime | None, str | None]:
    """The first moment from `start` at which every timed rule allows the channel, and the first rule hit."""
    at, first_rule = start, None
    for _ in range(_MAX_ADJUSTMENTS):
        moved_to, rule = _next_move(ask, at)
        if moved_to is None:
            return at, first_rule
        at, first_rule = moved_to, first_rule or rule
    return None, f"window:{ask.channel}:no_common_hours"


def violations(
    channel: Channel,
    account: Account,
    log: ContactLog,
    at: datetime,
    policy: CompliancePolicy,
    due_at: datetime | None = None,
    template: str | None = None,
) -> list[str]:
    """Every timed rule a contact at `at` would break; empty when it is allowed."""
    ask = Ask(channel, account, log, policy, due_at, template in policy.pressure.spacing_exempt_templates)
    found = []
    for constraint in _TIMED_RULES:
        moved = constraint(ask, at)
        if moved is not None and moved[0] > at:
            found.append(moved[1])
    return found


def _next_move(ask: Ask, at: datetime) -> tuple[datetime | None, str | None]:
    for constraint in _TIMED_RULES:
        moved = constraint(ask, at)
        if moved is not None and moved[0] > at:
            return moved
    return None, None


def _quiet_end(ask: Ask, at: datetime) -> tuple[datetime, str] | None:
    quiet, log = ask.policy.quiet_after_conversation, ask.log
    if quiet is None or quiet.channel is not ask.channel or not log.conversations:
        return None
    last = log.conversations[-1]
    ends = max(_local_midnight(last, name, quiet.days) for name in _zones(ask.account))
    return (ends, f"quiet:{ask.channel}:{quiet.days}d") if at < ends else None


def _cap_free_at(ask: Ask, at: datetime) -> tuple[datetime, str] | None:
    times = ask.log.attempts.get(ask.channel)
    if not times:
        return None
    return _latest_free(ask.policy.caps.get(ask.channel, ()), times, at, f"cap:{ask.channel}")


def _total_free_at(ask: Ask, at: datetime) -> tuple[datetime, str] | None:
    """The totals across channels: at most N contacts in any rolling window of D days."""
    pressure, times = ask.policy.pressure, ask.log.outbound
    if not times or ask.channel not in pressure.channels:
        return None
    return _latest_free(pressure.totals, times, at, "total")


def _latest_free(
    caps: Iterable[Cap], times: Sequence[datetime], at: datetime, label: str
) -> tuple[datetime, str] | None:
    """The latest moment any of `caps` frees up after `at`, and the rule that holds until then."""
    latest: tuple[datetime, str] | None = None
    for cap in caps:
        free = _free_under(cap, times, at)
        if free > at and (latest is None or free > latest[0]):
            latest = (free, f"{label}:{cap.max}/{cap.days}d")
    return latest


def _spacing_free_at(ask: Ask, at: datetime) -> tuple[datetime, str] | None:
    """No two outbound contacts to one debtor closer than the spacing, whatever their channels."""
    pressure, times = ask.policy.pressure, ask.log.spaced
    if ask.exempt or not times or not pressure.spacing_minutes or ask.channel not in pressure.channels:
        return None
    gap = timedelta(minutes=pressure.spacing_minutes)
    # The latest contact closer than the gap on either side; contacts are never planned before one made.
    index = bisect_right(times, at + gap) - 1
    if index < 0 or times[index] <= at - gap:
        return None
    return times[index] + gap, "spacing"


def _free_under(cap: Cap, times: Sequence[datetime], at: datetime) -> datetime:
    span = timedelta(days=cap.days)
    low = bisect_right(times, at - span)
    inside = times[low : bisect_right(times, at)]
    if len(inside) < cap.max:
        return at
    return inside[len(inside) - cap.max] + span


def _spread_until(ask: Ask, at: datetime) -> tuple[datetime, str] | None:
    """A contact that waited (for the window to open, a rest day to pass, a hold to end, an import) goes at
    a moment stable per debtor after its release, not all at the opening: a hash of the account id."""
    released = _released(ask, at)
    if released is None:
        return None
    offset = spread_offset(ask.account.id, ask.policy.pressure.spread_hours)
    return (released + offset, "spread") if at < released + offset else None


def _released(ask: Ask, at: datetime) -> datetime | None:
    """When a contact that waited was let go on the day of `at`: the window's opening or a later release
    (a hold's end); None when the contact did not wait or its channel has no window."""
    window = ask.policy.windows.get(ask.channel)
    if ask.due_at is None or window is None or not ask.policy.pressure.spread_hours:
        return None
    local = at.astimezone(zone(ask.account.timezone))
    opening = datetime.combine(local.date(), window.start, local.tzinfo).astimezone(UTC)
    releases = ask.log.releases
    index = bisect_right(releases, at) - 1
    released = max(opening, releases[index]) if index >= 0 else opening
    return released if ask.due_at < released else None


def _spread_applies(ask: Ask, at: datetime) -> bool:
    return _released(ask, at) is not None


_SPREAD_STEP_MINUTES = 15


def spread_bucket(account_id: str, hours: int) -> int:
    """The account's stable place in the spread: crc32 of its id, in steps of a quarter hour."""
    steps = hours * 60 // _SPREAD_STEP_MINUTES
    return zlib.crc32(account_id.encode()) % steps if steps else 0


def spread_offset(account_id: str, hours: int) -> timedelta:
    return timedelta(minutes=spread_bucket(account_id, hours) * _SPREAD_STEP_MINUTES)


def _window_open_at(ask: Ask, at: datetime) -> tuple[datetime, str] | None:
    channel, policy = ask.channel, ask.policy
    window = policy.windows.get(channel)
    rests = policy.holidays.rests(channel)
    if window is None and not rests:
        return None
    latest: tuple[datetime, str] | None = None
    for name in _zones(ask.account):
        local = at.astimezone(zone(name))
        opens, rule = _opening_in_zone(local, window, ask.account.country if rests else None, channel, policy)
        if opens is not None and opens > at and (latest is None or opens > latest[0]):
            latest = (opens, rule)
    return latest


def _opening_in_zone(
    local: datetime, window: Window | None, country: str | None, channel: Channel, policy: CompliancePolicy
) -> tuple[datetime | None, str]:
    """When the window next opens in this zone, or None when `local` is already inside it."""
    day, rule = local.date(), f"window:{channel}"
    in_hours = window is None or window.start <= local.time() < window.end
    resting = _rest_rule(country, day, channel, policy)
    if in_hours and resting is None:
        return None, rule
    if window is not None and local.time() >= window.end:
        day += timedelta(days=1)
    elif in_hours:
        rule = resting or rule
    while (resting := _rest_rule(country, day, channel, policy)) is not None:
        day, rule = day + timedelta(days=1), resting
    opens_at = window.start if window is not None else time(0, 0)
    return datetime.combine(day, opens_at, local.tzinfo).astimezone(UTC), rule


def _rest_rule(country: str | None, day: date, channel: Channel, policy: CompliancePolicy) -> str | None:
    """The rest-day rule that keeps this channel quiet on `day` in `country`, if any."""
    if country is None:
        return None
    rule = policy.holidays
    if rule.enabled and channel in rule.channels and calendar.is_holiday(country, day, rule.rest_periods):
        return f"holiday:{country}"
    if channel in rule.weekends and calendar.is_weekend(country, day):
        return f"weekend:{country}"
    return None


def _zones(account: Account) -> tuple[str, ...]:
    return (account.timezone, *account.extra_timezones)


def _local_midnight(moment: datetime, zone_name: str, days_after: int) -> datetime:
    tz = zone(zone_name)
    day = moment.astimezone(tz).date() + timedelta(days=days_after)
    return datetime.combine(day, time(0, 0), tz).astimezone(UTC)


_TIMED_RULES = (_quiet_end, _cap_free_at, _window_open_at, _spread_until, _total_free_at, _spacing_free_at)
