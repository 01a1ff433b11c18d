"""The API sheds what it must: bodies over a route's limit (413, before the key is checked), clients that
trickle their body (408), ids with a trailing newline (422, nothing written), and refused requests that
leave their Idempotency-Key free for a corrected retry. Raw sockets where httpx would hide the wire."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread
from dispatcher.api.limits import DEFAULT_BODY_BYTES, HttpLimits
from dispatcher.core.clock import ManualClock
from dispatcher.core.strategy import Strategy
from dispatcher.engine import Engine
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401
from tests.worker_fixtures import eventually

pytestmark = pytest.mark.integration

MB = 1024 * 1024
HUGE = 200 * MB


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {raw!r}")
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, body


def request_head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_declared_body_over_the_limit_is_413_before_the_key_is_checked(api: Api) -> None:
    with connect(api.url) as sock:
        sock.sendall(request_head("PUT", "/v1/accounts/A1", **{"Content-Type": "application/json",
                                                                "Content-Length": str(HUGE)}))  # fmt: skip
        status, headers, body = read_response(sock)  # not one byte of the body was sent
    assert (status, headers["connection"]) == (413, "close")
    error = json.loads(body)
    assert error["error"] == "too_large"
    assert f"{DEFAULT_BODY_BYTES} bytes" in error["message"] and "(limit of PUT /v1/accounts/A1)" in error["message"]
    assert error["fields"][0]["field"] == "body"
    assert api.store.load("A1").record is None


def _stream(sock: socket.socket, total: int, sent: list[int]) -> None:
    """Send a chunked body of `total` bytes until the server hangs up; how far it got goes in `sent`."""

    def framed(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    chunk = framed(b"x" * (256 * 1024))
    try:
        sock.sendall(framed(b'{"name": "'))
        while sent[0] < total:
            sock.sendall(chunk)
            sent[0] += 256 * 1024
        sock.sendall(framed(b'"}') + b"0\r\n\r\n")
    except OSError:
        pass  # the server hung up: what we want


def test_a_streamed_body_is_cut_off_at_the_limit_without_the_route_running(api: Api) -> None:
    sent = [0]
    with connect(api.url) as sock:
        sock.sendall(request_head("PUT", "/v1/accounts/A1", **{"Content-Type": "application/json",
                                                                "Transfer-Encoding": "chunked"}))  # fmt: skip
        writer = threading.Thread(target=_stream, args=(sock, HUGE, sent), daemon=True)
        writer.start()
        status, headers, body = read_response(sock)
        writer.join(30)
    assert (status, json.loads(body)["error"]) == (413, "too_large")
    assert sent[0] < HUGE // 4  # cut off at the limit, not read to the end (socket buffers take a few MB)
    assert api.store.load("A1").record is None


def test_the_batch_route_takes_a_body_over_the_default_limit(api: Api) -> None:
    padding = (" " * 1023 + "\n") * (2 * MB // 1024)  # blank lines: read, counted in bytes, not imported
    body = json.dumps(account_body("B1")) + "\n" + padding
    response = api.post("/v1/accounts:batch", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 200
    assert json.loads(response.text.splitlines()[-1])["summary"]["created"] == 1


def test_a_batch_over_its_own_limit_is_413_naming_it(api: Api) -> None:
    headers = {**api.auth(), "Idempotency-Key": "big", "Content-Length": str(HUGE)}
    with connect(api.url) as sock:
        sock.sendall(request_head("POST", "/v1/accounts:batch", **headers))
        status, _, body = read_response(sock)
    assert status == 413
    assert "67108864 bytes (limit of POST /v1/accounts:batch)" in json.loads(body)["message"]


@pytest.fixture
def strict_server(api_settings: Settings, engine: Engine) -> Iterator[ServerThread]:
    """The API with a 1-second read timeout and keep-alive, to watch slow clients being let go."""
    limits = HttpLimits(read_timeout=1.0, keep_alive=1)
    app = create_app(engine, api_settings, limits=limits)
    with ServerThread(app, limits=limits) as server:
        yield server


def test_a_client_that_trickles_its_body_is_cut_off_with_408(strict_server: ServerThread, api: Api) -> None:
    body = json.dumps(account_body()).encode()
    with connect(strict_server.url) as sock:
        sock.sendall(request_head("PUT", "/v1/accounts/A1", **{**api.auth(), "Content-Type": "application/json",
                                                                "Content-Length": str(len(body))}))  # fmt: skip
        started = time.monotonic()
        for byte in body[:40]:  # a byte every 0.2 s: never idle for long, but never done either
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
            if time.monotonic() - started > 6:
                break
        status, headers, answer = read_response(sock)
    assert (status, headers["connection"], json.loads(answer)["error"]) == (408, "close", "timeout")
    assert api.store.load("A1").record is None


def test_a_client_that_trickles_its_request_head_is_cut_off_with_408(strict_server: ServerThread) -> None:
    with connect(strict_server.url) as sock:
        started = time.monotonic()
        for byte in request_head("GET", "/healthz", **{"X-Padding": "p" * 100})[:-4]:  # never complete
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > 6:
                break
        status, headers, body = read_response(sock)
    assert (status, headers["connection"], json.loads(body)["error"]) == (408, "close", "timeout")


def test_a_connection_that_never_sends_a_request_is_closed(strict_server: ServerThread) -> None:
    with connect(strict_server.url) as sock:
        assert read_response(sock)[0] == 408


def test_an_idle_keep_alive_connection_is_closed(strict_server: ServerThread, api: Api) -> None:
    with connect(strict_server.url, timeout=3) as sock:
        sock.sendall(request_head("GET", "/healthz"))
        assert read_response(sock)[0] == 200
        assert sock.recv(1) == b""  # closed after its 1 s keep-alive, well before our 3 s timeout


def test_a_chunked_batch_over_its_limit_is_413_and_its_key_stays_free(
    api_settings: Settings, engine: Engine, api: Api
) -> None:  # fmt: skip
    limits = HttpLimits(route_body_bytes={"POST /v1/accounts:batch": 64 * 1024})
    app = create_app(engine, api_settings, limits=limits)
    lines = [(json.dumps(account_body(f"B{i}")) + "\n").encode() for i in range(400)]  # ~150 KB
    headers = {**api.auth(), "Idempotency-Key": "batch-big", "Content-Type": "application/x-ndjson"}
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        over = client.post("/v1/accounts:batch", content=iter(lines), headers=headers)  # chunked: no length
        assert (over.status_code, over.json()["error"]) == (413, "too_large")
        assert "65536 bytes (limit of POST /v1/accounts:batch)" in over.json()["message"]
        fits = client.post("/v1/accounts:batch", content=iter(lines[:100]), headers=headers)
        assert json.loads(fits.text.splitlines()[-1])["summary"]["created"] == 100


@pytest.mark.parametrize("account_id", ["A1%0A", "A1%0D%0A", "%0AA1"])
def test_an_account_id_with_a_newline_is_422_and_writes_nothing(api: Api, account_id: str) -> None:
    response = api.client.put(f"/v1/accounts/{account_id}", json=account_body(id=None), headers=api.auth())
    assert (response.status_code, response.json()["fields"][0]["field"]) == (422, "account_id")
    contact = api.post("/v1/contacts", {"account_id": "A1\n", "channel": "sms", "template": "reminder_sms",
                                        "key": "k"})  # fmt: skip
    assert (contact.status_code, contact.json()["fields"][0]["field"]) == (422, "account_id")
    assert api.store.redis.dbsize() == 0


def test_a_refused_request_leaves_its_idempotency_key_free_for_the_corrected_retry(api: Api) -> None:
    payment = {"kind": "payment", "amount": "10.00"}
    missing = api.post("/v1/accounts/A1/events", payment, idempotency="pay-A1")
    assert missing.status_code == 404  # the account is not there yet: nothing was written
    bad = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "ten"}, idempotency="pay-A1")
    assert bad.status_code == 422
    api.put_account("A1", account_body())
    retried = api.post("/v1/accounts/A1/events", payment, idempotency="pay-A1")
    assert (retried.status_code, retried.json()["status"]) == (200, "applied")
    assert "idempotent-replayed" not in retried.headers
    assert api.post("/v1/accounts/A1/events", payment, idempotency="pay-A1").headers["idempotent-replayed"] == "true"
    assert api.store.load("A1").record.state.paid == 10


def test_a_body_over_the_limit_leaves_its_idempotency_key_free(api: Api) -> None:
    api.put_account("A1", account_body())
    huge = {"kind": "payment", "amount": "10.00", "reference": "r" * (DEFAULT_BODY_BYTES + 1)}
    assert api.post("/v1/accounts/A1/events", huge, idempotency="pay-big").status_code == 413
    small = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "10.00"}, idempotency="pay-big")
    assert small.status_code == 200


def test_a_contact_that_was_already_made_is_409_and_not_remembered(api: Api) -> None:
    api.put_account("A1", account_body())
    api.store.redis.hset("{a:A1}:claims", "A1/adhoc/agent-1/0", "sent")  # as a worker's end_claim leaves it
    ask = {"account_id": "A1", "channel": "sms", "template": "reminder_sms", "key": "agent-1"}
    assert api.post("/v1/contacts", ask, idempotency="ask-1").status_code == 409
    assert api.post("/v1/contacts", {**ask, "key": "agent-2"}, idempotency="ask-1").status_code == 200


def test_webhook_bodies_have_the_default_limit_too(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        response = client.post("/v1/webhooks/print-vendor", content=b"{" + b" " * (DEFAULT_BODY_BYTES + 10) + b"}")
    assert response.status_code == 413


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, to stop and start again (AOF on, so its data survives)."""
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_while_redis_is_away_every_call_is_503_with_retry_after_callbacks_are_spooled_and_all_recovers(
    own_redis: EmbeddedRedis, api_settings: Settings, strategy: Strategy, clock: ManualClock,
    api_keys: dict[str, tuple[str, str]],
) -> None:  # fmt: skip
    store = Store.from_url(own_redis.url)
    engine = Engine(store, strategy, clock, on_queued=lambda contacts: None)
    app = create_app(engine, api_settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        api = Api(server.url, client, api_keys, api_settings, engine, store, clock)
        assert api.put_account("A1", account_body()).status_code == 201
        store.redis.hset("{a:A1}:claims", "A1/reminder/sms/0", "sent")  # as a worker's end_claim leaves it
        delivered = {"MessageSid": "SM1", "MessageStatus": "delivered"}
        callback = "/v1/webhooks/twilio/message-status?contact_id=A1%2Freminder%2Fsms%2F0"
        payment = {"kind": "payment", "amount": "10.00"}
        own_redis.stop()  # SHUTDOWN: every connection goes, the port refuses

        during = {
            "put": api.put_account("A1", account_body(balance="4000.00")),
            "get": api.get_account("A1"),
            "event": api.post("/v1/accounts/A1/events", payment, idempotency="pay-1"),
            "batch": api.post("/v1/accounts:batch", content=json.dumps(account_body("B1")) + "\n"),
        }
        spooled = api.twilio(callback, delivered)  # signed by the provider: kept on disk, not refused
        assert (spooled.status_code, spooled.json()["status"]) == (200, "spooled")
        for name, response in during.items():
            assert (name, response.status_code, response.headers.get("retry-after")) == (name, 503, "5")
            assert response.json()["error"] == "unavailable"
        ready = client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")

        with EmbeddedRedis(own_redis.data_dir, port=own_redis.port):  # back on the same port, with its data
            assert client.get("/readyz").status_code == 200
            event = api.post("/v1/accounts/A1/events", payment, idempotency="pay-1")  # the 503 was not kept
            assert (event.status_code, event.json()["status"]) == (200, "applied")
            # The spooled callback is replayed once Redis answers; the provider never had to retry.
            eventually(lambda: any(e.kind == "outcome" for e in store.load("A1").history), timeout=15)
            [outcome] = [e for e in store.load("A1").history if e.kind == "outcome"]
            assert outcome.outcome == "delivered"
            assert store.load("A1").record.state.paid == 10
