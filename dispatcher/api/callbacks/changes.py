"""GET /v1/changes: the change feed (dispatcher/record/changes.py), for a service that would rather poll one
route than receive callbacks, or catch up after it was away. `accounts:read` scope.

The events are the callbacks' own (same ids, types and data); `next` is the cursor to send as `after` next
time (a page shorter than `limit` means the feed is read to its end for now). An expired cursor is a 410 whose
`fields` name `after` and the oldest valid cursor.
"""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from config.settings import Settings
from dispatcher.api.accounts import engine_of, forget_record, record_of
from dispatcher.api.auth import ACCOUNTS_READ, Principal, require
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.core.webhook_events import EVENT_TYPES
from dispatcher.engine import Engine
from dispatcher.record.changes import ChangeFeed, CursorExpired

router = APIRouter(prefix="/v1/changes", tags=["callbacks"])


class ChangeOut(BaseModel):
    id: str = Field(description="The event's id: the `webhook-id` its callback carries.")
    type: str
    timestamp: str = Field(description="When the fact happened (UTC, ISO 8601).")
    data: dict[str, Any]


class ChangePage(BaseModel):
    items: list[ChangeOut]
    next: str = Field(description="The cursor to send as `after` to read on.")


@router.get("", response_model=ChangePage, responses=responses(401, 403, 410, 422),
            summary="What happened to accounts, after a cursor", operation_id="listChanges")  # fmt: skip
def list_changes(
    request: Request,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(ACCOUNTS_READ)),
    after: Annotated[
        str | None, Query(max_length=4000, description="The `next` of the last page; none: the oldest kept.")
    ] = None,  # fmt: skip
    types: Annotated[
        str | None, Query(max_length=2000, description="Event types, comma-separated; none: every type.")
    ] = None,  # fmt: skip
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChangePage:
    wanted = [name.strip() for name in (types or "").split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(EVENT_TYPES))
    if unknown:
        message = f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}"
        raise ApiError(422, "validation", f"types: {message}", [FieldError(field="types", message=message)])
    settings: Settings = request.app.state.settings
    reader = record_of(request)
    feed = ChangeFeed(engine.store, None if reader is None else reader.pool, settings.changes_retention_days)
    try:
        page, cursor = feed.page(after, wanted, limit)
    except CursorExpired as exc:
        fields = [FieldError(field="after", message=f"oldest valid: {exc.oldest}")]
        raise ApiError(410, "gone", str(exc), fields) from None
    except psycopg.OperationalError as exc:
        forget_record(request, reader, exc)
        raise
    items = [ChangeOut(id=c.id, type=c.type, timestamp=c.timestamp, data=c.data) for c in page]
    return ChangePage(items=items, next=cursor)
