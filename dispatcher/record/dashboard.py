"""The operations dashboard's figures, read from the record: what the archiver has copied out of Redis (a
minute or so behind the live state), over a window of days.

- the stage funnel over time: accounts reached per stage and UTC day (a sent contact; its stage is the
  second part of its contact id, account/stage/step/occurrence);
- contact attempts by channel, provider and how they ended (sent, failed, unknown);
- provider outcomes by channel and kind (delivered, undelivered, answered, bounced, ...);
- deferrals and denials by the rule that decided them, at planning and at the last look.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

ENDED = ("sent", "failed", "unknown")

_FUNNEL = """
    SELECT to_char(date_trunc('day', at AT TIME ZONE 'UTC'), 'YYYY-MM-DD') AS day,
           split_part(contact_id, '/', 2) AS stage, count(DISTINCT account_id)
    FROM audit_entries
    WHERE type = 'contact' AND entry->>'status' = 'sent' AND at > %s AND at <= %s
    GROUP BY 1, 2 ORDER BY 1, 2
"""
_ATTEMPTS = """
    SELECT coalesce(channel, ''), coalesce(entry->>'provider', channel, ''), entry->>'status', count(*)
    FROM audit_entries
    WHERE type = 'contact' AND entry->>'status' = ANY(%s) AND at > %s AND at <= %s
    GROUP BY 1, 2, 3 ORDER BY 4 DESC
"""
_OUTCOMES = """
    SELECT coalesce(channel, ''), entry->>'outcome', count(*)
    FROM audit_entries
    WHERE type = 'outcome' AND at > %s AND at <= %s
    GROUP BY 1, 2 ORDER BY 3 DESC
"""
_RULES = """
    SELECT entry->>'verdict', coalesce(entry->>'rule', ''), type, count(*)
    FROM audit_entries
    WHERE type IN ('decision', 'last_look') AND entry->>'verdict' IN ('defer', 'deny') AND at > %s AND at <= %s
    GROUP BY 1, 2, 3 ORDER BY 4 DESC
"""


@dataclass(frozen=True)
class DashboardFigures:
    since: datetime
    until: datetime
    funnel: list[dict[str, Any]]  # {day, stage, accounts}
    attempts: list[dict[str, Any]]  # {channel, provider, status, count}
    outcomes: list[dict[str, Any]]  # {channel, outcome, count}
    rules: list[dict[str, Any]]  # {verdict, rule, where, count}


def dashboard_figures(pool: ConnectionPool, since: datetime, until: datetime) -> DashboardFigures:
    """Every figure of the window (since, until] in one connection; four grouped scans of the month
    partitions the window touches (the BRIN index on `at` keeps each to those days)."""
    with pool.connection() as conn:
        funnel = conn.execute(_FUNNEL, (since, until)).fetchall()
        attempts = conn.execute(_ATTEMPTS, (list(ENDED), since, until)).fetchall()
        outcomes = conn.execute(_OUTCOMES, (since, until)).fetchall()
        rules = conn.execute(_RULES, (since, until)).fetchall()
    return DashboardFigures(
        since=since,
        until=until,
        funnel=[{"day": day, "stage": stage, "accounts": n} for day, stage, n in funnel],
        attempts=[{"channel": c, "provider": p, "status": s, "count": n} for c, p, s, n in attempts],
        outcomes=[{"channel": c, "outcome": o, "count": n} for c, o, n in outcomes],
        rules=[{"verdict": v, "rule": r, "where": w, "count": n} for v, r, w, n in rules],
    )
