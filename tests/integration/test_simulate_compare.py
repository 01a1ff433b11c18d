"""`dispatcher simulate --compare A.yaml B.yaml`: common random numbers on the real engine and Redis.

The key property: a debtor's draws are its own (seed, account id, purpose), so what one account meets does
not depend on how many contacts the other accounts got. Two runs of one strategy on one portfolio are alike
with any stream (the engine is deterministic); the test that tells a shared stream apart adds other accounts
to the portfolio and asks that the first accounts' histories stay the same, attempt by attempt, provider
included.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import yaml
from typer.testing import CliRunner

from config.settings import DEFAULT_STRATEGY, load_settings
from dispatcher.commands import compare as comparing
from dispatcher.commands.cli import app
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Account, HistoryEntry
from dispatcher.core.strategy import Strategy
from dispatcher.debtor_model import DebtorParameters
from dispatcher.engine import Engine
from dispatcher.simulate import OutcomeModel, Simulation
from dispatcher.state.store import Store
from dispatcher.synthetic import synthetic_accounts

pytestmark = pytest.mark.integration
runner = CliRunner()

CHALLENGER = Path("docs/examples/sms_earlier.yaml")
START = datetime(2026, 3, 2, tzinfo=UTC)
# Two providers for every text at even weights: every SMS draws its provider.
ROUTES = {"sms": {"*": ["twilio", "aliyun"]}}
WEIGHTS = {"sms": {"twilio": 100, "aliyun": 100}}


def _histories(
    redis_url: str, strategy: Strategy, accounts: list[Account], days: int
) -> dict[str, tuple[HistoryEntry, ...]]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    store, clock = Store.from_url(redis_url, shards=16), ManualClock(START)
    try:
        engine = Engine(store, strategy, clock, on_queued=lambda contacts: None)
        Simulation(engine, clock, OutcomeModel(), 5, ROUTES, WEIGHTS, DebtorParameters()).run(accounts, days)
        return {loaded.account_id: tuple(loaded.history) for loaded in store.load_many([a.id for a in accounts])}
    finally:
        store.redis.close()


def test_a_debtor_meets_the_same_draws_however_many_contacts_the_others_got(redis_url: str, strategy: Strategy) -> None:
    portfolio = synthetic_accounts(60, 5, START.date())
    few, others = portfolio[:20], portfolio[20:]
    alone = _histories(redis_url, strategy, few, 30)
    among_others = _histories(redis_url, strategy, few + others, 30)
    attempts = [e for history in alone.values() for e in history if e.kind == "attempt" and e.channel == "sms"]
    assert len({e.detail.get("provider") for e in attempts}) == 2  # the route was drawn, both ways
    for account in few:
        assert among_others[account.id] == alone[account.id], account.id


def test_a_strategy_against_itself_gives_the_same_accounts_and_no_difference(tmp_path: Path, redis_url: str) -> None:
    settings = load_settings(state_dir=tmp_path / "state", routes=ROUTES, provider_weights=WEIGHTS)
    contenders, problems = comparing.load_contenders([Path(DEFAULT_STRATEGY), Path(DEFAULT_STRATEGY)])
    assert problems == [] and [c.name for c in contenders] == ["default-card-ladder-a", "default-card-ladder-b"]
    population = synthetic_accounts(40, 2, START.date())
    facts = [
        comparing.run_one(settings, c, population, 25, 2, START, OutcomeModel(), DebtorParameters()) for c in contenders
    ]
    assert len(facts[0]) == len(facts[1]) == 40
    assert comparing.per_account(facts[0]) == comparing.per_account(facts[1])
    assert sum(f.recovered for f in facts[0]) > 0  # something happened to compare
    doc = comparing.comparison(contenders, facts, START + timedelta(days=25), 2)
    assert {row["metric"] for row in doc["differences"]} >= {
        "resolution_rate",
        "amount_recovered",
        "contacts_per_resolution",
    }
    for row in doc["differences"]:
        if row["value"] is not None:
            assert row["value"] == 0, row
        assert row["verdict"] in ("no difference", "insufficient"), row
    paired = {row["metric"]: row["paired"] for row in doc["differences"]}
    for metric in ("resolution_rate", "amount_recovered", "contacts_per_resolution"):
        assert paired[metric] == {"low": 0, "high": 0}, metric  # each account against itself: nothing differs


def test_compare_writes_both_strategies_side_by_side_and_the_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "cmp.json"
    args = ["simulate", "--compare", DEFAULT_STRATEGY, str(CHALLENGER), "--accounts", "40", "--days", "20",
            "--seed", "1", "--json", str(out)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "B − A" in result.output and "resolution_rate" in result.output
    doc = json.loads(out.read_text(encoding="utf-8"))
    names = [variant["name"] for variant in doc["variants"]]
    assert names == ["default-card-ladder", "sms-earlier"]
    for variant in doc["variants"]:
        assert len(variant["strategy_sha256"]) == 64 and variant["accounts"] == 40
        for metric in ("resolution_rate", "amount_recovered", "contacts_per_resolution"):
            one = variant["metrics"][metric]
            assert set(one) == {"value", "low", "high"}
            assert one["low"] <= one["value"] <= one["high"]
    assert doc["variants"][0]["strategy_sha256"] != doc["variants"][1]["strategy_sha256"]
    differences = {row["metric"]: row for row in doc["differences"]}
    for metric in ("resolution_rate", "amount_recovered", "contacts_per_resolution"):
        row = differences[metric]
        assert {"metric", "value", "low", "high", "verdict"} <= set(row)
        assert row["verdict"] in ("higher", "lower", "no difference", "insufficient")
        assert (
            row["value"] is None or row["low"] <= row["value"] <= row["high"] or math.isclose(row["low"], row["high"])
        )
    # The challenger texts on day 2 as well and at 09:00: the same debtors get other contacts.
    contacts = [v["metrics"]["contacts_per_account"]["value"] for v in doc["variants"]]
    assert contacts[1] != contacts[0]


def test_compare_refuses_a_missing_or_invalid_strategy_naming_the_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    missing = tmp_path / "nowhere.yaml"
    result = runner.invoke(app, ["simulate", "--compare", DEFAULT_STRATEGY, str(missing), "--accounts", "5"])
    assert result.exit_code == 2
    assert f"{missing}: (file)" in result.output
    data = yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8"))
    data["compliance"]["caps"]["sms"] = [{"max": -1, "days": 1}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = runner.invoke(app, ["simulate", "--compare", str(bad), DEFAULT_STRATEGY, "--accounts", "5"])
    assert result.exit_code == 2
    assert f"{bad}: compliance.caps.sms.0.max" in result.output
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.rdb"))  # nothing ran
