"""Ad-hoc contacts (an agent's request outside the ladder): one answer for every entry, HTTP or Celery.

The policy is asked before anything is recorded: a denial records only the denial (`adhoc_denied`), so a
request refused during a dispute is never made when the dispute ends; an account not yet past due is no
collections case, so a request for it is denied too (`not_past_due`). Otherwise the request is recorded
and the re-plan's own decision is the answer: send (queued now) or defer until a time, lapsing after the
strategy's maximum deferral (`adhoc_lapsed`, audited). `send` is answered only for a contact that is
queued (tests/integration/test_adhoc_verdicts.py checks it as a property).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from config.errors import InputRejected
from dispatcher.claims import ClaimStatus
from dispatcher.compliance import Ruling, denial
from dispatcher.engine import Engine, Result, UnknownAccount
from dispatcher.events import AdhocContact, AdhocDenied
from dispatcher.models import HistoryEntry, Verdict
from dispatcher.planner import (
    ADHOC_STAGE,
    NOT_PAST_DUE,
    ContactRef,
    adhoc_due_to_lapse,
    adhoc_lapsed_keys,
    stage_index_at,
)
from dispatcher.store import Loaded
from dispatcher.strategy import Strategy


class AlreadyMade(InputRejected, ValueError):
    """The key is used up: its contact was already made (claimed or sent), or its request lapsed unmade
    (the planner never takes a lapsed key again); nothing is recorded: use a new key."""

    field = "key"


@dataclass(frozen=True, slots=True)
class AdhocAnswer:
    contact_id: str
    verdict: Verdict
    rule: str | None = None
    until: datetime | None = None
    lapses_at: datetime | None = None
    queued: bool = False


def request_contact(engine: Engine, account_id: str, request: AdhocContact) -> AdhocAnswer:
    """Judge, record and answer one ad-hoc request; raises UnknownAccount or AlreadyMade, recording nothing."""
    contact_id = str(ContactRef(account_id, ADHOC_STAGE, request.key, 0))
    loaded = engine.load(account_id)
    if loaded.record is None:
        raise UnknownAccount(account_id)
    if engine.store.claim_status(account_id, contact_id) not in (None, ClaimStatus.QUEUED):
        raise AlreadyMade(f"key: contact {contact_id!r} was already made; use a new key")
    now = engine.clock.now()
    if request.key in spent_keys(loaded.history, engine.strategy, now):
        raise AlreadyMade(f"key: the request {request.key!r} lapsed unmade after the maximum deferral; use a new key")
    ruling = adhoc_ruling(engine, loaded, request, contact_id, now)
    if ruling.verdict == "deny":
        denied = AdhocDenied(key=request.key, channel=request.channel, template=request.template,
                             rule=ruling.rule or "")  # fmt: skip
        engine.record_event(account_id, denied)
        return AdhocAnswer(contact_id, "deny", denied.rule)
    result = engine.record_event(account_id, request)
    decisions = result.plan.decisions if result.plan else ()
    decision = next((d for d in decisions if d.contact_id == contact_id), None)
    lapses = now + timedelta(hours=engine.strategy.compliance.pressure.adhoc_max_deferral_hours)
    if any(c.id == contact_id for c in result.queued):
        return AdhocAnswer(contact_id, "send", queued=True)
    if decision is not None and decision.verdict != "send":
        return AdhocAnswer(contact_id, decision.verdict, decision.rule, decision.until,
                           lapses if decision.verdict == "defer" else None)  # fmt: skip
    return _passed_over(engine, account_id, contact_id, result, lapses)


def adhoc_ruling(engine: Engine, loaded: Loaded, request: AdhocContact, contact_id: str, now: datetime) -> Ruling:
    """What the policy says of the request now, before anything is recorded: the answer to an agent.

    Outright denials first (a hold, a promise, an opt-out ...); an account before the ladder's first stage
    is no collections case (`not_past_due`), and the planner would never look at the request. Otherwise the
    decision of the plan that recording it would make, so the contacts due in the same plan count
    (a ladder text due now pushes a call back by the spacing); a wait reaching the maximum deferral is a
    denial, since the contact would lapse unmade."""
    record = loaded.record
    assert record is not None  # request_contact answered UnknownAccount
    account, state, strategy = record.account, record.state, engine.strategy
    denied = denial(request.channel, account, state, strategy.compliance)
    if denied is None and state.promise is not None:
        denied = "promise_to_pay"
    if denied is None and stage_index_at(account, state, strategy, now) is None:
        denied = NOT_PAST_DUE
    if denied is not None:
        return Ruling("deny", denied)
    preview = engine.preview(loaded, request, now)
    decision = next((d for d in preview.decisions if d.contact_id == contact_id), None)
    if decision is None:  # the plan passes it over (time ended a promise into a broken one ...): say why
        return Ruling("deny", preview.note or "not_planned")
    limit = timedelta(hours=strategy.compliance.pressure.adhoc_max_deferral_hours)
    if decision.until is not None and decision.until >= now + limit:
        return Ruling("deny", f"max_deferral:{decision.rule}", decision.until)
    return Ruling(decision.verdict, decision.rule, decision.until)


def _passed_over(engine: Engine, account_id: str, contact_id: str, result: Result, lapses: datetime) -> AdhocAnswer:
    """The re-plan queued nothing for the request: an event id repeated (nothing was written now), or a change
    came between the ruling and the commit (a dispute). Never `send` unless the contact is queued: a request
    recorded but not planned waits for a later plan, and lapses unmade after the maximum deferral."""
    if engine.store.claim_status(account_id, contact_id) is not None:  # queued by the request this one repeats
        return AdhocAnswer(contact_id, "send", queued=True)
    note = result.plan.note if result.plan is not None else None
    wakeup = result.record.next_wakeup if result.record is not None else None
    return AdhocAnswer(contact_id, "defer", note or "not_planned", wakeup, lapses)


def spent_keys(history: Sequence[HistoryEntry], strategy: Strategy, now: datetime) -> set[str]:
    """Keys the planner will never make a contact for again: lapsed, or lapsing at the next commit."""
    return adhoc_lapsed_keys(history) | set(adhoc_due_to_lapse(history, strategy, now))
