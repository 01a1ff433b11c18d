"""A bank's callback receiver for the tests: a real local HTTP server that verifies every request with the
`standardwebhooks` package, as a receiver built from the spec would, and answers as it is told (2xx, 410,
429 or 503 with Retry-After), at once or slowly; it can be stopped (connections refused) and started again
on the same port."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secrets: list[str] = field(default_factory=list)  # any one verifying is enough
    status: int = 204
    retry_after: str | None = None
    delay: float = 0.0  # seconds before answering (a slow receiver)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (webhook-id, payload), verified
    hits: int = 0
    unverified: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.hits += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                payload = receiver._verified(body, {key.lower(): value for key, value in self.headers.items()})
                if payload is None:
                    self.send_response(400)
                elif receiver.status >= 300:
                    self.send_response(receiver.status)
                    if receiver.retry_after is not None:
                        self.send_header("Retry-After", receiver.retry_after)
                else:
                    receiver.received.append((self.headers["webhook-id"], payload))
                    self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def _verified(self, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        for secret in self.secrets:
            try:
                return dict(Webhook(secret).verify(body, headers))
            except WebhookVerificationError:
                continue
        self.unverified += 1
        return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [event_id for event_id, _ in self.received]

    def by_account(self) -> dict[str, list[str]]:
        """Each account's event ids in the order they first arrived (repeats, deduplicated by id, dropped)."""
        seen: set[str] = set()
        found: dict[str, list[str]] = {}
        for event_id, payload in self.received:
            if event_id not in seen:
                seen.add(event_id)
                found.setdefault(str(payload["data"]["account_id"]), []).append(event_id)
        return found

    def types_of(self, account_id: str) -> list[str]:
        first = {event_id: payload for event_id, payload in reversed(self.received)}
        return [first[event_id]["type"] for event_id in self.by_account().get(account_id, [])]

    def dump(self) -> str:
        return json.dumps(self.received, default=str)[:2000]
