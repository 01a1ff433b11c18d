"""Liquidation per agency and placement month, from the record: hand-offs made through the worker's wiring to two
agency sandboxes (tests/integration/test_agency_placement.py's), payments recorded before and after them, the
archiver moving the audit to the real (embedded) PostgreSQL; the library, `GET /v1/reports/agencies` and
`dispatcher report agencies --json` give the same figures, which are worked out here from the book."""

# ruff: noqa: F811 - the fixtures imported from other test modules come back as test parameters

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool
from typer.testing import CliRunner

from config.agencies import placement
from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.liquidation import read_liquidation
from tests.api_fixtures import api_keys, api_settings  # noqa: F401
from tests.conftest import make_account
from tests.integration.test_agency_placement import _hand_offs, agencies, south  # noqa: F401
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401
from workers.cli import app
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration


@pytest.fixture
def book(
    agencies: Callable[..., WorkerRuntime],
    clock: ManualClock,
    record_pool: ConnectionPool,
) -> tuple[WorkerRuntime, dict[tuple[str, str], dict[str, Any]]]:
    """Two placement months; each account paid 1,000.00 before its hand-off (its case file then says 4,000.00),
    every other one 500.00 after it and 250.00 more a month later. Returns the expected rows."""
    runtime = agencies()
    expected: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"cases": 0, "placed": Decimal(0), "recovered": Decimal(0)}
    )
    for month, prefix in (("2026-03", "LQM"), ("2026-04", "LQA")):
        ids = [f"{prefix}{i}" for i in range(10)]
        contacts = _hand_offs_after_payment(runtime, clock, ids)
        assert {d.result for d in runtime.deliverer.deliver_many(contacts)} == {"sent"}
        clock.advance(timedelta(hours=1))
        for index, account_id in enumerate(ids):
            row = expected[placement(account_id, runtime.settings.agencies).name, month]
            row["cases"] += 1
            row["placed"] += Decimal("4000.00")
            if index % 2 == 0:
                runtime.engine.record_event(account_id, Payment(amount=Decimal("500.00")))
                row["recovered"] += Decimal("500.00")
        clock.advance(timedelta(days=31))
        for index, account_id in enumerate(ids):
            if index % 2 == 0:
                runtime.engine.record_event(account_id, Payment(amount=Decimal("250.00")))
                expected[placement(account_id, runtime.settings.agencies).name, month]["recovered"] += Decimal("250")
    AuditArchiver(runtime.engine.store, record_pool).run()
    return runtime, dict(expected)


def _hand_offs_after_payment(runtime: WorkerRuntime, clock: ManualClock, ids: list[str]) -> list[Any]:
    """The accounts, each paying 1,000.00 before its agency hand-off is queued."""
    due = clock.now().date() - timedelta(days=40)
    runtime.engine.upsert_many([make_account(account_id, due_date=due) for account_id in ids])
    for account_id in ids:
        runtime.engine.record_event(account_id, Payment(amount=Decimal("1000.00")))
    return _hand_offs(runtime, clock, ids, made=True)


def _figures(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (row["agency"], row["month"]): {"cases": row["cases"], "placed": Decimal(row["placed_balance"]),
                                        "recovered": Decimal(row["recovered"])}
        for row in report["placements"]
    }  # fmt: skip


def test_liquidation_per_agency_and_month_from_the_record(
    book: tuple[WorkerRuntime, dict[tuple[str, str], dict[str, Any]]], record_pool: ConnectionPool, clock: ManualClock
) -> None:
    runtime, expected = book
    report = read_liquidation(record_pool, clock.now())
    assert _figures(report) == expected
    assert {agency for agency, _ in expected} == {"north", "south"}
    for row in report["placements"]:
        assert row["currency"] == "CNY" and row["cases_without_balance"] == 0  # make_account's currency
        rate = Decimal(row["recovered"]) / Decimal(row["placed_balance"])
        assert row["liquidation_rate"] == round(float(rate), 6)  # six places
    assert json.loads(json.dumps(report)) == report


def test_the_api_and_the_command_give_the_same_report(
    book: tuple[WorkerRuntime, dict[tuple[str, str], dict[str, Any]]], record_pool: ConnectionPool,
    database_url: str, redis_url: str, api_settings: Settings, api_keys: dict[str, tuple[str, str]],
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    runtime, expected = book
    until = clock.now().isoformat()
    client = TestClient(create_app(runtime.engine, api_settings.model_copy(update={"database_url": database_url})))
    answer = client.get("/v1/reports/agencies", params={"until": until},
                        headers={"Authorization": f"Bearer {api_keys['reader'][0]}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert _figures(answer.json()) == expected
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCHER_REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    done = CliRunner().invoke(app, ["report", "agencies", "--json", "--until", until])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == answer.json() == read_liquidation(record_pool, clock.now())
    table = CliRunner().invoke(app, ["report", "agencies", "--until", until])
    assert table.exit_code == 0 and "north" in table.stdout and "2026-03" in table.stdout, table.output
