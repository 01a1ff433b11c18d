"""The planner, pure: plan(account, history, strategy, now) -> the contacts due now and the next wake-up.

A contact's id is a function of (account, stage, step, occurrence), so re-planning the same account any
number of times names the same contacts; the store's claim then makes each id happen at most once.
Every candidate passes the compliance policy before it is returned; deferrals and denials come back as
decisions for the audit trail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dispatcher.core.arrangements.offers import offers_for
from dispatcher.core.arrangements.terms import ARRANGEMENT_STAGE, Arrangement, active_arrangement
from dispatcher.core.compliance import ContactLog, evaluate, spread_bucket
from dispatcher.core.models import (
    Account,
    AccountRecord,
    AccountState,
    Channel,
    Contact,
    ContactRef,
    Decision,
    HistoryEntry,
    OutcomeKind,
    Plan,
    zone,
)
from dispatcher.core.stages import (
    ADHOC_STAGE,
    adhoc_lapsed_keys,
    arrangement_breaks,
    day_ends,
    hold_ends,
    occurrences_around,
    promise_ends,
    reminder_at,
    stage_entry_date,
    stage_index_at,
    stage_start,
)
from dispatcher.core.strategy import Stage, Strategy

NOT_PAST_DUE = "not_past_due"  # the rule that denies an ad-hoc contact before the ladder's first stage


def plan(record: AccountRecord, history: Sequence[HistoryEntry], strategy: Strategy, now: datetime) -> Plan:
    """The contacts due now for one account, the compliance decisions taken, and when to look again."""
    account, state = record.account, record.state
    paused = _paused(account, state, strategy, now)
    if paused is not None:
        return paused
    arrangement = active_arrangement(state.arrangements)
    if arrangement is not None:
        return _kept(record, history, strategy, now, arrangement)
    tz = zone(account.timezone)
    index = stage_index_at(account, state, strategy, now)
    if index is None:
        first = stage_start(account, strategy, 0, tz)
        return Plan(account.id, None, next_wakeup=first, note="not yet past due")
    stage = strategy.stages[index]
    entry = stage_entry_date(account, state, strategy, index)
    attempted = {e.contact_id for e in history if e.kind == "attempt" and e.contact_id}
    stage = _with_best_time(stage, history, strategy, tz)
    trimmed = record.trimmed.get(stage.name, _NONE_TRIMMED)
    candidates, wakes = _ladder_candidates(account.id, stage, entry, tz, attempted, now, trimmed)
    candidates += _fallback_candidates(account.id, stage, history, attempted, trimmed)
    candidates += _adhoc_candidates(account.id, history, attempted, strategy, now, wakes)
    if index + 1 < len(strategy.stages):
        wakes.append(stage_start(account, strategy, index + 1, tz))
    return _judge(record, history, strategy, now, stage.name, candidates, wakes)


def offers_now(record: AccountRecord, strategy: Strategy, now: datetime) -> dict[str, dict[str, object]]:
    """The offers the account's stage presents now, computed for it (amounts in its currency); none while a
    plan is kept or the account is not active."""
    account, state = record.account, record.state
    index = stage_index_at(account, state, strategy, now)
    if index is None or state.status != "active" or active_arrangement(state.arrangements) is not None:
        return {}
    offered = {name: strategy.offers[name] for name in strategy.stages[index].offers if name in strategy.offers}
    return offers_for(offered, account, state, now.astimezone(zone(account.timezone)).date())


_NONE_TRIMMED: dict[str, tuple[int, ...]] = {}
_NO_MARK = (-1, 0)  # no occurrence of the step left the history (AccountRecord.trimmed)
_FRESH_EVENTS = frozenset({"account_created", "account_updated"})
FRESH_STATE = AccountState()


def fresh_shape(record: AccountRecord, history: Sequence[HistoryEntry]) -> tuple[object, ...] | None:
    """Everything plan() reads of an account that has no contacts, events or state of its own yet; None
    otherwise. Accounts of one shape planned at one moment get the same plan but for their ids, which is
    what lets a bulk import plan each shape once (`rebased`)."""
    if record.state is not FRESH_STATE and record.state != FRESH_STATE:
        return None
    if record.trimmed:  # attempts left its history: not fresh, however it looks
        return None
    if any(e.kind != "event" or e.event not in _FRESH_EVENTS for e in history):
        return None
    a = record.account
    return (a.due_date, a.timezone, a.extra_timezones, a.country, a.consent, a.phone is None, a.email is None,
            a.address is None, a.wechat_openid is None)  # fmt: skip


def plan_shared(
    shapes: dict[tuple[object, ...], Plan],
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    strategy: Strategy,
    now: datetime,
) -> Plan:
    """plan(), shared between fresh accounts of one shape planned at one moment (`shapes` is the caller's
    cache for that moment). A plan that depends on the account's place in the spread is shared only
    within the same place."""
    shape = fresh_shape(record, history)
    if shape is None:
        return plan(record, history, strategy, now)
    shared = shapes.get(shape)
    if shared is not None and shared.extra.get("spread"):
        shape = (*shape, spread_bucket(record.account.id, strategy.compliance.pressure.spread_hours))
        shared = shapes.get(shape)
    if shared is not None:
        return rebased(shared, record.account.id)
    fresh = plan(record, history, strategy, now)
    shapes.setdefault(shape, fresh)
    if fresh.extra.get("spread") and shapes[shape] is fresh:
        shapes[(*shape, spread_bucket(record.account.id, strategy.compliance.pressure.spread_hours))] = fresh
    return fresh


def rebased(shared: Plan, account_id: str) -> Plan:
    """The plan of another account of the same fresh shape, with this account's contact ids."""
    old = shared.account_id + "/"

    def own(contact_id: str) -> str:
        return account_id + "/" + contact_id.removeprefix(old)

    # Built directly: dataclasses.replace costs several microseconds a call, and this runs per account.
    contacts = tuple(
        Contact(own(c.id), account_id, c.channel, c.template, c.stage, c.step, c.due_at) for c in shared.contacts
    )
    decisions = tuple(Decision(own(d.contact_id), d.channel, d.verdict, d.rule, d.until) for d in shared.decisions)
    return Plan(account_id, shared.stage, contacts, decisions, shared.next_wakeup, shared.note, shared.extra)


