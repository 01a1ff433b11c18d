"""What the CLI shows: strategy tables, account views, simulation reports and the send audit."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from dispatcher.core import calendar
from dispatcher.core.arrangements.terms import Arrangement, ArrangementFigures, figures
from dispatcher.core.models import AccountRecord, Channel, HistoryEntry, zone
from dispatcher.core.strategy import Strategy
from dispatcher.core.timeline import attempt_provider, audit_sends, timeline
from dispatcher.simulate import Report
from dispatcher.state.store import Store

if TYPE_CHECKING:  # the record's reader brings psycopg; only a caller that has a record passes one
    from dispatcher.record.readers import RecordReader

STAGE_ORDER_TAIL = ("resolved", "handed_off")


def ladder_table(strategy: Strategy) -> Table:
    table = Table(title=f"strategy {strategy.name}: {len(strategy.stages)} stages")
    for column in ("stage", "days past due", "step", "channel", "template", "cadence", "max", "hour", "outcomes"):
        table.add_column(column)
    for stage in strategy.stages:
        last = "∞" if stage.last_day is None else str(stage.last_day)
        for index, step in enumerate(stage.steps or ()):
            cadence = step.cadence
            when = (
                f"days {list(cadence.days)}"
                if cadence.days is not None
                else f"every {cadence.every}d from {cadence.start}"
            )
            rules = ", ".join(_action_text(kind, action) for kind, action in step.outcomes.items())
            table.add_row(
                f"{stage.name}\n{stage.title}" if index == 0 else "",
                f"{stage.first_day}–{last}" if index == 0 else "",
                step.name, step.channel, step.template, when, str(step.attempt_limit or "—"), f"{step.hour:02d}:00",
                rules or "—",
            )  # fmt: skip
    return table


def _action_text(kind: str, action: Any) -> str:
    parts = []
    if action.fallback:
        parts.append(f"→{action.fallback.channel}")
    if action.invalidate:
        parts.append("invalidate")
    if action.escalate:
        parts.append("escalate")
    return f"{kind}: {' '.join(parts)}"


def compliance_table(strategy: Strategy) -> Table:
    policy = strategy.compliance
    table = Table(title="compliance")
    for column in ("channel", "window (local)", "caps", "consent required"):
        table.add_column(column)
    for channel in Channel:  # every registered channel; one the policy does not describe is said to be denied
        if not policy.configured(channel):
            table.add_row(channel, "not configured: denied", "—", "—")
            continue
        window = policy.windows[channel]
        caps = ", ".join(f"≤{c.max} in {c.days}d" for c in policy.caps[channel])
        table.add_row(
            channel, f"{window.start:%H:%M}–{window.end:%H:%M}" if window else "any time", caps or "—",
            "yes" if policy.needs_consent(channel) else "no",
        )  # fmt: skip
    quiet, rest, pressure = policy.quiet_after_conversation, policy.holidays, policy.pressure
    lines = [f"no {quiet.channel} for {quiet.days} days after a conversation"] if quiet else []
    if rest.enabled:
        lines.append(
            f"rest days ({', '.join(rest.channels)}): holidays{' and rest periods' if rest.rest_periods else ''}"
        )
    if rest.weekends:
        lines.append(f"weekends rest for {', '.join(rest.weekends)}")
    totals = ", ".join(f"≤{c.max} in {c.days}d" for c in pressure.totals) or "none"
    lines.append(
        f"across {', '.join(pressure.channels)}: {pressure.spacing_minutes} min apart, totals {totals}, "
        f"waiting contacts spread over {pressure.spread_hours} h"
    )
    table.caption = "; ".join(lines)
    return table


def account_tables(
    record: AccountRecord, history: Sequence[HistoryEntry], claims: Mapping[str, str], wake: datetime | None
) -> Iterator[Table]:
    account, state = record.account, record.state
    summary = Table(title=f"account {account.id}", show_header=False)
    summary.add_row("name", account.name)
    summary.add_row("balance", f"{account.balance} {account.currency} (paid {state.paid})")
    summary.add_row("due date", str(account.due_date))
    summary.add_row("zone", " + ".join((account.timezone, *account.extra_timezones)))
    summary.add_row("status", state.status + (" (do not contact)" if state.do_not_contact else ""))
    summary.add_row("stage", record.stage or "—")
    summary.add_row("variant", _variant_text(record))
    summary.add_row("holds", ", ".join(f"{k} until {v or 'resolved'}" for k, v in state.holds.items()) or "—")
    summary.add_row("promise", f"{state.promise.amount} by {state.promise.due}" if state.promise else "—")
    summary.add_row("opted out", ", ".join(sorted(state.opted_out)) or "—")
    summary.add_row("invalid addresses", ", ".join(sorted(state.invalid_addresses)) or "—")
    summary.add_row("next wake-up", wake.isoformat() if wake else "—")
    yield summary
    for arrangement in state.arrangements:
        yield arrangement_instalments(arrangement)
    table = Table(title="timeline")
    for column in ("UTC", "local", "what", "channel", "provider", "contact / detail", "outcome"):
        table.add_column(column)
    if record.variant is not None:  # recorded at its first plan (its audit entry says when)
        table.add_row("first plan", "", "variant", "", "", _variant_text(record), "")
    for row in timeline(record, history):
        what = row["kind"] if row["kind"] == "attempt" else row.get("event", "")
        subject = row.get("contact_id") or ", ".join(f"{k}={v}" for k, v in row.items() if k not in _ROW_KEYS)
        outcome = ", ".join(row.get("outcome") or [])
        if row.get("contact_id") in claims:
            outcome += f" [{claims[row['contact_id']]}]"
        channel, provider = row.get("channel") or "", row.get("provider") or ""
        table.add_row(row["at_utc"][:16], row["at_local"][:16], what, channel, provider, subject, outcome)
    yield table


def _variant_text(record: AccountRecord) -> str:
    if record.variant is None:
        return "— (not planned since variants are recorded)"
    return f"{record.variant} (strategy sha256 {record.strategy_sha256})"


_ROW_KEYS = {"kind", "at_utc", "at_local", "event", "channel", "provider", "contact_id", "outcome"}


@dataclass
class SendAudit:
    sends: int = 0
    outside_window: int = 0
    over_cap: int = 0
    in_quiet_period: int = 0
    over_total: int = 0
    too_close: int = 0  # pairs of contacts to one debtor closer than the spacing (exempt templates aside)
    on_rest_day: int = 0  # sends on a holiday, a rest period's weekend or a resting weekend, for their channel
    hours: Counter[int] = field(default_factory=Counter)  # sends by local hour of the debtor's main zone
    providers: Counter[str] = field(default_factory=Counter)  # sends by the provider each attempt names
    arrangements: list[tuple[Arrangement, ...]] = field(default_factory=list)  # each account's, for the figures
    examples: list[tuple[str, list[str]]] = field(default_factory=list)


def compliance_audit(
    store: Store,
    strategy: Strategy,
    account_ids: Sequence[str],
    json_out: Path | None,
    reader: RecordReader | None = None,
    period: tuple[datetime, datetime] | None = None,
) -> SendAudit:
    """Re-check every send of every account (those made in `period` when given); stream each timeline to
    `json_out` when asked. With a `reader`, each history is the whole one: what was trimmed from Redis and
    what left with a closed account is read back from the record (the caps need the sends before too)."""
    audit = SendAudit()
    out = json_out.open("w", encoding="utf-8") if json_out else None
    try:
        if out:
            out.write('{"accounts": [\n')
        for start in range(0, len(account_ids), 500):
            for index, (record, history) in enumerate(_whole(store, reader, account_ids[start : start + 500])):
                _audit_one(record, history, strategy, audit, period)
                if out:
                    doc = _account_doc(record, history)
                    out.write(("" if start + index == 0 else ",\n") + json.dumps(doc, default=str, ensure_ascii=False))
        if out:
            out.write("\n]}\n")
    finally:
        if out:
            out.close()
    return audit


def _whole(
    store: Store, reader: RecordReader | None, account_ids: Sequence[str]
) -> Iterator[tuple[AccountRecord, Sequence[HistoryEntry]]]:
    from dispatcher.record.readers import whole_history

    for loaded in store.load_many(account_ids):
        if reader is None:
            if loaded.record is not None:
                yield loaded.record, loaded.history
            continue
        last_trim = store.last_trim(loaded.account_id) if loaded.record is not None else None
        whole = whole_history(reader, loaded.account_id, loaded.history, last_trim)
        record = loaded.record or (whole.closures[-1].record if whole.closures else None)
        if record is not None:
            yield record, whole.history


def _audit_one(
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    strategy: Strategy,
    audit: SendAudit,
    period: tuple[datetime, datetime] | None = None,
) -> None:
    def inside(at: datetime) -> bool:
        return period is None or period[0] <= at < period[1]

    if record.state.arrangements:
        audit.arrangements.append(record.state.arrangements)
    attempts = [entry for entry in history if entry.kind == "attempt" and entry.channel is not None]
    made = {entry.contact_id: entry.at for entry in attempts}
    audit.sends += sum(1 for entry in attempts if inside(entry.at))
    audit.providers.update(attempt_provider(entry) or "?" for entry in attempts if inside(entry.at))
    for contact_id, broken in audit_sends(record, history, strategy.compliance):
        if contact_id in made and not inside(made[contact_id]):
            continue
        kinds = {rule.split(":")[0] for rule in broken}
        audit.outside_window += bool(kinds & {"window", "holiday", "weekend"})
        audit.over_cap += "cap" in kinds
        audit.in_quiet_period += "quiet" in kinds
        audit.over_total += "total" in kinds
        if len(audit.examples) < 10:
            audit.examples.append((contact_id, broken))
    _recheck_pressure(record, attempts, strategy, audit, inside)


def _recheck_pressure(
    record: AccountRecord,
    attempts: Sequence[HistoryEntry],
    strategy: Strategy,
    audit: SendAudit,
    inside: Callable[[datetime], bool],
) -> None:
    """Independent of the policy's code: spacing by pairs, rest days by the calendar, hours by the clock."""
    policy, account = strategy.compliance, record.account
    pressure, rest = policy.pressure, policy.holidays
    tz = zone(account.timezone)
    gap = timedelta(minutes=pressure.spacing_minutes)
    spaced = sorted(
        e.at for e in attempts if e.channel in pressure.channels
        and e.detail.get("template") not in pressure.spacing_exempt_templates
    )  # fmt: skip
    pairs = zip(spaced, spaced[1:], strict=False)
    audit.too_close += sum(1 for before, after in pairs if after - before < gap and inside(after))
    for entry in attempts:
        if not inside(entry.at):
            continue
        local = entry.at.astimezone(tz)
        audit.hours[local.hour] += 1
        channel = entry.channel
        days = {entry.at.astimezone(zone(name)).date() for name in (account.timezone, *account.extra_timezones)}
        holiday = rest.enabled and channel in rest.channels
        audit.on_rest_day += any(
            (holiday and calendar.is_holiday(account.country, day, rest.rest_periods))
            or (channel in rest.weekends and calendar.is_weekend(account.country, day))
            for day in days
        )


