"""An account's timeline as people read it (UTC and the debtor's local time), the account view built on it,
and the compliance audit of what was actually sent: every send re-checked against the windows and caps it
had to respect."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from config.providers import provider_of
from dispatcher.core.compliance import ContactLog, is_conversation, violations
from dispatcher.core.models import AccountRecord, Channel, HistoryEntry, zone
from dispatcher.core.strategy import CompliancePolicy


def account_json(
    record: AccountRecord,
    history: Sequence[HistoryEntry],
    claims: Mapping[str, str],
    wake: datetime | None,
    offers: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Any]:
    """One account as the API's GET and `dispatcher account show --json` give it: the account, its state,
    stage, next wake-up, claims, the offers its stage presents (planner.offers_now), arrangements (each
    instalment with its status) and timeline."""
    return {
        "account": record.account.model_dump(mode="json"),
        "state": record.state.model_dump(mode="json"),
        "stage": record.stage,
        "variant": record.variant,  # the strategy variant and its version, recorded at the first plan
        "strategy_sha256": record.strategy_sha256,
        "next_wakeup": wake,
        "claims": dict(claims),
        "offers": {name: dict(offer) for name, offer in (offers or {}).items()},
        "arrangements": [arrangement.view() for arrangement in record.state.arrangements],
        "timeline": timeline(record, history),
    }


def case_file(record: AccountRecord, history: Sequence[HistoryEntry]) -> dict[str, Any]:
    """The account's file as a collection agency takes it: the account, what is owed, every contact."""
    account = record.account
    rows = timeline(record, history)
    return {
        "account": account.model_dump(mode="json"),
        "balance": str(account.balance - record.state.paid),
        "currency": account.currency,
        "contact_history": rows,
        "letters": [row for row in rows if row.get("channel") == Channel.LETTER],
    }


def timeline(record: AccountRecord, history: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    """Every attempt with its outcome, and every event, oldest first."""
    tz = zone(record.account.timezone)
    outcomes: dict[str, list[str]] = {}
    for entry in history:
        if entry.kind == "outcome" and entry.contact_id and entry.outcome:
            outcomes.setdefault(entry.contact_id, []).append(entry.outcome.value)
    rows: list[dict[str, Any]] = []
    for entry in history:
        if entry.kind == "outcome":
            continue
        row: dict[str, Any] = {
            "kind": entry.kind,
            "at_utc": entry.at.isoformat(),
            "at_local": entry.at.astimezone(tz).isoformat(),
        }
        if entry.kind == "attempt":
            provider, outcome = attempt_provider(entry), outcomes.get(entry.contact_id or "")
            row.update(contact_id=entry.contact_id, channel=entry.channel, provider=provider, outcome=outcome)
            row.update(entry.detail)
        else:
            row.update(event=entry.event, **entry.detail)
        rows.append(row)
    return rows


def attempt_provider(entry: HistoryEntry) -> str | None:
    """The provider an attempt went to, as its claim recorded it. An attempt recorded before attempts named
    their provider went to its channel's only provider then, which is the one the channel declares today."""
    recorded = entry.detail.get("provider")
    if recorded is not None or entry.channel is None:
        return recorded
    return provider_of(entry.channel)


def audit_sends(
    record: AccountRecord, history: Sequence[HistoryEntry], policy: CompliancePolicy
) -> list[tuple[str, list[str]]]:
    """(contact id, broken rules) for every attempt that a window, rest day, quiet period, cap, total or the
    spacing forbade."""
    log = ContactLog(pressure=policy.pressure)
    found = []
    for entry in history:
        if is_conversation(entry):
            log.conversations.append(entry.at)
        if entry.kind != "attempt" or entry.channel is None:
            continue
        template = entry.detail.get("template")
        broken = violations(entry.channel, record.account, log, entry.at, policy, template=template)
        if broken:
            found.append((entry.contact_id or "?", broken))
        log.add(entry.channel, entry.at, template)
    return found