def _paused(account: Account, state: AccountState, strategy: Strategy, now: datetime) -> Plan | None:
    if state.status != "active":
        return Plan(account.id, None, note=state.status)
    if state.do_not_contact:
        return Plan(account.id, None, note="do_not_contact")
    if state.holds:
        return Plan(account.id, None, next_wakeup=hold_ends(account, state), note="hold")
    ends = promise_ends(account, state, strategy)
    if ends is not None:
        return Plan(account.id, None, next_wakeup=max(ends, now), note="promise_to_pay")
    return None


def _kept(
    record: AccountRecord, history: Sequence[HistoryEntry], strategy: Strategy, now: datetime, kept: Arrangement
) -> Plan:
    """While an arrangement is kept the ladder waits: only the reminder before each unpaid instalment (from
    `days_before` until its due day ends), and a look again when the next one is due or the first unpaid
    instalment breaks the plan (events.lapsed_events)."""
    account, step = record.account, strategy.arrangements.reminder
    breaks = arrangement_breaks(account, kept, strategy)
    if breaks is None:  # every instalment paid: the payment that did it ended the plan
        return Plan(account.id, ARRANGEMENT_STAGE, note="arrangement")
    first, wakes = breaks[0], [breaks[1]]
    attempted = {e.contact_id for e in history if e.kind == "attempt" and e.contact_id}
    candidates: list[Contact] = []
    for index in range(first, len(kept.instalments) if step is not None else first):
        due = kept.instalments[index].due
        at = reminder_at(account, due, strategy)
        if at is None or step is None or at > now:
            wakes += [at] if at is not None else []
            break
        ref = ContactRef(account.id, ARRANGEMENT_STAGE, kept.id, index)
        if now < day_ends(account, due) and str(ref) not in attempted:
            candidates.append(_contact(ref, step.channel, step.template, at))
    return _judge(record, history, strategy, now, ARRANGEMENT_STAGE, candidates, wakes)


def _ladder_candidates(
    account_id: str,
    stage: Stage,
    entry: date,
    tz: ZoneInfo,
    attempted: set[str],
    now: datetime,
    trimmed: dict[str, tuple[int, ...]],
) -> tuple[list[Contact], list[datetime]]:
    """Each step's latest occurrence due, unless attempted: in the history, or up to the step's mark of the
    attempts trimmed from it (a later due date can bring an earlier stage or occurrence back)."""
    candidates: list[Contact] = []
    wakes: list[datetime] = []
    for step in stage.steps:
        prefix = f"{account_id}/{stage.name}/{step.name}/"
        highest, tried = trimmed.get(step.name, _NO_MARK)[:2]
        tried += sum(1 for cid in attempted if cid.startswith(prefix) and not cid.endswith("/fb"))
        limit = step.attempt_limit
        if limit is not None and tried >= limit:
            continue
        latest_due, upcoming = occurrences_around(stage, step, entry, tz, now)
        if upcoming is not None:
            wakes.append(upcoming)
        if latest_due is not None and upcoming is not None and _superseded(latest_due[1], upcoming, tz, now):
            continue  # a catch-up from an earlier day whose next occurrence comes today: only that one goes
        if latest_due is not None and latest_due[0] > highest:
            ref = ContactRef(account_id, stage.name, step.name, latest_due[0])
            if str(ref) not in attempted:
                candidates.append(_contact(ref, step.channel, step.template, latest_due[1]))
    return candidates, wakes


