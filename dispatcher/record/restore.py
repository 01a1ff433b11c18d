"""Reopening from the record: a moved account goes back into Redis as it left, before anything changes it.

The closed mover (dispatcher.record.closed) leaves only the account's id in its shard's moved set. When the
bank upserts that id again or an event names it, the engine hands the id here: the account's last closure
(its record with its state and the marks of attempts trimmed earlier, the history Redis held, its ended
claims) is written back in one step that also takes the id out of the moved set, and the engine applies the
change to it as to any account in Redis. So a handed-off account stays with the agency, a resolved one
with a new due date reopens as it would have in Redis, and no contact id is planned a second time.

The closure stays in closed_accounts: the readers show it ahead of the live account, and an entry in both
places once. What the move dropped stays dropped: the ids of events already applied and the providers'
status ranks (both lapse within weeks anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from psycopg_pool import ConnectionPool

from dispatcher.models import AccountRecord, HistoryEntry
from dispatcher.store import Store, phone_key

LAST_CLOSURES = """
SELECT DISTINCT ON (account_id) account_id, version, record, history, claims
FROM closed_accounts WHERE account_id = ANY(%s) ORDER BY account_id, closed_at DESC
"""


class ClosureMissing(RuntimeError):
    """Redis says the account moved to the record, and the record has no closure of it."""


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
            raise ClosureMissing(f"accounts moved to the record but not found there: {missing[:5]}")
        for account_id, version, data, history, claims in found.values():
            record = AccountRecord.model_validate(data)
            entries = [HistoryEntry.model_validate(entry) for entry in history]
            # A new version: a writer holding a view from before the move reads again.
            if self.store.restore(account_id, record, int(version) + 1, entries, dict(claims)):
                if record.account.phone:  # the phone index's own slot, as the mover's removal
                    self.store.redis.sadd(phone_key(record.account.phone), account_id)
