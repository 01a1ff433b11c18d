"""Retention: a closed account's personal data is erased from the record once the retention period has
passed since it closed (DISPATCHER_PERSONAL_DATA_RETENTION_DAYS); the audit of what was sent stays.

Erased: every field of dispatcher.core.privacy.personal_data.PERSONAL_FIELDS (the list log masking and Flower's masking
read too): the account record's (the debtor's name, replaced by a marker, phone, email and postal address),
and any in its history details (closed or trimmed) and archived audit entries. Kept: the
account id (the bank's own reference, which the bank can unlink), balances, dates, stages, and every
contact id, channel, status, decision and rule with its time, so "what was sent, when, and under which
rule" still answers. Each run erases at most `batch` accounts in one transaction; the partial index on closed_accounts
(pseudonymised_at IS NULL) keeps finding them cheap however long the record grows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg_pool import ConnectionPool

from dispatcher.core.models import Account
from dispatcher.core.privacy.personal_data import PERSONAL_FIELDS
from dispatcher.state.metrics import ARCHIVED

ERASED_NAME = "(erased)"
PERSONAL_KEYS = sorted(PERSONAL_FIELDS)
# The account's own personal fields; its name is required, so it is replaced by ERASED_NAME rather than dropped.
ACCOUNT_FIELDS = sorted(PERSONAL_FIELDS.intersection(Account.model_fields))

_DUE = """
SELECT account_id, closed_at FROM closed_accounts
WHERE pseudonymised_at IS NULL AND closed_at < %(cutoff)s ORDER BY closed_at LIMIT %(batch)s
"""

_ERASE_ACCOUNT = """
UPDATE closed_accounts SET
    record = jsonb_set(
        jsonb_set(record, '{account}', (record->'account') - %(account_fields)s::text[]),
        '{account,name}', to_jsonb(%(marker)s::text)
    ),
    history = coalesce((
        SELECT jsonb_agg(CASE WHEN e ? 'detail' THEN jsonb_set(e, '{detail}', (e->'detail') - %(keys)s::text[])
                         ELSE e END ORDER BY n)
        FROM jsonb_array_elements(history) WITH ORDINALITY AS h(e, n)
    ), '[]'::jsonb),
    pseudonymised_at = %(now)s
WHERE account_id = %(account_id)s AND closed_at = %(closed_at)s
"""

_ERASE_AUDIT = """
UPDATE audit_entries SET entry = entry - %(keys)s::text[]
WHERE account_id = %(account_id)s AND at <= %(closed_at)s AND entry ?| %(keys)s::text[]
"""


_ERASE_HISTORY = """
UPDATE history_entries SET entry = jsonb_set(entry, '{detail}', (entry->'detail') - %(keys)s::text[])
WHERE account_id = %(account_id)s AND at <= %(closed_at)s AND entry ? 'detail'
"""


def pseudonymise_closed(pool: ConnectionPool, now: datetime, after: timedelta, batch: int = 500) -> int:
    """Erase the personal data of accounts closed more than `after` ago; returns how many."""
    with pool.connection() as conn:
        due = conn.execute(_DUE, {"cutoff": now - after, "batch": batch}).fetchall()
        for account_id, closed_at in due:
            params = {
                "account_id": account_id, "closed_at": closed_at, "now": now, "marker": ERASED_NAME,
                "keys": PERSONAL_KEYS, "account_fields": ACCOUNT_FIELDS,
            }  # fmt: skip
            conn.execute(_ERASE_ACCOUNT, params)
            conn.execute(_ERASE_AUDIT, params)
            conn.execute(_ERASE_HISTORY, params)
        conn.commit()
    ARCHIVED.labels("pseudonymised").inc(len(due))
    return len(due)
