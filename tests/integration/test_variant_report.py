"""Results per variant read from the record: the real engine plans accounts of two variants and a holdout on
the real Redis, the archiver moves their audit to the real (embedded) PostgreSQL, and the report, from the
library, `GET /v1/reports/variants` and `dispatcher report variants --json`, gives every arm its figures and
every comparison a verdict, `insufficient` on a sample this small."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool
from typer.testing import CliRunner

from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Dispute, OptOut, Payment, PromiseToPay
from dispatcher.core.experiments.arms import Arm, VariantSet, strategy_digest
from dispatcher.core.experiments.results import price_list, variant_report
from dispatcher.core.models import Channel
from dispatcher.core.strategy import Strategy
from dispatcher.engine import Engine
from dispatcher.record.archive import AuditArchiver
from dispatcher.record.results import archived_facts
from dispatcher.state.active_set import ActiveSet
from dispatcher.state.store import Store
from tests.api_fixtures import api_keys, api_settings  # noqa: F401
from tests.conftest import make_account, work
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401
from workers.cli import app

pytestmark = pytest.mark.integration
IDS = [f"P{i:03d}" for i in range(60)]
METRICS = {
    "resolution_rate", "cure_rate", "roll_rate", "opt_out_rate", "dispute_rate", "promise_kept_rate",
    "amount_recovered", "days_to_resolution", "contacts_per_account", "contacts_per_resolution",
    "cost_per_resolution", "cost_per_unit_collected",
}  # fmt: skip


@pytest.fixture
def variants(strategy: Strategy) -> VariantSet:
    challenger = strategy.model_copy(update={"name": "challenger", "best_time": strategy.best_time.model_copy(
        update={"enabled": not strategy.best_time.enabled})})  # fmt: skip
    arms = (Arm("champion", strategy, strategy_digest(strategy), 0.5),
            Arm("challenger", challenger, strategy_digest(challenger), 0.5))  # fmt: skip
    return VariantSet(arms, salt="report", holdout=0.2)


@pytest.fixture
def worked(store: Store, variants: VariantSet, clock: ManualClock, record_pool: ConnectionPool) -> Engine:
    engine = Engine(store, variants.champion.strategy, clock, lambda contacts: None, variants=variants,
                    active=ActiveSet(store.redis, variants))  # fmt: skip
    engine.upsert_many([make_account(i) for i in IDS])
    work(engine, clock, IDS, 8, timedelta(hours=6))
    for index, account_id in enumerate(IDS):
        if index % 3 == 0:
            engine.record_event(account_id, Payment(amount=Decimal("5000.00")))  # resolved
        elif index % 3 == 1:
            engine.record_event(account_id, PromiseToPay(amount=Decimal("600.00"), due=clock.now().date()))
            engine.record_event(account_id, Payment(amount=Decimal("600.00")))  # cured, promise kept
        if index % 7 == 0:
            engine.record_event(account_id, OptOut(channel=Channel.SMS))
        if index % 11 == 0:
            engine.record_event(account_id, Dispute())
    clock.advance(timedelta(days=40))
    engine.replan_many(IDS)
    AuditArchiver(store, record_pool).run()
    return engine


def _check_shape(report: dict, variants: VariantSet) -> None:  # type: ignore[type-arg]
    assert set(report) == {"champion", "horizon", "confidence", "power", "costs", "variants", "differences"}
    assert [v["name"] for v in report["variants"]] == ["champion", "challenger", "holdout"]
    assert sum(v["accounts"] for v in report["variants"]) == len(IDS)
    for variant in report["variants"]:
        assert set(variant) == {"name", "strategy_sha256", "accounts", "total_recovered", "metrics"}
        assert variant["strategy_sha256"] == [variants.named(variant["name"]).sha256]  # type: ignore[union-attr]
        assert set(variant["metrics"]) == METRICS
        for interval in variant["metrics"].values():
            assert set(interval) == {"value", "low", "high"}
    rates = report["variants"][0]["metrics"]["resolution_rate"]
    assert 0 < rates["value"] < 1 and rates["low"] < rates["value"] < rates["high"]
    assert {(d["variant"], d["metric"]) for d in report["differences"]} == {
        (name, metric) for name in ("challenger", "holdout") for metric in METRICS
    }
    for difference in report["differences"]:
        assert set(difference) == {"variant", "metric", "value", "low", "high", "needed_per_arm", "smallest_arm",
                                   "verdict"}  # fmt: skip
    verdicts = {(d["variant"], d["metric"]): d["verdict"] for d in report["differences"]}
    # 60 accounts in three arms tell nothing apart, but that the holdout gets no contacts at all
    contact_metrics = {
        "contacts_per_account",
        "contacts_per_resolution",
        "cost_per_resolution",
        "cost_per_unit_collected",
    }
    assert {k: v for k, v in verdicts.items() if v != "insufficient"}.keys() <= {
        ("holdout", m) for m in contact_metrics
    }
    assert verdicts[("holdout", "contacts_per_account")] == "lower"
    assert {v for (name, _), v in verdicts.items() if name == "challenger"} == {"insufficient"}


def test_the_report_gives_each_arm_its_figures_and_each_comparison_insufficient_on_a_small_sample(
    worked: Engine, record_pool: ConnectionPool, variants: VariantSet, clock: ManualClock
) -> None:
    costs = price_list(variants.champion.strategy)
    report = variant_report(
        archived_facts(record_pool, clock.now()), "champion", ["champion", "challenger"], costs, clock.now()
    )
    _check_shape(report, variants)
    figures = {v["name"]: v for v in report["variants"]}
    paid = sum(v["total_recovered"] for v in figures.values())
    assert paid == 20 * 5000 + 20 * 600
    contacts = sum(v["metrics"]["contacts_per_account"]["value"] * v["accounts"] for v in figures.values())
    assert contacts > 0 and figures["holdout"]["metrics"]["contacts_per_account"]["value"] == 0
    assert json.loads(json.dumps(report)) == report  # plain JSON: no NaN, no infinity


def test_the_api_serves_the_same_report(
    worked: Engine, database_url: str, api_settings: Settings, api_keys: dict[str, tuple[str, str]],  # noqa: F811
    variants: VariantSet, clock: ManualClock,
) -> None:  # fmt: skip
    settings = api_settings.model_copy(update={"database_url": database_url})
    client = TestClient(create_app(worked, settings))
    answer = client.get("/v1/reports/variants", headers={"Authorization": f"Bearer {api_keys['reader'][0]}"})
    assert answer.status_code == 200, answer.text
    _check_shape(answer.json(), variants)
    refused = client.get("/v1/reports/variants", headers={"Authorization": f"Bearer {api_keys['writer'][0]}"})
    assert refused.status_code == 403
    reader = {"Authorization": f"Bearer {api_keys['reader'][0]}"}
    for bad in ("123", "2026-06-01T00:00:00", "0001-01-01T00:00:00+01:00"):  # a number, no offset, no UTC time
        answer = client.get("/v1/reports/variants", params={"until": bad}, headers=reader)
        assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "until", answer.text


def test_the_command_prints_the_same_report_as_json(
    worked: Engine, database_url: str, redis_url: str, record_pool: ConnectionPool, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, variants: VariantSet, clock: ManualClock,
) -> None:  # fmt: skip
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    monkeypatch.setenv("DISPATCHER_REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    done = CliRunner().invoke(app, ["report", "variants", "--json", "--until", clock.now().isoformat()])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    _check_shape(report, variants)
    # The command's settings name only the champion's file; the other arms come from the record, in order.
    costs = price_list(variants.champion.strategy)
    assert report == variant_report(
        archived_facts(record_pool, clock.now()), "champion", ["champion"], costs, clock.now()
    )
