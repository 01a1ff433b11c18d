"""POST /v1/accounts:batch — NDJSON in, one result line per input line out, in constant memory.

The body is read as it arrives and upserted in batches of BATCH accounts; results go to a spool file
(memory up to SPOOL_MEMORY, disk beyond) and stream back once the whole body is read. Answering while
the client still uploads would deadlock a client that reads only after sending, as most do.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from dispatcher import importer
from dispatcher.api.accounts import engine_of, upsert_status
from dispatcher.api.auth import ACCOUNTS_WRITE, Principal, require
from dispatcher.api.errors import responses, validation_fields
from dispatcher.api.idempotency import IdempotencyKey
from dispatcher.core.models import Account
from dispatcher.engine import Engine

router = APIRouter(prefix="/v1", tags=["accounts"])

BATCH = importer.BATCH  # the same batches as `dispatcher import`
MAX_LINE_BYTES = 64 * 1024
SPOOL_MEMORY = 4 * 1024 * 1024
READ_CHUNK = 64 * 1024
NDJSON = "application/x-ndjson"

_DESCRIPTION = """One account per line (the fields of PUT /v1/accounts/{account_id}, `id` required).

The answer is NDJSON too: one line per non-blank input line, in order —
`{"line": 3, "account_id": "A3", "status": "created"}`, or for a bad line
`{"line": 4, "status": "rejected", "errors": [{"field": "balance", "message": "..."}]}` —
then `{"summary": {"lines": ..., "created": ..., "updated": ..., "unchanged": ..., "rejected": ...}}`.
Good lines are taken even when others are bad."""


@dataclass
class _Batch:
    engine: Engine
    spool: IO[bytes]
    pending: list[tuple[int, bytes | str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("lines", "created", "updated", "unchanged", "rejected"), 0))  # fmt: skip

    async def add(self, number: int, line: bytes | str) -> None:
        self.pending.append((number, line))
        if len(self.pending) >= BATCH:
            await self.flush()

    async def flush(self) -> None:
        """Parse and upsert the pending lines in a worker thread: the event loop stays free."""
        if self.pending:
            await anyio.to_thread.run_sync(self._process, self.pending)
        self.pending = []

    def _process(self, lines: list[tuple[int, bytes | str]]) -> None:
        parsed = [(number, parse_line(line)) for number, line in lines]
        group: dict[str, Account] = {}
        results: dict[int, str] = {}
        for index, (_, item) in enumerate(parsed):
            if isinstance(item, Account):
                if item.id in group:  # a repeated id waits for the next upsert, so the later line wins
                    results.update(self._upsert(group, parsed, index))
                    group = {}
                group[item.id] = item
        results.update(self._upsert(group, parsed, len(parsed)))
        for index, (number, item) in enumerate(parsed):
            if isinstance(item, Account):
                self._write({"line": number, "account_id": item.id, "status": results[index]})
            else:
                self._write({"line": number, "status": "rejected", "errors": item})
            self.counts["lines"] += 1
            self.counts[results.get(index, "rejected")] += 1

    def _upsert(self, group: dict[str, Account], parsed: list[Any], before: int) -> dict[int, str]:
        """Upsert `group`; the status of each of its lines (by index in `parsed`, below `before`)."""
        if not group:
            return {}
        accounts = list(group.values())
        by_id = {result.account_id: upsert_status(result) for result in self.engine.upsert_many(accounts)}
        return {
            index: by_id[item.id]
            for index, (_, item) in enumerate(parsed[:before])
            if isinstance(item, Account) and group.get(item.id) is item
        }

    def _write(self, row: dict[str, Any]) -> None:
        self.spool.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")


def parse_line(line: bytes | str) -> Account | list[dict[str, str]]:
    """An Account, or the errors that keep the line out (each naming its field)."""
    if isinstance(line, str):
        return [{"field": "line", "message": line}]
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        reason = f"not valid JSON: {exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else (
            "not valid UTF-8")  # fmt: skip
        return [{"field": "line", "message": reason}]
    if not isinstance(value, dict):
        return [{"field": "line", "message": "expected a JSON object (one account)"}]
    try:
        return Account.model_validate(value)
    except ValidationError as exc:
        return [error.model_dump() for error in validation_fields(exc.errors())]


async def ndjson_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | str]]:
    """(line number, line) for each non-blank line; a line over MAX_LINE_BYTES comes back as its error."""
    buffer, number, overlong = b"", 0, False
    async for chunk in chunks:
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            number += 1
            if overlong or len(line) > MAX_LINE_BYTES:
                overlong = False
                yield number, f"longer than {MAX_LINE_BYTES} bytes"
            elif line.strip():
                yield number, line
        if len(buffer) > MAX_LINE_BYTES:
            buffer, overlong = b"", True  # the rest of this line is dropped as it arrives
    if overlong:
        yield number + 1, f"longer than {MAX_LINE_BYTES} bytes"
    elif buffer.strip():
        yield number + 1, buffer


def _stream_back(spool: IO[bytes]) -> Iterator[bytes]:
    try:
        spool.seek(0)
        while chunk := spool.read(READ_CHUNK):
            yield chunk
    finally:
        spool.close()


@router.post(
    "/accounts:batch",
    summary="Upsert accounts from NDJSON, streamed",
    operation_id="batchUpsertAccounts",
    description=_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One result line per input line, then a summary.",
            "content": {NDJSON: {"schema": {"type": "string"}}},
        },
        **responses(401, 403, 409, 422),
    },  # fmt: skip
    openapi_extra={
        "requestBody": {"required": True, "content": {NDJSON: {"schema": {"type": "string"}}}},
    },  # fmt: skip
)
async def batch_accounts(
    request: Request,
    idempotency_key: IdempotencyKey,
    engine: Engine = Depends(engine_of),
    _: Principal = Depends(require(ACCOUNTS_WRITE)),
) -> StreamingResponse:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - closed by _stream_back
    batch = _Batch(engine, spool)
    try:
        async for number, line in ndjson_lines(request.stream()):
            await batch.add(number, line)
        await batch.flush()
    except BaseException:
        spool.close()
        raise
    batch._write({"summary": batch.counts})
    return StreamingResponse(_stream_back(spool), media_type=NDJSON)
