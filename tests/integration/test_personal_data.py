"""One list of personal fields (dispatcher.core.privacy.personal_data): every field the record's erasure
clears is masked in the logs and in the task arguments Flower shows, and every field they mask is erased.
Each set is found by running the real thing on the same fields: the logging processor configured as a
process configures it, a worker's task request as Flower sees it, and the retention run on a real
PostgreSQL after the real archiver moved the account there."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
import structlog
from psycopg_pool import ConnectionPool

from config.settings import load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.core.models import HistoryEntry
from dispatcher.core.privacy.personal_data import PERSONAL_FIELDS
from dispatcher.engine import Engine
from dispatcher.logging import configure_logging
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.closed import ClosedMover
from dispatcher.record.retention import pseudonymise_closed
from dispatcher.state.store import Commit
from tests.conftest import make_account, work
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401
from tests.unit.test_private_task_args import _request
from workers.tasks import ingest_event

pytestmark = pytest.mark.integration
# Every field that the log masking or the erasure hid before they shared one list, and fields that none of
# them may hide (the audit must still say what was sent, to whom by id, under which rule).
CANDIDATES = sorted(
    {"name", "address", "phone", "email", "to", "from", "from_number", "to_number", "recipient", "line1", "line2",
     "postal_code", "body", "note", "wechat_openid", "touser",
     "kind", "channel", "contact_id", "amount", "rule", "status", "stage", "template", "provider_id", "reason",
     "outcome", "balance"}
)  # fmt: skip
VALUE = "plain-value"  # neither a phone number nor an email: only a field's name can hide it


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(load_settings(log_format="json", _env_file=None), stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def _masked_in_logs(stream: io.StringIO) -> set[str]:
    structlog.get_logger("probe").info("probe", **dict.fromkeys(CANDIDATES, VALUE))
    line = json.loads(stream.getvalue().splitlines()[-1])
    return {field for field in CANDIDATES if line[field] != VALUE}


def _masked_in_flower() -> set[str]:
    shown = _request(ingest_event, ["A1", dict.fromkeys(CANDIDATES, VALUE)]).argsrepr
    return {field for field in CANDIDATES if f"{field!r}: {VALUE!r}" not in shown}


def _erased_from_the_record(engine: Engine, clock: ManualClock, pool: ConnectionPool) -> tuple[set[str], set[str]]:
    """(fields erased from a closed account's history details, fields erased from its archived audit entries)."""
    store = engine.store
    engine.upsert(make_account("A1"))
    work(engine, clock, ["A1"], 1, timedelta(hours=1))  # what it queued is sent: no claim keeps it in Redis
    loaded = store.load("A1")
    assert loaded.record is not None
    probe = HistoryEntry(kind="event", at=clock.now(), event="probe", detail=dict.fromkeys(CANDIDATES, VALUE))
    assert isinstance(store.commit_many([Commit(loaded, loaded.record, new_history=[probe])])[0], list)
    store.append_audit("A1", [{"account_id": "A1", "type": "probe", "at": clock.now().isoformat(),
                               **dict.fromkeys(CANDIDATES, VALUE)}])  # fmt: skip
    engine.record_event("A1", Payment(amount=Decimal("5000.00")))
    AuditArchiver(store, pool).run()
    clock.advance(timedelta(days=31))
    assert ClosedMover(store, pool, timedelta(days=30)).run_all(clock.now()) == 1
    clock.advance(timedelta(days=3 * 365))
    assert pseudonymise_closed(pool, clock.now(), timedelta(days=3 * 365)) == 1
    with pool.connection() as conn:
        (history,) = conn.execute("SELECT history FROM closed_accounts WHERE account_id = 'A1'").fetchone() or ([],)
        (audit,) = conn.execute("SELECT entry FROM audit_entries WHERE type = 'probe'").fetchone() or ({},)
    (detail,) = [entry["detail"] for entry in history if entry.get("event") == "probe"]
    return set(CANDIDATES) - set(detail), set(CANDIDATES) - set(audit)


def test_what_the_erasure_clears_is_what_the_logs_and_flower_mask(
    engine: Engine, clock: ManualClock, record_pool: ConnectionPool, log_stream: io.StringIO
) -> None:
    assert set(CANDIDATES) >= PERSONAL_FIELDS  # every field of the list is probed
    in_logs, in_flower = _masked_in_logs(log_stream), _masked_in_flower()
    from_history, from_audit = _erased_from_the_record(engine, clock, record_pool)
    assert in_logs == in_flower == from_history == from_audit == PERSONAL_FIELDS
