"""`make compose-smoke`: the compose deployment started for real, on this host's Docker engine.

1. the base images from Debian's packages (scripts/build_local_images.sh; kept once built), then
   `compose build`;
2. `compose --profile staging up -d`: every service of both profiles, with deploy/compose-smoke.yml's
   short archiver interval and fixed clock;
3. an account through the API (PUT), its SMS seen at the sandbox (the sandbox's own log);
4. a payment in full closes it; the archiver moves it to PostgreSQL (the API answers `archived: true`);
5. every worker container removed with its volumes and created again; the account's archived timeline
   and decisions read through the API again, and a second account sent by the new workers; every status
   callback of the sandbox answered 200; every container running, never restarted, its health check passing;
6. `compose down -v`, whatever happened; each step's time, and the total.

Needs a running Docker engine, root for debootstrap (only while the base images do not exist yet), and
ports 8700 and 5555 free on this host (the compose file publishes the API and Flower there). It uses
.env as `cp .env.example .env` leaves it: a missing .env is made from .env.example and removed again; an
.env with changes is refused, since the smoke must not reach real providers. Standard library only, so
the host's python3 runs it. KEEP=1 leaves the cluster running after a failure, to look at it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "dispatcher-smoke"
API = "http://127.0.0.1:8700"
# The demo key .env.example's DISPATCHER_API_KEYS holds the hash of (accounts:read, accounts:write, events:write).
KEY = "dsp_demo-not-secret-compose-only"
WORKERS = (
    "worker-plan",
    "worker-sms",
    "worker-voice",
    "worker-email",
    "worker-letter",
    "worker-agency",
    "worker-wechat",
)
TWILIO_LOG = "/var/lib/dispatcher/sandboxes/twilio/twilio.ndjson"
# deploy/compose-smoke.yml's clock is 2026-03-02 10:00 in Shanghai: one day past due is the reminder SMS.
ACCOUNT = {
    "name": "王小明", "locale": "zh-CN", "timezone": "Asia/Shanghai", "country": "CN",
    "email": "xiaoming@example.com", "currency": "CNY", "balance": "5000.00", "minimum_payment": "500.00",
    "due_date": "2026-03-01",
}  # fmt: skip


class SmokeFailed(Exception):
    pass


def main() -> int:
    started = time.monotonic()
    compose = _compose_command()
    env_made = _dotenv()
    images = _base_images()
    env = {**os.environ, **images, "SMOKE_CLOCK_ORIGIN": str(time.time())}
    run = _runner(compose, env)
    ok = False
    try:
        _check_ports()
        with _step("build the image (compose build)"):
            run("build", quiet=True)
        with _step("up: both profiles, every service"):
            run("up", "-d")
        with _step("API ready (GET /readyz)"):
            _wait("the API's /readyz", lambda: _get("/readyz")[0] == 200, 120)
        with _step("PUT SMOKE1, its SMS at the sandbox"):
            _put_account("SMOKE1", "+8613800138001")
            _wait("SMOKE1's SMS at the Twilio sandbox", lambda: _sms_sent(run, "+8613800138001"), 60)
        with _step("payment in full, the account archived in PostgreSQL"):
            _post_payment("SMOKE1")
            _wait("SMOKE1 archived (archived: true)", lambda: _account("SMOKE1").get("archived") is True, 60)
        with _step("remove every worker container with its volumes, create them again"):
            before = _container_ids(run)
            # Removed with their anonymous volumes (`up --force-recreate` would hand those to the new
            # containers), then created afresh: nothing of the old containers' filesystems is left.
            run("rm", "--stop", "--force", "-v", *WORKERS, quiet=True)
            run("up", "-d", "--no-deps", *WORKERS)
            after = _container_ids(run)
            if set(before) & set(after):
                raise SmokeFailed(f"worker containers not recreated: {before} -> {after}")
        with _step("SMOKE1's archived timeline through the API"):
            view = _account("SMOKE1")
            _check_archived(view)
        with _step("PUT SMOKE2, its SMS sent by the new workers"):
            _put_account("SMOKE2", "+8613800138002")
            _wait("SMOKE2's SMS at the Twilio sandbox", lambda: _sms_sent(run, "+8613800138002"), 60)
        with _step("every provider callback the sandbox posted answered 200"):
            _check_callbacks(run)
        with _step("every service running, never restarted, its health check passing"):
            _wait("every health check passing", lambda: _services_healthy(run), 90)
        ok = True
    except SmokeFailed as failure:
        print(f"compose-smoke: FAILED: {failure}", flush=True)
        run("ps", check=False)
        run("logs", "--tail", "40", "api", "worker-plan", "worker-sms", "beat", "postgres", check=False)
    finally:
        if ok or not os.environ.get("KEEP"):
            with _step("down -v"):
                run("down", "-v", "--remove-orphans", check=False, quiet=True)
        if env_made:
            (ROOT / ".env").unlink()
    total = time.monotonic() - started
    print(f"compose-smoke: {'PASSED' if ok else 'FAILED'} in {total:.0f} s", flush=True)
    return 0 if ok else 1


@contextmanager
def _step(name: str) -> Iterator[None]:
    print(f"compose-smoke: {name} ...", flush=True)
    started = time.monotonic()
    yield
    print(f"compose-smoke:   {name}: {time.monotonic() - started:.1f} s", flush=True)


def _compose_command() -> list[str]:
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise SystemExit("compose-smoke: no Docker engine answers (as root: dockerd >/tmp/dockerd.log 2>&1 &)")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("compose-smoke: neither 'docker compose' nor 'docker-compose' (apt-get install docker-compose)")


def _dotenv() -> bool:
    """True when the smoke made .env (and removes it at the end)."""
    dotenv, example = ROOT / ".env", ROOT / ".env.example"
    if not dotenv.exists():
        shutil.copyfile(example, dotenv)
        return True
    if dotenv.read_bytes() != example.read_bytes():
        raise SystemExit("compose-smoke: .env differs from .env.example; the smoke runs the shipped configuration"
                         " only (it must not reach real providers): move .env aside and run it again")  # fmt: skip
    return False


def _base_images() -> dict[str, str]:
    with _step("base images (scripts/build_local_images.sh)"):
        out = subprocess.run([str(ROOT / "scripts" / "build_local_images.sh")], check=True, capture_output=True,
                             text=True).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.split())


def _runner(compose: list[str], env: dict[str, str]) -> Callable[..., str]:
    files = ["-f", "docker-compose.yml", "-f", "deploy/compose-smoke.yml"]
    base = [*compose, "-p", PROJECT, *files, "--profile", "staging"]

    def run(*args: str, check: bool = True, quiet: bool = False) -> str:
        done = subprocess.run([*base, *args], cwd=ROOT, env=env, capture_output=True, text=True)
        if not quiet or done.returncode != 0:
            sys.stdout.write(done.stdout)
            sys.stdout.write("".join(line + "\n" for line in done.stderr.splitlines() if "DEPRECATED" not in line))
        if check and done.returncode != 0:
            raise SmokeFailed(f"compose {' '.join(args)} exited {done.returncode}")
        return done.stdout

    return run


def _check_ports() -> None:
    for port in (8700, 5555):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise SmokeFailed(f"port {port} on this host is taken; the compose file publishes it")


def _wait(what: str, done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SmokeFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def _request(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{API}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {}),
    })  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError:
        return 0, None  # not listening yet


def _get(path: str) -> tuple[int, Any]:
    return _request("GET", path)


def _put_account(account_id: str, phone: str) -> None:
    status, answer = _request("PUT", f"/v1/accounts/{account_id}", {**ACCOUNT, "phone": phone})
    if status != 201 or answer.get("queued") != [f"{account_id}/reminder/sms/0"]:
        raise SmokeFailed(f"PUT /v1/accounts/{account_id}: {status} {answer}")


def _post_payment(account_id: str) -> None:
    body = {"kind": "payment", "amount": ACCOUNT["balance"]}
    status, answer = _request("POST", f"/v1/accounts/{account_id}/events", body, {"Idempotency-Key": uuid.uuid4().hex})
    if status != 200 or answer.get("state", {}).get("status") != "resolved":
        raise SmokeFailed(f"payment for {account_id}: {status} {answer}")


def _account(account_id: str) -> dict[str, Any]:
    status, answer = _get(f"/v1/accounts/{account_id}")
    if status != 200:
        raise SmokeFailed(f"GET /v1/accounts/{account_id}: {status} {answer}")
    return dict(answer)


def _twilio_log(run: Callable[..., str]) -> list[dict[str, Any]]:
    """The Twilio sandbox's own log, read in its container: what it received, not what a worker says."""
    log = run("exec", "-T", "sandbox", "sh", "-c", f"cat {TWILIO_LOG} 2>/dev/null || true", quiet=True)
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def _sms_sent(run: Callable[..., str], phone: str) -> bool:
    return any(r["event"] == "message.created" and r["form"]["To"] == phone for r in _twilio_log(run))


