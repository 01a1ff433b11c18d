"""The queue hand-off: contacts the engine queued become send tasks, one per channel and batch.

The send task is reached by its name through the Celery app, so this module (and the runtime it is handed
to) does not import the tasks module, which imports both.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from dispatcher.core.models import Channel, Contact
from workers.app import app

DISPATCHED_AT = "dispatched_at"  # the send task's header: wall-clock time it was put on the broker

SEND_TASK = "dispatcher.send"


def contact_payload(contact: Contact) -> dict[str, str]:
    return {
        "id": contact.id, "account_id": contact.account_id, "channel": contact.channel.value,
        "template": contact.template, "stage": contact.stage, "step": contact.step,
        "due_at": contact.due_at.isoformat(),
    }  # fmt: skip


def contact_from(payload: dict[str, str]) -> Contact:
    return Contact(
        payload["id"], payload["account_id"], Channel(payload["channel"]), payload["template"],
        payload["stage"], payload["step"], datetime.fromisoformat(payload["due_at"]),
    )  # fmt: skip


def dispatch(contacts: Iterable[Contact], batch: int) -> int:
    """Queue send tasks, one per channel and batch; returns how many contacts went out."""
    by_channel: dict[str, list[dict[str, str]]] = defaultdict(list)
    for contact in contacts:
        by_channel[contact.channel.value].append(contact_payload(contact))
    count = 0
    for channel, payloads in by_channel.items():
        for start in range(0, len(payloads), batch):
            enqueue(payloads[start : start + batch], channel)
            count += len(payloads[start : start + batch])
    return count


def enqueue(payloads: Sequence[dict[str, str]], channel: str, countdown: float | None = None) -> None:
    """One send task; its dispatch time rides in a header so the stranded sweep can tell what still waits."""
    headers = {DISPATCHED_AT: time.time()}
    # A signature of a registered task applies through the task itself, as `send.apply_async` would.
    app.signature(SEND_TASK).apply_async(args=[list(payloads)], queue=channel, countdown=countdown, headers=headers)
