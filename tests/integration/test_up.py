"""`dispatcher up` as a person runs it: the whole topology from one command, 50 accounts through the API
out to the provider sandboxes on every channel, and Ctrl-C leaving no process behind.

honcho starts each part in a session of its own, so "no process left" is checked over every process
group any descendant of `dispatcher up` was seen in (Celery's prefork children, redis-server), not only
over `up`'s own group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
import pytest

from config.settings import load_settings
from dispatcher.api import new_api_key
from tests.api_fixtures import account_body
from workers.up import FlowerAuth, UpError, UpPlan, flower_auth, sandbox_ports, shared_env, topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(110)]
DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
# 09:00 in Shanghai; one real second is one hour, so the day's 08:00-21:00 windows open within seconds.
CLOCK_START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
CLOCK_FACTOR = 3600.0
# Days past due -> the ladder's stage: reminder (SMS), second notice (call at 14:00), early (SMS, email),
# letter (the demand letter). 50 accounts in all.
DAYS_PAST_DUE = (1, 10, 20, 65)
ACCOUNTS = 50


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`, from /proc (psutil is not a dependency)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


class Up:
    """`dispatcher up` in its own process group, its output in a file, every group it made remembered."""

    def __init__(self, state_dir: Path, env: dict[str, str], args: list[str]) -> None:
        self.log_path = state_dir.parent / "up.log"
        with self.log_path.open("wb") as log:
            # A session of its own, as a terminal's job has; the temp dir as cwd, so no developer's .env is read.
            self.process = subprocess.Popen([DISPATCHER, "up", *args], env=env, cwd=state_dir.parent, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.groups = {self.process.pid}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def note_groups(self) -> None:
        for pid in children_of(self.process.pid):
            with contextlib.suppress(ProcessLookupError):  # it ended while we looked
                self.groups.add(os.getpgid(pid))

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message} (up exit {self.process.poll()}):\n{self.log()[-6000:]}")

    def kill_everything(self) -> None:
        """Cleanup after a failure: nothing of ours may outlive the test."""
        self.note_groups()
        for pgid in self.groups:
            if group_alive(pgid):
                os.killpg(pgid, signal.SIGKILL)


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("api", "redis", "flower", "twilio", "smtp", "print", "agency")}


@pytest.fixture
def up(tmp_path: Path, ports: dict[str, int]) -> Iterator[tuple[Up, str]]:
    key, entry = new_api_key(["accounts:write", "accounts:read"])
    state = tmp_path / "state"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DISPATCHER_", "FLOWER_"))}
    env.update({
        "DISPATCHER_STATE_DIR": str(state),
        "DISPATCHER_API_PORT": str(ports["api"]),
        "DISPATCHER_API_KEYS": entry,
        "DISPATCHER_TWILIO_API_BASE_URL": f"http://127.0.0.1:{ports['twilio']}",
        "DISPATCHER_SMTP_PORT": str(ports["smtp"]),
        "DISPATCHER_PRINT_VENDOR_URL": f"http://127.0.0.1:{ports['print']}/v1",  # the API root with its version
        "DISPATCHER_AGENCY_URL": f"http://127.0.0.1:{ports['agency']}/cases",
        "DISPATCHER_CLOCK_START": CLOCK_START.isoformat(),
        "DISPATCHER_CLOCK_FACTOR": str(CLOCK_FACTOR),
        "DISPATCHER_CLOCK_ORIGIN": str(time.time()),
        "FLOWER_PASSWORD": "flower-test",
    })  # fmt: skip
    args = ["--workers", "1", "--redis-port", str(ports["redis"]), "--flower-port", str(ports["flower"])]
    running = Up(state, env, args)
    try:
        yield running, key
    finally:
        if running.process.poll() is None:
            running.kill_everything()
            running.process.wait(10)


def wait_ready(up: Up, url: str, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if up.process.poll() is not None:
            up.fail("dispatcher up exited before the API was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    up.fail(f"/readyz did not answer 200 within {timeout}s")


def accounts_ndjson() -> str:
    today = CLOCK_START.date()
    lines = []
    for index in range(ACCOUNTS):
        days = DAYS_PAST_DUE[index % len(DAYS_PAST_DUE)]
        body = account_body(
            f"UP{index:03d}", due_date=(today - timedelta(days=days)).isoformat(),
            phone=f"+861380013{index + 100:04d}", email=f"up{index}@example.com",
        )  # fmt: skip
        lines.append(json.dumps(body, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def provider_records(state: Path) -> list[dict[str, Any]]:
    """What the sandboxes received, from their own NDJSON logs (never the workers' word)."""
    records = []
    for log in ("twilio/twilio.ndjson", "smtp/smtp.ndjson", "print_vendor/print_vendor.ndjson"):
        path = state / "sandboxes" / log
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


@dataclass
class Delivered:
    channels: Counter[str] = field(default_factory=Counter)
    accounts: set[str] = field(default_factory=set)
    callbacks_answered: int = 0  # provider status callbacks the API answered 200: the way back works too

    def complete(self) -> bool:
        every_channel = set(self.channels) >= {"sms", "voice", "email", "letter"}
        return every_channel and len(self.accounts) == ACCOUNTS and self.callbacks_answered > 0


def delivered(state: Path) -> Delivered:
    seen = Delivered()
    for record in provider_records(state):
        event = record["event"]
        if event in ("message.created", "call.created"):
            seen.channels["sms" if event == "message.created" else "voice"] += 1
            seen.accounts.add(f"UP{int(record['form']['To'][-4:]) - 100:03d}")
        elif event == "smtp.stored":
            seen.channels["email"] += 1
            seen.accounts.add(f"UP{int(record['to'][0][2:].split('@')[0]):03d}")
        elif event == "letter.created":
            seen.channels["letter"] += 1
            seen.accounts.add(record["letter"]["metadata"]["account_id"])
        elif event == "callback.posted" and record.get("status") == 200:
            seen.callbacks_answered += 1
    return seen


def test_up_sends_every_channel_and_ctrl_c_leaves_no_process(up: tuple[Up, str], ports: dict[str, int],
                                                             tmp_path: Path) -> None:  # fmt: skip
    running, key = up
    api = f"http://127.0.0.1:{ports['api']}"
    ready_after = wait_ready(running, api)
    started = time.monotonic()
    answer = httpx.post(
        f"{api}/v1/accounts:batch", content=accounts_ndjson(), timeout=30,
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex,
                 "Content-Type": "application/x-ndjson"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.text.splitlines()[-1])["summary"]["created"] == ACCOUNTS

    deadline = time.monotonic() + 60
    while not (seen := delivered(tmp_path / "state")).complete():
        if time.monotonic() > deadline or running.process.poll() is not None:
            running.fail(f"not every account and channel went out: {seen}")
        running.note_groups()
        time.sleep(0.5)
    print(f"ready after {ready_after:.1f}s; all {ACCOUNTS} accounts out {time.monotonic() - started:.1f}s after "
          f"loading: {dict(seen.channels)}, {seen.callbacks_answered} callbacks answered")  # fmt: skip

    stop_and_check(running, signal.SIGINT, 130, ports)  # what Ctrl-C in a terminal sends


def test_sigterm_stops_every_process(up: tuple[Up, str], ports: dict[str, int]) -> None:
    running, _ = up
    wait_ready(running, f"http://127.0.0.1:{ports['api']}")
    time.sleep(2)  # the workers' pools are up: prefork children exist
    stop_and_check(running, signal.SIGTERM, 143, ports)  # what a supervisor or `kill` sends


def stop_and_check(running: Up, signum: int, exit_code: int, ports: dict[str, int]) -> None:
    """Signal `up`'s group and check no process of any group it made is left, nor a listening port."""
    running.note_groups()
    assert len(running.groups) >= 8, running.groups  # up itself, redis, api, beat, plan, send, flower, sandbox
    os.killpg(running.process.pid, signum)
    assert running.process.wait(30) == exit_code, running.log()[-4000:]
    gone_by = time.monotonic() + 10
    while any(group_alive(pgid) for pgid in running.groups) and time.monotonic() < gone_by:
        time.sleep(0.1)
    left = [pgid for pgid in running.groups if group_alive(pgid)]
    assert not left, f"process groups still alive after {signal.Signals(signum).name}: {left}\n{running.log()[-4000:]}"
    assert port_free(ports["redis"]) and port_free(ports["api"]) and port_free(ports["flower"])


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("DISPATCHER_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("unconfigured")
def test_every_part_runs_when_nothing_is_configured() -> None:
    settings = load_settings(_env_file=None)
    parts = topology(settings, UpPlan(), "redis://127.0.0.1:6379/0", flower_auth({}))
    assert [part.name for part in parts] == ["redis", "postgres", "api", "beat", "plan", "send", "flower", "sandbox"]
    assert [part.name for part in parts if not part.argv] == ["postgres"]  # `up` runs the record itself
    assert sandbox_ports(settings) == {"twilio": 8701, "smtp": 8725, "print": 8702, "agency": 8703, "wechat": 8704,
                                       "aliyun": 8705}  # fmt: skip
    env = shared_env(settings, UpPlan(), "redis://127.0.0.1:6379/0")
    assert env["DISPATCHER_TWILIO_API_BASE_URL"] == "http://127.0.0.1:8701"
    assert json.loads(env["DISPATCHER_ROUTES"]) == {"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}
    assert env["DISPATCHER_PUBLIC_BASE_URL"] == "http://127.0.0.1:8700"


@pytest.mark.usefixtures("unconfigured")
def test_real_providers_and_a_configured_redis_start_neither_sandboxes_nor_redis() -> None:
    settings = load_settings(
        _env_file=None, redis_url="redis://redis.internal:6379/0", database_url="postgresql://db.internal/dispatcher",
        twilio_account_sid="AC" + "1" * 32,
        smtp_host="smtp.example-bank.test", print_vendor_url="https://print.example.test",
        agency_url="https://agency.example.test/cases", wechat_api_base_url="https://api.weixin.qq.com",
        aliyun_endpoint="https://dysmsapi.aliyuncs.com",
    )  # fmt: skip
    assert sandbox_ports(settings) is None
    assert "DISPATCHER_ROUTES" not in shared_env(settings, UpPlan(), settings.redis_url or "")
    names = [part.name for part in topology(settings, UpPlan(flower=False), settings.redis_url or "", None)]
    assert names == ["api", "beat", "plan", "send"]


def test_flower_password_comes_from_the_environment_or_is_made_once() -> None:
    assert flower_auth({"FLOWER_USER": "ops", "FLOWER_PASSWORD": "s3cret"}) == FlowerAuth("ops", "s3cret", False)
    made = flower_auth({})
    assert made.user == "admin" and made.generated and len(made.password) >= 16
    with pytest.raises(UpError, match="FLOWER_"):
        flower_auth({"FLOWER_PASSWORD": "a,b"})  # Flower would split it into two logins


def test_dispatcher_postgres_serves_the_migrated_record_until_sigterm_and_then_stops_it(tmp_path: Path) -> None:
    env = {**os.environ, "DISPATCHER_STATE_DIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    env.pop("DISPATCHER_DATABASE_URL", None)
    part = subprocess.Popen([DISPATCHER, "postgres"], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert part.stdout is not None
        lines = iter(part.stdout.readline, "")
        url = next(line for line in lines if line.startswith("DISPATCHER_DATABASE_URL=")).strip().split("=", 1)[1]
        guest = psycopg.connect(url)  # a hand-run API or worker, connected when its owner is told to stop
        assert guest.execute("SELECT count(*) FROM closed_accounts").fetchone() == (0,)  # migrated at start
        part.send_signal(signal.SIGTERM)
        assert part.wait(timeout=30) == 0
        guest.close()
    finally:
        part.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)  # the owner stopped it, whoever was still connected
    assert not (tmp_path / "pg" / "postmaster.pid").exists()
