"""Fixtures for the channel tests: the provider sandboxes, a callback recorder standing in for our API,
and settings pointing the real clients at both. Test modules import the fixtures they use."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from channels.sandbox import SandboxCredentials, Sandboxes, start_sandboxes
from config.settings import Settings, load_settings


@dataclass(frozen=True)
class RecordedRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class CallbackRecorder:
    """A tiny HTTP server that answers 200 to every POST and keeps it, as our webhook endpoint would."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                url = f"{recorder.url}{self.path}"
                recorder.requests.append(RecordedRequest(url, dict(self.headers.items()), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test output is for failures."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(
        self, predicate: Callable[[RecordedRequest], bool], count: int = 1, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """The matching requests once `count` have arrived; fails the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = [request for request in list(self.requests) if predicate(request)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                pytest.fail(f"expected {count} callbacks, got {len(found)} within {timeout}s")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def recorder() -> Iterator[CallbackRecorder]:
    server = CallbackRecorder()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory, recorder: CallbackRecorder) -> Iterator[Sandboxes]:
    state_dir: Path = tmp_path_factory.mktemp("sandboxes")
    credentials = SandboxCredentials.from_settings(load_settings())  # whatever the environment says
    running = start_sandboxes(state_dir, callback_base_url=recorder.url, credentials=credentials)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def settings(sandboxes: Sandboxes, recorder: CallbackRecorder) -> Settings:
    return load_settings(**sandboxes.settings_overrides(), public_base_url=recorder.url)


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A fresh 2048-bit RSA key (PKCS#1 PEM) and its DNS TXT record, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a DKIM test key")
    folder = tmp_path_factory.mktemp("dkim")
    key = folder / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return key, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)
