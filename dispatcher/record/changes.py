"""The change feed (GET /v1/changes): the same events as the outcome callbacks, read on demand from the
audit trail: the record (PostgreSQL) for what the archiver has moved, then the Redis streams for the tail.

The cursor is opaque to the caller: per shard, the position of the last event it was given (stream entry id
and place in the entry), base64url of a small JSON. Positions only grow, so a cursor given back reads on
exactly after what it had, whatever was archived or trimmed in between; a page holds events of several
shards, each shard's in its own order, so each account's events come in order (an account is one shard's).

Kept for `retention` (DISPATCHER_CHANGES_RETENTION_DAYS), measured on the stream ids (the wall clock when
the fact was written): a cursor older than that by more than a day's grace, on a shard written since, is
expired (CursorExpired, a 410 naming the oldest valid cursor); no cursor starts at the oldest valid one. A
shard read to its end moves on to the last id Redis handed out, so a quiet shard's cursor does not age.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

from config.errors import InputRejected
from dispatcher.core.webhook_events import event_id, event_of, payload_body
from dispatcher.state.store import Store

Position = tuple[int, int, int]  # stream ms, stream seq, place in the stream entry
# Entry types that may be events (the rest, decisions and last looks, are most of the trail).
_EVENT_ENTRY_TYPES = ("contact", "outcome", "event", "stage", "status", "hold")
_ARCHIVE_PAGE = 2000
GRACE_SECONDS = 86_400
_PAST_EVERY_PLACE = 1 << 30  # a place after every entry of a stream entry (one holds a commit's few)
_SCAN = 10_000  # stream entries one page reads at most per shard (most are decisions): the cursor moves past them


class CursorInvalid(InputRejected, ValueError):
    def __init__(self, message: str):
        super().__init__(f"after: {message}")
        self.field = "after"


class CursorExpired(InputRejected, LookupError):
    """The cursor is older than the feed keeps; `oldest` is the oldest valid one."""

    def __init__(self, oldest: str, days: int):
        super().__init__(f"after: the cursor is older than the feed keeps ({days} days); the oldest valid: {oldest}")
        self.field = "after"
        self.oldest = oldest


def encode_cursor(positions: dict[int, Position]) -> str:
    text = json.dumps({str(shard): f"{ms}-{seq}.{place}" for shard, (ms, seq, place) in sorted(positions.items())})
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shards: int) -> dict[int, Position]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        positions = {}
        for shard, position in raw.items():
            stream_id, _, place = position.partition(".")
            ms, _, seq = stream_id.partition("-")
            positions[int(shard)] = (int(ms), int(seq), int(place))
    except (ValueError, TypeError, AttributeError, binascii.Error):
        raise CursorInvalid("not a cursor this feed gave; start without one") from None
    if set(positions) != set(range(shards)):
        raise CursorInvalid("the cursor names other shards than the deployment has; start without one")
    return positions


@dataclass(frozen=True, slots=True)
class Change:
    id: str
    type: str
    account_id: str
    timestamp: str
    data: dict[str, Any]
    position: Position
    shard: int


class ChangeFeed:
    def __init__(
        self, store: Store, pool: ConnectionPool | None, retention_days: int, wallclock: Callable[[], float] = time.time
    ):
        self.store = store
        self.pool = pool
        self.retention_days = retention_days
        self.wallclock = wallclock

    def oldest(self) -> dict[int, Position]:
        since = int((self.wallclock() - self.retention_days * 86400) * 1000)
        return dict.fromkeys(range(self.store.shards), (since, 0, -1))

    def page(self, after: str | None, types: Collection[str], limit: int) -> tuple[list[Change], str]:
        """Up to `limit` events after the cursor (of `types`, or every type), and the cursor to read on from."""
        oldest = self.oldest()
        written = self._last_written()
        start = oldest if after is None else decode_cursor(after, self.store.shards)
        # Expired: older than the feed keeps (a day's grace, so the oldest valid cursor named stays valid to
        # use), and something was written after it (a quiet shard's is not).
        limit_ms = oldest[0][0] - GRACE_SECONDS * 1000
        if any(start[shard][0] < limit_ms and written[shard] > start[shard] for shard in start):
            raise CursorExpired(encode_cursor(oldest), self.retention_days)
        found: list[Change] = []
        scanned: dict[int, Position] = {}
        for shard in range(self.store.shards):
            changes, scanned[shard] = self._shard(shard, start[shard], set(types), limit)
            found += changes
        found.sort(key=lambda change: (change.position[0], change.shard, change.position[1:]))
        page, left = found[:limit], found[limit:]
        positions = dict(start)
        for change in reversed(left):  # a shard with events left over reads on just before its first one
            ms, seq, place = change.position
            positions[change.shard] = (ms, seq, place - 1)
        cut = {change.shard for change in left}
        for shard in range(self.store.shards):  # a shard wholly in the page reads on after what it scanned,
            if shard not in cut:  # and after the last id written before the read: no later write comes before it
                positions[shard] = max(positions[shard], scanned[shard], written[shard])
        return page, encode_cursor(positions)

    def _last_written(self) -> dict[int, Position]:
        """Per shard, just past the last stream id Redis has handed out (trimmed or not): every later entry
        sorts after it."""
        pipe = self.store.redis.pipeline(transaction=False)
        for shard in range(self.store.shards):
            pipe.xinfo_stream(self.store.audit_key(shard))
        found = {}
        for shard, info in enumerate(pipe.execute(raise_on_error=False)):
            last = "0-0" if isinstance(info, Exception) else str(info["last-generated-id"])
            found[shard] = _position(last, _PAST_EVERY_PLACE)
        return found

    def _shard(self, shard: int, after: Position, types: set[str], limit: int) -> tuple[list[Change], Position]:
        """The shard's events after `after` (at least `limit` when there are), and the position scanned to."""
        redis = self.store.redis
        key = self.store.audit_key(shard)
        first = redis.xrange(key, "-", "+", count=1)
        found: list[Change] = []
        if self.pool is not None and (not first or _position(first[0][0], 0) > after):
            found, after = self._archived(shard, after, types, limit)
        scanned = 0
        start = f"{after[0]}-{after[1]}"
        while len(found) < limit and scanned < _SCAN:
            items = redis.xrange(key, start, "+", count=500)
            for stream_id, fields in items:
                entries = json.loads(fields["e"])
                for place, entry in enumerate(entries if isinstance(entries, list) else [entries]):
                    position = _position(stream_id, place)
                    if position > after:
                        change = _change(shard, position, entry, types)
                        if change is not None:
                            found.append(change)
                        after = position
            scanned += len(items)
            if len(items) < 500:
                break
            start = "(" + items[-1][0]
        return found, after

    def _archived(self, shard: int, after: Position, types: set[str], limit: int) -> tuple[list[Change], Position]:
        """Events of the shard in the record after `after`, and the position read up to."""
        assert self.pool is not None
        found: list[Change] = []
        with self.pool.connection() as conn:
            while len(found) < limit:
                rows = conn.execute(
                    "SELECT stream_ms, stream_seq, position, entry FROM audit_entries WHERE shard = %s "
                    "AND (stream_ms, stream_seq, position) > (%s, %s, %s) AND type = ANY(%s) "
                    "ORDER BY stream_ms, stream_seq, position LIMIT %s",
                    (shard, *after, list(_EVENT_ENTRY_TYPES), _ARCHIVE_PAGE),
                ).fetchall()
                for ms, seq, place, entry in rows:
                    after = (int(ms), int(seq), int(place))
                    change = _change(shard, after, entry, types)
                    if change is not None:
                        found.append(change)
                if len(rows) < _ARCHIVE_PAGE:
                    break
        return found, after


def _position(stream_id: str, place: int) -> Position:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0), place


def _change(shard: int, position: Position, entry: dict[str, Any], types: set[str]) -> Change | None:
    mapped = event_of(entry)
    if mapped is None or (types and mapped[0] not in types):
        return None
    event_type, data = mapped
    at = datetime.fromisoformat(str(entry.get("at")).replace("Z", "+00:00"))
    body = json.loads(payload_body(event_type, at, data))
    stream_id = f"{position[0]}-{position[1]}"
    return Change(event_id(shard, stream_id, position[2]), event_type, str(data.get("account_id", "")),
                  body["timestamp"], body["data"], position, shard)  # fmt: skip
