"""Business events on an account, payment arrangements, and ad-hoc contacts outside the ladder (still under
the policy)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Body, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from config.settings import TEMPLATES_DIR
from dispatcher.adhoc import AlreadyMade, request_contact
from dispatcher.api.accounts import AccountId, engine_of
from dispatcher.api.auth import ACCOUNTS_READ, EVENTS_WRITE, Principal, require
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.api.idempotency import IdempotencyKey, mark_written
from dispatcher.core.arrangements.events import ArrangementCancelled, ArrangementConflict, ArrangementMade
from dispatcher.core.arrangements.terms import ARRANGEMENT_ID_PATTERN, find
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
from dispatcher.engine import Engine, Result, UnknownAccount

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


class ArrangementView(BaseModel):
    """One arrangement: its instalments (each with what covers it and its status: paid, part_paid, due or
    missed) and its state: active (being kept), kept or paid_off (the account resolved), broken, cancelled."""

    account_id: str
    id: str
    state: Literal["active", "kept", "broken", "cancelled", "paid_off"]
    offer: str | None
    currency: str
    total: str
    paid: str = Field(description="What payments put into the plan, in instalment order.")
    remaining: str
    excess: str = Field(description="Paid beyond the plan by the payment that settled it.")
    made_at: datetime
    ended_at: datetime | None
    instalments: list[dict[str, Any]]
    stage: str | None = Field(default=None, description="The account's stage: `arrangement` while it is kept.")
    next_wakeup: datetime | None = None
    queued: list[str] = Field(default=[], description="Contact ids this change queued for sending.")


ArrangementId = Annotated[str, Path(pattern=ARRANGEMENT_ID_PATTERN, description="The bank's arrangement id.")]


@router.post(
    "/accounts/{account_id}/arrangements",
    response_model=ArrangementView,
    status_code=201,
    responses={
        200: {"model": ArrangementView, "description": "This arrangement_id was made before"},
        **responses(401, 403, 404, 409, 422),
    },  # fmt: skip
    summary="Record an agreed payment arrangement: instalments, or an instalment offer of the strategy",
    operation_id="postArrangement",
)
def post_arrangement(
    account_id: AccountId,
    idempotency_key: IdempotencyKey,
    body: ArrangementMade,
    response: Response,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(EVENTS_WRITE)),
) -> ArrangementView:
    """While it is kept the ladder waits (reminders before each instalment only); payments apply to the
    instalments in order; paying it off resolves the account; an instalment unpaid at its due date plus
    the strategy's grace breaks it and the ladder resumes at the stage the days past due give."""
    result = _arrangement_change(engine, account_id, body)
    if result.status == "duplicate":
        response.status_code = 200
    log.info("arrangement.recorded", account_id=account_id, arrangement_id=body.arrangement_id, status=result.status)
    return _arrangement_view(account_id, body.arrangement_id, result)


@router.delete(
    "/accounts/{account_id}/arrangements/{arrangement_id}",
    response_model=ArrangementView,
    responses=responses(401, 403, 404, 409, 422),
    summary="Cancel an arrangement; the ladder resumes at the stage the days past due give",
    operation_id="cancelArrangement",
)
def delete_arrangement(
    account_id: AccountId,
    arrangement_id: ArrangementId,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(EVENTS_WRITE)),
) -> ArrangementView:
    """Cancelling twice answers the cancelled arrangement again; one that ended otherwise is a 409."""
    result = _arrangement_change(engine, account_id, ArrangementCancelled(arrangement_id=arrangement_id))
    log.info("arrangement.cancelled", account_id=account_id, arrangement_id=arrangement_id, status=result.status)
    return _arrangement_view(account_id, arrangement_id, result)


@router.get(
    "/accounts/{account_id}/arrangements",
    response_model=list[ArrangementView],
    responses=responses(401, 403, 404, 422),
    summary="The account's arrangements, oldest first",
    operation_id="listArrangements",
)
def list_arrangements(
    account_id: AccountId,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(ACCOUNTS_READ)),
) -> list[ArrangementView]:
    record = engine.load(account_id).record
    if record is None:
        raise UnknownAccount(account_id)
    return [ArrangementView(account_id=account_id, stage=record.stage, next_wakeup=record.next_wakeup, **a.view())
            for a in record.state.arrangements]  # fmt: skip


def _arrangement_change(engine: Engine, account_id: str, event: ArrangementMade | ArrangementCancelled) -> Result:
    try:
        return engine.record_event(account_id, event)
    except ArrangementConflict as exc:  # the account as it stands: resolved, handed off, in dispute, another plan
        message = str(exc).removeprefix(f"{exc.field}: ")
        raise ApiError(409, "conflict", str(exc), [FieldError(field=exc.field, message=message)]) from None


def _arrangement_view(account_id: str, arrangement_id: str, result: Result) -> ArrangementView:
    record = result.record
    arrangement = None if record is None else find(record.state.arrangements, arrangement_id)
    if record is None or arrangement is None:  # not reached: the change applied, or it was a repeat
        raise ApiError(500, "internal", f"arrangement {arrangement_id!r} not found after it was recorded")
    return ArrangementView(
        account_id=account_id, stage=record.stage, next_wakeup=record.next_wakeup,
        queued=[c.id for c in result.queued], **arrangement.view(),
    )  # fmt: skip
