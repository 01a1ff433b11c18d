"""Results per variant, read from the record: the audit entries of every account whose first plan named its
variant (the `variant` entries, dispatcher.core.audit.variant_audit), its events and its sends, in the order
they happened; the core (dispatcher.core.experiments.results) makes the figures of them.

The report covers what the archiver has moved to PostgreSQL: entries still in Redis's audit streams (the
last archive interval's) are not in it, and its horizon says up to when it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool

from dispatcher.core.experiments.results import AccountFacts, account_facts

_ENTRIES = """
SELECT e.entry
FROM audit_entries e
WHERE e.account_id IN (SELECT account_id FROM audit_entries WHERE type = 'variant' AND entry->>'change' = 'assigned'
                       AND at <= %(horizon)s)
  AND e.at <= %(horizon)s
  AND (e.type IN ('variant', 'event') OR (e.type = 'contact' AND e.entry->>'status' = 'sent'))
ORDER BY e.at, e.stream_ms, e.stream_seq, e.position
"""


def variant_entries(pool: ConnectionPool, horizon: datetime) -> Iterator[dict[str, Any]]:
    """The audit entries the results read, oldest first, streamed from a server-side cursor."""
    with pool.connection() as conn, conn.cursor(name="variant_results") as cursor:
        cursor.itersize = 10_000
        cursor.execute(_ENTRIES, {"horizon": horizon})
        for (entry,) in cursor:
            yield entry


def archived_facts(pool: ConnectionPool, horizon: datetime) -> list[AccountFacts]:
    """The facts of every account archived up to `horizon`, for dispatcher.core.experiments.results's
    variant_report."""
    return account_facts(variant_entries(pool, horizon))
