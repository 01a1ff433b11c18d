"""While the store (Redis) or the record (PostgreSQL) is away: 503 with Retry-After and the error shape,
never a 500.

The errors can come from any route and from the idempotency middleware's own Redis calls, before any
route runs; FastAPI's exception handlers see only the former, so an ASGI middleware around both answers
for them. Provider webhooks get the 503 too: Twilio, the print vendor and the email provider retry a
5xx, and a callback that is retried is not lost. The record is needed only by the reads that look past
Redis (an account's archived history and decisions) and by a change to an account the archiver moved
there; every other route goes on while it is away. An answer already streaming cannot become a 503; its
connection is dropped (the error goes on to uvicorn) and the client sees a broken answer, not a false one.
"""

from __future__ import annotations

import psycopg
import redis.exceptions
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.api.errors import ErrorBody
from dispatcher.record.db import RecordUnavailable

RETRY_AFTER_SECONDS = 5

# Unreachable, too slow, still loading its data, a replica after a failover, a cluster without a master:
# each passes with time. Other Redis errors (a bad command, a script error) are faults, and stay 500s.
STORE_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # BusyLoadingError is one
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)

# Not running, refusing connections, a pool that waited too long (PoolTimeout), a server shutting down, a
# query cancelled: PostgreSQL's OperationalError is the class of errors that pass with time. A missing
# table or a bad query (ProgrammingError) is a fault, and stays a 500.
RECORD_UNAVAILABLE: tuple[type[Exception], ...] = (RecordUnavailable, psycopg.OperationalError)

log = structlog.get_logger("dispatcher.api")


class StoreOutageMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except (*STORE_UNAVAILABLE, *RECORD_UNAVAILABLE) as exc:
            what = "store" if isinstance(exc, STORE_UNAVAILABLE) else "record"
            log.warning(f"http.{what}_unavailable", path=scope["path"], error=type(exc).__name__, detail=str(exc))
            if started:
                raise
            await _unavailable(send, exc, what)


async def _unavailable(send: Send, exc: Exception, what: str) -> None:
    message = f"the {what} is unavailable ({type(exc).__name__}); retry in {RETRY_AFTER_SECONDS} s"
    raw = ErrorBody(error="unavailable", message=message, fields=[]).model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
               (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": raw, "more_body": False})
