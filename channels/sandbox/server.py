"""What every HTTP sandbox shares: a uvicorn server in a thread, fault injection, an NDJSON log."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

CONTROL_PREFIX = "/_sandbox"


@dataclass
class Faults:
    """Faults the next API requests meet, in this order: hang, latency, N x 429, then N x 503."""

    fail_429: int = 0
    fail_503: int = 0
    retry_after: float | None = 1.0
    latency: float = 0.0
    hang: float = 0.0  # seconds to hold every request without answering; clients should time out
    # Sandboxes that honour it (Twilio, Aliyun, the agency): the next N creates are accepted (stored, callbacks
    # scheduled), then the answer is held `accept_hang_seconds`: a read timeout after the request left.
    accept_then_hang: int = 0
    accept_hang_seconds: float = 10.0

    def take(self) -> int | None:
        """The failing status for this request, consuming one planned failure; None to proceed."""
        if self.fail_429 > 0:
            self.fail_429 -= 1
            return 429
        if self.fail_503 > 0:
            self.fail_503 -= 1
            return 503
        return None


class EventLog:
    """Append-only NDJSON file; the sandbox's record of what it was asked and what it did."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._stream: TextIO | None = None  # kept open: a message writes three or four records

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"at": time.time(), **record}, ensure_ascii=False, default=str)
        with self._lock:
            if self._stream is None:
                self._stream = self.path.open("a", encoding="utf-8")
            self._stream.write(line + "\n")
            self._stream.flush()  # readers (tests, the demo's summary) see every record at once

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as stream:
            return [json.loads(line) for line in stream if line.strip()]


class FaultInjector:
    """Holds the faults and counts API requests; mounted on a sandbox app with a control endpoint."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.request_count = 0
        # When each API request arrived, answered or faulted: the provider's view of our rate.
        self.arrivals: deque[float] = deque(maxlen=200_000)
        self._lock = threading.Lock()

    def set(self, **changes: Any) -> Faults:
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self.faults, name):
                    raise ValueError(f"unknown fault {name!r}; known: {sorted(asdict(Faults()))}")
                setattr(self.faults, name, value)
            return self.faults

    async def intercept(self, error_body: Any) -> Response | None:
        """Count the request and apply the planned faults; a Response means answer with it now."""
        with self._lock:
            self.request_count += 1
            self.arrivals.append(time.time())
            status = self.faults.take()
            faults = Faults(**asdict(self.faults))
        if faults.hang:
            await asyncio.sleep(faults.hang)
        if faults.latency:
            await asyncio.sleep(faults.latency)
        if status is None:
            return None
        headers = {"Retry-After": f"{faults.retry_after:g}"} if status == 429 and faults.retry_after is not None else {}
        return JSONResponse(error_body(status), status_code=status, headers=headers)

    async def hold_after_accept(self, log: EventLog) -> None:
        """The accept-then-hang fault, for a sandbox that has just kept a create (stored, callbacks due):
        hold its answer so the client times out after the request left. Consumes one."""
        with self._lock:
            if self.faults.accept_then_hang <= 0:
                return
            self.faults.accept_then_hang -= 1
            seconds = self.faults.accept_hang_seconds
        log.append({"event": "fault.accept_then_hang", "seconds": seconds})
        await asyncio.sleep(seconds)

    def mount(self, app: FastAPI) -> None:
        @app.post(f"{CONTROL_PREFIX}/faults")
        async def set_faults(request: Request) -> dict[str, Any]:
            try:
                return asdict(self.set(**(await request.json())))
            except ValueError as exc:
                return {"error": str(exc)}

        @app.get(f"{CONTROL_PREFIX}/stats")
        async def stats() -> dict[str, Any]:
            return {"requests": self.request_count, "faults": asdict(self.faults)}


class ServerHandle:
    """A running HTTP sandbox: its base `url`, and `stop()`."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit it; asyncio would not set it on a socket handed over like this one, and
        # without it every kept-alive answer waits ~40 ms for the client's delayed ACK.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        # A hung request must not hold shutdown forever.
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        self._wait_started()

    def _wait_started(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"sandbox at {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def free_port(host: str) -> int:
    """A port free right now, for servers (aiosmtpd) that cannot report the port they bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
