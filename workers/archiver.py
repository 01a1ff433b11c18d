"""The archiver task (`dispatcher.archive`, on beat every minute): the audit streams and closed accounts
move from Redis to the record in PostgreSQL, with history no plan reads any more, and expired personal
data is erased there.

Each worker process opens its own pool on first use (after the fork) and brings the schema up to date
(yoyo takes a lock, so many processes at once are fine). With no DISPATCHER_DATABASE_URL the process
connects to the embedded server under the state directory that its owner runs (`dispatcher up`, or
`dispatcher postgres` for hand-run workers); it never starts one, since a prefork child killed by a signal
could not stop it. With none running the run fails, says so, and the next one (a minute later) tries again.
"""

from __future__ import annotations

from datetime import timedelta

from psycopg_pool import ConnectionPool

from config.settings import Settings
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.closed import ClosedMover
from dispatcher.record.db import RecordUnavailable, open_record, record_url
from dispatcher.record.history import HistoryTrimmer
from dispatcher.record.retention import pseudonymise_closed
from workers.app import app
from workers.process_runtime import WorkerRuntime, worker_runtime

# Batches per shard per run: 20 x 5000 stream entries is about 2 s of COPY; a backlog drains over several
# runs instead of one run outliving the task's time limit.
MAX_BATCHES = 20

_pool: ConnectionPool | None = None


def record_pool(settings: Settings) -> ConnectionPool:
    """This process's pool on the record, migrated on first use."""
    global _pool
    if _pool is None:
        url = record_url(settings.database_url, settings.state_dir)
        if url is None:
            raise RecordUnavailable(
                f"no record to archive to: no embedded record runs in {settings.state_dir.resolve() / 'pg'}; start "
                "`dispatcher postgres` (or run `dispatcher up`), or set DISPATCHER_DATABASE_URL"
            )
        _pool = open_record(url)
    return _pool


def archive_once(runtime: WorkerRuntime, pool: ConnectionPool) -> dict[str, int]:
    """One archiver run: audit, then history older than the planner's look-back, closed accounts, retention."""
    settings, store = runtime.settings, runtime.engine.store
    now = runtime.engine.clock.now()
    audit = AuditArchiver(store, pool, settings.archive_batch).run(max_batches=MAX_BATCHES)
    trimmed = HistoryTrimmer(store, pool, runtime.engine.strategy, variants=runtime.engine.variants).run(now)
    moved = ClosedMover(store, pool, timedelta(days=settings.closed_retention_days)).run(now)
    erased = pseudonymise_closed(pool, now, timedelta(days=settings.personal_data_retention_days))
    return {
        "audit_rows": audit.rows,
        "stream_entries": audit.trimmed,
        "history_entries": trimmed.entries,
        "accounts_moved": moved,
        "erased": erased,
    }


@app.task(name="dispatcher.archive")
def archive() -> dict[str, int]:
    """Move audit entries and closed accounts from Redis to PostgreSQL; erase expired personal data."""
    runtime = worker_runtime()
    return archive_once(runtime, record_pool(runtime.settings))
