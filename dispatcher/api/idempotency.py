"""Idempotency-Key on every POST: a retried request gets the first answer and has no second effect.

ASGI middleware. The first request with a key claims it (`SET NX` with a short lease), runs, and stores
its status, headers and body in Redis for `ttl` seconds, together with a fingerprint of the request
(method, path, query, content type and a SHA-256 of the body, hashed as it streams past). A retry with
the same key and the same request is answered from Redis without reaching the route; the same key with a
different request is a 422 naming the header; a retry while the first is still running gets 409.

Keys are per API key (the caller's key hash is part of the Redis key, with the SHA-256 of the
Idempotency-Key) and hash-tagged, so one idempotency record lives in one Cluster slot: a meta string
({"state": "processing"} or the stored answer) and a body list (the response body, zlib-compressed base64
chunks), named by dispatcher.redis_keys.

Large answers (a million-line batch) are stored in chunks as they stream, never held whole.

Only answers to a request that ran are stored: every 2xx, and a 4xx the route raised after writing
something (it says so with `mark_written`, and a retry must then get the same answer rather than write
again). A request refused before anything was written leaves the key free, so the retry that fixes it
runs: 401/403 (a key missing or without the scope), 404 (no such account yet), 409, 413, 408, 422 and
429; 5xx never (a retry after an outage runs); a dropped connection also releases the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import zlib
from typing import Annotated, Any

import anyio
import redis
from fastapi import Header, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dispatcher.api.auth import KeyRing, token_of
from dispatcher.api.errors import ErrorBody, FieldError
from dispatcher.redis_keys import idempotency_body_key, idempotency_meta_key

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
LEASE_SECONDS = 300  # a request still running after this is presumed dead and its key released
CHUNK_BYTES = 256 * 1024
_WROTE = "idempotency.wrote"  # in the ASGI scope's state: the route wrote before it answered

# Declared on each POST route so the OpenAPI schema shows it; the middleware enforces it first.
IdempotencyKey = Annotated[
    str,
    Header(alias=HEADER, min_length=1, max_length=MAX_KEY_LENGTH, pattern=r"^[ -~]+$",
           description="Unique per operation (e.g. a UUID); a retry with the same key gets the first answer."),
]  # fmt: skip


def mark_written(request: Request) -> None:
    """Called by a route that wrote before answering with a 4xx: that answer is stored like a success."""
    request.scope.setdefault("state", {})[_WROTE] = True


def worth_storing(status: int, scope: Scope) -> bool:
    """A 2xx, or a 4xx that came after a write; never a 5xx or 429 (see the module's docstring)."""
    if status < 400:
        return True
    return status < 500 and status != 429 and bool(scope.get("state", {}).get(_WROTE))


def _digest(key: str) -> str:
    """The part of an Idempotency-Key's Redis keys that names the key: its SHA-256, cut to 128 bits."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> tuple[int, list, bytes]:
    body = ErrorBody(error=error, message=message, fields=[FieldError(field=HEADER, message=message)])
    raw = body.model_dump_json().encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    return status, [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *extra], raw


def key_problem(key: str | None) -> str | None:
    """Why an Idempotency-Key value is unusable, or None."""
    if key is None:
        return f"required on every POST: send a value unique to this operation (e.g. a UUID) in {HEADER}"
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= char <= "~" for char in key):
        return f"{HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters"
    return None


class _Fingerprint:
    """SHA-256 of the request, fed by the body chunks as the route reads them."""

    def __init__(self, scope: Scope) -> None:
        self.hash = hashlib.sha256()
        for part in (scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"),
                     _header(scope, b"content-type") or ""):  # fmt: skip
            self.hash.update(part.encode("utf-8", "surrogateescape") + b"\0")
        self.complete = False
        self.disconnected = False

    def feed(self, message: Message) -> None:
        if message["type"] == "http.request":
            self.hash.update(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        elif message["type"] == "http.disconnect":
            self.disconnected = True

    async def drain(self, receive: Receive) -> None:
        while not self.complete and not self.disconnected:
            self.feed(await receive())

    def hexdigest(self) -> str:
        return self.hash.hexdigest()


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, client: redis.Redis, keys: KeyRing, ttl: int, exempt: tuple[str, ...]) -> None:
        self.app, self.redis, self.keys, self.ttl, self.exempt = app, client, keys, ttl, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        principal = self.keys.principal(token_of(_header(scope, b"authorization")))
        if principal is None:  # the route answers 401; nothing to remember
            await self.app(scope, receive, send)
            return
        key = _header(scope, HEADER.lower().encode())
        problem = key_problem(key)
        if problem is not None or key is None:
            await _send_raw(send, *_error(422, "validation", problem or ""))
            return
        meta = idempotency_meta_key(principal.ident, _digest(key))
        body = idempotency_body_key(principal.ident, _digest(key))
        fingerprint = _Fingerprint(scope)
        claimed = await _run(self.redis.set, meta, json.dumps({"state": "processing"}), nx=True, ex=LEASE_SECONDS)
        if not claimed:
            await self._answer_again(meta, body, fingerprint, receive, send)
            return
        scope.setdefault("state", {})  # where the route leaves _WROTE; shared by every copy of the scope
        recorder = _Recorder(self.redis, meta, body, self.ttl, fingerprint, scope, receive, send)
        try:
            await self.app(scope, recorder.receive, recorder.send)
        finally:
            if not (recorder.stored or recorder.released):
                await _run(self.redis.delete, meta, body)

    async def _answer_again(
        self, meta: str, body: str, fingerprint: _Fingerprint, receive: Receive, send: Send
    ) -> None:
        await fingerprint.drain(receive)
        raw = await _run(self.redis.get, meta)
        stored: dict[str, Any] = json.loads(raw) if raw else {"state": "processing"}
        if stored.get("state") != "done":
            message = f"a request with this {HEADER} is still being processed; retry in a moment"
            await _send_raw(send, *_error(409, "conflict", message, {"Retry-After": "1"}))
            return
        if stored["fingerprint"] != fingerprint.hexdigest():
            message = f"this {HEADER} was already used for a different request (method, path or body); use a new key"
            await _send_raw(send, *_error(422, "validation", message))
            return
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in stored["headers"]]
        await send({"type": "http.response.start", "status": stored["status"],
                    "headers": [*headers, (b"idempotent-replayed", b"true")]})  # fmt: skip
        for start in range(0, stored["chunks"], 16):
            chunks = await _run(self.redis.lrange, body, start, start + 15)
            for chunk in chunks:
                await send(
                    {"type": "http.response.body", "body": zlib.decompress(base64.b64decode(chunk)), "more_body": True}
                )
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Recorder:
    """Passes the first request through, hashing its body and storing its response chunk by chunk."""

    def __init__(
        self, client: redis.Redis, meta: str, body: str, ttl: int, fingerprint: _Fingerprint, scope: Scope,
        receive: Receive, send: Send,
    ) -> None:  # fmt: skip
        self.redis, self.meta, self.body, self.ttl, self.fingerprint = client, meta, body, ttl, fingerprint
        self.scope = scope
        self._receive, self._send = receive, send
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.buffer = bytearray()
        self.chunks = 0
        self.keep = False
        self.stored = False
        self.released = False
        self.leased_at = time.monotonic()

    async def receive(self) -> Message:
        message = await self._receive()
        self.fingerprint.feed(message)
        now = time.monotonic()
        if now - self.leased_at > LEASE_SECONDS / 3:  # a long upload keeps its claim while it is read
            self.leased_at = now
            await _run(self.redis.expire, self.meta, LEASE_SECONDS)
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.keep = worth_storing(self.status, self.scope)
            self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body" and self.keep:
            self.buffer += message.get("body", b"")
            final = not message.get("more_body", False)
            if len(self.buffer) >= CHUNK_BYTES or (final and self.buffer):
                await self._flush()
            if final:
                await self._finish()
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            await self._release()
        await self._send(message)

    async def _release(self) -> None:
        """Free the key before the answer leaves: a client that fixes its request and retries at once must
        find it free, not still 'processing'."""
        await _run(self.redis.delete, self.meta, self.body)
        self.released = True

    async def _flush(self) -> None:
        # base64: the store's client decodes replies as text
        chunk, self.buffer = base64.b64encode(zlib.compress(bytes(self.buffer), 3)), bytearray()
        await _run(self.redis.rpush, self.body, chunk)
        self.chunks += 1

    async def _finish(self) -> None:
        await self.fingerprint.drain(self._receive)
        if self.fingerprint.disconnected:
            return
        record = {"state": "done", "fingerprint": self.fingerprint.hexdigest(), "status": self.status,
                  "headers": self.headers, "chunks": self.chunks}  # fmt: skip
        pipe = self.redis.pipeline(transaction=False)
        pipe.expire(self.body, self.ttl)
        pipe.set(self.meta, json.dumps(record), ex=self.ttl)
        await _run(pipe.execute)
        self.stored = True


async def _run(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Redis calls go to a worker thread: the store's client is synchronous and the loop must not block."""
    return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


async def _send_raw(send: Send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
