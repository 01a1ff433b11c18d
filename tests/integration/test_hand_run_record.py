"""Hand-run processes and the embedded record: `dispatcher postgres` owns it and stops it; a worker never
starts it, so a worker killed by a signal (a prefork child, a SIGKILL) cannot leave it running."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from celery import Celery

from config.settings import load_settings
from dispatcher.pg_server import running_url
from dispatcher.record.db import RecordUnavailable
from tests.api_fixtures import account_body
from tests.integration.test_up import DISPATCHER, group_alive
from tests.integration.test_up_record import postgres_on, stale_handles
from workers import archiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


@pytest.fixture
def fresh_archiver_pool() -> Iterator[None]:
    archiver._pool = None  # the module keeps one pool per process
    yield
    if archiver._pool is not None:
        archiver._pool.close()
    archiver._pool = None


@pytest.mark.usefixtures("fresh_archiver_pool")
def test_the_archiver_of_a_hand_run_worker_never_starts_the_embedded_record(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, state_dir=tmp_path / "state", database_url=None)
    with pytest.raises(RecordUnavailable, match="dispatcher postgres"):
        archiver.record_pool(settings)
    assert not (tmp_path / "state" / "pg").exists()  # nothing was started, so nothing is left to stop


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def archived_rows(url: str, account_id: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*) FROM audit_entries WHERE account_id = %s", (account_id,)).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def test_dispatcher_postgres_stops_the_record_after_a_worker_killed_by_a_signal_used_it(
    redis_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    data_dir = state / "pg"
    env = {name: value for name, value in os.environ.items() if not name.startswith("DISPATCHER_")}
    env.update({"DISPATCHER_STATE_DIR": str(state), "DISPATCHER_REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"})
    owner = spawn([DISPATCHER, "postgres"], env, tmp_path / "postgres.log")
    worker = None
    try:
        deadline = time.monotonic() + 60
        while (url := running_url(data_dir)) is None or "DISPATCHER_DATABASE_URL=" not in (
            tmp_path / "postgres.log"
        ).read_text():  # printed once migrated
            assert owner.poll() is None and time.monotonic() < deadline, (tmp_path / "postgres.log").read_text()
            time.sleep(0.2)
        # A hand-run worker, prefork: the archiver runs in a child process, finding the record by the state dir.
        worker = spawn([DISPATCHER, "worker", "-Q", "plan", "--pool", "prefork", "-c", "1"], env, tmp_path / "w.log")
        celery = Celery(broker=redis_url)
        celery.send_task("dispatcher.upsert_account", args=[account_body("H1")], queue="plan")
        deadline = time.monotonic() + 90
        while archived_rows(url, "H1") == 0:
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "w.log").read_text()[-3000:]
            celery.send_task("dispatcher.archive", queue="plan")
            time.sleep(2)
        os.killpg(worker.pid, signal.SIGKILL)  # its exit handlers never run, its children's neither
        worker.wait(10)
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(30) == 0, (tmp_path / "postgres.log").read_text()
        gone_by = time.monotonic() + 10
        while postgres_on(data_dir) and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert postgres_on(data_dir) == []
        assert stale_handles(data_dir) == []
    finally:
        for process in (worker, owner):
            if process is not None and group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
        for pid in postgres_on(data_dir):
            os.kill(pid, signal.SIGKILL)
