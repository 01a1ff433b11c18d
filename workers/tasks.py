"""Celery tasks: thin, they take ids (never personal data), load fresh state and call the library.

Task names are part of the external contract (docs/operations.md): `dispatcher.pump`,
`dispatcher.send`, `dispatcher.housekeeping`, `dispatcher.ingest_event`, `dispatcher.upsert_account`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from dispatcher.events import EVENT_ADAPTER
from dispatcher.models import Account, Channel, Contact
from workers.app import app
from workers.runtime import worker_runtime

# Well above the hard task time limit, so a live worker's send is never mistaken for a dead one's.
IN_DOUBT_GRACE = timedelta(minutes=15)


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
            send.apply_async(args=[payloads[start : start + batch]], queue=channel)
            count += len(payloads[start : start + batch])
    return count


@app.task(name="dispatcher.pump")
def pump() -> int:
    """Lease the due wake-ups, re-plan those accounts and queue what is due now."""
    runtime = worker_runtime()
    contacts = runtime.engine.pump(runtime.settings.pump_batch, runtime.settings.lease_seconds)
    return dispatch(contacts, runtime.settings.send_batch)


@app.task(name="dispatcher.send")
def send(payloads: list[dict[str, str]]) -> dict[str, int]:
    """Deliver a batch of contacts of one channel; throttled or briefly failing ones come back later, in one
    re-queued task per wait rather than one per contact."""
    runtime = worker_runtime()
    deliveries = runtime.deliverer.deliver_many([contact_from(payload) for payload in payloads])
    results: dict[str, int] = defaultdict(int)
    again: dict[float, list[dict[str, str]]] = defaultdict(list)
    for payload, delivery in zip(payloads, deliveries, strict=True):
        results[delivery.result] += 1
        if delivery.result in ("throttled", "retry") and delivery.retry_in is not None:
            again[round(delivery.retry_in, 3)].append(payload)
    for wait, batch in again.items():
        send.apply_async(args=[batch], queue=batch[0]["channel"], countdown=wait)
    return dict(results)


@app.task(name="dispatcher.housekeeping")
def housekeeping() -> int:
    """Settle claims left in doubt (a worker killed mid-call, a timeout after the request left)."""
    runtime = worker_runtime()
    return runtime.engine.reconcile_in_doubt(runtime.engine.clock.now() - IN_DOUBT_GRACE)


@app.task(name="dispatcher.ingest_event")
def ingest_event(account_id: str, event: dict[str, Any]) -> str:
    """The Celery entry for services on the same broker; the same validation as the HTTP path."""
    runtime = worker_runtime()
    parsed = EVENT_ADAPTER.validate_python(event)
    return runtime.engine.record_event(account_id, parsed).status  # what it queued goes out via on_queued


@app.task(name="dispatcher.upsert_account")
def upsert_account(account: dict[str, Any]) -> str:
    runtime = worker_runtime()
    return runtime.engine.upsert(Account.model_validate(account)).status
