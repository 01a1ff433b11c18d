# ruff: noqa: F811 - fixtures imported from other modules come back as test parameters
"""Dead letters: poison on a queue and arguments a task refuses land in the stream and the worker goes on; a
send payload naming another account's contact, or a contact never planned, reaches nobody; the stream is
listed, shown, replayed and purged through `dispatcher dead-letters` and the admin API."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from channels.sandbox import Sandboxes
from dispatcher.commands.cli import app as cli
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Dispute
from dispatcher.state import dead_letter_stream
from dispatcher.state.redis_keys import let_go_key
from dispatcher.state.redis_server import EmbeddedRedis
from tests.api_fixtures import Api, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account
from tests.integration.test_worker_survival import (  # the real worker process and its Redis
    WorkerProcess,
    _exists,
    _upsert,
    own_redis,  # noqa: F401
    producer,  # noqa: F401
    worker_process,  # noqa: F401
)
from tests.worker_fixtures import eventually
from workers.process_runtime import WorkerRuntime
from workers.queueing import contact_payload
from workers.tasks import send

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _kombu_item(body: bytes, task: str = "dispatcher.send", queue: str = "sms") -> str:
    """A message as kombu keeps it in a Redis list, with any body."""
    return json.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": str(uuid.uuid4())},
        "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64", "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "delivery_mode": 2},
    })  # fmt: skip


def _letters(client: redis.Redis) -> list[dead_letter_stream.DeadLetter]:
    return dead_letter_stream.listing(client, count=1000)


def test_poison_and_refused_arguments_are_dead_lettered_and_the_worker_keeps_consuming(
    own_redis: EmbeddedRedis, worker_process: WorkerProcess, producer: Celery
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    client.lpush("sms", b"this is not json at all")  # not even kombu's envelope
    client.lpush("sms", _kombu_item(b"{not json"))  # an envelope whose body is not JSON
    client.lpush("plan", _kombu_item(b"[[], {}, {}]", task="dispatcher.no_such_task", queue="plan"))
    producer.send_task("dispatcher.ingest_event", args=["ACC1"], queue="plan")  # an argument short
    producer.send_task("dispatcher.ingest_event", args=["ACC1", {"kind": "payment", "amount": "-5"}], queue="plan")
    producer.send_task("dispatcher.upsert_account", args=[{"id": "bad id\n"}], queue="plan")
    producer.send_task("dispatcher.send", args=["not a list"], queue="sms")
    _upsert(producer, "VALID1")

    eventually(lambda: _exists(own_redis.url, "VALID1"), timeout=20)
    eventually(lambda: len(_letters(client)) == 7, timeout=10)
    assert worker_process.process.poll() is None
    reasons = {letter.reason for letter in _letters(client)}
    assert any(r.startswith("not a kombu message envelope") for r in reasons)
    assert any(r.startswith("cannot decode the body") for r in reasons)
    assert any("unknown task" in r for r in reasons)
    assert any("arguments do not fit the task" in r for r in reasons)
    assert any(r.startswith("payment.amount: Input should be greater than") for r in reasons), reasons
    assert any(r.startswith("id:") for r in reasons)
    assert any("a send takes a list of contact payloads" in r for r in reasons)
    raw = next(letter for letter in _letters(client) if letter.reason.startswith("not a kombu"))
    assert (raw.queue, raw.body) == ("sms", "this is not json at all")

    # Replay of a body that is still invalid simply dead-letters it again.
    dead_letter_stream.replay(client, raw.id)
    eventually(lambda: len(_letters(client)) == 7 and raw.id not in {x.id for x in _letters(client)}, timeout=10)
    assert worker_process.process.poll() is None
    client.close()


def test_a_payload_naming_another_accounts_contact_is_dead_lettered_and_the_rest_of_the_batch_is_sent(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    client = runtime.engine.store.redis
    # P000000 is not due: nothing of its own is ever sent; OK1 is, and its contact is held back for our batch.
    runtime.engine.upsert(make_account("P000000", phone="+8613900000001", due_date=clock.now().date()))
    runtime.engine.on_queued = lambda contacts: None
    [valid] = runtime.engine.upsert(
        make_account("OK1", phone="+8613900000002", due_date=clock.now().date() - timedelta(days=1))
    ).queued
    forged = {**contact_payload(valid), "id": "OTHER/reminder/sms/0", "account_id": "P000000"}

    send.apply_async(args=[[forged, contact_payload(valid)]], queue="sms")

    eventually(lambda: runtime.engine.store.claim_status("OK1", valid.id) == "sent")
    eventually(lambda: len(_letters(client)) == 1)
    texts = [r["form"].get("To") for r in worker_sandboxes.twilio.state.messages()]
    assert "+8613900000001" not in texts
    assert texts.count("+8613900000002") == 1
    [letter] = _letters(client)
    assert letter.task == "dispatcher.send" and letter.queue == "sms"
    assert "does not belong to account 'P000000'" in letter.reason
    assert runtime.engine.store.claims("P000000") == {}


def test_send_tasks_for_a_contact_whose_claim_was_let_go_are_skipped_quietly_not_dead_lettered(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    """A re-plan offers a queued contact again, so a contact can have several send tasks on the broker; once the
    last look lets its claim go (here: a dispute), the ones still coming are stale duplicates, not dead letters."""
    client = runtime.engine.store.redis
    runtime.engine.on_queued = lambda contacts: None  # hold the contact's dispatch back for this test
    [queued] = runtime.engine.upsert(
        make_account("LG1", phone="+8613900000004", due_date=clock.now().date() - timedelta(days=1))
    ).queued
    runtime.engine.record_event("LG1", Dispute())
    send.apply_async(args=[[contact_payload(queued)]], queue="sms")
    eventually(lambda: client.hexists(let_go_key("LG1"), queued.id))
    # The copies still coming arrive after the last look let the claim go (sent only now: two copies running
    # side by side with the first would both meet the queued claim and both be denied by the last look).
    before = _contacts_counted("stale_duplicate")
    for _ in range(2):
        send.apply_async(args=[[contact_payload(queued)]], queue="sms")
    eventually(lambda: _contacts_counted("stale_duplicate") >= before + 2)
    assert _letters(client) == []
    assert "+8613900000004" not in [r["form"].get("To") for r in worker_sandboxes.twilio.state.messages()]
    assert runtime.engine.store.claims("LG1") == {}


def _contacts_counted(result: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "dispatcher_contacts"
        for sample in metric.samples
        if sample.labels.get("result") == result and sample.name.endswith("_total")
    )


def test_a_well_formed_payload_for_a_contact_never_planned_is_dead_lettered(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    client = runtime.engine.store.redis
    runtime.engine.upsert(make_account("P000001", phone="+8613900000003", due_date=clock.now().date()))
    made_up = {"id": "P000001/reminder/sms_1/0", "account_id": "P000001", "channel": "sms",
               "template": "reminder_sms", "stage": "reminder", "step": "sms_1",
               "due_at": clock.now().isoformat()}  # fmt: skip
    send.apply_async(args=[[made_up]], queue="sms")
    eventually(lambda: len(_letters(client)) == 1)
    assert "no claim for contact 'P000001/reminder/sms_1/0'" in _letters(client)[0].reason
    time.sleep(0.3)
    assert "+8613900000003" not in [r["form"].get("To") for r in worker_sandboxes.twilio.state.messages()]
    assert runtime.engine.store.claims("P000001") == {}


def test_one_send_task_of_20000_malformed_contacts_is_one_dead_letter_with_its_count(
    runtime: WorkerRuntime, celery_worker: object, clock: ManualClock
) -> None:
    """It was 20,000 dead letters: five such tasks pushed every older entry off the stream's cap."""
    client = runtime.engine.store.redis
    due = clock.now().isoformat()
    payloads: list[dict[str, str]] = [
        {"id": f"N{i}/reminder/sms/0", "account_id": f"N{i}", "channel": "sms", "template": "reminder_sms",
         "stage": "reminder", "step": "sms", "due_at": due}
        for i in range(20_000)
    ]  # fmt: skip  # well formed, but never planned: no claim
    payloads[0] = {**payloads[0], "account_id": "OTHER"}  # forged: not its contact
    payloads[1] = {"id": "N1/reminder/sms/0"}  # not a payload at all
    written = _sample("dispatcher_dead_letters_total", queue="sms")

    send.apply_async(args=[payloads], queue="sms")
    eventually(lambda: dead_letter_stream.count(client) >= 1, timeout=60)
    eventually(lambda: client.llen("sms") == 0 and client.hlen("unacked") == 0, timeout=60)  # the task is done
    [letter] = _letters(client)
    assert (letter.count, letter.task, letter.queue) == (20_000, "dispatcher.send", "sms")
    assert letter.reason.startswith("20000 of 20000 contact payloads refused: ")
    assert "does not belong to account 'OTHER'" in letter.reason and "missing or not text" in letter.reason
    assert letter.reason.endswith("; and 19995 more")
    assert json.loads(letter.body)[0] == [payloads]  # every refused payload, as one send
    assert _sample("dispatcher_dead_letters_total", queue="sms") - written == 1

    dead_letter_stream.replay(client, letter.id)  # one task with all of them, refused again as one entry
    eventually(lambda: [x.id for x in _letters(client)] not in ([], [letter.id]), timeout=60)
    [again] = _letters(client)
    assert again.count == 20_000


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_cap_drops_the_oldest_dead_letters_and_counts_them(
    stream: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead_letter_stream, "MAXLEN", 150)  # 100,000 in production
    dropped = _sample("dispatcher_dead_letters_dropped_total", cause="cap")
    for index in range(400):
        dead_letter_stream.record(stream, queue="sms", task="", reason=f"r{index}", body=b"x", envelope=b"x")
    kept = dead_letter_stream.count(stream)
    assert 150 <= kept < 400  # trimmed in whole stream nodes (~), never below the cap
    assert _sample("dispatcher_dead_letters_dropped_total", cause="cap") - dropped == 400 - kept
    assert dead_letter_stream.listing(stream, count=kept)[-1].reason == f"r{400 - kept}"  # the oldest went


