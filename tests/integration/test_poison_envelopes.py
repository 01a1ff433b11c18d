# ruff: noqa: F811 - fixtures imported from test_worker_survival come back as test parameters
"""List items kombu cannot turn into a message, pushed raw onto every queue of a real `dispatcher worker`
(idle, and busy holding tasks): each is a dead letter with its raw body, and the worker goes on consuming and
answering pings. A worker that must stop (pointed at a read-only replica) exits non-zero."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from dispatcher.state import dead_letter_stream
from dispatcher.state.redis_server import EmbeddedRedis
from tests.integration.test_worker_survival import (  # noqa: F401 - fixtures
    DISPATCHER,
    WorkerProcess,
    _exists,
    _hold_unacked,
    _upsert,
    own_redis,
    producer,
)
from tests.worker_fixtures import eventually
from workers.app import QUEUES
from workers.broker import RedisBrokerChannel, envelope_problem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _envelope(queue: str, body: bytes = b"[[], {}, {}]", **properties: Any) -> dict[str, Any]:
    """A housekeeping task as kombu keeps it in a Redis list; `properties` replace (None: remove) its own."""
    envelope: dict[str, Any] = {
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": "dispatcher.housekeeping", "id": str(uuid.uuid4())},
        "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64", "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "delivery_mode": 2},
    }  # fmt: skip
    envelope["properties"].update(properties)
    for name in [name for name, value in properties.items() if value is None]:
        del envelope["properties"][name]
    return envelope


def _poison(queue: str) -> dict[str, bytes]:
    """What a broken producer or a hand-made push can leave on a queue, by what is wrong with it."""
    not_base64 = {**_envelope(queue), "body": "!!!notbase64"}
    no_properties = {key: value for key, value in _envelope(queue).items() if key != "properties"}
    no_task_id = _envelope(queue)
    del no_task_id["headers"]["id"]
    items: dict[str, Any] = {
        "body not base64": not_base64,
        "not json at all": b"this is not json at all {",
        "body not json": _envelope(queue, body=b"{not json"),
        "no properties": no_properties,
        "no delivery_tag": _envelope(queue, delivery_tag=None),
        "no task id": no_task_id,
    }
    return {name: item if isinstance(item, bytes) else json.dumps(item).encode() for name, item in items.items()}


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_every_undecodable_envelope_on_every_queue_is_a_dead_letter_and_the_worker_goes_on(
    own_redis: EmbeddedRedis, producer: Celery, tmp_path: Path, busy: bool
) -> None:
    worker = WorkerProcess(own_redis.url, tmp_path, queues=",".join(QUEUES))
    client = redis.Redis.from_url(own_redis.url)
    try:
        if busy:  # tasks in hand, as a worker has while sends flow
            _hold_unacked(worker, producer, own_redis.url)
        pushed = {(queue, name): item for queue in QUEUES for name, item in _poison(queue).items()}
        for (queue, _), item in pushed.items():
            client.lpush(queue, item)

        eventually(lambda: dead_letter_stream.count(client) >= len(pushed) or worker.process.poll() is not None, 30)
        assert worker.process.poll() is None, f"the worker exited:\n{worker.log()[-4000:]}"
        _upsert(producer, "AFTER")  # a normal task sent afterwards is taken and done
        eventually(lambda: _exists(own_redis.url, "AFTER"), timeout=20)
        replies = producer.control.ping(timeout=3)
        assert any("ok" in reply.get(name, {}) for reply in replies for name in reply), replies

        letters = dead_letter_stream.listing(client, count=1000)
        assert len(letters) == len(pushed)
        assert all(client.llen(queue) == 0 for queue in QUEUES)
        assert client.hlen("unacked") == (3 if busy else 0)  # the held tasks, nothing of the poison
        kept = {(letter.queue, _normal(letter.envelope)): letter for letter in letters}
        for (queue, name), item in pushed.items():
            letter = kept.get((queue, _normal(item.decode())))
            assert letter is not None, f"{name} on {queue}: no dead letter with its envelope"
            if name == "body not base64":
                assert letter.body == "!!!notbase64"
                assert letter.reason.startswith("cannot decode the body: it is not base64"), letter.reason
            if name == "not json at all":
                assert letter.body == item.decode()
            if name == "no delivery_tag":
                assert "properties.delivery_tag" in letter.reason
            if name == "no task id":
                assert letter.reason.startswith("the worker could not take the message: KeyError"), letter.reason
        assert "Unrecoverable error" not in worker.log()
        assert "Connection to broker lost" not in worker.log()  # no poison taken for a lost connection
    finally:
        client.close()
        worker.stop()


def _normal(text: str) -> object:
    try:
        return json.dumps(json.loads(text), sort_keys=True)
    except ValueError:
        return text


def test_a_worker_that_must_stop_exits_non_zero(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    """A Redis that has become a read-only replica (a failover demoted it) refuses the worker's first write:
    Celery stops the worker (Unrecoverable error). It must exit non-zero, so that a supervisor restarting on
    failure starts it again; it used to exit 0 and stay dead."""
    client = redis.Redis.from_url(own_redis.url)
    client.execute_command("REPLICAOF", "127.0.0.1", "9")  # a master that never answers: read-only for good
    client.close()
    env = {**os.environ, "DISPATCHER_REDIS_URL": own_redis.url, "DISPATCHER_STATE_DIR": str(tmp_path)}
    started = time.monotonic()
    done = subprocess.run(
        [DISPATCHER, "worker", "-Q", "plan", "-c", "1", "--pool", "threads"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "Unrecoverable error" in output and "ReadOnlyError" in output, output[-4000:]
    assert done.returncode == 1, output[-4000:]
    print(f"the worker stopped with exit code {done.returncode} {time.monotonic() - started:.1f} s after its start")


def test_what_celery_and_kombu_publish_passes_the_envelope_check(redis_url: str) -> None:
    """No false alarm: the messages real producers write (plain, delayed, prioritised, compressed, a
    dead letter's replay envelope) are all envelopes the check lets through."""
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.keys("envcheck*") or ["envcheck"])
    sender = Celery("producer", broker=redis_url)
    try:
        for options in ({}, {"countdown": 30}, {"priority": 5}, {"compression": "zlib"}, {"expires": 60}):
            sender.send_task("dispatcher.send", args=[[{"id": "A1/reminder/sms/0"}]], queue="envcheck", **options)
    finally:
        sender.close()
    replay = dead_letter_stream.task_envelope("envcheck", "dispatcher.plan", "t-1", [["A1"]], {})
    items = [item for key in client.keys("envcheck*") for item in client.lrange(key, 0, -1)] + [replay.encode()]
    assert len(items) == 6
    codecs = RedisBrokerChannel.codecs
    assert [envelope_problem(json.loads(item), codecs) for item in items] == [None] * 6
    client.close()
