"""Admin routes: the dead-letter stream (dispatcher/state/dead_letter_stream.py), for operators. `admin` scope only.

A dead letter is a broker message a worker could not decode or whose arguments it refused; it holds the raw
body, queue, task, reason and time. Replay puts the message back on its queue and removes the entry (a
message still invalid comes back as a new entry); delete drops one; purge drops those older than a time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from dispatcher.api.accounts import engine_of
from dispatcher.api.auth import ADMIN, Principal, require
from dispatcher.api.errors import ApiError, responses
from dispatcher.engine import Engine
from dispatcher.state import dead_letter_stream

router = APIRouter(prefix="/v1/admin", tags=["admin"])
Admin = Annotated[Principal, Depends(require(ADMIN))]


class DeadLetterSummary(BaseModel):
    id: str = Field(description="The stream entry id, e.g. 1767225600000-0 (milliseconds-sequence).")
    queue: str
    task: str = Field(description="The task name, empty when the message could not be read that far.")
    reason: str
    at: datetime
    body: str = Field(description="The message body as received (cut after 2,000 characters here).")
    count: int = Field(1, description="Contacts (or messages) the entry stands for: the refused payloads of one "
                       "send task are one entry, a send of them all.")  # fmt: skip


class DeadLetterPage(BaseModel):
    items: list[DeadLetterSummary]
    total: int = Field(description="Dead letters in the stream.")


class DeadLetterView(DeadLetterSummary):
    envelope: str = Field(description="kombu's Redis list item: what replay puts back on the queue.")


class Replayed(BaseModel):
    id: str
    queue: str


class Purged(BaseModel):
    purged: int


def _aware(before: datetime | None) -> datetime | None:
    if before is not None and before.tzinfo is None:
        raise ApiError(400, "bad_request", "`before` needs a UTC offset, e.g. 2026-03-01T00:00:00+00:00")
    return before


def _found(engine: Engine, entry_id: str) -> dead_letter_stream.DeadLetter:
    letter = dead_letter_stream.get(engine.store.broker, entry_id)
    if letter is None:
        raise ApiError(404, "not_found", f"no dead letter {entry_id!r}")
    return letter


@router.get("/dead-letters", response_model=DeadLetterPage, responses=responses(401, 403, 422),
            summary="Dead letters, newest first", operation_id="listDeadLetters")  # fmt: skip
def list_dead_letters(
    _: Admin,
    engine: Engine = Depends(engine_of),
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[datetime | None, Query(description="Only those older than this (ISO 8601 with offset).")] = None,
) -> DeadLetterPage:
    letters = dead_letter_stream.listing(engine.store.broker, limit, _aware(before))
    items = [DeadLetterSummary.model_validate(letter.summary()) for letter in letters]
    return DeadLetterPage(items=items, total=dead_letter_stream.count(engine.store.broker))


@router.get("/dead-letters/{entry_id}", response_model=DeadLetterView, responses=responses(401, 403, 404),
            summary="One dead letter, with its whole body and envelope", operation_id="getDeadLetter")  # fmt: skip
def get_dead_letter(entry_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> DeadLetterView:
    return DeadLetterView.model_validate(_found(engine, entry_id).as_json())


@router.post("/dead-letters/{entry_id}/replay", response_model=Replayed, responses=responses(401, 403, 404),
             summary="Put the message back on its queue and remove the entry",
             operation_id="replayDeadLetter")  # fmt: skip
def replay_dead_letter(entry_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> Replayed:
    letter = dead_letter_stream.replay(engine.store.broker, entry_id)
    if letter is None:
        raise ApiError(404, "not_found", f"no dead letter {entry_id!r}")
    return Replayed(id=letter.id, queue=letter.queue)


@router.delete("/dead-letters/{entry_id}", status_code=204, responses=responses(401, 403, 404),
               summary="Drop one dead letter", operation_id="deleteDeadLetter")  # fmt: skip
def delete_dead_letter(entry_id: str, _: Admin, engine: Engine = Depends(engine_of)) -> Response:
    if not dead_letter_stream.delete(engine.store.broker, entry_id):
        raise ApiError(404, "not_found", f"no dead letter {entry_id!r}")
    return Response(status_code=204)


@router.delete("/dead-letters", response_model=Purged, responses=responses(400, 401, 403, 422),
               summary="Purge dead letters older than `before`, or all with `all=true`",
               operation_id="purgeDeadLetters")  # fmt: skip
def purge_dead_letters(
    _: Admin,
    engine: Engine = Depends(engine_of),
    before: Annotated[datetime | None, Query(description="Drop those older than this (ISO 8601 with offset).")] = None,
    everything: Annotated[bool, Query(alias="all", description="Drop every dead letter.")] = False,
) -> Purged:
    if before is None and not everything:
        raise ApiError(400, "bad_request", "say what to purge: `before=<ISO 8601 time>` or `all=true`")
    return Purged(purged=dead_letter_stream.purge(engine.store.broker, _aware(before)))
