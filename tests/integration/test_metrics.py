"""Metrics after a real run: accounts put through the API, their SMS and email sent by a real `dispatcher worker`
with prefork children and `--metrics-port`; the worker's exposition sums its children's counts, and the API's
/metrics has its requests and the cluster's state read from Redis."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread
from dispatcher.core.clock import ManualClock
from dispatcher.state.metrics import QUEUES, recount_accounts
from dispatcher.state.redis_keys import shard_counts_key
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401
from tests.integration.test_worker_logs import worker_env
from tests.integration.test_worker_survival import DISPATCHER, WorkerProcess
from tests.worker_fixtures import eventually
from workers.app import QUEUES as WORKER_QUEUES
from workers.app import configure
from workers.process_runtime import WorkerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class PreforkWorker(WorkerProcess):
    """`dispatcher worker --pool prefork -c 2 --metrics-port PORT`, its log in a file."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.log_path = state_dir / "worker.log"
        command = [DISPATCHER, "worker", "-Q", "sms,email", "-c", "2", "--pool", "prefork", "--metrics-port",
                   str(port), "--loglevel", "INFO"]  # fmt: skip
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        self.wait_for_log("ready.", timeout=30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }  # fmt: skip


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples(text).items() if n == name and wanted <= found)


@pytest.fixture
def metrics_port(
    monkeypatch: pytest.MonkeyPatch, runtime: WorkerRuntime, clock: ManualClock, tmp_path: Path
) -> Iterator[int]:
    port = free_port()
    worker_env(monkeypatch, runtime.settings, clock, log_level="INFO")
    monkeypatch.setenv("DISPATCHER_REDIS_URL", runtime.settings.redis_url or "")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)  # the worker makes its own
    worker = PreforkWorker(tmp_path, port)
    yield port
    worker.stop()


@pytest.fixture
def worker_api(runtime: WorkerRuntime, api_settings: Settings) -> Iterator[httpx.Client]:
    """The API over the worker runtime's engine: what it queues goes to Celery, as in a deployment."""
    configure(runtime.settings)
    app = create_app(runtime.engine, api_settings)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_a_run_through_a_prefork_worker_shows_in_its_metrics_and_the_apis(
    runtime: WorkerRuntime, metrics_port: int, worker_api: httpx.Client, api_keys: dict[str, tuple[str, str]],
) -> None:  # fmt: skip
    auth = {"Authorization": f"Bearer {api_keys['admin'][0]}"}
    route = "/v1/accounts/{account_id}"
    puts_before = value(worker_api.get("/metrics").text, "dispatcher_http_requests_total", method="PUT", route=route)
    # Contacts to one debtor are spaced: four accounts a day past due get an SMS each, four 16 days past due
    # an email each (their SMS and call wait for the spacing).
    for index in range(8):
        due = "2026-03-01" if index < 4 else "2026-02-14"  # 16 days: the early stage's first day, email first
        body = account_body(f"M{index}", phone=f"+861380013800{index}", due_date=due)
        assert worker_api.put(f"/v1/accounts/M{index}", json=body, headers=auth).status_code in (200, 201)
    store = runtime.engine.store

    def all_sent() -> bool:
        claims = [status for i in range(8) for status in store.claims(f"M{i}").values()]
        return len(claims) == 8 and set(claims) == {"sent"}

    eventually(all_sent, timeout=30)
    scrape = f"http://127.0.0.1:{metrics_port}/metrics"
    worker_text = eventually(lambda: httpx.get(scrape).text if "dispatcher_contacts_total" in httpx.get(scrape).text
                             else None)  # fmt: skip
    assert isinstance(worker_text, str)
    assert value(worker_text, "dispatcher_contacts_total", channel="sms", provider="twilio", result="sent") == 4
    assert value(worker_text, "dispatcher_contacts_total", channel="email", provider="smtp", result="sent") == 4
    assert value(worker_text, "dispatcher_provider_request_seconds_count", channel="sms", provider="twilio") == 4
    assert value(worker_text, "dispatcher_provider_request_seconds_bucket", provider="smtp", le="+Inf") == 4

    api_text = worker_api.get("/metrics").text  # the API's counters live as long as the process: a difference
    assert value(api_text, "dispatcher_http_requests_total", method="PUT", route=route) - puts_before == 8
    assert value(api_text, "dispatcher_accounts", stage="early", status="active") == 4
    assert {labels for (name, labels), _ in samples(api_text).items() if name == "dispatcher_queue_depth"} == {
        frozenset({("queue", queue)}) for queue in QUEUES
    }
    assert value(api_text, "dispatcher_plan_decisions_total", verdict="send") >= 8


def test_a_path_no_route_matches_is_counted_under_one_label(api: Api) -> None:
    for path in ("/no/such/thing", "/v1/nothing-here/123"):
        assert api.client.get(path).status_code == 404
    text = api.client.get("/metrics").text
    assert value(text, "dispatcher_http_requests_total", route="<unmatched>", status="404") >= 2
    assert "/no/such/thing" not in text


def test_the_account_counts_follow_stage_moves_and_a_recount_agrees(api: Api) -> None:
    for index in range(3):
        api.put_account(f"C{index}", account_body(f"C{index}"))
    api.put_account("C3", account_body("C3", due_date="2026-01-20"))
    shards = [api.store.redis.hgetall(shard_counts_key(shard)) for shard in range(api.store.shards)]
    kept = {field: sum(int(counts.get(field, 0)) for counts in shards) for counts in shards for field in counts}
    assert sum(kept.values()) == 4 and len(kept) == 2
    assert recount_accounts(api.store) == kept
    assert [api.store.redis.hgetall(shard_counts_key(shard)) for shard in range(api.store.shards)] == shards


def test_the_metric_queues_are_the_worker_queues() -> None:
    assert QUEUES == WORKER_QUEUES
