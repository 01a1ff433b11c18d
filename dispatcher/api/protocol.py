"""uvicorn's httptools protocol with a deadline on each request's head (request line and headers).

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but waits for ever on a client that
opens a connection and sends its request line and headers slowly, or not at all: each such client holds
a connection. The ASGI app cannot help, since it is called only once the headers are in (the body's own
deadlines are in limits.py). This protocol arms a timer when a connection opens and when a request's
first byte arrives, and disarms it when the headers are complete; a head still incomplete when it fires
is answered 408 and the connection closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from dispatcher.api.errors import ErrorBody


class HeadTimeoutProtocol(HttpToolsProtocol):
    head_timeout = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        message = f"the request line and headers did not arrive within {self.head_timeout:g} s"
        body = ErrorBody(error="timeout", message=message).model_dump_json().encode()
        head = f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        self.transport.write(head.encode() + b"connection: close\r\n\r\n" + body)
        self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadTimeoutProtocol]:
    """The protocol class to give uvicorn (`http=`), with its deadline for a request's head."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout": seconds})