def _check_callbacks(run: Callable[..., str]) -> None:
    posted = [r for r in _twilio_log(run) if r["event"] == "callback.posted"]
    refused = [(r.get("status"), r["url"], r["params"].get("MessageStatus")) for r in posted if r.get("status") != 200]
    if not posted or refused:
        raise SmokeFailed(f"{len(posted)} status callbacks posted, refused: {refused}")
    print(f"compose-smoke:   {len(posted)} status callbacks, all 200", flush=True)


def _services_healthy(run: Callable[..., str]) -> bool:
    """True once every container with a health check reports healthy; SmokeFailed for one that stopped or
    was restarted (a crash loop under `restart: unless-stopped` looks like a running service)."""
    ids = run("ps", "-q", quiet=True).split()
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout)
    waiting = []
    for container in inspected:
        name, state = container["Name"].lstrip("/"), container["State"]
        if state["Status"] != "running" or container["RestartCount"]:
            raise SmokeFailed(f"{name}: {state['Status']}, restarted {container['RestartCount']} times")
        if state.get("Health", {}).get("Status", "healthy") != "healthy":
            waiting.append(name)
    if not waiting:
        print(f"compose-smoke:   {len(inspected)} containers running, none restarted, every health check passing")
    return not waiting


def _container_ids(run: Callable[..., str]) -> list[str]:
    return run("ps", "-q", *WORKERS, quiet=True).split()


def _check_archived(view: dict[str, Any]) -> None:
    attempts = [entry for entry in view["timeline"] if entry["kind"] == "attempt"]
    sends = [entry for entry in view["decisions"] if entry.get("verdict") == "send"]
    contact = "SMOKE1/reminder/sms/0"
    if not (view["archived"] is True and view["claims"].get(contact) == "sent"):
        raise SmokeFailed(f"SMOKE1 is not archived with its SMS sent: {view}")
    if [a["contact_id"] for a in attempts] != [contact] or "delivered" not in attempts[0]["outcome"]:
        raise SmokeFailed(f"SMOKE1's archived timeline lacks its delivered SMS: {view['timeline']}")
    if {d["contact_id"] for d in sends} != {contact}:  # the upsert's plan and the plan task's each say so
        raise SmokeFailed(f"SMOKE1's archived decisions lack the send: {view['decisions']}")
    events = [entry["event"] for entry in view["timeline"] if entry["kind"] == "event"]
    print(f"compose-smoke:   archived: true; timeline: {events[0]}, sms {attempts[0]['outcome']}, {events[-1]};"
          f" decisions: {len(view['decisions'])} (send {contact})", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
