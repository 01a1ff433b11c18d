"""The shapes of audit entries: one dict per fact, filed under its account (see Store.append_audit)."""

from __future__ import annotations

from datetime import datetime

from config.providers import provider_of
from dispatcher.core.experiments.arms import Arm
from dispatcher.core.models import AccountRecord, Contact, Decision, HistoryEntry


def entry_audit(account_id: str, entry: HistoryEntry) -> dict[str, object]:
    audit: dict[str, object] = {"at": entry.at, "type": entry.kind, "account_id": account_id}
    audit.update(entry.model_dump(exclude={"kind", "at"}, exclude_defaults=True, mode="json"))
    return audit


def contact_audit(contact: Contact, now: datetime, status: str, **detail: str) -> dict[str, object]:
    """A contact's claim moved, naming the provider its attempt went to (`provider` in `detail`: the one its
    route chose; by default the channel's own), so every attempt's end names it."""
    return {"at": now, "type": "contact", "account_id": contact.account_id, "contact_id": contact.id,
            "channel": contact.channel, "provider": provider_of(contact.channel), "status": status,
            **detail}  # fmt: skip


def claim_audit(account_id: str, contact_id: str, now: datetime, status: str, **detail: str) -> dict[str, object]:
    """A claim moved by housekeeping (the sweep, the reconciler), where only its ids are at hand; a `channel`
    in `detail` names its provider too."""
    channel = detail.get("channel")
    provider = {} if channel is None else {"provider": provider_of(channel)}
    return {"at": now, "type": "contact", "account_id": account_id, "contact_id": contact_id, "status": status,
            **provider, **detail}  # fmt: skip


def decision_audit(account_id: str, decision: Decision, now: datetime, kind: str = "decision") -> dict[str, object]:
    return {
        "at": now,
        "type": kind,
        "account_id": account_id,
        "contact_id": decision.contact_id,
        "channel": decision.channel,
        "verdict": decision.verdict,
        "rule": decision.rule,
        "until": decision.until,
    }


def variant_audit(record: AccountRecord, arm: Arm, now: datetime) -> dict[str, object]:
    """The account's variant, at its first plan (`assigned`, with what the results per variant read of the
    account then), when its variant's strategy has a new version (`strategy_changed`), or when its variant
    left the set and the champion took it (`moved`)."""
    audit: dict[str, object] = {"at": now, "type": "variant", "account_id": record.account.id,
                                "variant": arm.name, "strategy_sha256": arm.sha256}  # fmt: skip
    if record.variant is None:
        account = record.account
        audit |= {"change": "assigned", "balance": str(account.balance),
                  "minimum_payment": str(account.minimum_payment),
                  "due_date": account.due_date.isoformat()}  # fmt: skip
    else:
        audit |= {"change": "strategy_changed" if record.variant == arm.name else "moved",
                  "from_variant": record.variant, "from_strategy_sha256": record.strategy_sha256}  # fmt: skip
    return audit
