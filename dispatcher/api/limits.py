"""What a client may make the server hold: a body size per route, and the time it may take to send it.

A pure ASGI middleware in front of the idempotency middleware and the routes, so a request over its limit
is refused before its API key is looked at, before Redis is touched and before its body is held:

- a Content-Length above the route's limit is answered 413 at once, the body unread;
- a body without one (chunked) is counted as it streams; past the limit the route sees the body end
  (`http.disconnect`), its answer is dropped and the client gets the 413;
- every read of the body must bring data within `read_timeout`, and the body as a whole must keep up
  `min_body_rate` after a grace of `read_timeout` (a 64 MiB batch at 64 KiB/s is fine, a trickle is not);
  a client too slow gets 408.

Both answers carry `Connection: close`: uvicorn then drops the connection instead of reading the rest of
the body to find the next request. The keep-alive timeout of idle connections is uvicorn's own
(`timeout_keep_alive`); `keep_alive` here is the value the API's servers are started with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.api.errors import ErrorBody, FieldError

DEFAULT_BODY_BYTES = 1024 * 1024
BATCH_BODY_BYTES = 64 * 1024 * 1024
READ_TIMEOUT_SECONDS = 15.0
MIN_BODY_RATE = 64 * 1024  # bytes per second, once the grace is spent
KEEP_ALIVE_SECONDS = 5
_DISCONNECT: Message = {"type": "http.disconnect"}

log = structlog.get_logger("dispatcher.api")


def _default_route_limits() -> dict[str, int]:
    return {"POST /v1/accounts:batch": BATCH_BODY_BYTES}


@dataclass(frozen=True)
class HttpLimits:
    """Body sizes (a default, and per "METHOD /path") and the timeouts of slow clients."""

    body_bytes: int = DEFAULT_BODY_BYTES
    route_body_bytes: Mapping[str, int] = field(default_factory=_default_route_limits)
    read_timeout: float = READ_TIMEOUT_SECONDS
    min_body_rate: int = MIN_BODY_RATE
    keep_alive: int = KEEP_ALIVE_SECONDS

    def body_limit(self, route: str) -> int:
        return self.route_body_bytes.get(route, self.body_bytes)


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    message: str

    def response(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        fields = [FieldError(field="body", message=self.message)]
        raw = ErrorBody(error=self.error, message=self.message, fields=fields).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        return headers, raw


def too_large(limit: int, route: str) -> Refusal:
    return Refusal(413, "too_large", f"request body over {limit} bytes (limit of {route})")


def too_slow(limits: HttpLimits) -> Refusal:
    message = (
        f"the request body did not arrive in time: each read must bring data within {limits.read_timeout:g} s, "
        f"and the body at least {limits.min_body_rate} bytes/s after the first {limits.read_timeout:g} s"
    )
    return Refusal(408, "timeout", message)


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, limits: HttpLimits) -> None:
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = f"{scope['method']} {scope['path']}"
        limit = self.limits.body_limit(route)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, too_large(limit, route), route)
            return
        body = _GuardedBody(limit, route, self.limits, receive, send)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if body.refusal is None:
                raise
            # The route failed because its body was cut short (ClientDisconnect and the like): the refusal
            # is the answer, and the failure says nothing new.
        if body.refusal is not None and not body.started:
            await _refuse(send, body.refusal, route)


class _GuardedBody:
    """The request's receive and send, counting the body against its limit and its deadlines."""

    def __init__(self, limit: int, route: str, limits: HttpLimits, receive: Receive, send: Send) -> None:
        self.limit, self.route, self.limits = limit, route, limits
        self._receive, self._send = receive, send
        self.started_at = time.monotonic()
        self.received = 0
        self.complete = False
        self.started = False
        self.refusal: Refusal | None = None

    async def receive(self) -> Message:
        if self.refusal is not None:
            return _DISCONNECT
        if self.complete:  # the body is in; what follows is a wait for the client to hang up, however long
            return await self._receive()
        try:
            with anyio.fail_after(self._wait()):
                message = await self._receive()
        except TimeoutError:
            self.refusal = too_slow(self.limits)
            return _DISCONNECT
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.received > self.limit:
                self.refusal = too_large(self.limit, self.route)
                return _DISCONNECT
        return message

    def _wait(self) -> float:
        """Seconds the next read may take: the idle timeout, or less when the body is behind its rate."""
        grace = self.limits.read_timeout + self.received / self.limits.min_body_rate
        return max(0.0, min(self.limits.read_timeout, grace - (time.monotonic() - self.started_at)))

    async def send(self, message: Message) -> None:
        if self.refusal is not None and not self.started:
            return  # the route's answer to a body cut short; the refusal replaces it
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _refuse(send: Send, refusal: Refusal, route: str) -> None:
    log.warning("http.refused", route=route, status=refusal.status, reason=refusal.message)
    headers, body = refusal.response()
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
