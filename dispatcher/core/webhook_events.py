"""Outcome callbacks to the bank's services (Standard Webhooks): which audit entries become which events, the
thin payload each carries, the event's stable id, the signature, and the retry schedule.

An audit entry (dispatcher.core.audit) is a committed fact; the relay (dispatcher.webhook_relay) reads the
audit streams and turns each entry this module maps into one event. The event id is a function of where the
entry sits (shard, stream entry id, position in the stream entry), so a redelivery, a relay restarted from
its cursor and the change feed all name one fact by one id: the `webhook-id` a receiver deduplicates on.

Payloads are thin on purpose: ids, channel, provider, outcome and reason; money only on payment events; never
a name, number, address or free text (the fields of dispatcher.core.privacy.personal_data are never copied, and a
reason is masked as a log line is). The receiver reads the rest from `GET /v1/accounts/{id}`.

Pure: no I/O here (hmac, hashlib and base64 compute; `secrets` draws the random bytes of a new secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from config.providers import provider_of
from dispatcher.core.models import AccountRecord
from dispatcher.core.privacy.personal_data import PERSONAL_FIELDS, mask_text

EVENT_TYPES = (
    "contact.sent", "contact.delivered", "contact.failed", "contact.answered", "contact.unanswered",
    "account.stage_changed", "account.resolved", "account.handed_off", "account.reopened", "account.opted_out",
    "account.hold_started", "account.hold_ended", "promise.kept", "promise.broken", "payment.recorded",
    "arrangement.made", "arrangement.cancelled", "arrangement.broken",
)  # fmt: skip

# What a provider or a person reports (OutcomeKind) → the event it is. A provider's "sent" is not one: the
# claim's own "sent" (the provider took the request) already is; "handed_off" is the account's status change.
_OUTCOME_TYPES = {
    "delivered": "contact.delivered",
    "answered": "contact.answered",
    "failed": "contact.failed",
    "undelivered": "contact.failed",
    "bounced": "contact.failed",
    "returned": "contact.failed",
    "invalid_address": "contact.failed",
    "refused": "contact.failed",
    "wrong_party": "contact.failed",
    "no_answer": "contact.unanswered",
    "busy": "contact.unanswered",
    "voicemail": "contact.unanswered",
    "opted_out": "account.opted_out",
}
_CLAIM_TYPES = {"sent": "contact.sent", "failed": "contact.failed"}  # a claim's end (the "contact" entries)
_EVENT_KINDS = {
    "payment": "payment.recorded",
    "promise_kept": "promise.kept",
    "promise_broken": "promise.broken",
    "opt_out": "account.opted_out",
    "arrangement": "arrangement.made",
    "arrangement_cancelled": "arrangement.cancelled",
    "arrangement_broken": "arrangement.broken",
}
_STATUS_TYPES = {"resolved": "account.resolved", "handed_off": "account.handed_off", "active": "account.reopened"}
_REASON_KEYS = ("reason", "error", "error_code")  # where an entry says why, in this order
_MAX_REASON = 200

SECRET_PREFIX = "whsec_"


# The facts the commit compares before and after (dispatcher.engine): stage, status and holds are not
# history entries, so without these the feed would not know an account moved on.
def lifecycle_audit(
    account_id: str, before: AccountRecord | None, after: AccountRecord, now: datetime
) -> list[dict[str, object]]:
    """Audit entries for what changed between the record as read and as committed: the stage, the status
    (resolved, handed off, active again) and each hold started or ended. A new account has none."""
    if before is None:
        return []
    found: list[dict[str, object]] = []
    # A stage is planned only while the account is worked (a hold or a closed account has none): a change is
    # from one stage to another, the hold's start and end being their own events.
    if before.stage is not None and after.stage is not None and before.stage != after.stage:
        found.append({"at": now, "type": "stage", "account_id": account_id, "stage": after.stage,
                      "previous": before.stage})  # fmt: skip
    if before.state.status != after.state.status:
        found.append({"at": now, "type": "status", "account_id": account_id, "status": after.state.status,
                      "previous": before.state.status})  # fmt: skip
    old, new = before.state.holds, after.state.holds
    for reason in sorted(new.keys() - old.keys()):
        until = new[reason]
        found.append({"at": now, "type": "hold", "account_id": account_id, "reason": reason, "change": "started",
                      "until": None if until is None else until.isoformat()})  # fmt: skip
    for reason in sorted(old.keys() - new.keys()):
        found.append({"at": now, "type": "hold", "account_id": account_id, "reason": reason, "change": "ended"})
    return found


def event_id(shard: int, stream_id: str, position: int) -> str:
    """The event's stable id (its `webhook-id`): where its audit entry sits."""
    return f"evt_{shard}_{stream_id}_{position}"