# --- reading, replaying and purging: the CLI and the admin API over the same stream ---


@pytest.fixture
def stream(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[redis.Redis]:
    monkeypatch.setenv("DISPATCHER_REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def _two_letters(client: redis.Redis) -> tuple[str, str]:
    first = dead_letter_stream.record(client, queue="sms", task="", reason="not a kombu message envelope",
                                      body=b"junk", envelope=b"junk")  # fmt: skip
    envelope = dead_letter_stream.task_envelope("plan", "dispatcher.upsert_account", "t-1", [{"id": "x"}], {})
    second = dead_letter_stream.record(client, queue="plan", task="dispatcher.upsert_account",
                                       reason="name: Field required", body='[[{"id": "x"}], {}]',
                                       envelope=envelope)  # fmt: skip
    return first, second


runner = CliRunner()


def test_the_cli_lists_shows_replays_and_purges_dead_letters(stream: redis.Redis) -> None:
    first, second = _two_letters(stream)
    listed = runner.invoke(cli, ["dead-letters", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [entry["id"] for entry in json.loads(listed.output)] == [second, first]  # newest first
    table = runner.invoke(cli, ["dead-letters", "list"])
    assert "name: Field required" in table.output and "2 dead letter(s)" in table.output

    shown = runner.invoke(cli, ["dead-letters", "show", second, "--json"])
    assert json.loads(shown.output)["envelope"].startswith('{"body"')
    assert runner.invoke(cli, ["dead-letters", "show", "1-1"]).exit_code == 1

    replayed = runner.invoke(cli, ["dead-letters", "replay", second])
    assert replayed.exit_code == 0, replayed.output
    [item] = stream.lrange("plan", 0, -1)
    assert json.loads(item)["headers"]["task"] == "dispatcher.upsert_account"
    assert dead_letter_stream.get(stream, second) is None

    assert runner.invoke(cli, ["dead-letters", "purge", "--before", "2000-01-01T00:00:00+00:00"]).exit_code == 0
    assert dead_letter_stream.count(stream) == 1  # nothing that old
    assert runner.invoke(cli, ["dead-letters", "purge"], input="n\n").exit_code == 1
    purged = runner.invoke(cli, ["dead-letters", "purge", "--yes"])
    assert purged.exit_code == 0 and "purged 1" in purged.output
    assert "--before" in runner.invoke(cli, ["dead-letters", "purge", "--help"]).output


def test_the_admin_api_reads_replays_and_deletes_dead_letters(api: Api) -> None:
    client = api.store.redis
    first, second = _two_letters(client)
    assert api.client.get("/v1/admin/dead-letters", headers=api.auth("reader")).status_code == 403
    assert api.client.get("/v1/admin/dead-letters").status_code == 401

    listed = api.client.get("/v1/admin/dead-letters", headers=api.auth("admin"))
    assert listed.status_code == 200
    assert [entry["id"] for entry in listed.json()["items"]] == [second, first]
    assert listed.json()["total"] == 2
    assert [entry["count"] for entry in listed.json()["items"]] == [1, 1]

    shown = api.client.get(f"/v1/admin/dead-letters/{first}", headers=api.auth("admin"))
    assert shown.status_code == 200 and shown.json()["body"] == "junk"
    assert api.client.get("/v1/admin/dead-letters/1-1", headers=api.auth("admin")).status_code == 404
    assert api.client.get("/v1/admin/dead-letters/not-an-id", headers=api.auth("admin")).status_code == 404

    replayed = api.post(f"/v1/admin/dead-letters/{second}/replay", key="admin")
    assert replayed.status_code == 200 and replayed.json()["queue"] == "plan"
    assert client.llen("plan") == 1
    assert api.post(f"/v1/admin/dead-letters/{second}/replay", key="admin").status_code == 404

    assert api.client.delete(f"/v1/admin/dead-letters/{first}", headers=api.auth("admin")).status_code == 204
    _two_letters(client)
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    purged = api.client.delete("/v1/admin/dead-letters", params={"before": later}, headers=api.auth("admin"))
    assert purged.status_code == 200 and purged.json() == {"purged": 2}
