"""The archiver's history half: entries no plan reads any more (dispatcher.record.lookback) leave an
account's Redis list for history_entries, so Redis memory per account stays bounded however long it lives.

Each run looks at one page of the account keys (SCAN with its own cursor, as the closed-account mover).
Per account, in this order: the entries to drop are computed from what was read (record, version, history,
claims), with the ended claims of the attempts among them (sent or failed; not ad-hoc, letter or agency:
see _ended_claim): a plan never names those contacts again (the record's marks count them as attempted,
whatever the due date does later: lookback.marked), so the claim has nothing left to guard. Rows
of any pass that never reached Redis (newer than the last pass Redis names, `t`) are deleted and this
pass's rows written, and committed; then Store.trim_history drops the same entries and claims only if the
account is still at the version read. A conflict takes the pass's rows back out; a crash before the
trim leaves rows that the next run deletes first. So every entry is in Redis, in the record, or both
(readers de-duplicate) and never in neither.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from dispatcher.core.experiments.arms import VariantSet
from dispatcher.core.models import Channel, HistoryEntry
from dispatcher.core.stages import ADHOC_STAGE
from dispatcher.core.strategy import Strategy
from dispatcher.record.lookback import FINAL_CLAIMS, marked, trimmable
from dispatcher.state.metrics import ARCHIVED
from dispatcher.state.redis_keys import HISTORY_CURSOR, account_id_of, account_records_pattern, claims_key
from dispatcher.state.store import Loaded, Store
from dispatcher.state.topology.cluster import scan_page

CURSOR_KEY = HISTORY_CURSOR
# SCAN COUNT per run: about a sixth of the keys are account records, so ~1,700 accounts a run; on beat every
# minute a book of a million accounts comes round in about ten hours, well inside a day.
PAGE = 10_000

INSERT = """
INSERT INTO history_entries (account_id, trimmed_at, position, kept_before, at, entry, claim)
VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""

# Passes after the last one Redis names (or, with none named, after the account's last closure: a reopened
# account's earlier passes belong to that closure).
FORGET_UNAPPLIED = """
DELETE FROM history_entries h WHERE h.account_id = %(id)s AND h.trimmed_at > coalesce(
    %(last)s::timestamptz, (SELECT max(archived_at) FROM closed_accounts c WHERE c.account_id = %(id)s), '-infinity')
"""


@dataclass(frozen=True, slots=True)
class Trimmed:
    accounts: int = 0
    entries: int = 0


class HistoryTrimmer:
    """Moves history entries older than the planner's look-back to PostgreSQL, `page` account keys a run."""

    def __init__(
        self, store: Store, pool: ConnectionPool, strategy: Strategy, page: int = PAGE,
        variants: VariantSet | None = None,
    ) -> None:  # fmt: skip
        """`variants`: what the planner reads is judged by each account's own variant's strategy (its ladder and
        look-back); without it, `strategy`'s for every account."""
        self.store = store
        self.pool = pool
        self.strategy = strategy
        self.page = page
        self.variants = variants
        self._came_round = False

    def run(self, now: datetime) -> Trimmed:
        # One cursor per primary on a cluster (dispatcher.state.topology.cluster.scan_page).
        keys, self._came_round = scan_page(self.store.redis, CURSOR_KEY, account_records_pattern(), self.page)
        return self.trim([account_id_of(key) for key in keys], now)

    def run_all(self, now: datetime) -> Trimmed:
        """Every account once (tests, the benchmark): pages until the cursor comes round."""
        self.store.redis.delete(CURSOR_KEY)
        total = self.run(now)
        while not self._came_round:
            found = self.run(now)
            total = Trimmed(total.accounts + found.accounts, total.entries + found.entries)
        return total

    def trim(self, account_ids: Sequence[str], now: datetime) -> Trimmed:
        due = []
        found = [loaded for loaded in self.store.load_many(list(account_ids)) if loaded.record and loaded.history]
        pipe = self.store.redis.pipeline(transaction=False)
        for loaded in found:  # after the history: a claim seen ended there stays ended
            pipe.hgetall(claims_key(loaded.account_id))
        for loaded, claims in zip(found, pipe.execute(), strict=True):
            assert loaded.record is not None
            strategy = (
                self.strategy
                if self.variants is None
                else self.variants.arm_of(loaded.record, loaded.account_id).strategy
            )
            drop = trimmable(loaded.record, loaded.history, claims, strategy, now)
            if drop:
                ended = {i: claims[c] for i in drop if (c := _ended_claim(loaded.history[i], claims)) is not None}
                due.append(_Pass(loaded, drop, self._pass_at(loaded.account_id, now), ended))
        if not due:
            return Trimmed()
        self._write(due)
        accounts = entries = 0
        for one in due:
            account_id = one.loaded.account_id
            gone = [one.loaded.history[index].contact_id or "" for index in one.ended]
            assert one.loaded.record is not None
            record = marked(one.loaded.record, one.loaded.history, one.drop)
            changed = None if record is one.loaded.record else record
            if self.store.trim_history(account_id, one.loaded.version, one.drop, one.at.isoformat(), gone, changed):
                accounts, entries = accounts + 1, entries + len(one.drop)
            else:  # written to since it was read: this pass did not happen
                with self.pool.connection() as conn:
                    conn.execute(
                        "DELETE FROM history_entries WHERE account_id = %s AND trimmed_at = %s", (account_id, one.at)
                    )
        ARCHIVED.labels("history").inc(entries)
        return Trimmed(accounts, entries)

    def _pass_at(self, account_id: str, now: datetime) -> datetime:
        """The pass's name: now, or just after the last pass if that was no earlier (a clock standing still)."""
        last = self.store.last_trim(account_id)
        if last is None:
            return now
        return max(now, datetime.fromisoformat(last) + timedelta(microseconds=1))

    def _write(self, due: list[_Pass]) -> None:
        rows = []
        months = set()
        for one in due:
            for position, index in enumerate(one.drop):
                entry = one.loaded.history[index]
                body = Jsonb(json.loads(entry.model_dump_json(exclude_defaults=True)))
                claim = one.ended.get(index)
                rows.append((one.loaded.account_id, one.at, position, index - position, entry.at, body, claim))
                months.add(entry.at.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
        with self.pool.connection() as conn:
            for one in due:  # rows of passes that never reached Redis (a crash before the trim)
                last = self.store.last_trim(one.loaded.account_id)
                conn.execute(FORGET_UNAPPLIED, {"id": one.loaded.account_id, "last": last})
            for month in sorted(months):
                conn.execute("SELECT record_partition('history_entries', %s)", (month,))
            with conn.cursor() as cur:
                cur.executemany(INSERT, rows)
            conn.commit()


@dataclass(frozen=True, slots=True)
class _Pass:
    loaded: Loaded
    drop: list[int]
    at: datetime
    ended: dict[int, str]  # index of a dropped attempt -> its ended claim, which leaves Redis with it


# A letter's return and an agency's word can come weeks after the send; their claims stay (few, and small).
_LATE_NEWS = frozenset({Channel.LETTER, Channel.AGENCY})


def _ended_claim(entry: HistoryEntry, claims: Mapping[str, str]) -> str | None:
    """The contact id whose claim goes with this dropped entry: an attempt's, once the claim has ended.
    Ad-hoc claims stay: they answer a request that reuses a key (dispatcher.adhoc)."""
    contact_id = entry.contact_id
    if entry.kind != "attempt" or contact_id is None or entry.channel in _LATE_NEWS:
        return None
    if f"/{ADHOC_STAGE}/" in contact_id or claims.get(contact_id) not in FINAL_CLAIMS:
        return None
    return contact_id
