"""What the planner needs of an account's history, pure: the rest may leave Redis for the record.

Every read of the history by the planner, the compliance rules, the last look and the ad-hoc lapse, and
how far back it reaches:

- rolling caps per channel and the totals across channels: the longest `days` of any cap or total;
- the quiet period after a conversation: its last conversation, until local midnight `days` later (so
  at most `days` days after it, give or take a daylight-saving hour);
- spacing: minutes; the spread after a release: that day's release only (one before the day's opening
  is no longer the later of the two); an ad-hoc request: its maximum deferral (after which it is made,
  lapsed, or lapses at the next plan);
- attempted contact ids (a step's occurrence is not made twice, a step's attempts count against its
  limit), and outcomes whose step gives a fallback not yet made. A step's attempt leaves once it is older
  than the horizon and its claim is final: `marked` enters it in the record (per step the highest
  occurrence and the number of attempts, the fallbacks by occurrence), and the planner counts every
  occurrence up to the mark as attempted. It never plans an earlier occurrence than the latest due (a
  catch-up is dropped), so the mark changes nothing while the due date stands, and guards the stage going
  back: a later due date (a re-age, an arrangement, a correction) brings an earlier stage, or earlier
  occurrences, round again, and none of them is made twice. An outcome whose fallback is still to be
  made in the current or a later stage stays, and with it its fallback once made;
- answered calls, when best time is on (the hour answered most): kept however old, as they are few.

So `lookback` is a time horizon (the longest of the timed rules, plus a day for daylight saving: 8 days
for the default strategy) and `trimmable` picks the entries older than it that no rule above still reads. Attempts
whose claim is not final (queued, sending, in doubt) stay too: a release takes its attempt back out.
The newest entry is always kept: the closed-account mover dates an account's closing by it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from dispatcher.core.models import AccountRecord, ClaimStatus, ContactRef, HistoryEntry, OutcomeKind, zone
from dispatcher.core.stages import ADHOC_STAGE, occurrences_around, stage_entry_date, stage_index_at
from dispatcher.core.strategy import Strategy

FINAL_CLAIMS = frozenset({ClaimStatus.SENT, ClaimStatus.FAILED})
_MARGIN = timedelta(days=1)  # a daylight-saving change inside a period counted in local days (the quiet period)


def lookback(strategy: Strategy) -> timedelta:
    """How far back the timed rules read: the longest cap, total, quiet period, spacing or deferral."""
    policy = strategy.compliance
    pressure = policy.pressure
    days = [cap.days for caps in policy.caps.values() for cap in caps]
    days += [cap.days for cap in pressure.totals]
    if policy.quiet_after_conversation is not None:  # ends by local midnight `days` after the conversation's day
        days.append(policy.quiet_after_conversation.days)
    longest = max([timedelta(days=d) for d in days] + [timedelta(days=1)])
    longest = max(longest, timedelta(minutes=pressure.spacing_minutes))
    longest = max(longest, timedelta(hours=pressure.adhoc_max_deferral_hours))
    return longest + _MARGIN


def trimmable(
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    claims: Mapping[str, str],
    strategy: Strategy,
    now: datetime,
) -> list[int]:
    """Indexes of the entries no plan from `now` on reads: older than the look-back and pinned by nothing."""
    horizon = now - lookback(strategy)
    if not any(entry.at < horizon for entry in history):
        return []
    current = stage_index_at(record.account, record.state, strategy, now)
    stages = {stage.name: index for index, stage in enumerate(strategy.stages)}
    attempted = {e.contact_id for e in history if e.kind == "attempt" and e.contact_id}
    adhoc_done = {e.detail.get("key", "") for e in history if e.kind == "event" and e.event == "adhoc_lapsed"}
    adhoc_done |= {ref.step for ref in _refs(attempted) if ref.stage == ADHOC_STAGE}
    latest = _latest_due(record, strategy, current, now)

    def live_stage(ref: ContactRef) -> bool:
        index = stages.get(ref.stage)
        return ref.stage != ADHOC_STAGE and (current is None or index is None or index >= current)

    def pending_fallback(entry: HistoryEntry) -> bool:
        ref = ContactRef.parse(entry.contact_id or "")
        if ref is None or ref.fallback or not live_stage(ref) or entry.outcome is None:
            return False
        step = strategy.step(ref.stage, ref.step)
        action = None if step is None else step.outcomes.get(entry.outcome)
        fallback = str(ContactRef(ref.account_id, ref.stage, ref.step, ref.occurrence, fallback=True))
        return action is not None and action.fallback is not None and fallback not in attempted

    kept_fallbacks = {
        f"{e.contact_id}/fb" for e in history if e.kind == "outcome" and (e.at >= horizon or pending_fallback(e))
    }

    asked = [e for e in history if e.kind == "event" and e.event == "adhoc_contact"]
    adhoc_live = {
        e.detail.get("key", "") for e in asked if e.at >= horizon or e.detail.get("key", "") not in adhoc_done
    }

    def pinned(entry: HistoryEntry) -> bool:
        if entry.kind == "event":
            key = entry.detail.get("key", "")
            if entry.event == "adhoc_contact":
                return key not in adhoc_done
            return entry.event == "adhoc_lapsed" and key in adhoc_live  # a request under the same key is live
        if entry.kind == "outcome":
            answered = entry.outcome is OutcomeKind.ANSWERED and strategy.best_time.enabled
            return answered or pending_fallback(entry)
        contact_id = entry.contact_id or ""
        if claims.get(contact_id) not in FINAL_CLAIMS:
            return True
        ref = ContactRef.parse(contact_id)
        if ref is not None and ref.stage == ADHOC_STAGE:
            return ref.step in adhoc_live
        if ref is None or not live_stage(ref):
            return False
        if ref.fallback:
            return contact_id in kept_fallbacks
        # The rest leave for the record's marks (marked), which count them and name them attempted, up to
        # the latest occurrence due; one of a stage not yet reached (after a move back) stays as it was.
        due = latest.get((ref.stage, ref.step))
        return due is None or ref.occurrence > due

    # The newest entry stays whatever its age: it dates a closed account's closing (record.closed).
    last = len(history) - 1
    return [i for i, entry in enumerate(history) if i < last and entry.at < horizon and not pinned(entry)]


def _refs(contact_ids: set[str]) -> list[ContactRef]:
    return [ref for cid in contact_ids if (ref := ContactRef.parse(cid)) is not None]


def _latest_due(
    record: AccountRecord, strategy: Strategy, current: int | None, now: datetime
) -> dict[tuple[str, str], int]:
    """The current stage's steps' latest occurrences due by now: a later plan asks after these or later
    ones only (the planner's own arithmetic, so the two cannot disagree)."""
    if current is None:
        return {}
    stage = strategy.stages[current]
    entry = stage_entry_date(record.account, record.state, strategy, current)
    tz = zone(record.account.timezone)
    found = {}
    for step in stage.steps:
        due, _ = occurrences_around(stage, step, entry, tz, now)
        if due is not None:
            found[(stage.name, step.name)] = due[0]
    return found


def marked(record: AccountRecord, history: Sequence[HistoryEntry], drop: Sequence[int]) -> AccountRecord:
    """The record with the attempts at `drop` (leaving the history) entered in its marks, which the planner
    counts as attempted: per step the highest occurrence and the number of attempts, and the exact
    occurrences whose fallback was made (AccountRecord.trimmed). The record itself when none leaves."""
    dropped = set(drop)
    kept = {e.contact_id for i, e in enumerate(history) if i not in dropped and e.kind == "attempt"}
    leaving = {e.contact_id or "" for i in drop if (e := history[i]).kind == "attempt" and e.contact_id not in kept}
    # Ad-hoc attempts are not marked: their request leaves with them or before them, and their claim stays.
    refs = [ref for ref in _refs(leaving) if ref.stage != ADHOC_STAGE]
    if not refs:
        return record
    marks = {stage: {step: list(mark) for step, mark in steps.items()} for stage, steps in record.trimmed.items()}
    for ref in refs:
        mark = marks.setdefault(ref.stage, {}).setdefault(ref.step, [-1, 0])
        if ref.fallback:
            mark[2:] = sorted({*mark[2:], ref.occurrence})
        else:
            mark[0], mark[1] = max(mark[0], ref.occurrence), mark[1] + 1
    trimmed = {stage: {step: tuple(mark) for step, mark in steps.items()} for stage, steps in marks.items()}
    return record.model_copy(update={"trimmed": trimmed})
