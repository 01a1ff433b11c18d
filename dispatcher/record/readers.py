"""Reading the record: an account's archived history and decisions, and per-day counts.

What the API, `dispatcher account show` and the reports call to see past Redis: an account that left
Redis is read from its last closure; one still in Redis has its older closures (if the bank reopened it)
put in front of what Redis holds. The same entry in both places (a move interrupted between the commit
and the delete) is shown once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from dispatcher.models import AccountRecord, HistoryEntry
from dispatcher.store import Loaded, Store

DECISION_TYPES = ("decision", "last_look", "contact")


@dataclass(frozen=True, slots=True)
class Closure:
    """An account as it was when it left Redis."""

    record: AccountRecord
    history: tuple[HistoryEntry, ...]
    claims: dict[str, str]
    closed_at: datetime
    pseudonymised: bool


class RecordReader:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def closures(self, account_id: str) -> list[Closure]:
        """The account's closures, oldest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT record, history, claims, closed_at, pseudonymised_at IS NOT NULL FROM closed_accounts "
                "WHERE account_id = %s ORDER BY closed_at",
                (account_id,),
            ).fetchall()
        return [
            Closure(
                AccountRecord.model_validate(record),
                tuple(HistoryEntry.model_validate(e) for e in history),
                dict(claims),
                closed_at,
                pseudonymised,
            )  # fmt: skip
            for record, history, claims, closed_at, pseudonymised in rows
        ]

    def decisions(self, account_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The account's archived compliance decisions, last looks and send statuses, oldest first."""
        query = "SELECT entry FROM audit_entries WHERE account_id = %s AND type = ANY(%s)"
        params: list[object] = [account_id, list(DECISION_TYPES)]
        if since is not None:
            query += " AND at >= %s"
            params.append(since)
        with self.pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY at, stream_ms, stream_seq, position", params).fetchall()
        return [row[0] for row in rows]

    def day_counts(self, day: date) -> dict[tuple[str, str], int]:
        """(type, channel or '') → audit entries on that UTC day: the per-day report's numbers."""
        start = datetime.combine(day, time(0), tzinfo=UTC)
        end = start + timedelta(days=1)
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT type, coalesce(channel, ''), count(*) FROM audit_entries "
                "WHERE at >= %s AND at < %s GROUP BY 1, 2",
                (start, end),
            ).fetchall()
        return {(kind, channel): count for kind, channel, count in rows}


def merged_history(*parts: Sequence[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    """Histories in order, each entry once (the same JSON in two parts is one entry)."""
    seen: set[str] = set()
    merged = []
    for part in parts:
        for entry in part:
            key = entry.model_dump_json()
            if key not in seen:
                seen.add(key)
                merged.append(entry)
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account read from wherever it is: Redis (live) or the record (closed and moved)."""

    record: AccountRecord
    history: tuple[HistoryEntry, ...]
    claims: Mapping[str, str]  # contact id -> its ClaimStatus
    next_wakeup: datetime | None
    archived: bool


def read_account(store: Store, reader: RecordReader | None, account_id: str) -> AccountView | None:
    """The account with its whole history, live part from Redis and archived part from PostgreSQL."""
    loaded: Loaded = store.load(account_id)
    closures = reader.closures(account_id) if reader is not None else []
    older = [entry for closure in closures for entry in closure.history]
    if loaded.record is not None:
        history = merged_history(older, loaded.history)
        return AccountView(loaded.record, history, store.claims(account_id), store.next_wakeup(account_id), False)
    if not closures:
        return None
    last = closures[-1]
    return AccountView(last.record, merged_history(older), last.claims, None, True)
