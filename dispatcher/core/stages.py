"""The stage arithmetic, pure: which stage an account is in at a moment and when it entered it, when a
step's occurrences fall, and when the account's pauses end by themselves (a promise kept or broken, a
hold lapsed, an ad-hoc request not made in time).

The planner plans on it; the events (the lapses), the send gate's last look (is the contact's stage still
the account's) and the record's look-back (what the planner will still read) ask it the same questions,
so they all answer alike. Every time is computed in the debtor's own zone.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from dispatcher.core.arrangements.terms import Arrangement
from dispatcher.core.models import Account, AccountState, HistoryEntry, zone
from dispatcher.core.strategy import Stage, Step, Strategy

ADHOC_STAGE = "adhoc"  # the stage part of an ad-hoc contact's id: ACCOUNT/adhoc/KEY/0
_MAX_OCCURRENCES = 400  # an open-ended `every` step without max_attempts still ends somewhere


def stage_index_at(account: Account, state: AccountState, strategy: Strategy, now: datetime) -> int | None:
    """The index of the stage the account is in at `now`: by days past due, raised by escalations."""
    days_past_due = (now.astimezone(zone(account.timezone)).date() - account.due_date).days
    by_days = strategy.stage_index(days_past_due)
    if by_days is None and state.stage_floor == 0:
        return None
    return max(by_days or 0, state.stage_floor)


def stage_entry_date(account: Account, state: AccountState, strategy: Strategy, index: int) -> date:
    """The local day the account entered stage `index`: by days past due, or earlier by an escalation."""
    by_days = account.due_date + timedelta(days=strategy.stages[index].first_day)
    if state.stage_floor >= index and state.floor_since is not None:
        return min(by_days, state.floor_since)
    return by_days


def stage_start(account: Account, strategy: Strategy, index: int, tz: ZoneInfo) -> datetime:
    """When stage `index` first has something to do by days past due: its earliest first occurrence."""
    stage = strategy.stages[index]
    entry = account.due_date + timedelta(days=stage.first_day)
    firsts = [at for step in stage.steps if (at := _occurrence_at(stage, step, entry, tz, 0)) is not None]
    return min(firsts) if firsts else _local_start(entry, tz)


def occurrences_around(
    stage: Stage, step: Step, entry: date, tz: ZoneInfo, now: datetime
) -> tuple[tuple[int, datetime] | None, datetime | None]:
    """The step's latest occurrence due by `now` (index and time) and the time of the one after it.

    Computed, not iterated: the occurrence on or before today is found by arithmetic (or bisection for an
    explicit list), then checked against the hour.
    """
    cadence = step.cadence
    today = (now.astimezone(tz).date() - entry).days
    if cadence.days is not None:
        index = bisect_right(cadence.days, today) - 1
    else:
        index = -1 if today < cadence.start else (today - cadence.start) // (cadence.every or 1)
    index = min(index, _MAX_OCCURRENCES - 1)
    while index >= 0 and _offset(stage, step, index) is None:
        index -= 1  # past the stage's end or the list: step back to the last occurrence that exists
    at = _occurrence_at(stage, step, entry, tz, index)
    if at is not None and at > now:
        index, at = index - 1, _occurrence_at(stage, step, entry, tz, index - 1)
    upcoming = _occurrence_at(stage, step, entry, tz, index + 1)
    return ((index, at) if at is not None else None), upcoming


def _occurrence_at(stage: Stage, step: Step, entry: date, tz: ZoneInfo, occurrence: int) -> datetime | None:
    offset = _offset(stage, step, occurrence)
    return None if offset is None else _at_hour(entry + timedelta(days=offset), step.hour, tz)


def _offset(stage: Stage, step: Step, occurrence: int) -> int | None:
    """The day offset of a step's occurrence after stage entry, or None when there is no such occurrence."""
    cadence = step.cadence
    if occurrence < 0 or occurrence >= _MAX_OCCURRENCES:
        return None
    if cadence.days is not None:
        offset = cadence.days[occurrence] if occurrence < len(cadence.days) else None
    else:
        offset = cadence.start + occurrence * (cadence.every or 1)
    span = None if stage.last_day is None else stage.last_day - stage.first_day
    return None if offset is None or (span is not None and offset > span) else offset


def promise_ends(account: Account, state: AccountState, strategy: Strategy) -> datetime | None:
    """The end of the promised day plus grace, in the debtor's zone: when a promise is kept or broken."""
    if state.promise is None:
        return None
    grace = strategy.events.promise_to_pay.grace_days
    return _local_start(state.promise.due + timedelta(days=grace + 1), zone(account.timezone))


def arrangement_breaks(account: Account, arrangement: Arrangement, strategy: Strategy) -> tuple[int, datetime] | None:
    """The first instalment not yet paid and when it breaks the arrangement unless paid: the end of its due
    day plus the grace, in the debtor's zone. None when every instalment is paid."""
    index = arrangement.first_unpaid()
    if index is None:
        return None
    grace = strategy.arrangements.grace_days
    return index, _local_start(arrangement.instalments[index].due + timedelta(days=grace + 1), zone(account.timezone))


def reminder_at(account: Account, due: date, strategy: Strategy) -> datetime | None:
    """When the reminder before an instalment due on `due` is due: `days_before` it, at the step's hour."""
    step = strategy.arrangements.reminder
    if step is None:
        return None
    return _at_hour(due - timedelta(days=step.days_before), step.hour, zone(account.timezone))


def day_ends(account: Account, day: date) -> datetime:
    """The end of a local day in the debtor's zone."""
    return _local_start(day + timedelta(days=1), zone(account.timezone))


def hold_ends(account: Account, state: AccountState) -> datetime | None:
    """When the earliest timed hold lapses; None when every hold is open-ended."""
    untils = [until for until in state.holds.values() if until is not None]
    return _local_start(min(untils), zone(account.timezone)) if untils else None


def adhoc_lapsed_keys(history: Sequence[HistoryEntry]) -> set[str]:
    """Keys of the ad-hoc requests already recorded as lapsed."""
    return {e.detail.get("key", "") for e in history if e.kind == "event" and e.event == "adhoc_lapsed"}


def adhoc_due_to_lapse(history: Sequence[HistoryEntry], strategy: Strategy, now: datetime) -> list[str]:
    """Keys of ad-hoc requests not made within the maximum deferral and not yet lapsed."""
    limit = timedelta(hours=strategy.compliance.pressure.adhoc_max_deferral_hours)
    attempted = {e.contact_id for e in history if e.kind == "attempt" and e.contact_id}
    lapsed = adhoc_lapsed_keys(history)
    return [
        e.detail["key"]
        for e in history
        if e.kind == "event" and e.event == "adhoc_contact" and e.detail["key"] not in lapsed
        and now >= e.at + limit and not any(c.endswith(f"/{ADHOC_STAGE}/{e.detail['key']}/0") for c in attempted)
    ]  # fmt: skip


@lru_cache(maxsize=65536)
def _at_hour(day: date, hour: int, tz: ZoneInfo) -> datetime:
    """Cached: a handful of (day, hour, zone) triples recur across millions of accounts."""
    return datetime.combine(day, time(hour, 0), tz).astimezone(UTC)


def _local_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0, 0), tz).astimezone(UTC)
