"""The reconciler: claims in doubt are resolved only by evidence.

A claim is in doubt when it was taken and never ended (its worker died mid-call) or ended `unknown`
(the request timed out after it may have left). Once no task can still be sending it (the hard time limit
plus a margin has passed since the claim), the reconciler looks for evidence, in this order:

1. a provider callback already recorded for the contact (delivered, answered, ...): it was sent;
2. the records of the provider its attempt names (`Reconcilable.find_sent`), and only that one: a contact in
   doubt never failed over, so no other provider is asked or sent it; found → sent, with the provider's id; the
   provider definitely has no such request → the claim is released and the planner may send it again;
   The provider matches by recipient, sender and time window (claim time to claim time plus the hard time
   limit); a match already recorded for another of the account's contacts is no word on this one;
3. no way to ask (SMTP), or no clear answer → the claim stays `unknown`: counted against the caps, set
   aside for operators (`Store.ledger.unverified()`), never promoted to sent. A provider that cannot be
   asked right now is asked again at the next round.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from channels import own_provider_of, provider_key
from channels.base import Evidence, LookupUnavailable, Reconcilable, SentQuery, TransientDeliveryError
from dispatcher.core.audit import claim_audit
from dispatcher.core.events import Outcome
from dispatcher.core.models import IN_DOUBT, Channel, ClaimStatus, HistoryEntry, OutcomeKind
from dispatcher.core.timeline import attempt_provider
from dispatcher.state.claims import ClaimMove, InDoubt
from dispatcher.state.store import Loaded
from workers.messages import address_of

if TYPE_CHECKING:
    from workers.process_runtime import WorkerRuntime

log = structlog.get_logger("workers.reconcile")

MARGIN_SECONDS = 60.0  # after the hard time limit, before a claim counts as no longer being sent


def reconcile(runtime: WorkerRuntime, now: float | None = None) -> Counter[str]:
    """Resolve every claim in doubt old enough to be safe to judge; counts by what happened."""
    now = time.time() if now is None else now
    horizon = now - runtime.settings.task_time_limit - MARGIN_SECONDS
    counts: Counter[str] = Counter()
    for doubt in runtime.engine.store.ledger.in_doubt_before(horizon):
        counts[_reconcile_one(runtime, doubt)] += 1
    return counts


def _reconcile_one(runtime: WorkerRuntime, doubt: InDoubt) -> str:
    store = runtime.engine.store
    status = store.ledger.status(doubt.account_id, doubt.contact_id)
    loaded = store.load(doubt.account_id)
    attempt = _attempt(loaded, doubt.contact_id)
    if status is None or status not in IN_DOUBT or attempt is None or attempt.channel is None or loaded.record is None:
        store.ledger.set_aside(doubt.account_id, doubt.contact_id)  # nothing left to judge: report, never sent
        return "set_aside"
    channel, provider = attempt.channel, attempt_provider(attempt) or own_provider_of(attempt.channel.value)
    if _called_back(loaded, doubt.contact_id):
        return _record_sent(runtime, doubt, channel, status, Evidence(True, "callback", "callback"), provider)
    adapter = runtime.deliverer.adapters.get(provider_key(channel.value, provider))
    try:
        if not isinstance(adapter, Reconcilable):
            raise LookupUnavailable(f"the {channel.value} provider {provider} cannot be asked")
        evidence = adapter.find_sent(_query(runtime, doubt, loaded, channel, provider))
    except LookupUnavailable as exc:
        return _set_aside(runtime, doubt, channel, status, str(exc), provider)
    except TransientDeliveryError as exc:
        log.warning("claim.reconcile_later", contact_id=doubt.contact_id, reason=str(exc))
        return "asked_later"
    if evidence.found and evidence.provider_id in _attributed(loaded, doubt.contact_id):
        # What the provider found is another contact's message to the same address: no word on this one.
        return _set_aside(runtime, doubt, channel, status, "the provider's match belongs to another contact", provider)
    if evidence.found:
        return _record_sent(runtime, doubt, channel, status, evidence, provider)
    return _release(runtime, doubt, channel, attempt, provider)


def _attempt(loaded: Loaded, contact_id: str) -> HistoryEntry | None:
    for entry in reversed(loaded.history):
        if entry.kind == "attempt" and entry.contact_id == contact_id:
            return entry
    return None


def _called_back(loaded: Loaded, contact_id: str) -> bool:
    """A provider callback for the contact is evidence that the provider took it."""
    return any(e.kind == "outcome" and e.contact_id == contact_id and e.outcome is not None for e in loaded.history)


def _attributed(loaded: Loaded, contact_id: str) -> set[str]:
    """Provider ids already recorded for the account's other contacts."""
    return {
        str(e.detail["provider_id"])
        for e in loaded.history
        if e.kind == "outcome" and e.contact_id != contact_id and e.detail and "provider_id" in e.detail
    }


