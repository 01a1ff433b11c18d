"""The archiver's account half: resolved and handed-off accounts leave Redis for closed_accounts.

An account qualifies once it is closed (resolved or handed off), its last history entry is older than the
retention in Redis (DISPATCHER_CLOSED_RETENTION_DAYS: late provider callbacks and a payment reversal still
find it there), and none of its claims is queued, sending or in doubt (those still have work to do; one in
doubt for good keeps its account in Redis, where the caps and the reconciler's report can see it).

Each run looks at one page of the account keys (SCAN with its cursor kept in Redis), so a run costs the
same however large the book. Order: the row is committed in PostgreSQL first, then one Lua script deletes
the account's keys only if its version is still the one copied; if someone wrote in between (the bank
reopened it), the row is taken back out. A crash between the two leaves the account in both places,
which the readers tolerate (they merge and de-duplicate history), and the next run finishes the move.

The delete leaves the account's id in its shard's moved set (redis_keys.moved_key, in the same step): the one
thing Redis keeps of it. When the bank upserts that id again or an event names it, the engine hands the id
to a RecordRestorer: the account's last closure (its record with its state and the marks of attempts
trimmed earlier, the history Redis held, its ended claims) goes back in one step that also takes the id
out of the moved set, and the change applies to it as to any account in Redis. So a handed-off account
stays with the agency, a resolved one with a new due date reopens as it would have in Redis, and no
contact id is planned a second time. The closure stays here (the readers show it ahead of the live
account, an entry in both places once). The ids of the events it had applied come back with it, so a bank
event resent after the move is still a repeat; the providers' status ranks stay dropped (they lapse within
weeks anyway).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from config.errors import ConfigurationError
from dispatcher.core.models import IN_DOUBT, AccountRecord, ClaimStatus, HistoryEntry
from dispatcher.state.metrics import ARCHIVED
from dispatcher.state.redis_keys import (
    CLOSED_CURSOR,
    account_id_of,
    account_keys,
    account_records_pattern,
    events_key,
    moved_key,
    phone_key,
)
from dispatcher.state.store import Loaded, Store
from dispatcher.state.topology.cluster import scan_page

CURSOR_KEY = CLOSED_CURSOR
BUSY = frozenset({ClaimStatus.QUEUED, *IN_DOUBT})

# KEYS: the account's keys (its record first), then its shard's wake-up and moved sets; ARGV: the version
# copied, its id.
_EVICT = """
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[1] then return 0 end
redis.call('DEL', unpack(KEYS, 1, #KEYS - 2))
redis.call('ZREM', KEYS[#KEYS - 1], ARGV[2])
redis.call('SADD', KEYS[#KEYS], ARGV[2])
return 1
"""

INSERT = """
INSERT INTO closed_accounts (account_id, closed_at, archived_at, status, version, record, history, claims,
                             event_ids)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""


def closed_at(loaded: Loaded) -> datetime | None:
    """When a closed account was closed: its last history entry (the payment, the hand-off)."""
    return loaded.history[-1].at if loaded.history else None


class ClosedMover:
    """Moves closed accounts older than `after` out of Redis, `page` account keys per run."""

    def __init__(self, store: Store, pool: ConnectionPool, after: timedelta, page: int = 1000):
        self.store = store
        self.pool = pool
        self.after = after
        self.page = page
        self._evict = store.redis.register_script(_EVICT)
        self._came_round = False

    def run(self, now: datetime) -> int:
        """One page of the key space; returns how many accounts left Redis."""
        # One cursor per primary on a cluster (dispatcher.state.topology.cluster.scan_page).
        keys, self._came_round = scan_page(self.store.redis, CURSOR_KEY, account_records_pattern(), self.page)
        return self.move([account_id_of(key) for key in keys], now)

    def run_all(self, now: datetime) -> int:
        """Every account once (tests, the benchmark): pages until the cursor comes round."""
        self.store.redis.delete(CURSOR_KEY)
        moved = self.run(now)
        while not self._came_round:
            moved += self.run(now)
        return moved

    def move(self, account_ids: list[str], now: datetime) -> int:
        due = [(loaded, claims) for loaded, claims in self._closed(account_ids, now)]
        if not due:
            return 0
        event_ids = self._event_ids([loaded.account_id for loaded, _ in due])
        rows = [self._row(loaded, claims, ids, now) for (loaded, claims), ids in zip(due, event_ids, strict=True)]
        with self.pool.connection() as conn:
            for loaded, _ in due:
                conn.execute("SELECT record_partition('closed_accounts', %s)", (closed_at(loaded),))
            with conn.cursor() as cur:
                cur.executemany(INSERT, rows)
            conn.commit()
        moved = 0
        for loaded, _ in due:
            if self._evicted(loaded):
                moved += 1
            else:  # written to since it was read (reopened): it stays live, so its closure is not one yet
                with self.pool.connection() as conn:
                    conn.execute(
                        "DELETE FROM closed_accounts WHERE account_id = %s AND closed_at = %s",
                        (loaded.account_id, closed_at(loaded)),
                    )
        ARCHIVED.labels("closed_accounts").inc(moved)
        return moved

    def _closed(self, account_ids: list[str], now: datetime) -> list[tuple[Loaded, dict[str, ClaimStatus]]]:
        found = []
        for loaded in self.store.load_many(account_ids):
            record, when = loaded.record, closed_at(loaded)
            if record is None or record.state.status == "active" or when is None or now - when < self.after:
                continue
            claims = self.store.claims(loaded.account_id)
            if not BUSY.intersection(claims.values()):
                found.append((loaded, claims))
        return found

    def _event_ids(self, account_ids: list[str]) -> list[dict[str, str]]:
        """Per account, the ids of the events it applied with their lapse scores as text ('inf' for the bank's
        own), read in one round trip."""
        pipe = self.store.redis.pipeline(transaction=False)
        for account_id in account_ids:
            pipe.zrange(events_key(account_id), 0, -1, withscores=True)
        return [{event_id: repr(score) for event_id, score in scored} for scored in pipe.execute()]

    @staticmethod
    def _row(
        loaded: Loaded, claims: dict[str, ClaimStatus], event_ids: dict[str, str], now: datetime
    ) -> tuple[object, ...]:
        assert loaded.record is not None
        history = [json.loads(entry.model_dump_json(exclude_defaults=True)) for entry in loaded.history]
        return (
            loaded.account_id, closed_at(loaded), now, loaded.record.state.status, int(loaded.version),
            Jsonb(json.loads(loaded.record.model_dump_json(exclude_defaults=True))), Jsonb(history), Jsonb(claims),
            Jsonb(event_ids),
        )  # fmt: skip

    def _evicted(self, loaded: Loaded) -> bool:
        account_id = loaded.account_id
        keys = list(account_keys(account_id))
        shard = self.store.shard_of(account_id)
        keys += [self.store.wake_key(shard), moved_key(shard)]
        if not self._evict(keys=keys, args=[loaded.version, account_id]):
            return False
        phone = loaded.record.account.phone if loaded.record else None
        if phone:  # the phone index is a hint that lookups re-check; its own slot, so a step of its own
            self.store.redis.srem(phone_key(phone), account_id)
        return True


LAST_CLOSURES = """
SELECT DISTINCT ON (account_id) account_id, version, record, history, claims, event_ids
FROM closed_accounts WHERE account_id = ANY(%s) ORDER BY account_id, closed_at DESC
"""


class ClosureMissing(ConfigurationError, RuntimeError):
    """Redis says the account moved to the record, and the record has no closure of it: the process reads
    another record than the archiver wrote (DISPATCHER_DATABASE_URL)."""


class RecordRestorer:
    """Puts moved accounts back into Redis from their last closure. `pool` is the record's pool, or what
    opens it on first use (most processes never meet a moved account)."""

    def __init__(self, store: Store, pool: ConnectionPool | Callable[[], ConnectionPool]):
        self.store = store
        self._pool = pool

    def pool(self) -> ConnectionPool:
        if not isinstance(self._pool, ConnectionPool):
            self._pool = self._pool()
        return self._pool

    def __call__(self, account_ids: Sequence[str]) -> None:
        with self.pool().connection() as conn:
            rows = conn.execute(LAST_CLOSURES, (list(account_ids),)).fetchall()
        found = {row[0]: row for row in rows}
        missing = [account_id for account_id in account_ids if account_id not in found]
        if missing:
            raise ClosureMissing(
                f"accounts {missing[:5]} were moved to the record but are not in this one: is "
                "DISPATCHER_DATABASE_URL the record the archiver writes? (refusing to start them afresh)"
            )
        for account_id, version, data, history, claims, event_ids in found.values():
            record = AccountRecord.model_validate(data)
            entries = [HistoryEntry.model_validate(entry) for entry in history]
            # A new version: a writer holding a view from before the move reads again.
            restored = self.store.restore(account_id, record, int(version) + 1, entries, dict(claims), event_ids)
            if restored and record.account.phone:  # the phone index's own slot, as the mover's removal
                self.store.redis.sadd(phone_key(record.account.phone), account_id)