def _account_doc(record: AccountRecord, history: Sequence[HistoryEntry]) -> dict[str, Any]:
    return {
        "id": record.account.id,
        "name": record.account.name,
        "timezone": record.account.timezone,
        "stage": record.stage,
        "status": record.state.status,
        "timeline": timeline(record, history),
    }


def simulation_tables(report: Report, strategy: Strategy, audit: SendAudit) -> Iterator[Table]:
    stages = [s.name for s in strategy.stages] + list(STAGE_ORDER_TAIL)
    funnel = Table(title=f"stage funnel by week ({report.accounts} accounts, {report.days} days)")
    funnel.add_column("week")
    for stage in stages:
        funnel.add_column(stage, justify="right")
    for week, counts in report.funnel:
        funnel.add_row(str(week), *(str(counts.get(stage, 0)) for stage in stages))
    yield funnel
    channels = Table(title="contacts by channel and outcome")
    for column in ("channel", "outcome", "contacts"):
        channels.add_column(column)
    for (channel, outcome), count in sorted(report.sends.items()):
        channels.add_row(channel, outcome, str(count))
    yield channels
    yield _counter_table("sends by provider", audit.providers, "provider")
    yield _counter_table("deferrals by rule", report.deferrals)
    yield _counter_table("denials by rule", report.denials)
    summary = Table(title="outcome", show_header=False)
    summary.add_row(
        "accounts that reached each stage", ", ".join(f"{s} {report.stage_seen.get(s, 0)}" for s in stages[:-2])
    )
    summary.add_row("resolved (paid in full)", f"{report.resolved} ({report.resolved / max(report.accounts, 1):.1%})")
    summary.add_row("debtor events", ", ".join(f"{k} {v}" for k, v in sorted(report.events.items())) or "—")
    costs = report.cost(strategy.costs)
    summary.add_row(
        "estimated channel cost",
        ", ".join(f"{c} {v:.2f}" for c, v in costs.items()) + f"; total {sum(costs.values()):.2f}",
    )
    summary.add_row("sends re-checked", str(audit.sends))
    summary.add_row("outside a window / holiday", str(audit.outside_window))
    summary.add_row("over a cap", str(audit.over_cap))
    summary.add_row("inside a post-conversation quiet period", str(audit.in_quiet_period))
    summary.add_row("over a total across channels", str(audit.over_total))
    pressure = strategy.compliance.pressure
    exempt = ", ".join(pressure.spacing_exempt_templates) or "none"
    summary.add_row(
        f"pairs to one debtor closer than {pressure.spacing_minutes} min (exempt: {exempt})", str(audit.too_close)
    )
    summary.add_row("sends on a rest day", str(audit.on_rest_day))
    yield summary
    yield arrangement_table(figures(audit.arrangements))
    yield hour_histogram(audit.hours)


