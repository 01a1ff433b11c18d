"""Business events on an account, and ad-hoc contacts outside the ladder (still under the policy)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field

from config.settings import TEMPLATES_DIR
from dispatcher.adhoc import AlreadyMade, request_contact
from dispatcher.api.accounts import AccountId, engine_of
from dispatcher.api.auth import EVENTS_WRITE, Principal, require
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.api.idempotency import IdempotencyKey, mark_written
from dispatcher.core.events import (
    AdhocContact,
    AgentDisposition,
    Dispute,
    DisputeResolved,
    DoNotContact,
    Hardship,
    OptIn,
    OptOut,
    Payment,
    PromiseToPay,
)
from dispatcher.core.models import ACCOUNT_ID_PATTERN, AccountState, Channel
from dispatcher.engine import Engine, UnknownAccount

router = APIRouter(prefix="/v1", tags=["events"])
log = structlog.get_logger("dispatcher.api")

ApiEvent = Annotated[
    Payment | PromiseToPay | Dispute | DisputeResolved | Hardship | OptOut | OptIn | DoNotContact | AgentDisposition,
    Field(discriminator="kind"),
]


class EventResult(BaseModel):
    account_id: str
    event: str
    status: Literal["applied", "duplicate"] = Field(description="duplicate: this event_id was applied before.")
    stage: str | None = None
    next_wakeup: datetime | None = None
    state: AccountState | None = None
    queued: list[str] = Field(default=[], description="Contact ids this event queued for sending.")


class ContactRequest(BaseModel):
    account_id: str = Field(pattern=ACCOUNT_ID_PATTERN)
    channel: Channel
    template: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$", examples=["reminder_sms"])
    key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Unique per account.")


class ContactDecision(BaseModel):
    """The one answer to an ad-hoc request: sent now, deferred until a time, or denied, each with its rule."""

    contact_id: str
    account_id: str
    verdict: Literal["send", "defer", "deny"]
    rule: str | None = Field(default=None, description="The rule that deferred or denied it.")
    until: datetime | None = Field(default=None, description="When a deferred contact may go.")
    lapses_at: datetime | None = Field(
        default=None, description="A deferred contact not made by then lapses (audited); the maximum deferral."
    )
    queued: bool = Field(description="True when this request queued it for sending.")


@router.post(
    "/accounts/{account_id}/events",
    response_model=EventResult,
    responses=responses(401, 403, 404, 409, 422),
    summary="Record a business event: payment, promise, dispute, hardship, opt-out/in, do-not-contact, disposition",
    operation_id="postEvent",
)
def post_event(
    account_id: AccountId,
    idempotency_key: IdempotencyKey,
    event: Annotated[ApiEvent, Body()],
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(EVENTS_WRITE)),
) -> EventResult:
    """The event is recorded in the account's history and the account re-planned at once."""
    result = engine.record_event(account_id, event)
    log.info("event.recorded", account_id=account_id, kind=event.kind, status=result.status)
    record = result.record
    status: Literal["applied", "duplicate"] = "duplicate" if result.status == "duplicate" else "applied"
    return EventResult(
        account_id=account_id, event=event.kind, status=status,
        stage=record.stage if record else None, next_wakeup=record.next_wakeup if record else None,
        state=record.state if record else None, queued=[c.id for c in result.queued],
    )  # fmt: skip


@router.post(
    "/contacts",
    response_model=ContactDecision,
    responses=responses(401, 403, 404, 409, 422),
    summary="Ask for one contact outside the ladder; the compliance policy decides",
    operation_id="requestContact",
)
def post_contact(
    request: ContactRequest,
    idempotency_key: IdempotencyKey,
    http_request: Request,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(EVENTS_WRITE)),
) -> ContactDecision:
    """Send now (queued), defer until a time, or deny by a named rule: the same policy as every contact.

    A denial records only the denial; a deferral longer than the strategy's maximum is a denial."""
    loaded = engine.load(request.account_id)
    if loaded.record is None:
        raise UnknownAccount(request.account_id)
    _check_template(request.template, loaded.record.account.locale)
    event = AdhocContact(channel=request.channel, template=request.template, key=request.key)
    try:
        answer = request_contact(engine, request.account_id, event)
    except AlreadyMade as exc:
        message = str(exc).removeprefix("key: ")  # nothing is recorded
        raise ApiError(409, "conflict", message, [FieldError(field="key", message=message)]) from None
    mark_written(http_request)  # the request, or only its denial, is in the history: keep this answer
    log.info("contact.adhoc", account_id=request.account_id, contact_id=answer.contact_id, verdict=answer.verdict,
             rule=answer.rule)  # fmt: skip
    return ContactDecision(account_id=request.account_id, **asdict(answer))


def _check_template(template: str, locale: str) -> None:
    if not any((TEMPLATES_DIR / locale).glob(f"{template}.*")):
        message = f"no template {template!r} for locale {locale} under config/templates"
        raise ApiError(422, "validation", message, [FieldError(field="template", message=message)])
