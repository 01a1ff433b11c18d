"""docker-compose.yml's services run as processes, each with the filesystem its container would have.

A container sees its named volumes and, for everything else, a directory of its own that is gone when the
container is removed (`compose rm -v`, or `down` and `up`) and created again; the services reach each other
by service name on the project's network. Here each service runs its compose command with its compose
environment (after `cp .env.example .env`, and deploy/compose-smoke.yml's short archiver interval and fixed
clock, as `make compose-smoke` runs it), in a state directory that is its volume or a fresh directory of its
own, with its own TMPDIR; service names become this host's address and a free port; the redis and postgres
services are a redis-server and a PostgreSQL of the test's. Nothing else is shared: so a record kept in one
container's filesystem is lost here as it would be there.

The account's path is `make compose-smoke`'s: through the API, its SMS at the sandbox, paid in full, moved
by the archiver to the record, the worker containers recreated, and its archived timeline read through
the API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

from dispatcher.record.pg_server import EmbeddedPostgres
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from tests.integration.test_up import free_port
from tests.integration.test_worker_survival import DISPATCHER
from tests.unit import test_compose_file as compose_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
# The Dockerfile's runtime stage: ENV DISPATCHER_STATE_DIR, and the same directory as WORKDIR.
IMAGE_STATE_DIR = "/var/lib/dispatcher"
LOOPBACK = "127.0.0.1"
RUN = ("api", "beat", "worker-plan", "worker-sms", "sandbox")
WORKERS = ("worker-plan", "worker-sms")
# deploy/compose-smoke.yml's clock is 2026-03-02 10:00 in Shanghai: one day past due is the reminder SMS.
ACCOUNT = {
    "name": "王小明", "locale": "zh-CN", "timezone": "Asia/Shanghai", "country": "CN", "phone": "+8613800138000",
    "currency": "CNY", "balance": "5000.00", "minimum_payment": "500.00", "due_date": "2026-03-01",
}  # fmt: skip


def compose_services(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """docker-compose.yml with deploy/compose-smoke.yml's environment merged in, as compose merges them."""
    monkeypatch.setitem(compose_file.DOTENV, "SMOKE_CLOCK_ORIGIN", str(time.time()))
    services: dict[str, dict[str, Any]] = yaml.safe_load(compose_file._interpolate(compose_file.COMPOSE_TEXT))[
        "services"
    ]
    smoke_text = (ROOT / "deploy" / "compose-smoke.yml").read_text(encoding="utf-8")
    for name, override in yaml.safe_load(compose_file._interpolate(smoke_text))["services"].items():
        services[name]["environment"] = {**services[name].get("environment", {}), **override["environment"]}
    return services


class Host:
    """What the project's network gives the containers, on this host: service name and port -> an address."""

    def __init__(self, redis_url: str, postgres_url: str) -> None:
        self.redis_url, self.postgres_url = redis_url, postgres_url
        self.ports: dict[tuple[str, int], int] = {}

    def port(self, service: str, port: int) -> int:
        return self.ports.setdefault((service, port), free_port())

    def command(self, name: str, argv: list[str]) -> list[str]:
        """A port the service listens on (`--metrics-port`, the sandbox's `--twilio-port`, ...) -> a free one."""
        out = list(argv)
        for index, arg in enumerate(argv[:-1]):
            if arg.startswith("--") and arg.endswith("-port"):
                out[index + 1] = str(self.port(name, int(argv[index + 1])))
        return out

    def environment(self, name: str, environment: dict[str, Any], services: set[str]) -> dict[str, str]:
        env = {key: str(value) for key, value in environment.items()}
        for key, value in list(env.items()):
            url = urlsplit(value) if "://" in value else None
            if key == "DISPATCHER_API_PORT":
                env[key] = str(self.port(name, int(value)))
            elif key == "DISPATCHER_API_HOST":
                env[key] = LOOPBACK  # 0.0.0.0 in the container is its own interface; here, this host's
            elif value in services:  # a bare host name, its port in the variable beside it (SMTP)
                env[key] = LOOPBACK
                port_key = key.removesuffix("_HOST") + "_PORT"
                env[port_key] = str(self.port(value, int(env[port_key])))
            elif url is not None and url.hostname in services:
                env[key] = self._url(url)
        return env

    def _url(self, url: Any) -> str:
        if url.hostname == "redis":
            return urlunsplit(url._replace(netloc=urlsplit(self.redis_url).netloc))
        if url.hostname == "postgres":
            return self.postgres_url  # the test's server, with its own credentials
        netloc = f"{LOOPBACK}:{self.port(url.hostname, url.port or 80)}"
        return urlunsplit((url.scheme, netloc, url.path, url.query, url.fragment))


