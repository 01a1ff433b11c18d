"""The archiver's audit half: each shard's audit stream (redis_keys.audit_key) → audit_entries, then the stream trimmed.

One batch of one shard, in this order:

1. XRANGE the `batch` stream entries after the last one copied (redis_keys.archived_key; everything before it is in
   the record, and whatever of it is still in the stream waits there for a callback relay);
2. in one transaction: make the months' partitions, COPY the stream entries as they are (shard, id, the
   JSON array) into a temporary staging table, and expand them into audit_entries with one
   `INSERT ... SELECT ... jsonb_array_elements ... ON CONFLICT DO NOTHING` (PostgreSQL parses the JSON in
   C; Python only copies strings), then commit;
3. note the last id copied, then XTRIM MINID (exact) just past it, or just past the slowest callback relay's
   cursor if that is older (dispatcher.state.webhook_endpoints): only what is committed leaves Redis, and
   nothing a relay has still to read.

The stream entry id, with the shard and the entry's place in it, is the row's key. A crash before the
commit leaves nothing in PostgreSQL and the stream whole; a crash between the commit and the trim leaves
the stream whole, and the next run's copies of those rows meet the key and are dropped. Nothing is lost or
written twice, and two archivers at once are only wasteful: each trims below what it committed itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from dispatcher.state.metrics import ARCHIVE_BATCHES, ARCHIVED
from dispatcher.state.redis_keys import archived_key
from dispatcher.state.store import Store
from dispatcher.state.webhook_endpoints import EndpointRegistry, stream_position

STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS audit_staging (
    shard integer, stream_ms bigint, stream_seq bigint, payload jsonb
) ON COMMIT DELETE ROWS
"""

EXPAND = """
INSERT INTO audit_entries (shard, stream_ms, stream_seq, position, at, account_id, type, contact_id, channel, entry)
SELECT s.shard, s.stream_ms, s.stream_seq, e.position - 1,
       coalesce((e.entry->>'at')::timestamptz, to_timestamp(s.stream_ms / 1000.0)),
       coalesce(e.entry->>'account_id', ''), coalesce(e.entry->>'type', ''),
       e.entry->>'contact_id', e.entry->>'channel', e.entry
FROM audit_staging s,
     jsonb_array_elements(CASE jsonb_typeof(s.payload) WHEN 'array' THEN s.payload
                          ELSE jsonb_build_array(s.payload) END) WITH ORDINALITY AS e(entry, position)
ON CONFLICT DO NOTHING
"""

MONTHS = """
SELECT DISTINCT date_trunc('month', coalesce((e->>'at')::timestamptz, to_timestamp(stream_ms / 1000.0)), 'UTC')
FROM audit_staging,
     jsonb_array_elements(CASE jsonb_typeof(payload) WHEN 'array' THEN payload ELSE jsonb_build_array(payload) END) e
"""

Fault = Callable[[str], None]  # tests stop a batch at a named point: "copied", "committed"


def _no_fault(point: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Archived:
    """What one run moved: stream entries read, audit rows written (repeats dropped), stream entries trimmed."""

    stream_entries: int = 0
    rows: int = 0
    trimmed: int = 0

    def __add__(self, other: Archived) -> Archived:
        return Archived(
            self.stream_entries + other.stream_entries, self.rows + other.rows, self.trimmed + other.trimmed
        )


def _split(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _after(stream_id: str) -> str:
    """The smallest id greater than `stream_id` (XTRIM MINID keeps ids >= it)."""
    ms, seq = _split(stream_id)
    return f"{ms}-{seq + 1}"


class AuditArchiver:
    """Moves audit stream entries to PostgreSQL in batches of `batch` stream entries per shard."""

    def __init__(self, store: Store, pool: ConnectionPool, batch: int = 5000, fault: Fault = _no_fault):
        self.store = store
        self.pool = pool
        self.batch = batch
        self.fault = fault

    def run(self, max_batches: int | None = None) -> Archived:
        """Archive every shard until its stream is empty, or `max_batches` batches per shard."""
        total = Archived()
        for shard in range(self.store.shards):
            done = 0
            while max_batches is None or done < max_batches:
                moved = self.archive_batch(shard)
                total, done = total + moved, done + 1
                if moved.stream_entries < self.batch:
                    break
        return total

    def archive_batch(self, shard: int) -> Archived:
        key = self.store.audit_key(shard)
        copied = self.store.redis.get(archived_key(shard))
        items = self.store.redis.xrange(key, "-" if copied is None else "(" + copied, "+", count=self.batch)
        if not items:
            return Archived(trimmed=self._trim(shard, copied)) if copied is not None else Archived()
        with self.pool.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(STAGING)
                with cur.copy("COPY audit_staging (shard, stream_ms, stream_seq, payload) FROM STDIN") as copy:
                    for stream_id, fields in items:
                        ms, seq = _split(stream_id)
                        copy.write_row((shard, ms, seq, fields["e"]))
                for (month,) in cur.execute(MONTHS).fetchall():
                    cur.execute("SELECT record_partition('audit_entries', %s)", (month,))
                cur.execute(EXPAND)
                rows = max(cur.rowcount, 0)
                self.fault("copied")
            conn.commit()
        self.fault("committed")
        ARCHIVE_BATCHES.labels(str(shard)).inc()
        ARCHIVED.labels("audit").inc(rows)
        self.store.redis.set(archived_key(shard), items[-1][0])
        return Archived(len(items), rows, self._trim(shard, items[-1][0]))

    def _trim(self, shard: int, copied: str) -> int:
        """Trim the stream past what is copied, but not past the slowest callback relay's cursor."""
        slowest = EndpointRegistry(self.store.redis, self.store.shards).slowest_cursor(shard)
        upto = copied if slowest is None else min(copied, slowest, key=stream_position)
        return int(self.store.redis.xtrim(self.store.audit_key(shard), minid=_after(upto), approximate=False))


ARCHIVED_ENTRIES = """
SELECT stream_ms, stream_seq, jsonb_agg(entry ORDER BY position) FROM audit_entries
WHERE shard = %s AND (stream_ms, stream_seq) > (%s, %s) AND (stream_ms, stream_seq) < (%s, %s)
GROUP BY stream_ms, stream_seq ORDER BY stream_ms, stream_seq LIMIT %s
"""


class ArchivedStream:
    """A shard's audit stream entries as the record holds them, for a reader that fell behind the trim (the
    callbacks' relay): each stream entry rebuilt whole, its entries in their places."""

    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def __call__(self, shard: int, after: str, before: str | None, count: int) -> list[tuple[str, dict[str, str]]]:
        """Up to `count` stream entries of the shard after `after` and before `before` (None: no bound)."""
        low, high = _split(after), _split(before) if before else (2**62, 0)
        with self.pool.connection() as conn:
            rows = conn.execute(ARCHIVED_ENTRIES, (shard, *low, *high, count)).fetchall()
        return [(f"{ms}-{seq}", {"e": json.dumps(entries, default=str)}) for ms, seq, entries in rows]
