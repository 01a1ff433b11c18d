"""Housekeeping, once a minute: nothing stranded, nothing called sent without the provider's word.

1. The stranded sweep. A queued contact whose last dispatch is older than `stranded_after_seconds` and whose
   message no longer waits on its channel's broker queue (the oldest message there was dispatched after it)
   was lost: a killed pump, a task acked after a connection error, a Redis restart. Its claim is forgotten
   and its account woken now, so the planner queues it again if it is still due. A message that turns up
   late after all meets the claim gate: never two sends.
2. The reconciler (workers/reconcile.py) resolves claims in doubt from the provider's own records.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import TYPE_CHECKING

import redis
import structlog

from dispatcher.core.audit import claim_audit
from dispatcher.state.claims import Stranded
from workers.queueing import DISPATCHED_AT
from workers.reconcile import reconcile

if TYPE_CHECKING:
    from workers.process_runtime import WorkerRuntime

log = structlog.get_logger("workers.housekeeping")

CLOCK_SKEW = 30.0  # seconds between a worker's clock and another's that the sweep tolerates


def sweep(runtime: WorkerRuntime) -> dict[str, int]:
    counts = Counter({"offered_again": offer_stranded(runtime)})
    counts.update(reconcile(runtime))
    return dict(counts)


def offer_stranded(runtime: WorkerRuntime, now: float | None = None) -> int:
    """Offer every stranded queued contact again; how many were."""
    store, engine = runtime.engine.store, runtime.engine
    now = time.time() if now is None else now
    candidates = store.ledger.queued_before(now - runtime.settings.stranded_after_seconds)
    waiting_since: dict[str, float] = {}
    offered = []
    for stranded in candidates:
        if stranded.channel not in waiting_since:
            waiting_since[stranded.channel] = oldest_waiting(store.broker, stranded.channel)
        if stranded.dispatched_at >= waiting_since[stranded.channel] - CLOCK_SKEW:
            continue  # its message may still be in the queue, behind a backlog
        wake_key = store.wake_key(store.shard_of(stranded.account_id))
        if store.ledger.offer_again(stranded, wake_key, engine.clock.now().timestamp()):
            offered.append(stranded)
    if offered:
        _audit(runtime, offered)
        log.warning("contact.stranded", count=len(offered), contacts=[s.contact_id for s in offered[:10]])
    return len(offered)


def oldest_waiting(client: redis.Redis, queue: str) -> float:
    """When the oldest message still on a broker queue was dispatched; infinity for an empty queue.

    kombu's Redis transport pushes on the left and consumers pop on the right, so the right end is the
    oldest. A message without our header (sent by something else) counts as waiting since forever."""
    raw = client.lindex(queue, -1)
    if raw is None:
        return float("inf")
    try:
        headers = json.loads(raw).get("headers") or {}
        return float(headers.get(DISPATCHED_AT, 0.0))
    except (ValueError, AttributeError, TypeError):
        return 0.0


def _audit(runtime: WorkerRuntime, offered: list[Stranded]) -> None:
    now = runtime.engine.clock.now()
    entries = [
        claim_audit(s.account_id, s.contact_id, now, "offered_again", reason="stranded", channel=s.channel)
        for s in offered
    ]
    runtime.engine.store.append_audit_many(entries)