class Container:
    """One service's process: its volumes where compose mounts them, a directory of its own for the rest."""

    def __init__(self, name: str, service: dict[str, Any], root: Path, host: Host, services: set[str]) -> None:
        self.name = name
        # "name:/path" -> {"/path": "name"}: what is mounted where.
        volumes = {mount: volume for volume, mount, *_ in (v.split(":") for v in service.get("volumes", []))}
        own = root / "containers" / f"{name}-{uuid.uuid4().hex[:8]}"  # a recreated container starts empty
        state = root / "volumes" / volumes[IMAGE_STATE_DIR] if IMAGE_STATE_DIR in volumes else own / "state"
        for directory in (state, own / "tmp"):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_dir = state
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DISPATCHER_", "FLOWER_", "PG"))}
        env = {
            **inherited, "DISPATCHER_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(own / "tmp"), "XDG_RUNTIME_DIR": str(own / "tmp"),
            **compose_file.DOTENV,  # env_file: [.env]
            **host.environment(name, service.get("environment", {}), services),
        }  # fmt: skip
        argv = host.command(name, [str(arg) for arg in service.get("command", [])])
        self.log_path = own / "out.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen([DISPATCHER, *argv], env=env, cwd=state, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def log(self) -> str:
        return f"--- {self.name}\n" + self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


class Cluster:
    def __init__(self, services: dict[str, dict[str, Any]], root: Path, host: Host) -> None:
        self.services, self.root, self.host = services, root, host
        self.containers: dict[str, Container] = {}
        self.gone: list[Container] = []  # recreated: their logs stay for the failure message

    def start(self, name: str) -> None:
        self.containers[name] = Container(name, self.services[name], self.root, self.host, set(self.services))

    def recreate(self, name: str) -> None:
        self.containers[name].stop()
        self.gone.append(self.containers[name])
        self.start(name)

    def logs(self) -> str:
        return "\n".join(container.log() for container in [*self.gone, *self.containers.values()])

    def stop(self) -> None:
        for container in self.containers.values():
            container.stop()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    services = compose_services(monkeypatch)
    # Not under pytest's own directory: run as root, the embedded PostgreSQL servers run as their own user,
    # who must traverse every parent, and another pytest on this host resets pytest-of-<user> to 0700.
    with (
        tempfile.TemporaryDirectory(prefix="compose-topology-") as root,
        EmbeddedRedis(Path(root) / "volumes" / "redis-data", appendonly=False) as redis_server,
        EmbeddedPostgres(Path(root) / "volumes" / "postgres-data" / "pg") as postgres,
    ):
        running = Cluster(services, Path(root), Host(redis_server.url, postgres.url))
        try:
            for name in RUN:
                running.start(name)
            yield running
        finally:
            running.stop()


def test_the_compose_services_share_one_record_that_outlives_the_worker_containers(cluster: Cluster) -> None:
    api = f"http://{LOOPBACK}:{cluster.host.port('api', 8700)}"
    client = httpx.Client(base_url=api, headers={"Authorization": "Bearer dsp_demo-not-secret-compose-only"})

    def wait(what: str, done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            exited = {c.name: c.process.returncode for c in cluster.containers.values() if c.process.poll() is not None}
            if exited or time.monotonic() > deadline:
                pytest.fail(f"{what}: not within {timeout:.0f} s (exited: {exited})\n{cluster.logs()}")
            time.sleep(0.25)

    wait("the API's /readyz", lambda: _answers(client, "/readyz"))
    put = client.put("/v1/accounts/C1", json=ACCOUNT)
    assert put.status_code == 201 and put.json()["queued"] == ["C1/reminder/sms/0"], put.text
    sandbox_log = cluster.containers["sandbox"].state_dir / "sandboxes" / "twilio" / "twilio.ndjson"
    wait("C1's SMS at the Twilio sandbox", lambda: _sms_to(sandbox_log, ACCOUNT["phone"]))
    paid = client.post("/v1/accounts/C1/events", json={"kind": "payment", "amount": ACCOUNT["balance"]},
                       headers={"Idempotency-Key": uuid.uuid4().hex})  # fmt: skip
    assert paid.status_code == 200 and paid.json()["state"]["status"] == "resolved", paid.text
    # Closed with no retention (deploy/compose-smoke.yml): beat's archiver moves it out of Redis.
    store = Store.from_url(cluster.host.redis_url)
    wait("C1 moved out of Redis by the archiver", lambda: store.load("C1").record is None)

    for name in WORKERS:
        cluster.recreate(name)
    view = client.get("/v1/accounts/C1")
    assert view.status_code == 200, (
        f"the API does not find the account the archiver moved: {view.status_code} {view.text}\n{cluster.logs()}"
    )
    body = view.json()
    assert body["archived"] is True
    attempts = [entry for entry in body["timeline"] if entry["kind"] == "attempt"]
    assert [entry["contact_id"] for entry in attempts] == ["C1/reminder/sms/0"]
    assert {entry["contact_id"] for entry in body["decisions"] if entry.get("verdict") == "send"} == {
        "C1/reminder/sms/0"
    }


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _sms_to(log: Path, phone: str) -> bool:
    if not log.exists():
        return False
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return any(record["event"] == "message.created" and record["form"]["To"] == phone for record in records)
