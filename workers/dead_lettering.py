"""Dead letters on the worker side (the stream itself is dispatcher/state/dead_letter_stream.py).

Two ways in: the consumer's hooks, for a message the worker cannot decode or does not know (Celery logs
those and drops them), and `refuse()`, which a task calls when its arguments do not validate — it writes
the dead letter and the task returns, so the message is acked and the worker goes on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from celery import Task
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message
from kombu.utils.json import dumps

from dispatcher.state import dead_letter_stream
from workers.process_runtime import worker_runtime

log = structlog.get_logger("workers.deadletter")


class Consumer(CeleryConsumer):
    """Celery's consumer, writing a dead letter before its own handling (log, then ack or reject)."""

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        dead_letter_message(message, f"cannot decode the body: {type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Message) -> None:
        dead_letter_message(message, "not a Celery task message (no task header)")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Message, exc: Exception) -> None:
        dead_letter_message(message, f"unknown task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Message, exc: Exception) -> None:
        dead_letter_message(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)


def dead_letter_message(message: Message, reason: str) -> str:
    """Keep the message as it came: kombu's envelope for replay, and its body. A Redis error propagates: the
    consumer then treats it as the lost connection it is, and the unacked message comes back later."""
    queue = str((message.delivery_info or {}).get("routing_key") or "")
    task = str((message.headers or {}).get("task") or "")
    raw = getattr(message, "_raw", None)  # the virtual transports' envelope, as it sat in the list
    envelope = dumps(raw) if isinstance(raw, dict) else ""
    with message.channel.conn_or_acquire() as client:
        entry = dead_letter_stream.record(
            client, queue=queue, task=task, reason=reason, body=message.body, envelope=envelope
        )
    log.error("worker.dead_letter", queue=queue, task=task, reason=reason, dead_letter=entry)
    return entry


def refuse(
    task: Task, reason: str, args: Sequence[Any], kwargs: Mapping[str, Any] | None = None, count: int = 1
) -> str:
    """Dead-letter a call of `task` with these arguments; replay sends the same call to the same queue. `count`:
    how many contacts (or calls) the entry stands for."""
    request = task.request
    queue = str((request.delivery_info or {}).get("routing_key") or "plan")
    task_id = request.id or str(uuid.uuid4())
    kwargs = dict(kwargs or {})
    envelope = dead_letter_stream.task_envelope(queue, task.name, task_id, args, kwargs)
    body = json.dumps([list(args), kwargs], default=str, ensure_ascii=False)
    client = worker_runtime().engine.store.broker
    entry = dead_letter_stream.record(
        client, queue=queue, task=task.name, reason=reason, body=body, envelope=envelope, count=count
    )
    log.error("task.dead_letter", task=task.name, task_id=task_id, queue=queue, reason=reason[:500], count=count,
              dead_letter=entry)  # fmt: skip
    return entry
