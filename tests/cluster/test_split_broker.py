"""The state on the cluster, the broker on its own Redis: what reads kombu's keys (the queue-depth gauges, the
stranded sweep's oldest waiting message) and the dead-letter stream (list, replay: the API, the CLI and the
workers' hooks) use the broker's client, never the state's."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from config.settings import Settings
from dispatcher.core.clock import ManualClock
from dispatcher.state import dead_letter_stream
from dispatcher.state.metrics import ClusterCollector
from tests.conftest import make_account
from workers.cli import app as cli
from workers.housekeeping import offer_stranded
from workers.process_runtime import WorkerRuntime
from workers.queueing import DISPATCHED_AT

pytestmark = pytest.mark.integration


def _gauges(runtime: WorkerRuntime) -> dict[str, float]:
    found = {}
    for family in ClusterCollector(runtime.engine.store, ["plan", "sms"]).collect():
        for sample in family.samples:
            found[f"{sample.name}{sorted(sample.labels.values())}"] = sample.value
    return found


def test_the_queue_depths_and_unacked_messages_are_read_from_the_broker(runtime: WorkerRuntime, redis_url: str) -> None:
    store = runtime.engine.store
    assert store.broker is not store.redis
    broker = redis.Redis.from_url(redis_url)
    broker.lpush("sms", "m1", "m2", "m3")
    broker.hset("unacked", "tag", "x")
    gauges = _gauges(runtime)
    assert gauges["dispatcher_queue_depth['sms']"] == 3
    assert gauges["dispatcher_unacked_messages[]"] == 1
    assert gauges["dispatcher_queue_depth['plan']"] == 0


def test_the_stranded_sweep_looks_for_the_waiting_message_on_the_broker(
    runtime: WorkerRuntime, clock: ManualClock, redis_url: str
) -> None:
    runtime.engine.on_queued = lambda contacts: None  # the dispatch is lost
    due = clock.now().date() - timedelta(days=1)
    [contact] = runtime.engine.upsert(make_account("SPLIT1", due_date=due)).queued
    broker = redis.Redis.from_url(redis_url)
    waiting = {"body": "", "headers": {DISPATCHED_AT: time.time() - 60}, "properties": {}}
    broker.lpush("sms", json.dumps(waiting))  # an older message still waits: its backlog is not drained
    later = time.time() + runtime.settings.stranded_after_seconds + 1
    assert offer_stranded(runtime, now=later) == 0
    broker.delete("sms")
    assert offer_stranded(runtime, now=later) == 1
    assert runtime.engine.store.claim_status("SPLIT1", contact.id) is None


def test_dead_letters_are_listed_and_replayed_on_the_broker_by_the_cli(
    cluster_settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "DISPATCHER_REDIS_URL": cluster_settings.redis_url, "DISPATCHER_REDIS_CLUSTER": "true",
        "DISPATCHER_BROKER_URL": redis_url, "DISPATCHER_SCHEDULE_SHARDS": str(cluster_settings.schedule_shards),
        "DISPATCHER_STATE_DIR": str(tmp_path / "state"),
    }.items():  # fmt: skip
        monkeypatch.setenv(name, str(value))
    broker = redis.Redis.from_url(redis_url, decode_responses=True)
    envelope = dead_letter_stream.task_envelope("plan", "dispatcher.upsert_account", "t-1", [{"id": "x"}], {})
    entry = dead_letter_stream.record(broker, queue="plan", task="dispatcher.upsert_account", reason="bad",
                                      body='[[{"id": "x"}], {}]', envelope=envelope)  # fmt: skip
    runner = CliRunner()
    listed = runner.invoke(cli, ["dead-letters", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [item["id"] for item in json.loads(listed.output)] == [entry]
    replayed = runner.invoke(cli, ["dead-letters", "replay", entry])
    assert replayed.exit_code == 0, replayed.output
    assert broker.llen("plan") == 1  # back on its queue, on the broker
    assert json.loads(broker.lindex("plan", 0))["headers"]["task"] == "dispatcher.upsert_account"


def test_import_and_account_show_run_against_the_cluster(
    cluster_settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    source = tmp_path / "accounts.csv"
    source.write_text("id,name,balance,due_date,phone\nCLI1,Li Wei,800.00,2026-02-28,+8613800138009\n")
    runner = CliRunner()
    imported = runner.invoke(cli, ["import", str(source)])
    assert imported.exit_code == 0, imported.output
    assert "created 1" in imported.output
    shown = runner.invoke(cli, ["account", "show", "CLI1", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["account"]["id"] == "CLI1"