def event_of(entry: Mapping[str, Any]) -> tuple[str, dict[str, object]] | None:
    """(type, data) of the event an audit entry is, or None when it is none (a decision, a last look)."""
    kind = entry.get("type")
    account_id = str(entry.get("account_id", ""))
    if kind == "contact":
        found = _CLAIM_TYPES.get(str(entry.get("status")))
        return None if found is None else (found, _contact_data(entry, entry.get("status")))
    if kind == "outcome":
        found = _OUTCOME_TYPES.get(str(entry.get("outcome")))
        if found is None:
            return None
        if found == "account.opted_out":
            return found, {"account_id": account_id, "channel": entry.get("channel"), "source": "provider"}
        return found, _contact_data(entry, entry.get("outcome"))
    if kind == "event":
        return _business_event(account_id, entry)
    if kind == "stage":
        data = {"account_id": account_id, "stage": entry.get("stage"), "previous_stage": entry.get("previous")}
        return "account.stage_changed", data
    if kind == "status":
        found = _STATUS_TYPES.get(str(entry.get("status")))
        return None if found is None else (found, {"account_id": account_id, "previous_status": entry.get("previous")})
    if kind == "hold":
        data = {"account_id": account_id, "reason": entry.get("reason")}
        if entry.get("change") == "started":
            return "account.hold_started", {**data, "until": entry.get("until")}
        return "account.hold_ended", data
    return None


def _detail(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    detail = entry.get("detail")
    return detail if isinstance(detail, Mapping) else {}


def _reason(entry: Mapping[str, Any]) -> str | None:
    for source in (entry, _detail(entry)):
        for key in _REASON_KEYS:
            value = source.get(key)
            if value not in (None, "") and key not in PERSONAL_FIELDS:
                return mask_text(str(value))[:_MAX_REASON]
    return None


def _contact_data(entry: Mapping[str, Any], outcome: object) -> dict[str, object]:
    channel = entry.get("channel")
    return {
        "account_id": entry.get("account_id"),
        "contact_id": entry.get("contact_id"),
        "channel": channel,
        # An outcome's entry may name no provider: then the one its channel sends through by default.
        "provider": entry.get("provider")
        or _detail(entry).get("provider")
        or (provider_of(str(channel)) if channel else None),
        "outcome": outcome,
        "reason": _reason(entry),
    }


def _business_event(account_id: str, entry: Mapping[str, Any]) -> tuple[str, dict[str, object]] | None:
    found = _EVENT_KINDS.get(str(entry.get("event")))
    if found is None:
        return None
    detail = _detail(entry)
    data: dict[str, object] = {"account_id": account_id}
    if found == "payment.recorded":  # the one event that carries money
        data |= {
            "amount": detail.get("amount"),
            "currency": detail.get("currency"),
            "reference": detail.get("reference"),
        }
    elif found == "account.opted_out":
        data |= {"channel": detail.get("channel"), "source": "bank"}
    elif found.startswith("arrangement."):  # ids only: the terms (amounts) are read from the account
        data["arrangement_id"] = detail.get("arrangement_id")
        if found == "arrangement.made":
            data["offer"] = detail.get("offer")
        if found == "arrangement.broken":
            data["instalment"] = detail.get("instalment")
    return found, data


def payload_body(event_type: str, timestamp: datetime, data: Mapping[str, object]) -> str:
    """The JSON body sent, byte for byte the same on every retry (the signature covers it)."""
    body = {"type": event_type, "timestamp": timestamp.isoformat().replace("+00:00", "Z"), "data": dict(data)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)


# Signing (Standard Webhooks, spec/standard-webhooks.md): HMAC-SHA256 over "id.timestamp.body" with the
# secret's bytes (the base64 after `whsec_`), base64 in the header as `v1,<signature>`; several signatures
# (a secret rotated, the old one still valid) are separated by spaces and any one of them verifies.
def new_secret(size: int = 32) -> str:
    """A new signing secret: `whsec_` and 24 to 64 random bytes in base64."""
    if not 24 <= size <= 64:
        raise ValueError("a signing secret has 24 to 64 random bytes")
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(size)).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    text = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(text, validate=True)


def sign(secret: str, message_id: str, timestamp: int, body: str | bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of id.timestamp.body>` with this secret."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    signed = f"{message_id}.{timestamp}.".encode() + raw
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets_in_use: Sequence[str], message_id: str, timestamp: int, body: str | bytes) -> str:
    """The `webhook-signature` header: one signature per secret in use (the new one first)."""
    return " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_in_use)


def verify(secret: str, message_id: str, timestamp: int, body: str | bytes, header: str) -> bool:
    """Whether any `v1` signature in the header is this secret's (compared in constant time)."""
    expected = sign(secret, message_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode()) for candidate in header.split() if candidate.startswith("v1,")
    )


# The retry schedule: after the n-th failed attempt (n = 1, 2, ...) the next one waits schedule[n - 1], give or
# take the jitter (a fraction of it, drawn each time, so a receiver back up is not met by every endpoint at
# once); past the schedule's end the event has failed for good.
def retry_delay(
    failures: int, schedule: Sequence[float], jitter: float, draw: random.Random | None = None
) -> float | None:
    """The wait before the next attempt after `failures` failed ones, or None when the schedule is spent."""
    if failures < 1 or failures > len(schedule):
        return None
    base = schedule[failures - 1]
    spread = base * jitter
    return max(0.0, base + (draw or random).uniform(-spread, spread))


def retry_after_seconds(value: str | None, now: datetime, ceiling: float) -> float | None:
    """A Retry-After header's wait in seconds (delta-seconds or an HTTP date), at most `ceiling`; None when
    absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), ceiling)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return min(max(0.0, (moment - now).total_seconds()), ceiling)
