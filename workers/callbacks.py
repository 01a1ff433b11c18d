"""The callbacks task (`dispatcher.callbacks`, sent by beat's callbacks pump when there is work): the relay
queues what the audit streams hold for each endpoint, then the sender delivers what is due, round after round,
for at most `RUN_SECONDS` (a backlog drains over several runs instead of one outliving the task's limit).

Each worker process keeps one sender, so its HTTP connections to the receivers are reused between runs. Two runs
at once (a slow one and the next) are safe: the relay's cursor step queues a batch once, and each account's
queue is leased by the round that took it.
"""

from __future__ import annotations

import time
import uuid

from dispatcher.record.archive import ArchivedStream
from dispatcher.record.db import RecordUnavailable
from dispatcher.state.redis_keys import WEBHOOK_RUN
from dispatcher.webhook_relay import Relay
from dispatcher.webhook_sender import CallbackSender, callbacks_for
from workers.app import app
from workers.archiver import record_pool
from workers.process_runtime import WorkerRuntime, worker_runtime

RUN_SECONDS = 5.0  # the plan queue is shared: a run leaves it to planning soon

# The lock outlives a run's budget by the time its last attempts may take (a receiver's timeout, twice).
RUN_LOCK_SECONDS = RUN_SECONDS + 30.0

_callbacks: tuple[WorkerRuntime, Relay, CallbackSender] | None = None


def callbacks_once(relay: Relay, sender: CallbackSender, budget: float = RUN_SECONDS) -> dict[str, int]:
    """Relay every shard, then deliver rounds until nothing is due or the budget is spent."""
    started = time.monotonic()
    queued = relay.run()
    attempts = delivered = 0
    while time.monotonic() - started < budget:
        done = sender.deliver_due()
        attempts, delivered = attempts + done.attempts, delivered + done.delivered
        if done.attempts == 0:
            break
        queued += relay.run()
    return {"queued": queued, "attempts": attempts, "delivered": delivered}


def _process_callbacks(runtime: WorkerRuntime) -> tuple[Relay, CallbackSender]:
    """This process's relay and sender, on its runtime (built again if the runtime was replaced)."""
    global _callbacks
    if _callbacks is None or _callbacks[0] is not runtime:
        if _callbacks is not None:
            _callbacks[2].close()
        archive = _archive(runtime)
        _callbacks = (runtime, *callbacks_for(runtime.engine.store, runtime.engine.clock, runtime.settings, archive))
    return _callbacks[1], _callbacks[2]


def _archive(runtime: WorkerRuntime) -> ArchivedStream | None:
    """The record, for a relay the streams were trimmed past; None while the deployment has none."""
    try:
        return ArchivedStream(record_pool(runtime.settings))
    except RecordUnavailable:
        return None


@app.task(name="dispatcher.callbacks")
def deliver_callbacks() -> dict[str, int]:
    """Queue the audit streams' new events for the callback endpoints and deliver what is due; one run at a
    time across the cluster (beat sends one a second while there is work: the others return at once, so a
    backlog never takes more than one of the plan queue's workers)."""
    runtime = worker_runtime()
    client = runtime.engine.store.redis
    token = uuid.uuid4().hex
    if not client.set(WEBHOOK_RUN, token, nx=True, px=int(RUN_LOCK_SECONDS * 1000)):
        return {"queued": 0, "attempts": 0, "delivered": 0}
    try:
        relay, sender = _process_callbacks(runtime)
        return callbacks_once(relay, sender)
    finally:
        if client.get(WEBHOOK_RUN) == token:  # a run that outlived its lock leaves the next one's alone
            client.delete(WEBHOOK_RUN)
