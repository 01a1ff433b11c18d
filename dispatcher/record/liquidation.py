"""Liquidation per agency and placement month, read from the record: what the agencies recovered over what was
placed with them.

    placed          an account's first agency hand-off that went (its `sent` contact entry on the agency
                    channel): the agency its attempt names, the month it went (UTC), and the balance its case
                    file carried (kept on the entry as `placed_balance`, with its currency)
    recovered       the payments recorded on that account after its placement, up to the horizon
    liquidation     recovered / placed balance, per agency, placement month and currency

A hand-off confirmed by reconciliation (the agency's lookup found it after an answer that never came) has no
case-file balance on its entry: it counts as a case, under `cases_without_balance`, and its recoveries count,
but it adds nothing to the placed balance. Like the variants report, this covers what the archiver has moved to
PostgreSQL (the last archive interval's entries are still in Redis), and says up to when it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg_pool import ConnectionPool

_ENTRIES = """
SELECT e.entry
FROM audit_entries e
WHERE e.account_id IN (SELECT account_id FROM audit_entries WHERE type = 'contact' AND entry->>'channel' = 'agency'
                       AND entry->>'status' = 'sent' AND at <= %(horizon)s)
  AND e.at <= %(horizon)s
  AND ((e.type = 'contact' AND e.entry->>'channel' = 'agency' AND e.entry->>'status' = 'sent')
       OR (e.type = 'event' AND e.entry->>'event' = 'payment'))
ORDER BY e.at, e.stream_ms, e.stream_seq, e.position
"""


@dataclass
class Placements:
    """One agency's cases of one placement month and currency."""

    agency: str
    month: str
    currency: str
    cases: int = 0
    cases_without_balance: int = 0
    placed_balance: Decimal = Decimal(0)
    recovered: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        rate = self.recovered / self.placed_balance if self.placed_balance > 0 else None
        return {
            "agency": self.agency, "month": self.month, "currency": self.currency, "cases": self.cases,
            "cases_without_balance": self.cases_without_balance, "placed_balance": str(self.placed_balance),
            "recovered": str(self.recovered), "liquidation_rate": None if rate is None else round(float(rate), 6),
        }  # fmt: skip


def _money(value: object) -> Decimal | None:
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def liquidation(entries: Iterable[Mapping[str, Any]], horizon: datetime) -> dict[str, Any]:
    """The report from audit entries in time order: each account's first hand-off places it; the payments
    after it are its agency's recoveries."""
    placed: dict[str, Placements] = {}  # account id -> the row its placement counts in
    rows: dict[tuple[str, str, str], Placements] = {}
    for entry in entries:
        account_id = str(entry["account_id"])
        if entry.get("type") == "contact":
            if account_id in placed:  # a case is placed once; a later hand-off of the same account adds nothing
                continue
            at = entry["at"] if isinstance(entry["at"], str) else entry["at"].isoformat()
            balance = _money(entry.get("placed_balance"))
            key = (str(entry.get("provider") or "agency"), at[:7], str(entry.get("currency") or ""))
            row = rows.get(key) or rows.setdefault(key, Placements(*key))
            row.cases += 1
            if balance is None:
                row.cases_without_balance += 1
            else:
                row.placed_balance += balance
            placed[account_id] = row
        elif account_id in placed:  # a payment after the account's placement
            amount = _money((entry.get("detail") or {}).get("amount"))
            placed[account_id].recovered += amount or Decimal(0)
    ordered = sorted(rows.values(), key=lambda row: (row.agency, row.month, row.currency))
    return {"horizon": horizon.isoformat(), "placements": [row.as_json() for row in ordered]}


def liquidation_entries(pool: ConnectionPool, horizon: datetime) -> Iterator[dict[str, Any]]:
    """The hand-offs and payments of every placed account, oldest first, from a server-side cursor."""
    with pool.connection() as conn, conn.cursor(name="agency_liquidation") as cursor:
        cursor.itersize = 10_000
        cursor.execute(_ENTRIES, {"horizon": horizon})
        for (entry,) in cursor:
            yield entry


def read_liquidation(pool: ConnectionPool, horizon: datetime) -> dict[str, Any]:
    """The report over everything archived up to `horizon`."""
    return liquidation(liquidation_entries(pool, horizon), horizon)
