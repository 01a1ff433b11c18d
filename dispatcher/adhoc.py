"""Ad-hoc contacts (an agent's request outside the ladder): one answer for every entry, HTTP or Celery.

The policy is asked before anything is recorded: a denial records only the denial (`adhoc_denied`), so a
request refused during a dispute is never made when the dispute ends; otherwise the request is recorded
and the re-plan's own decision is the answer: send (queued now) or defer until a time, lapsing after the
strategy's maximum deferral (`adhoc_lapsed`, audited).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from config.errors import InputRejected
from dispatcher.core.events import AdhocContact, AdhocDenied
from dispatcher.core.models import ClaimStatus, ContactRef, Verdict
from dispatcher.core.planner import adhoc_ruling
from dispatcher.core.stages import ADHOC_STAGE
from dispatcher.engine import Engine, UnknownAccount


class AlreadyMade(InputRejected, ValueError):
    """The key's contact was already made (claimed or sent); nothing is recorded: use a new key."""

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
    ruling = adhoc_ruling(loaded.record, loaded.history, engine.strategy, request.channel, now)
    if ruling.verdict == "deny":
        denied = AdhocDenied(key=request.key, channel=request.channel, template=request.template,
                             rule=ruling.rule or "")  # fmt: skip
        engine.record_event(account_id, denied)
        return AdhocAnswer(contact_id, "deny", denied.rule)
    result = engine.record_event(account_id, request)
    decisions = result.plan.decisions if result.plan else ()
    decision = next((d for d in decisions if d.contact_id == contact_id), None)
    verdict: Verdict = decision.verdict if decision else ruling.verdict
    rule, until = (decision.rule, decision.until) if decision else (ruling.rule, ruling.until)
    lapses = now + timedelta(hours=engine.strategy.compliance.pressure.adhoc_max_deferral_hours)
    queued = any(c.id == contact_id for c in result.queued)
    return AdhocAnswer(contact_id, verdict, rule, until, lapses if verdict == "defer" else None, queued)
