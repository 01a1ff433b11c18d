"""Accounts: upsert one (PUT), read one with its timeline (GET). The NDJSON batch is in batch.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import psycopg
import structlog
from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from dispatcher.api.auth import ACCOUNTS_READ, ACCOUNTS_WRITE, Principal, require
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.core.models import ACCOUNT_ID_PATTERN, Account, AccountState
from dispatcher.core.planner import offers_now
from dispatcher.core.timeline import account_json
from dispatcher.engine import Engine, Result, UnknownAccount
from dispatcher.record.db import RecordUnavailable, open_record, record_url
from dispatcher.record.readers import RecordReader, read_account

T = TypeVar("T")

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
log = structlog.get_logger("dispatcher.api")

AUDIT_SCAN = 5000  # audit stream entries of the account's shard read for its recent decisions
DECISION_TYPES = ("decision", "last_look", "contact")
AccountId = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="The bank's account id.")]


class AccountIn(Account):
    """An account as PUT: the body's `id` may be left out; when given it must match the path."""

    id: str | None = Field(default=None, pattern=ACCOUNT_ID_PATTERN)  # type: ignore[assignment]


class UpsertResult(BaseModel):
    account_id: str
    status: Literal["created", "updated", "unchanged"]
    stage: str | None = None
    next_wakeup: datetime | None = None
    queued: list[str] = Field(default=[], description="Contact ids this change queued for sending.")


class AccountView(BaseModel):
    account: Account
    state: AccountState
    stage: str | None
    variant: str | None = Field(default=None, description="The strategy variant the account is worked under.")
    strategy_sha256: str | None = Field(default=None, description="SHA-256 of that variant's strategy version.")
    next_wakeup: datetime | None
    claims: dict[str, str] = Field(description="Contact id → queued | sending | sent | unknown.")
    offers: dict[str, dict[str, Any]] = Field(
        default={}, description="The offers the account's stage presents, computed for it (none while a plan is kept)."
    )
    arrangements: list[dict[str, Any]] = Field(
        default=[], description="Payment arrangements, oldest first, each instalment with its status."
    )
    timeline: list[dict[str, Any]] = Field(description="Every attempt (with its outcomes) and event, oldest first.")
    decisions: list[dict[str, Any]] = Field(description="Compliance decisions (send / defer / deny with rule).")
    decisions_complete: bool = Field(description="False when older decisions lie beyond the audit scan.")
    archived: bool = Field(
        default=False, description="True when the account is closed and read from the record (PostgreSQL)."
    )


async def engine_of(request: Request) -> Engine:  # async: no thread hop for a lookup
    engine: Engine = request.app.state.engine
    return engine


def upsert_status(result: Result) -> Literal["created", "updated", "unchanged"]:
    if result.status == "unchanged":
        return "unchanged"
    return "created" if result.created else "updated"


def to_account(account_id: str, body: AccountIn) -> Account:
    if body.id is not None and body.id != account_id:
        message = f"the body's id {body.id!r} differs from the path's account_id {account_id!r}"
        raise ApiError(422, "validation", message, [FieldError(field="id", message=message)])
    return Account.model_validate({**body.model_dump(), "id": account_id})


@router.put(
    "/{account_id}",
    response_model=UpsertResult,
    status_code=200,
    responses={201: {"model": UpsertResult, "description": "Created"}, **responses(401, 403, 422)},
    summary="Upsert a delinquent account",
    operation_id="upsertAccount",
)
def put_account(
    account_id: AccountId,
    body: AccountIn,
    response: Response,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(ACCOUNTS_WRITE)),
) -> UpsertResult:
    """Create or replace the account; it is planned at once and its due contacts queued."""
    account = to_account(account_id, body)
    result = engine.upsert(account)
    status = upsert_status(result)
    if status == "created":
        response.status_code = 201
    record = result.record
    log.info("account.upserted", account_id=account_id, status=status, queued=len(result.queued))
    return UpsertResult(
        account_id=account_id, status=status, stage=record.stage if record else None,
        next_wakeup=record.next_wakeup if record else None, queued=[c.id for c in result.queued],
    )  # fmt: skip