def hour_histogram(hours: Counter[int]) -> Table:
    """Sends by the debtor's local hour, with a bar: a spike at the window's opening shows at once."""
    table = Table(title="sends by local hour (debtor's main zone)")
    for column, justify in (("hour", "right"), ("sends", "right"), ("share", "right"), ("", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    total, peak = sum(hours.values()) or 1, max(hours.values(), default=0) or 1
    for hour in range(24):
        count = hours.get(hour, 0)
        table.add_row(f"{hour:02d}", str(count), f"{count / total:.1%}", "█" * round(40 * count / peak))
    return table


def _counter_table(title: str, counts: Counter[str], what: str = "rule") -> Table:
    table = Table(title=title)
    table.add_column(what)
    table.add_column("count", justify="right")
    for rule, count in counts.most_common():
        table.add_row(rule, str(count))
    return table


def arrangement_table(found: ArrangementFigures) -> Table:
    """Arrangements across a book: made, kept (to the end, or paid off ahead of it), broken, cancelled,
    still being kept, and the amount collected through them."""
    table = Table(title="payment arrangements", show_header=False)
    honoured = found.kept + found.paid_off
    table.add_row("made", str(found.made))
    table.add_row("kept", f"{honoured} ({found.kept} to the end, {found.paid_off} paid off ahead of it)")
    table.add_row("broken", str(found.broken))
    table.add_row("cancelled", str(found.cancelled))
    table.add_row("still being kept", str(found.active))
    table.add_row("collected through them", str(found.collected))
    return table


def arrangement_instalments(arrangement: Arrangement) -> Table:
    """One arrangement of an account: its state and each instalment with what covers it."""
    view = arrangement.view()
    title = (
        f"arrangement {arrangement.id}: {arrangement.status}, {view['paid']} of {view['total']} {arrangement.currency}"
    )
    table = Table(title=title + (f" (+{arrangement.excess} beyond it)" if arrangement.excess else ""))
    for column in ("#", "due", "amount", "paid", "status"):
        table.add_column(column)
    for row in view["instalments"]:
        table.add_row(str(row["number"]), row["due"], row["amount"], row["paid"], row["status"])
    return table
