"""The chaos harness: a whole deployment as real processes on one machine, faults, and an honest count.

A `Deployment` runs what production runs, as separate processes: the embedded redis-server
(dispatcher.state.redis_server, AOF on), the provider sandboxes (tests.chaos.sandbox_proc: channels.sandbox plus
a per-request log), `dispatcher api`, `dispatcher worker` processes (threads pool, every queue) and one
`dispatcher beat`. A small supervisor restarts a process that dies *with a failure* (a signal or a non-zero
exit) after one second, as systemd's `Restart=on-failure` would, and first kills whatever is left of its
process group (KillMode=control-group). A process that exits 0 on its own is left dead and reported.

Every process shares an accelerated clock (DISPATCHER_CLOCK_*) that starts at 10:05 in Shanghai on
2026-03-03; the accounts (Asia/Shanghai, due 2026-03-02) are one day past due, so each has exactly one
contact due at once: its reminder SMS. The clock runs `clock_factor` times real time so that housekeeping's
15-minute in-doubt grace and the 300 s retry back-off (both on the dispatcher's clock) fall inside a run;
Celery's time limit, the broker's visibility timeout and the rate limiter run on real time and are set short.

What counts (`Tally`), from the provider's own records and the claims in Redis, never from the workers' word:

- duplicates: a contact id the provider accepted more than once;
- stray: a message the provider accepted for a contact id that was never planned (or with no id at all);
- sent without evidence: a claim `sent` whose contact the provider never accepted;
- lost: a planned contact the provider never accepted, not withdrawn (a payment), and not counted above;
- drained: every planned contact accepted by the provider with its claim settled (or, when withdrawn,
  no claim left pending); time to drain is measured from the end of the last fault.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

CODE_ROOT = Path(__file__).resolve().parents[2]
CLOCK_START = datetime(2026, 3, 3, 2, 5, tzinfo=UTC)  # 10:05 in Shanghai: inside the 08:00-21:00 window
DUE_DATE = date(2026, 3, 2)  # one day past due: the reminder stage's SMS (hour 10) is due at once
ZONE = "Asia/Shanghai"
QUEUES = "plan,sms,voice,email,letter,agency,wechat"
PENDING = frozenset({"queued", "sending", "unknown"})
SENT_LIKE = frozenset({"sent", "delivered"})
RESTART_DELAY = 1.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def account_id(index: int) -> str:
    return f"CH{index:06d}"


def phone_of(index: int) -> str:
    # Ends in 7: the sandbox delivers it (endings 0001-0006 mean failures there).
    return f"+86139{index * 10 + 7:08d}"


def contact_of(url: str | None) -> str | None:
    if not url:
        return None
    values = parse_qs(urlsplit(url).query).get("contact_id")
    return values[0] if values else None


@dataclass
class RunConfig:
    accounts: int
    clock_factor: float = 10.0
    # Short wall-clock timeouts, so that "lost" is never impatience: Celery's hard time limit, the broker's
    # redelivery of an unacked message, and how long a queued contact waits before the sweep offers it again.
    task_time_limit: int = 20
    visibility_timeout: int = 30
    stranded_after: int = 60
    drain_seconds: float = 120.0  # the goal: drained within this long after the last fault
    workers: int = 2
    concurrency: int = 8
    rate_limits: dict[str, float] | None = None  # None: the application's default (sms 100/s)
    extra_env: dict[str, str] = field(default_factory=dict)
    sandbox_args: tuple[str, ...] = ()  # more arguments for tests/chaos/sandbox_proc.py


# --------------------------------------------------------------------------------------------- processes


class Managed:
    """One supervised process: its own session (so its children can be cleaned up), a log that spans restarts."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[tuple[float, int]] = []
        self.dead_exit0 = False
        self.restart_at: float | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n===== chaos: start #{self.starts + 1} of {self.name} at {time.time():.3f}\n".encode())
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=str(CODE_ROOT), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.starts += 1
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def kill9(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def reap_group(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        self.reap_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


class Supervisor:
    """Restart on failure (signal or non-zero exit) after RESTART_DELAY; leave an exit 0 dead and say so."""

    def __init__(self) -> None:
        self.members: dict[str, Managed] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="chaos-supervisor", daemon=True)

    def add(self, member: Managed) -> Managed:
        with self._lock:
            self.members[member.name] = member
        member.start()
        return member

    def begin(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for member in self.members.values():
                    self._check(member)

    def _check(self, member: Managed) -> None:
        process = member.process
        if process is None or member.dead_exit0:
            return
        code = process.poll()
        now = time.time()
        if code is not None and member.restart_at is None:
            member.exits.append((now, code))
            member.reap_group()
            if code == 0:
                member.dead_exit0 = True
                return
            member.restart_at = now + RESTART_DELAY
        if member.restart_at is not None and now >= member.restart_at:
            member.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        for member in self.members.values():
            member.stop()


class RedisNode:
    """The embedded redis-server, stoppable by SHUTDOWN or kill -9 and restartable on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        from dispatcher.state.redis_server import EmbeddedRedis

        self._factory = EmbeddedRedis
        self.data_dir = data_dir
        self.port = free_port()
        self.server = EmbeddedRedis(data_dir, port=self.port, appendonly=True)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server = self._factory(self.data_dir, port=self.port, appendonly=True)
        self.server.start()

    def shutdown(self) -> None:
        process = self.server._process  # the project's own handle on its child
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.url, socket_timeout=5).shutdown()
        if process is not None:
            process.wait(timeout=30)

    def kill9(self) -> None:
        process = self.server._process
        if process is not None:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        self.server.stop()


# ---------------------------------------------------------------------------------------------- observing


class ProviderLog:
    """Reads the Twilio sandbox's own NDJSON log and the per-request log as they grow."""

    def __init__(self, twilio_dir: Path) -> None:
        self.events_path = twilio_dir / "twilio.ndjson"
        self.requests_path = twilio_dir / "requests.ndjson"
        self._offsets = {self.events_path: 0, self.requests_path: 0}
        self.accepted: dict[str, list[float]] = defaultdict(list)  # contact id -> acceptance times
        self.accepted_by_phone: dict[str, int] = Counter()
        self.unlabelled = 0
        self.callbacks = Counter()  # "ok", "5xx", "4xx", "error"
        self.requests: list[tuple[float, str, int | None]] = []

    def _lines(self, path: Path) -> Iterator[dict[str, Any]]:
        if not path.exists():
            return
        with path.open("rb") as stream:
            stream.seek(self._offsets[path])
            data = stream.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offsets[path] += end
        for line in data[:end].splitlines():
            if line.strip():
                yield json.loads(line)

    def poll(self) -> None:
        for record in self._lines(self.events_path):
            event = record.get("event")
            if event == "message.created":
                form = record.get("form") or {}
                contact = contact_of(form.get("StatusCallback"))
                self.accepted_by_phone[form.get("To", "")] += 1
                if contact is None:
                    self.unlabelled += 1
                else:
                    self.accepted[contact].append(record["at"])
            elif event == "callback.posted":
                status = record.get("status")
                kind = "error" if status is None else "ok" if status < 400 else "5xx" if status >= 500 else "4xx"
                self.callbacks[kind] += 1
        for record in self._lines(self.requests_path):
            if record.get("method") == "POST":
                self.requests.append((record["at"], record["path"], record.get("status")))

    def first_acceptance(self) -> float | None:
        times = [t for seen in self.accepted.values() for t in seen]
        return min(times) if times else None

    def _arrivals(self, path_suffix: str) -> list[float]:
        return sorted(t for t, path, _ in self.requests if path.endswith(path_suffix))

    @staticmethod
    def _window_counts(times: list[float]) -> list[int]:
        """For each request, how many arrived in the second that starts with it (sliding 1-second windows)."""
        counts, j = [], 0
        for i, start in enumerate(times):
            while j < len(times) and times[j] < start + 1.0:
                j += 1
            counts.append(j - i)
        return counts

    def max_rate(self, path_suffix: str = "/Messages.json") -> tuple[int, int]:
        """The most requests that arrived in any 1-second window, and how many requests there were."""
        counts = self._window_counts(self._arrivals(path_suffix))
        return max(counts, default=0), len(counts)

    def windows_over(self, limit: float, path_suffix: str = "/Messages.json") -> list[tuple[float, int]]:
        """The windows holding more than `limit`: (seconds after the first request, requests in it)."""
        times = self._arrivals(path_suffix)
        counts = self._window_counts(times)
        return [(times[i] - times[0], count) for i, count in enumerate(counts) if count > limit]


@dataclass
class Tally:
    """Where every planned contact stands, from the provider's log and the claims."""

    contacts: int
    accepted: int
    duplicates: int
    stray: int
    sent_without_evidence: int
    lost: int
    pending: int  # claims still queued / sending / unknown (or gone) for contacts not yet accepted
    unsettled: int  # contacts the provider accepted whose claim is still in doubt
    withdrawn: int
    claim_states: dict[str, int]
    samples: dict[str, list[str]]
    other_claims: dict[str, int] = field(default_factory=dict)  # claims of contacts never planned by the seed

    @property
    def drained(self) -> bool:
        return self.pending == 0 and self.unsettled == 0


@dataclass
class Result:
    scenario: str
    contacts: int
    faults: list[str]
    tally: Tally | None = None
    drain_seconds: float | None = None  # None: not drained by the deadline
    deadline: float = 120.0
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)  # extra goals: name -> (ok, figure)
    info: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    wall_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        if self.error is not None or self.tally is None:
            return False
        t = self.tally
        core = t.duplicates == 0 and t.lost == 0 and t.sent_without_evidence == 0 and t.stray == 0
        drained = self.drain_seconds is not None and self.drain_seconds <= self.deadline
        return core and drained and all(ok for ok, _ in self.checks.values())


# --------------------------------------------------------------------------------------------- deployment


class Deployment:
    """Everything running for one scenario, under `root`; use as a context manager."""

    def __init__(self, name: str, config: RunConfig, root: Path) -> None:
        self.name = name
        self.config = config
        self.root = root
        self.supervisor = Supervisor()
        self.redis_node: RedisNode | None = None
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.twilio_url = ""
        self.api_url = ""
        self.api_key = ""
        self.env: dict[str, str] = {}
        self.origin = 0.0
        self.expected: dict[str, str] = {}  # contact id -> account id
        self.balances: dict[str, Decimal] = {}
        self.withdrawn: set[str] = set()  # accounts whose contacts may legitimately not go (paid)
        self.provider: ProviderLog | None = None
        self._client: redis.Redis | None = None
        self.faults: list[str] = []

    # -- lifecycle
    def __enter__(self) -> Deployment:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.supervisor.stop()
        if self.sandbox is not None and self.sandbox.poll() is None:
            self.sandbox.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sandbox.wait(timeout=15)
            if self.sandbox.poll() is None:
                self.sandbox.kill()
        if self._client is not None:
            self._client.close()
        if self.redis_node is not None:
            self.redis_node.stop()

    def _start(self) -> None:
        from dispatcher.api import new_api_key

        self.redis_node = RedisNode(self.root / "redis")
        self.redis_node.start()
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self._start_sandbox()
        self.api_key, entry = new_api_key(["admin"])
        self.origin = time.time()
        cfg = self.config
        env = {key: value for key, value in os.environ.items() if not key.startswith("DISPATCHER_")}
        env.update({
            "PYTHONPATH": str(CODE_ROOT),
            "PYTHONUNBUFFERED": "1",
            "DISPATCHER_REDIS_URL": self.redis_node.url,
            "DISPATCHER_STATE_DIR": str(self.root / "state"),
            "DISPATCHER_PUBLIC_BASE_URL": self.api_url,
            "DISPATCHER_API_PORT": str(api_port),
            "DISPATCHER_API_KEYS": entry,
            "DISPATCHER_CLOCK_START": CLOCK_START.isoformat(),
            "DISPATCHER_CLOCK_FACTOR": str(cfg.clock_factor),
            "DISPATCHER_CLOCK_ORIGIN": repr(self.origin),
            "DISPATCHER_TASK_TIME_LIMIT": str(cfg.task_time_limit),
            "DISPATCHER_BROKER_VISIBILITY_TIMEOUT": str(cfg.visibility_timeout),
            "DISPATCHER_STRANDED_AFTER_SECONDS": str(cfg.stranded_after),
            "DISPATCHER_LOG_FORMAT": "json",
        })  # fmt: skip
        if cfg.rate_limits is not None:
            env["DISPATCHER_RATE_LIMITS"] = json.dumps(cfg.rate_limits)
        for key, value in self.sandbox_overrides.items():
            env[f"DISPATCHER_{key.upper()}"] = str(value)
        env.update(cfg.extra_env)
        self.env = env
        cli = [sys.executable, "-m", "workers.cli"]
        logs = self.root / "logs"
        logs.mkdir()
        # `dispatcher api` itself, on the run's clock (tests/chaos/api_proc.py says why).
        api = [sys.executable, "-m", "tests.chaos.api_proc"]
        self.supervisor.add(Managed("api", api, env, logs / "api.log"))
        for index in range(cfg.workers):
            argv = [*cli, "worker", "--queues", QUEUES, "--concurrency", str(cfg.concurrency), "--pool", "threads",
                    "--name", f"chaos{index}@%h", "--loglevel", "INFO"]  # fmt: skip
            self.supervisor.add(Managed(f"worker-{index}", argv, env, logs / f"worker-{index}.log"))
        self.supervisor.add(Managed("beat", [*cli, "beat", "--loglevel", "INFO"], env, logs / "beat.log"))
        self.supervisor.begin()
        self._wait_ready()

    def _start_sandbox(self) -> None:
        ready = self.root / "sandbox-ready.json"
        log = (self.root / "sandbox.log").open("ab")
        env = dict(os.environ, PYTHONPATH=str(CODE_ROOT))
        argv = [sys.executable, "-m", "tests.chaos.sandbox_proc", "--dir", str(self.root / "sandboxes"),
                "--callback-url", self.api_url, "--ready", str(ready), *self.config.sandbox_args]  # fmt: skip
        self.sandbox = subprocess.Popen(argv, env=env, cwd=str(CODE_ROOT), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.sandbox.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the sandboxes did not start; see {self.root / 'sandbox.log'}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        self.twilio_url = info["twilio_url"]
        self.sandbox_overrides: dict[str, Any] = info["overrides"]
        self.provider = ProviderLog(self.root / "sandboxes" / "twilio")

    def _wait_ready(self, timeout: float = 60.0) -> None:
        """The API answers /readyz and every worker has logged that it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workers_ready = all(
                b"ready." in member.log.read_bytes()
                for name, member in self.supervisor.members.items()
                if name.startswith("worker-")
            )
            if workers_ready and self.http("GET", "/readyz")[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"the deployment did not become ready within {timeout:.0f}s; see {self.root / 'logs'}")

    # -- state
    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            assert self.redis_node is not None
            self._client = redis.Redis.from_url(self.redis_node.url, socket_timeout=5, decode_responses=True)
        return self._client

    def clock(self) -> Any:
        from dispatcher.core.clock import AcceleratedClock

        return AcceleratedClock(CLOCK_START, self.config.clock_factor, self.origin)

    def seed(self) -> int:
        """Upsert the accounts (their SMS claims are written `queued` and they wake now: the pump sends them)."""
        from config.settings import DEFAULT_STRATEGY
        from dispatcher.core.models import Account
        from dispatcher.core.strategy import load_strategy
        from dispatcher.engine import Engine
        from dispatcher.state.store import Store

        assert self.redis_node is not None
        store = Store.from_url(self.redis_node.url, int(self.env.get("DISPATCHER_SCHEDULE_SHARDS", "16")))
        engine = Engine(store, load_strategy(DEFAULT_STRATEGY), self.clock())
        rng = random.Random(7)
        accounts = []
        for index in range(self.config.accounts):
            balance = Decimal(rng.randrange(100_00, 5_000_00)) / 100
            self.balances[account_id(index)] = balance
            accounts.append(Account(
                id=account_id(index), name=f"Chaos Debtor {index}", balance=balance,
                minimum_payment=(balance / 10).quantize(Decimal("0.01")), due_date=DUE_DATE, timezone=ZONE,
                phone=phone_of(index), locale="en", country="CN",
            ))  # fmt: skip
        for start in range(0, len(accounts), 1000):
            engine.upsert_many(accounts[start : start + 1000])
        store.redis.close()
        claims = self.claims([account_id(i) for i in range(self.config.accounts)])
        for account, held in claims.items():
            for contact in held:
                self.expected[contact] = account
        if len(self.expected) != self.config.accounts:
            raise RuntimeError(f"expected one SMS per account, planned {len(self.expected)} contacts")
        return len(self.expected)

    def claims(self, accounts: list[str]) -> dict[str, dict[str, str]]:
        pipe = self.client.pipeline(transaction=False)
        for account in accounts:
            pipe.hgetall(f"{{a:{account}}}:claims")
        return dict(zip(accounts, pipe.execute(), strict=True))

    def history(self, accounts: list[str]) -> dict[str, list[dict[str, Any]]]:
        pipe = self.client.pipeline(transaction=False)
        for account in accounts:
            pipe.lrange(f"{{a:{account}}}:hist", 0, -1)
        return {a: [json.loads(e) for e in entries] for a, entries in zip(accounts, pipe.execute(), strict=True)}

    def tally(self) -> Tally:
        assert self.provider is not None
        self.provider.poll()
        accounts = sorted(set(self.expected.values()))
        claims = self.claims(accounts)
        accepted = self.provider.accepted
        states: Counter[str] = Counter()
        samples: dict[str, list[str]] = defaultdict(list)
        dup = stray = no_evidence = lost = pending = unsettled = withdrawn = got = 0
        for contact, times in accepted.items():
            if len(times) > 1:
                dup += 1
                samples["duplicates"].append(f"{contact} x{len(times)}")
            if contact not in self.expected:
                stray += 1
                samples["stray"].append(contact)
        stray += self.provider.unlabelled
        others: Counter[str] = Counter()
        for held in claims.values():
            for contact, status in held.items():
                if contact not in self.expected:
                    others[f"{contact.split('/', 1)[-1]} {status}"] += 1
        for contact, account in self.expected.items():
            status = claims.get(account, {}).get(contact, "(none)")
            states[status] += 1
            seen = len(accepted.get(contact, ()))
            if seen:
                got += 1
                if status in PENDING or status == "(none)":
                    unsettled += 1
                continue
            if account in self.withdrawn:
                withdrawn += 1
                if status in PENDING and status != "queued":
                    pending += 1
                continue
            if status in SENT_LIKE:
                no_evidence += 1
                samples["sent_without_evidence"].append(f"{contact} ({status})")
            elif status == "failed":
                lost += 1
                samples["lost"].append(f"{contact} (failed)")
            else:
                lost += 1
                pending += 1
                samples["lost"].append(f"{contact} ({status})")
        return Tally(
            contacts=len(self.expected), accepted=got, duplicates=dup, stray=stray,
            sent_without_evidence=no_evidence, lost=lost, pending=pending, unsettled=unsettled, withdrawn=withdrawn,
            claim_states=dict(states), samples={k: v[:8] for k, v in samples.items()}, other_claims=dict(others),
        )  # fmt: skip

    def safe_tally(self) -> Tally | None:
        try:
            return self.tally()
        except (redis.RedisError, OSError):
            return None

    # -- waiting
    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f}s")
            time.sleep(0.1)

    def wait_accepted(self, count: int, timeout: float = 60.0) -> None:
        """Until the provider has accepted `count` planned contacts (polls the provider's own log)."""
        assert self.provider is not None

        def enough() -> bool:
            self.provider.poll()  # type: ignore[union-attr]
            return sum(1 for c in self.provider.accepted if c in self.expected) >= count  # type: ignore[union-attr]

        self.wait_for(enough, timeout, f"{count} contacts accepted by the provider")

    def drain(self, last_fault: float, deadline: float, settle: float = 0.0) -> tuple[Tally, float | None]:
        """Poll until drained or `deadline` seconds after `last_fault`; returns the last tally and the time to
        drain (None when it did not). `settle`: keep watching this long after draining, for late sends."""
        drained_at: float | None = None
        tally: Tally | None = None
        while True:
            now = time.time()
            current = self.safe_tally()
            if current is not None:
                tally = current
                if current.drained and drained_at is None:
                    drained_at = now
                elif not current.drained:
                    drained_at = None  # it was not: a late send or a claim moved back
            if drained_at is not None and now - drained_at >= settle:
                break
            if now - last_fault > deadline:
                break
            time.sleep(0.5)
        final = self.safe_tally() or tally
        assert final is not None, "Redis never answered during the drain"
        return final, None if drained_at is None else max(0.0, drained_at - last_fault)

    # -- faults
    def fault(self, text: str) -> None:
        self.faults.append(text)

    def set_provider_faults(self, **faults: Any) -> dict[str, Any]:
        """Set the Twilio sandbox's faults; its answer (the faults now, or {"error": ...} for an unknown one)."""
        request = urllib.request.Request(
            self.twilio_url + "/_sandbox/faults", data=json.dumps(faults).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            reply: dict[str, Any] = json.loads(answer.read())
        return reply

    def provider_faults(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.twilio_url + "/_sandbox/stats", timeout=10) as answer:
            faults: dict[str, Any] = json.loads(answer.read()).get("faults", {})
        return faults

    def http(self, method: str, path: str, body: Any = None, key: str | None = None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if key is not None:
            headers["Idempotency-Key"] = key
        request = urllib.request.Request(self.api_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            return 0, repr(exc)

    # -- what the processes said
    def process_report(self) -> dict[str, Any]:
        exits = {name: m.exits for name, m in self.supervisor.members.items() if m.exits}
        dead = [name for name, m in self.supervisor.members.items() if m.dead_exit0]
        critical: list[str] = []
        for member in self.supervisor.members.values():
            for line in member.log.read_text(errors="replace").splitlines():
                if "CRITICAL" in line or "Unrecoverable error" in line or '"level": "critical"' in line:
                    critical.append(f"{member.name}: {line.strip()[:300]}")
        return {"exits": exits, "dead_exit0": dead, "critical": critical}

    def grep_logs(self, *needles: str, limit: int = 6) -> list[str]:
        found: list[str] = []
        for member in self.supervisor.members.values():
            for line in member.log.read_text(errors="replace").splitlines():
                if any(needle in line for needle in needles):
                    found.append(f"{member.name}: {line.strip()[:300]}")
                    if len(found) >= limit:
                        return found
        return found

    def shard_of(self, account: str) -> int:
        return zlib.crc32(account.encode()) % int(self.env.get("DISPATCHER_SCHEDULE_SHARDS", "16"))