@router.get(
    "/{account_id}",
    response_model=AccountView,
    responses=responses(401, 403, 404, 422, 503),
    summary="An account: state, stage, next wake-up, timeline and decisions",
    operation_id="getAccount",
)
def get_account(
    account_id: AccountId,
    request: Request,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(ACCOUNTS_READ)),
) -> AccountView:
    reader = record_of(request)
    try:
        found = read_account(engine.store, reader, account_id)
        if found is None:
            raise UnknownAccount(account_id)
        decisions, complete = recent_decisions(engine, account_id)
        if reader is not None:  # the older ones were archived; an entry in both places is shown once
            decisions = _once([*reader.decisions(account_id), *decisions])
    except psycopg.OperationalError as exc:  # the record went away under an open pool: a 503 (outage.py)
        forget_record(request, reader, exc)
        raise
    offers = offers_now(found.record, engine.strategy, engine.clock.now()) if not found.archived else {}
    view = account_json(found.record, found.history, found.claims, found.next_wakeup, offers)
    return AccountView(**view, decisions=decisions, decisions_complete=complete, archived=found.archived)


RECORD_WAIT = 5.0  # seconds a read waits for the record's pool before answering 503
RECORD_RETRY = 1.0  # seconds after a failed open during which reads are answered 503 without a new try
_opening = threading.Lock()  # requests run in a thread pool: one of them opens the record, the others wait


def record_of(request: Request) -> RecordReader | None:
    """The record's reader, opened (and migrated) on first use; None while the deployment has no record
    (asked again on the next read: one may appear). RecordUnavailable, a 503, when the record cannot be
    reached (dispatcher/api/outage.py)."""
    state = request.app.state
    with _opening:
        reader: RecordReader | None = getattr(state, "record", None)
        if reader is not None:
            return reader
        failed: RecordUnavailable | None = getattr(state, "record_failed", None)
        if failed is not None and time.monotonic() < state.record_retry_at:
            raise failed  # asked a moment ago: the requests behind it are told at once, not one timeout each
        try:
            url = record_url(state.settings.database_url, state.settings.state_dir)
            if url is not None:
                reader = state.record = RecordReader(open_record(url, timeout=RECORD_WAIT))
        except RecordUnavailable as exc:
            state.record_failed, state.record_retry_at = exc, time.monotonic() + RECORD_RETRY
            raise
    return reader


def read_record(request: Request, read: Callable[[RecordReader], T], without: Callable[[], T]) -> T:
    """`read` over the record, or `without()` on a deployment that has none (nothing archived yet). A record
    that went away under an open pool is dropped and answers 503 (outage.py), asked afresh next time."""
    reader = record_of(request)
    if reader is None:
        return without()
    try:
        return read(reader)
    except psycopg.OperationalError as exc:
        forget_record(request, reader, exc)
        raise


def forget_record(request: Request, reader: RecordReader | None, exc: Exception) -> None:
    """Drop a reader whose record went away: the reads after it are told at once for RECORD_RETRY, then
    the next one opens the record afresh, so a restarted server is read again at once."""
    state = request.app.state
    if reader is None:
        return
    pool = reader.pool
    with _opening:
        if getattr(state, "record", None) is not reader:
            return  # another request has dropped it already
        state.record = None
        state.record_failed = RecordUnavailable(f"the record (PostgreSQL) went away: {exc}")
        state.record_retry_at = time.monotonic() + RECORD_RETRY
    pool.close(timeout=1)


def _once(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for entry in entries:
        key = json.dumps(entry, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


def recent_decisions(engine: Engine, account_id: str) -> tuple[list[dict[str, Any]], bool]:
    """The account's decisions among its shard's latest AUDIT_SCAN audit entries, oldest first.

    The audit stream is per shard, not per account, so a full read would grow with the whole book.
    """
    store = engine.store
    entries = store.redis.xrevrange(store.audit_key(store.shard_of(account_id)), count=AUDIT_SCAN)
    found = []
    for _, fields in reversed(entries):
        payload = json.loads(fields["e"])
        for entry in payload if isinstance(payload, list) else [payload]:  # one stream entry holds a commit's
            if entry.get("account_id") == account_id and entry.get("type") in DECISION_TYPES:
                found.append(entry)
    return found, len(entries) < AUDIT_SCAN
