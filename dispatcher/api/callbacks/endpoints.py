"""Admin routes of the outcome callbacks: the bank's endpoints (register, list, show, delete, rotate the
secret, disable, enable), their attempts and their failed events (retry). `admin` scope only.

An endpoint's target is checked here (dispatcher.webhook_targets) and again before every round of sends. Its
secret is in the answer to the POST that made it, or to a rotation, and never again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from config.settings import Settings
from dispatcher.api.accounts import engine_of
from dispatcher.api.auth import ADMIN, Principal, require
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.core.webhook_events import EVENT_TYPES
from dispatcher.engine import Engine
from dispatcher.state.webhook_endpoints import ROTATION_GRACE, Endpoint, EndpointRegistry
from dispatcher.state.webhook_outbox import Outbox
from dispatcher.webhook_targets import check_target

router = APIRouter(prefix="/v1/admin/webhook-endpoints", tags=["callbacks"])
Admin = Annotated[Principal, Depends(require(ADMIN))]


class EndpointIn(BaseModel):
    url: str = Field(min_length=1, max_length=2000, description="Where to POST: https (http outside production).")
    types: list[str] = Field(default=[], max_length=len(EVENT_TYPES),
                             description="Event types to receive; empty: every type.")  # fmt: skip
    description: str = Field(default="", max_length=200)


class EndpointOut(BaseModel):
    id: str
    url: str
    types: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    breaker_open_until: datetime | None = Field(description="No delivery before this: failures in a row, or a 429.")
    failures_in_a_row: int
    rotating_until: datetime | None = Field(description="Until then the old secret signs too.")
    description: str
    accounts_waiting: int = Field(description="Accounts with events queued for this endpoint.")
    failed: int = Field(description="Events that failed for good (their retry schedule spent).")


class EndpointCreated(EndpointOut):
    secret: str = Field(description="The signing secret (`whsec_...`): shown this once.")


class SecretRotated(BaseModel):
    secret: str = Field(description="The new signing secret: shown this once.")
    old_secret_valid_until: datetime


class Attempt(BaseModel):
    attempt_id: str
    event_id: str
    type: str
    account_id: str
    at: datetime
    status: int | None = Field(description="The receiver's HTTP status; none when it did not answer.")
    error: str | None
    elapsed_ms: float
    verdict: str = Field(description="delivered, retry_scheduled, failed_for_good or endpoint_disabled.")
    next_attempt_at: datetime | None


class FailedEvent(BaseModel):
    id: str
    type: str
    account_id: str
    body: str


class Retried(BaseModel):
    requeued: int = Field(description="Failed events put back at their account's head, or waiting accounts made due.")


def _registry(engine: Engine) -> EndpointRegistry:
    return EndpointRegistry(engine.store.redis, engine.store.shards, lambda: engine.clock.now().timestamp())


def _moment(value: float | None) -> datetime | None:
    return None if not value else datetime.fromtimestamp(value, UTC)


def _out(endpoint: Endpoint, outbox: Outbox) -> dict[str, object]:
    shown = endpoint.summary()
    for name in ("created_at", "breaker_open_until", "rotating_until"):
        shown[name] = _moment(shown[name])  # type: ignore[arg-type]
    return {**shown, **outbox.depth(endpoint.id)}


def _found(engine: Engine, endpoint_id: str) -> Endpoint:
    endpoint = _registry(engine).get(endpoint_id)
    if endpoint is None:
        raise ApiError(404, "not_found", f"no webhook endpoint {endpoint_id!r}",
                       [FieldError(field="endpoint_id", message="no such endpoint")])  # fmt: skip
    return endpoint


@router.post("", status_code=201, response_model=EndpointCreated, responses=responses(401, 403, 422),
             summary="Register an endpoint for outcome callbacks", operation_id="createWebhookEndpoint")  # fmt: skip
def create_endpoint(
    body: EndpointIn, request: Request, _: Admin, engine: Engine = Depends(engine_of)
) -> EndpointCreated:
    settings: Settings = request.app.state.settings
    unknown = sorted(set(body.types) - set(EVENT_TYPES))
    if unknown:
        message = f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}"
        raise ApiError(422, "validation", f"types: {message}", [FieldError(field="types", message=message)])
    check_target(body.url, settings.webhook_allowed_hosts, settings.env == "production")  # 422 naming url
    endpoint, secret = _registry(engine).create(body.url, body.types, body.description)
    return EndpointCreated.model_validate({**_out(endpoint, Outbox(engine.store.redis)), "secret": secret})


@router.get("", response_model=list[EndpointOut], responses=responses(401, 403),
            summary="Every endpoint, with its queue and breaker", operation_id="listWebhookEndpoints")  # fmt: skip
def list_endpoints(_: Admin, engine: Engine = Depends(engine_of)) -> list[EndpointOut]:
    outbox = Outbox(engine.store.redis)
    return [EndpointOut.model_validate(_out(endpoint, outbox)) for endpoint in _registry(engine).all()]


@router.get("/{endpoint_id}", response_model=EndpointOut, responses=responses(401, 403, 404),
            summary="One endpoint", operation_id="getWebhookEndpoint")  # fmt: skip
def get_endpoint(endpoint_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> EndpointOut:
    return EndpointOut.model_validate(_out(_found(engine, endpoint_id), Outbox(engine.store.redis)))


@router.delete("/{endpoint_id}", status_code=204, responses=responses(401, 403, 404),
               summary="Delete an endpoint with its queues and attempts",
               operation_id="deleteWebhookEndpoint")  # fmt: skip
def delete_endpoint(endpoint_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> Response:
    if not _registry(engine).delete(endpoint_id):
        _found(engine, endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=SecretRotated, responses=responses(401, 403, 404),
             summary="A new secret; the old one signs too for 24 h", operation_id="rotateWebhookSecret")  # fmt: skip
def rotate_secret(endpoint_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> SecretRotated:
    _found(engine, endpoint_id)
    secret = _registry(engine).rotate(endpoint_id)
    assert secret is not None
    until = datetime.fromtimestamp(engine.clock.now().timestamp() + ROTATION_GRACE, UTC)
    return SecretRotated(secret=secret, old_secret_valid_until=until)


@router.post("/{endpoint_id}/disable", response_model=EndpointOut, responses=responses(401, 403, 404),
             summary="Stop delivering to the endpoint", operation_id="disableWebhookEndpoint")  # fmt: skip
def disable_endpoint(endpoint_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> EndpointOut:
    _found(engine, endpoint_id)
    _registry(engine).disable(endpoint_id, "disabled by an operator")
    return get_endpoint(endpoint_id, _, engine)


@router.post("/{endpoint_id}/enable", response_model=EndpointOut, responses=responses(401, 403, 404),
             summary="Deliver again, from what happens next", operation_id="enableWebhookEndpoint")  # fmt: skip
def enable_endpoint(endpoint_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> EndpointOut:
    _found(engine, endpoint_id)
    _registry(engine).enable(endpoint_id)
    return get_endpoint(endpoint_id, _, engine)


@router.get("/{endpoint_id}/attempts", response_model=list[Attempt], responses=responses(401, 403, 404, 422),
            summary="Delivery attempts, newest first", operation_id="listWebhookAttempts")  # fmt: skip
def list_attempts(
    endpoint_id: str,
    _: Admin,
    engine: Engine = Depends(engine_of),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    event_id: Annotated[str | None, Query(max_length=100, description="Only this event's attempts.")] = None,
) -> list[Attempt]:
    _found(engine, endpoint_id)
    found = Outbox(engine.store.redis).attempts(endpoint_id, limit, event_id)
    return [Attempt.model_validate(_attempt(attempt)) for attempt in found]


def _attempt(stored: dict[str, str]) -> dict[str, object]:
    return {
        **stored, "at": _moment(float(stored["at"])), "status": int(stored["status"]) if stored["status"] else None,
        "error": stored["error"] or None, "elapsed_ms": float(stored["elapsed_ms"] or 0),
        "next_attempt_at": _moment(float(stored["next_attempt_at"])) if stored["next_attempt_at"] else None,
    }  # fmt: skip


@router.get("/{endpoint_id}/failed", response_model=list[FailedEvent], responses=responses(401, 403, 404),
            summary="Events that failed for good", operation_id="listFailedWebhookEvents")  # fmt: skip
def list_failed(endpoint_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> list[FailedEvent]:
    _found(engine, endpoint_id)
    failed = Outbox(engine.store.redis).failed(endpoint_id)
    return [FailedEvent(id=event.id, type=event.type, account_id=event.account_id, body=event.body) for event in failed]


@router.post("/{endpoint_id}/retry", response_model=Retried, responses=responses(401, 403, 404),
             summary="Retry a failed event now, or every waiting account now",
             operation_id="retryWebhookEvents")  # fmt: skip
def retry(
    endpoint_id: str,
    _: Admin,
    engine: Engine = Depends(engine_of),
    event_id: Annotated[
        str | None, Query(max_length=100, description="A failed event; without it, skip every wait.")
    ] = None,
) -> Retried:
    _found(engine, endpoint_id)
    now = engine.clock.now().timestamp()
    outbox = Outbox(engine.store.redis)
    if event_id is None:
        _registry(engine).succeeded(endpoint_id)  # the breaker closed: an operator says the receiver is back
        return Retried(requeued=outbox.due_now(endpoint_id, now))
    if not outbox.retry(endpoint_id, event_id, now):
        raise ApiError(404, "not_found", f"no failed event {event_id!r} on {endpoint_id}",
                       [FieldError(field="event_id", message="not among the endpoint's failed events")])  # fmt: skip
    return Retried(requeued=1)
