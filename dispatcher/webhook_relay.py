"""The relay: each shard's audit stream → the outboxes of the callback endpoints that want its events.

The audit stream is the one source: only what a commit wrote is published, and nothing it wrote is missed.
Per endpoint and shard a cursor (the last stream id queued for it) says where to read on; one step queues an
endpoint's events and moves its cursor (dispatcher.state.webhook_outbox.ENQUEUE), so a relay killed at any
point either queued a batch and moved on, or did neither. Two relays on one shard at once queue each batch
once: the second finds the cursor moved and queues nothing. The archiver trims no stream past the slowest
cursor (dispatcher.record.archive), so a relay that lags finds its entries still there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime

import redis

from dispatcher.core.clock import Clock
from dispatcher.core.webhook_events import event_id, event_of, payload_body
from dispatcher.state.redis_keys import audit_key, webhook_cursors_key, webhook_due_key
from dispatcher.state.store import Store
from dispatcher.state.webhook_endpoints import Endpoint, EndpointRegistry, stream_position
from dispatcher.state.webhook_outbox import Outbox, QueuedEvent


def stream_events(shard: int, items: Sequence[tuple[str, dict[str, str]]]) -> list[tuple[str, QueuedEvent]]:
    """(stream id, event) for every audit entry of these stream entries that is an event, in stream order."""
    found = []
    for stream_id, fields in items:
        entries = json.loads(fields["e"])
        for position, entry in enumerate(entries if isinstance(entries, list) else [entries]):
            mapped = event_of(entry)
            if mapped is None:
                continue
            event_type, data = mapped
            at = datetime.fromisoformat(str(entry.get("at")).replace("Z", "+00:00"))
            account_id = str(entry.get("account_id", ""))
            queued = QueuedEvent(event_id(shard, stream_id, position), event_type, account_id,
                                 payload_body(event_type, at, data))  # fmt: skip
            found.append((stream_id, queued))
    return found


# Stream entries of a shard from the record: (shard, after id, before id or None, count) -> [(id, fields)].
ArchiveReader = Callable[[int, str, str | None, int], list[tuple[str, dict[str, str]]]]


class Relay:
    """Reads up to `batch` stream entries per shard and run past the slowest cursor of the enabled endpoints.

    `archive` (dispatcher.record.archive.ArchivedStream) serves a cursor the stream was trimmed past (the
    archiver holds the streams for the enabled endpoints, so only an operator's trim, or a stream lost
    without its cursors, gets there): the missing entries are read from the record, then the stream."""

    def __init__(
        self,
        store: Store,
        registry: EndpointRegistry,
        outbox: Outbox,
        clock: Clock,
        batch: int = 1000,
        archive: ArchiveReader | None = None,
    ):
        self.store = store
        self.registry = registry
        self.outbox = outbox
        self.clock = clock
        self.batch = batch
        self.archive = archive

    def run(self) -> int:
        """One pass over every shard; the events queued (counted once per endpoint)."""
        endpoints = self.registry.enabled()
        return sum(self.relay_shard(shard, endpoints) for shard in range(self.store.shards)) if endpoints else 0

    def relay_shard(self, shard: int, endpoints: Sequence[Endpoint] | None = None) -> int:
        enabled = list(self.registry.enabled() if endpoints is None else endpoints)
        if not enabled:
            return 0
        cursors = {endpoint.id: self.registry.cursors(endpoint.id).get(shard, "0-0") for endpoint in enabled}
        start = min(cursors.values(), key=stream_position)
        items = self._behind(shard, start) if self.archive is not None else []
        items = items or self.store.redis.xrange(audit_key(shard), "(" + start, "+", count=self.batch)
        if not items:
            return 0
        events = stream_events(shard, items)
        last = items[-1][0]
        now = self.clock.now().timestamp()
        queued = 0
        for endpoint in enabled:
            read = cursors[endpoint.id]
            if stream_position(read) >= stream_position(last):
                continue
            after = stream_position(read)
            mine = [e for sid, e in events if stream_position(sid) > after and endpoint.wants(e.type)]
            if self.outbox.enqueue(endpoint.id, shard, read, last, mine, now):
                queued += len(mine)
        return queued

    def _behind(self, shard: int, start: str) -> list[tuple[str, dict[str, str]]]:
        """The entries after `start` the stream no longer holds, from the record; none when it holds them all."""
        assert self.archive is not None
        first = self.store.redis.xrange(audit_key(shard), "-", "+", count=1)
        if first and stream_position(first[0][0]) <= stream_position(start):
            return []  # the stream reaches back to the cursor
        if not first and stream_position(self._last_written(shard)) <= stream_position(start):
            return []  # nothing written since the cursor
        return self.archive(shard, start, first[0][0] if first else None, self.batch)

    def _last_written(self, shard: int) -> str:
        try:
            return str(self.store.redis.xinfo_stream(audit_key(shard))["last-generated-id"])
        except redis.ResponseError:  # no stream yet
            return "0-0"


def callbacks_due(store: Store, registry: EndpointRegistry, now: float) -> bool:
    """Whether a run of the relay and the sender has work: an enabled endpoint whose breaker is closed with an
    account due, or an audit stream written past an enabled endpoint's cursor. Beat asks this every interval
    and sends `dispatcher.callbacks` only then, so a deployment without endpoints (or with nothing new) puts
    nothing on the broker. No endpoint: one SMEMBERS."""
    endpoints = registry.enabled()
    if not endpoints:
        return False
    pipe = store.redis.pipeline(transaction=False)
    for endpoint in endpoints:
        pipe.zrangebyscore(webhook_due_key(endpoint.id), "-inf", repr(now), start=0, num=1)
        pipe.hgetall(webhook_cursors_key(endpoint.id))
    for shard in range(store.shards):
        pipe.xrevrange(audit_key(shard), count=1)
    replies = pipe.execute()
    count = len(endpoints)
    due, cursors, lasts = replies[0 : 2 * count : 2], replies[1 : 2 * count : 2], replies[2 * count :]
    if any(found and endpoint.open_until <= now for endpoint, found in zip(endpoints, due, strict=True)):
        return True
    for shard, last in enumerate(lasts):
        slowest = min((stream_position(held.get(str(shard), "0-0")) for held in cursors), default=(0, 0))
        if last and stream_position(last[0][0]) > slowest:
            return True
    return False