def _query(runtime: WorkerRuntime, doubt: InDoubt, loaded: Loaded, channel: Channel, provider: str) -> SentQuery:
    assert loaded.record is not None
    since = datetime.fromtimestamp(doubt.claimed_at, UTC) - timedelta(seconds=5)  # clocks of two machines
    until = since + timedelta(seconds=runtime.settings.task_time_limit + 10)
    sender = runtime.deliverer.sender(channel.value, provider)
    to = address_of(channel, loaded.record)
    others = frozenset(_attributed(loaded, doubt.contact_id))
    return SentQuery(doubt.contact_id, doubt.account_id, to, sender, since, until, exclude_ids=others)


def _record_sent(
    runtime: WorkerRuntime, doubt: InDoubt, channel: Channel, status: ClaimStatus, evidence: Evidence, provider: str
) -> str:
    engine = runtime.engine
    provider_id = evidence.provider_id or ""
    move: ClaimMove = (doubt.account_id, doubt.contact_id, channel.value, status, ClaimStatus.SENT)
    audit = claim_audit(doubt.account_id, doubt.contact_id, engine.clock.now(), "sent", channel=channel.value,
                        reason=f"reconciled_{status}", provider_id=provider_id, provider=provider)  # fmt: skip
    if not engine.store.move_claims([move], [audit])[0]:
        return "moved_meanwhile"
    detail = {"provider_id": provider_id, "provider_status": evidence.status or "", "reconciled": status}
    engine.record_event(doubt.account_id, Outcome(contact_id=doubt.contact_id, outcome=OutcomeKind.SENT,
                                                  channel=channel, detail=detail))  # fmt: skip
    log.info("claim.reconciled", contact_id=doubt.contact_id, was=status, provider=provider, provider_id=provider_id)
    return "sent"


def _release(runtime: WorkerRuntime, doubt: InDoubt, channel: Channel, attempt: HistoryEntry, provider: str) -> str:
    """The provider has no such request: the contact never left; the planner decides again from now."""
    engine = runtime.engine
    audit = claim_audit(doubt.account_id, doubt.contact_id, engine.clock.now(), "not_sent", channel=channel.value,
                        reason="provider_has_none", provider=provider)  # fmt: skip
    released = (doubt.account_id, doubt.contact_id, channel.value, attempt)
    if not engine.store.release_many([released], forget=True, audit=[audit])[0]:
        return "moved_meanwhile"
    engine.gate.wake_no_later(doubt.account_id, engine.clock.now())
    log.warning("claim.released_absent", contact_id=doubt.contact_id)
    return "released"


def _set_aside(
    runtime: WorkerRuntime, doubt: InDoubt, channel: Channel, status: ClaimStatus, reason: str, provider: str
) -> str:
    """No evidence to be had: unknown for good, counted against the caps, reported; never called sent."""
    store = runtime.engine.store
    if status == ClaimStatus.SENDING:
        store.move_claims([(doubt.account_id, doubt.contact_id, channel.value, status, ClaimStatus.UNKNOWN)])
    store.ledger.set_aside(doubt.account_id, doubt.contact_id)
    entry = claim_audit(doubt.account_id, doubt.contact_id, runtime.engine.clock.now(), "unknown",
                        channel=channel.value, reason="unverifiable", detail=reason, provider=provider)  # fmt: skip
    store.append_audit(doubt.account_id, [entry])
    log.warning("claim.unverifiable", contact_id=doubt.contact_id, channel=channel.value, reason=reason)
    return "unverifiable"
