"""`dispatcher up` and `dispatcher redis`: the whole deployment on one machine, one process per part.

With no DISPATCHER_REDIS_URL `up` runs the embedded Redis as a part. With no DISPATCHER_DATABASE_URL `up`
itself owns the embedded PostgreSQL of the record: it starts and migrates it before any part starts, hands
every part its URL as DISPATCHER_DATABASE_URL, and stops it once the parts have gone, whatever they did (a
part killed by a signal, a prefork child: none of them starts or stops the server).

honcho runs each part in its own process group, prefixes its output with the part's name and, on Ctrl-C or
SIGTERM, sends SIGTERM to every group (Celery's prefork children and redis-server go with their parent),
then SIGKILL to whatever is left 5 s later. The parts share settings only through the environment: what
`up` decides (the Redis URL, the sandboxes' addresses, the public URL) is passed on as DISPATCHER_*
variables, exactly as a hand-run or compose deployment passes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import redis
from honcho.manager import Manager

from channels import REGISTRY
from channels.aliyun_sms import CHINA_FIRST_ROUTES
from config.errors import ConfigurationError
from config.settings import Settings
from dispatcher.state.redis_server import EmbeddedRedis

SEND_QUEUES = ",".join(spec.queue for spec in REGISTRY.values())  # every channel's queue
SEND_THREADS_PER_WORKER = 8  # sends wait on providers: docs/operations.md's threads x16 for the default 2
FLOWER_PORT = 5555
FLOWER_MAX_TASKS = 10_000  # Flower keeps tasks in memory; a busy cluster would otherwise grow it without end
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
SANDBOX_SID = "AC00000000000000000000000000000000"
TWILIO_SANDBOX_PORT = 8701  # `dispatcher sandbox`'s default


@dataclass(frozen=True)
class UpPlan:
    """What `dispatcher up` was asked for."""

    workers: int = 2
    flower: bool = True
    sandboxes: bool = True
    redis_port: int = 6379
    flower_port: int = FLOWER_PORT


@dataclass(frozen=True)
class FlowerAuth:
    user: str
    password: str
    generated: bool


@dataclass(frozen=True)
class Part:
    """One process of the topology: its name (the output prefix), its command and where it listens."""

    name: str
    argv: list[str]  # empty: `up` runs it in its own process (the embedded PostgreSQL)
    listens: str
    env: Mapping[str, str] | None = None


class UpError(ConfigurationError, RuntimeError):
    """`dispatcher up` cannot start as asked; the message says what to change."""


def dispatcher_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", *args]


def flower_auth(environ: Mapping[str, str]) -> FlowerAuth:
    """Basic-auth credentials from FLOWER_USER / FLOWER_PASSWORD, or a password made now."""
    user = environ.get("FLOWER_USER") or "admin"
    password = environ.get("FLOWER_PASSWORD") or ""
    # Flower splits its basic_auth option on commas and each entry on the first colon.
    if ":" in user or "," in user + password:
        raise UpError("FLOWER_USER may not contain ':' and neither FLOWER_USER nor FLOWER_PASSWORD ','")
    if password:
        return FlowerAuth(user, password, generated=False)
    return FlowerAuth(user, secrets.token_urlsafe(12), generated=True)


def flower_command(broker_url: str, port: int, address: str = "127.0.0.1", read_only: bool = True) -> list[str]:
    """Flower watching the cluster on `broker_url`; pass the credentials with `flower_env` (not argv: ps shows it)."""
    argv = [sys.executable, "-m", "celery", f"--broker={broker_url}", "flower", f"--address={address}",
            f"--port={port}", f"--max_tasks={FLOWER_MAX_TASKS}"]  # fmt: skip
    return [*argv, "--read_only=True"] if read_only else argv


def flower_env(auth: FlowerAuth) -> dict[str, str]:
    """Flower reads FLOWER_<OPTION> variables; basic auth travels this way so it stays out of the process list."""
    return {"FLOWER_BASIC_AUTH": f"{auth.user}:{auth.password}"}


def _port_of(url: str) -> int | None:
    parts = urlsplit(url)
    return parts.port if parts.hostname in LOOPBACK else None


def sandbox_ports(settings: Settings) -> dict[str, int] | None:
    """The sandbox port per provider that still points at this machine; None when every provider is real."""
    twilio = settings.twilio_api_base_url
    ports = {
        # No base URL and the sandbox's SID is the out-of-the-box setting, not a real Twilio account.
        "twilio": (_port_of(twilio) if twilio else TWILIO_SANDBOX_PORT if settings.twilio_account_sid == SANDBOX_SID
                   else None),
        "smtp": settings.smtp_port if settings.smtp_host in LOOPBACK else None,
        "print": _port_of(settings.print_vendor_url),
        "agency": _port_of(settings.agency_url),
        "wechat": _port_of(settings.wechat_api_base_url),
        "aliyun": _port_of(settings.aliyun_endpoint),
    }  # fmt: skip
    if all(port is None for port in ports.values()):
        return None
    return {name: port or 0 for name, port in ports.items()}  # 0: a free port nobody will call


def shared_env(settings: Settings, plan: UpPlan, redis_url: str) -> dict[str, str]:
    """The DISPATCHER_* variables every part gets on top of the caller's environment."""
    env = {
        "DISPATCHER_REDIS_URL": redis_url,
        "DISPATCHER_STATE_DIR": str(settings.state_dir.resolve()),
        "PYTHONUNBUFFERED": "1",  # lines reach honcho as they are written, not a pipe buffer later
    }
    if "public_base_url" not in settings.model_fields_set:  # callbacks come back to the API `up` starts
        env["DISPATCHER_PUBLIC_BASE_URL"] = f"http://127.0.0.1:{settings.api_port}"
    ports = sandbox_ports(settings) if plan.sandboxes else None
    if ports and ports["twilio"] and not settings.twilio_api_base_url:
        env["DISPATCHER_TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{ports['twilio']}"
    if ports and ports["aliyun"] and "routes" not in settings.model_fields_set:
        # The Aliyun sandbox runs: Chinese mobiles go to it first, as a bank in China would route them.
        env["DISPATCHER_ROUTES"] = json.dumps(CHINA_FIRST_ROUTES)
    return env


def topology(settings: Settings, plan: UpPlan, redis_url: str, auth: FlowerAuth | None) -> list[Part]:
    """Every part `up` starts, in the order the banner lists them."""
    parts = []
    if not settings.redis_url:
        data = settings.state_dir.resolve() / "redis"
        parts.append(Part("redis", dispatcher_argv("redis", "--port", str(plan.redis_port)), f"{redis_url} ({data})"))
    if not settings.database_url:
        data = settings.state_dir.resolve() / "pg"
        where = f"embedded PostgreSQL, the record (run by `up` itself); unix socket only, data in {data}"
        parts.append(Part("postgres", [], where))
    api = f"http://{settings.api_host}:{settings.api_port}"
    parts.append(Part("api", dispatcher_argv("api"), f"{api} (docs {api}/docs, health {api}/readyz)"))
    parts.append(Part("beat", dispatcher_argv("beat"), "the one scheduler"))
    parts.append(Part("plan", _worker("plan", "prefork", plan.workers), f"queue plan, prefork x{plan.workers}"))
    threads = plan.workers * SEND_THREADS_PER_WORKER
    parts.append(Part("send", _worker(SEND_QUEUES, "threads", threads), f"queues {SEND_QUEUES}, threads x{threads}"))
    if auth is not None:
        secret = f"password {auth.password} (generated, shown once)" if auth.generated else "FLOWER_PASSWORD"
        who = f"user {auth.user}, {secret}"
        argv = flower_command(settings.broker_url or redis_url, plan.flower_port)  # Flower watches the broker
        parts.append(Part("flower", argv, f"http://127.0.0.1:{plan.flower_port} ({who})", flower_env(auth)))
    ports = sandbox_ports(settings) if plan.sandboxes else None
    if ports:
        parts.append(Part("sandbox", _sandbox(ports), _sandbox_listens(ports)))
    return parts


def _worker(queues: str, pool: str, concurrency: int) -> list[str]:
    name = queues.split(",")[0] if pool == "prefork" else "send"
    return dispatcher_argv("worker", "-Q", queues, "--pool", pool, "-c", str(concurrency), "--name", f"{name}@%h")


def _sandbox(ports: Mapping[str, int]) -> list[str]:
    return dispatcher_argv(
        "sandbox", "--twilio-port", str(ports["twilio"]), "--smtp-port", str(ports["smtp"]),
        "--print-port", str(ports["print"]), "--agency-port", str(ports["agency"]),
        "--wechat-port", str(ports["wechat"]), "--aliyun-port", str(ports["aliyun"]),
    )  # fmt: skip


def _sandbox_listens(ports: Mapping[str, int]) -> str:
    return ", ".join(f"{name} 127.0.0.1:{port}" for name, port in ports.items() if port)


def check_ports_free(ports: Mapping[str, int]) -> None:
    """Fail before starting anything when a port is taken: honcho would stop everything on the first exit."""
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                raise UpError(f"port {port} ({what}) is in use; stop what holds it or choose another") from None


def _ports_to_check(settings: Settings, plan: UpPlan) -> dict[str, int]:
    ports = {"api (DISPATCHER_API_PORT)": settings.api_port}
    if not settings.redis_url:
        ports["redis (--redis-port, or set DISPATCHER_REDIS_URL)"] = plan.redis_port
    if plan.flower:
        ports["flower (--flower-port, or --no-flower)"] = plan.flower_port
    sandbox = sandbox_ports(settings) if plan.sandboxes else None
    for name, port in (sandbox or {}).items():
        if port:
            ports[f"{name} sandbox (--no-sandboxes if a real provider is meant)"] = port
    return ports


def run_up(settings: Settings, plan: UpPlan, out: TextIO, environ: Mapping[str, str] = os.environ) -> int:
    """Start every part, print where each listens, and run until Ctrl-C/SIGTERM or a part exits; the exit code."""
    check_ports_free(_ports_to_check(settings, plan))
    redis_url = settings.redis_url or f"redis://127.0.0.1:{plan.redis_port}/0"
    auth = flower_auth(environ) if plan.flower else None
    parts = topology(settings, plan, redis_url, auth)
    env = {**environ, **shared_env(settings, plan, redis_url)}
    with _stopped_on_signal(), owned_record(settings.database_url, settings.state_dir) as database_url:
        if database_url is not None:
            env["DISPATCHER_DATABASE_URL"] = database_url
        manager = Manager()
        for part in parts:
            if part.argv:
                manager.add_process(part.name, "exec " + shlex.join(part.argv), env={**env, **(part.env or {})})
        _banner(parts, env, settings, out)
        manager.loop()  # honcho takes SIGINT/SIGTERM from here on, stops every part, then returns
    return int(manager.returncode or 0)


def _banner(parts: list[Part], env: Mapping[str, str], settings: Settings, out: TextIO) -> None:
    width = max(len(part.name) for part in parts)
    print("dispatcher up: one machine, every part; Ctrl-C stops them all", file=out)
    for part in parts:
        print(f"  {part.name.ljust(width)}  {part.listens}", file=out)
    names = ("DISPATCHER_REDIS_URL", "DISPATCHER_DATABASE_URL", "DISPATCHER_PUBLIC_BASE_URL",
             "DISPATCHER_TWILIO_API_BASE_URL", "DISPATCHER_ROUTES")  # fmt: skip
    for name in names:
        if name in env and (name != "DISPATCHER_DATABASE_URL" or not settings.database_url):  # no password shown
            print(f"  {name}={env[name]}", file=out)
    if not settings.api_keys:
        print("  no DISPATCHER_API_KEYS: every /v1 call answers 401; `dispatcher api-key admin` makes one", file=out)
    out.flush()


@contextlib.contextmanager
def owned_record(configured: str | None, state_dir: Path) -> Iterator[str | None]:
    """With no DISPATCHER_DATABASE_URL: the embedded PostgreSQL under the state directory, started and
    migrated here, its URL yielded, and stopped when the block ends, however it ends. None otherwise (the
    configured record is migrated by the processes that open it)."""
    if configured:
        yield None
        return
    from dispatcher.record.db import migrate
    from dispatcher.record.pg_server import EmbeddedPostgres, stop_server  # only an embedded record needs the package

    server = EmbeddedPostgres(state_dir.resolve() / "pg")
    try:
        server.start()
        migrate(server.url)  # before any part reads it: no part ever meets a table not made yet
        yield server.url
    finally:
        server.stop()
        stop_server(server.data_dir)  # whatever else started one there meanwhile goes too


@contextlib.contextmanager
def _stopped_on_signal() -> Iterator[None]:
    """Until honcho's loop takes over the signals, SIGINT/SIGTERM end `up` through its `finally` blocks (the
    record it started is stopped), with the exit code honcho would give."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in previous:
        signal.signal(signum, _exit)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_redis(state_dir: Path, port: int, out: TextIO) -> None:
    """The embedded redis-server alone (AOF on) on 127.0.0.1:`port` until SIGINT/SIGTERM or until it dies."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGTERM too: a supervisor's stop must flush the AOF
        signal.signal(signum, lambda *_: stop.set())
    data = state_dir.resolve() / "redis"
    server = EmbeddedRedis(data, port=port, appendonly=True)
    try:
        server.start()
    except RuntimeError as exc:
        raise UpError(f"{exc} (is port {port} in use? choose another with --port)") from None
    try:
        print(f"DISPATCHER_REDIS_URL={server.url}", file=out)
        print(f"data (AOF) in {data}; Ctrl-C stops it", file=out, flush=True)
        _watch(redis.Redis.from_url(server.url, socket_timeout=5), stop, data)
    finally:
        server.stop()  # SHUTDOWN: the AOF is flushed before the process goes


def run_postgres(state_dir: Path, out: TextIO) -> None:
    """`dispatcher postgres`: the embedded PostgreSQL of the record, migrated, until SIGINT/SIGTERM, for
    hand-run processes. This process owns it: it stops the server then, whoever is still connected (the
    API answers 503 for the reads that need the record, the archiver's next run fails, until it is back)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with owned_record(None, state_dir) as url:
        print(f"DISPATCHER_DATABASE_URL={url}", file=out)
        print(f"data in {state_dir.resolve() / 'pg'}; Ctrl-C stops it", file=out, flush=True)
        stop.wait()


def _watch(client: redis.Redis, stop: threading.Event, data: Path) -> None:
    """Until told to stop; a server that dies on its own ends the process non-zero, so a supervisor sees it."""
    while not stop.wait(1.0):
        try:
            client.ping()
        except redis.ConnectionError:
            raise UpError(f"redis-server went away; see {data / 'redis.log'}") from None