def _fallback_candidates(
    account_id: str,
    stage: Stage,
    history: Sequence[HistoryEntry],
    attempted: set[str],
    trimmed: dict[str, tuple[int, ...]],
) -> list[Contact]:
    steps = {step.name: step for step in stage.steps}
    found: dict[str, Contact] = {}
    for entry in history:
        if entry.kind != "outcome" or entry.contact_id is None or entry.outcome is None:
            continue
        ref = ContactRef.parse(entry.contact_id)
        if ref is None or ref.fallback or ref.stage != stage.name or ref.step not in steps:
            continue
        action = steps[ref.step].outcomes.get(entry.outcome)
        if action is None or action.fallback is None or ref.occurrence in trimmed.get(ref.step, _NO_MARK)[2:]:
            continue
        fallback = ContactRef(account_id, ref.stage, ref.step, ref.occurrence, fallback=True)
        if str(fallback) not in attempted and str(fallback) not in found:
            found[str(fallback)] = _contact(fallback, action.fallback.channel, action.fallback.template, entry.at)
    return list(found.values())


def _superseded(due: datetime, upcoming: datetime, tz: ZoneInfo, now: datetime) -> bool:
    today = now.astimezone(tz).date()
    return due.astimezone(tz).date() < today and upcoming.astimezone(tz).date() == today


def _adhoc_candidates(
    account_id: str,
    history: Sequence[HistoryEntry],
    attempted: set[str],
    strategy: Strategy,
    now: datetime,
    wakes: list[datetime],
) -> list[Contact]:
    found: list[Contact] = []
    lapsed = adhoc_lapsed_keys(history)
    limit = timedelta(hours=strategy.compliance.pressure.adhoc_max_deferral_hours)
    for entry in history:
        if entry.kind == "event" and entry.event == "adhoc_contact" and entry.detail["key"] not in lapsed:
            ref = ContactRef(account_id, ADHOC_STAGE, entry.detail["key"], 0)
            if str(ref) not in attempted and now < entry.at + limit and all(c.id != str(ref) for c in found):
                found.append(_contact(ref, Channel(entry.detail["channel"]), entry.detail["template"], entry.at))
                wakes.append(entry.at + limit)  # it lapses then, audited (events.lapsed_events)
    return found


def _with_best_time(stage: Stage, history: Sequence[HistoryEntry], strategy: Strategy, tz: ZoneInfo) -> Stage:
    """The stage with its calls moved to the local hour the debtor answered most, inside the window."""
    best = strategy.best_time
    if not best.enabled:
        return stage
    hours = [e.at.astimezone(tz).hour for e in history if e.kind == "outcome" and e.outcome is OutcomeKind.ANSWERED]
    if len(hours) < best.min_answers:
        return stage
    hour = max(sorted(set(hours)), key=hours.count)
    window = strategy.compliance.windows.get(Channel.VOICE)
    if window is not None and not window.start <= time(hour) < window.end:
        return stage
    steps = tuple(s.model_copy(update={"hour": hour}) if s.channel is Channel.VOICE else s for s in stage.steps)
    return stage.model_copy(update={"steps": steps})


def _judge(
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    strategy: Strategy,
    now: datetime,
    stage: str,
    candidates: list[Contact],
    wakes: list[datetime],
) -> Plan:
    """Pass every candidate through compliance, counting the ones already allowed in this plan."""
    policy = strategy.compliance
    log = ContactLog.from_history(history, policy.pressure)
    contacts: list[Contact] = []
    decisions: list[Decision] = []
    spread = False
    for contact in sorted(candidates, key=lambda c: (c.due_at, c.id)):
        ruling = evaluate(
            contact.channel, record.account, record.state, log, now, policy, contact.due_at, contact.template
        )
        decisions.append(Decision(contact.id, contact.channel, ruling.verdict, ruling.rule, ruling.until))
        spread = spread or ruling.spread
        if ruling.verdict == "send":
            contacts.append(contact)
            log.add(contact.channel, now, contact.template)
        elif ruling.until is not None:
            wakes.append(ruling.until)
    future = [w for w in wakes if w > now]
    extra = _SPREAD_EXTRA if spread else {}
    return Plan(record.account.id, stage, tuple(contacts), tuple(decisions), min(future) if future else None,
                extra=extra)  # fmt: skip


_SPREAD_EXTRA = {"spread": "1"}  # the plan depends on the account's place in the spread (plan_shared)


def _contact(ref: ContactRef, channel: object, template: str, due_at: datetime) -> Contact:
    return Contact(str(ref), ref.account_id, channel, template, ref.stage, ref.step, due_at)  # type: ignore[arg-type]


__all__ = ["ContactRef", "OutcomeKind", "plan"]
