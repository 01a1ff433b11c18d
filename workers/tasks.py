"""Celery tasks: thin, they take ids (never personal data), load fresh state and call the library.

Task names are part of the external contract (docs/operations.md): `dispatcher.plan`, `dispatcher.send`,
`dispatcher.housekeeping`, `dispatcher.ingest_event`, `dispatcher.upsert_account`, and `dispatcher.pump`
(the old every-second pump, still accepted from older beats; the beat now pumps itself).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import ValidationError

from dispatcher.adhoc import AlreadyMade, request_contact
from dispatcher.core.arrangements.events import UnknownArrangement
from dispatcher.core.events import AdhocContact, EventRejected, parse_external_event
from dispatcher.core.models import Account, Contact
from dispatcher.engine import UnknownAccount
from workers.app import app
from workers.archiver import archive  # noqa: F401  (registers dispatcher.archive)
from workers.arguments import account_id_problem, checked_payloads, refused, validation_problem
from workers.callbacks import deliver_callbacks  # noqa: F401  (registers dispatcher.callbacks)
from workers.housekeeping import sweep
from workers.process_runtime import worker_runtime
from workers.queueing import contact_from, dispatch, enqueue

PRIVATE_ARGS = "workers.task_base:PrivateArgsRequest"  # what Flower shows of arguments with personal data
# The most contacts one send task carries; a bigger batch from outside is split before anything is sent.
MAX_SEND_BATCH = 500
WAITING = "waiting"  # payload key: this contact's rate-limit wait is already audited


@app.task(name="dispatcher.plan")
def plan(account_ids: list[str]) -> int:
    """Re-plan accounts whose wake-up beat leased (workers/scheduler.py) and queue what is due now."""
    runtime = worker_runtime()
    if not isinstance(account_ids, list):
        refused(plan, "a plan task takes a list of account ids", [account_ids])
        return 0
    problems = [problem for problem in map(account_id_problem, account_ids) if problem]
    if problems:
        refused(plan, problems[0], [account_ids])
        return 0
    results = runtime.engine.replan_many(account_ids)
    return dispatch([contact for result in results for contact in result.queued], runtime.settings.send_batch)


@app.task(name="dispatcher.pump")
def pump() -> int:
    """Lease the due wake-ups, re-plan those accounts and queue what is due now (older beats sent this every
    second; the beat now pumps itself)."""
    runtime = worker_runtime()
    contacts = runtime.engine.pump(runtime.settings.pump_batch, runtime.settings.lease_seconds)
    return dispatch(contacts, runtime.settings.send_batch)


@app.task(name="dispatcher.send")
def send(payloads: list[dict[str, str]]) -> dict[str, int]:
    """Deliver a batch of contacts of one channel; throttled or briefly failing ones come back later, in one
    re-queued task per wait rather than one per contact."""
    runtime = worker_runtime()
    payloads = checked_payloads(send, payloads, runtime.engine.store)  # the others are dead-lettered
    if not payloads:
        return {}
    if len(payloads) > MAX_SEND_BATCH:
        for start in range(0, len(payloads), MAX_SEND_BATCH):
            enqueue(payloads[start : start + MAX_SEND_BATCH], payloads[0]["channel"])
        return {"split": len(payloads)}
    contacts = [contact_from(payload) for payload in payloads]
    waiting = frozenset(payload["id"] for payload in payloads if payload.get(WAITING))
    deliveries = runtime.deliverer.deliver_many(contacts, already_waiting=waiting)
    results: dict[str, int] = defaultdict(int)
    again: dict[float, list[tuple[dict[str, str], Contact]]] = defaultdict(list)
    for payload, contact, delivery in zip(payloads, contacts, deliveries, strict=True):
        results[delivery.result] += 1
        if delivery.result in ("throttled", "retry") and delivery.retry_in is not None:  # an open circuit parks
            marked = {**payload, WAITING: "1"} if delivery.result == "throttled" else payload
            again[round(delivery.retry_in, 3)].append((marked, contact))
    for wait, batch in again.items():
        enqueue([payload for payload, _ in batch], batch[0][1].channel.value, countdown=wait)
        runtime.engine.gate.requeued([contact for _, contact in batch])
    return dict(results)


@app.task(name="dispatcher.housekeeping")
def housekeeping() -> dict[str, int]:
    """Offer stranded queued contacts again, and resolve claims in doubt from what their provider says."""
    return sweep(worker_runtime())


@app.task(name="dispatcher.ingest_event", Request=PRIVATE_ARGS)
def ingest_event(account_id: str, event: dict[str, Any]) -> str:
    """The Celery entry for services on the same broker; the same validation as the HTTP path. An invalid
    event, or one for an account we do not have, is dead-lettered with the reason; nothing is written."""
    runtime = worker_runtime()
    problem = account_id_problem(account_id)
    if problem is not None:
        return refused(ingest_event, problem, [account_id, event])
    try:
        parsed = parse_external_event(event)  # internal kinds (hold_lapsed ...) are refused, as over HTTP
    except ValidationError as exc:
        return refused(ingest_event, validation_problem(exc), [account_id, event])
    except EventRejected as exc:
        return refused(ingest_event, str(exc), [account_id, event])
    try:
        if isinstance(parsed, AdhocContact):  # the same answer as POST /v1/contacts: a denial records only itself
            return request_contact(runtime.engine, account_id, parsed).verdict
        return runtime.engine.record_event(account_id, parsed).status  # what it queued goes out via on_queued
    except (UnknownAccount, UnknownArrangement, AlreadyMade, EventRejected) as exc:  # well-formed, cannot apply
        return refused(ingest_event, str(exc), [account_id, event])


@app.task(name="dispatcher.upsert_account", Request=PRIVATE_ARGS)
def upsert_account(account: dict[str, Any]) -> str:
    """An account object as in the HTTP API; an invalid one is dead-lettered with the fields named."""
    runtime = worker_runtime()
    try:
        parsed = Account.model_validate(account)
    except ValidationError as exc:
        return refused(upsert_account, validation_problem(exc), [account])
    return runtime.engine.upsert(parsed).status
