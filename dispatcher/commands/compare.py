"""`dispatcher simulate --compare A.yaml B.yaml`: two strategies on one portfolio with common random numbers.

Each strategy runs on a fresh embedded Redis of its own with the same synthetic accounts and the same seed.
Every draw of the simulation is the debtor's own, from a stream seeded by (seed, account id, purpose)
(dispatcher.simulate, dispatcher.debtor_model): a debtor answers, pays and is delivered to alike under both
strategies for as long as the contacts they get are alike, so a difference comes from the strategies and
not from a luckier draw.

The figures are those of `dispatcher report variants` (dispatcher.core.experiments.results): each run's
history is read as the audit entries the report reads (a first plan naming the arm, the business events, the
sends), so a metric here means what it means there. Intervals are the report's: unpaired (each arm's
accounts resampled on their own), which with common random numbers is conservative.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table

from config.settings import TEMPLATES_DIR, Settings
from dispatcher.core.audit import entry_audit
from dispatcher.core.clock import ManualClock
from dispatcher.core.experiments.arms import strategy_digest
from dispatcher.core.experiments.results import AccountFacts, account_facts, price_list, variant_report
from dispatcher.core.models import Account
from dispatcher.core.strategy import Strategy
from dispatcher.core.strategy_check import check_strategy
from dispatcher.debtor_model import DebtorParameters
from dispatcher.simulate import OutcomeModel, Simulation
from dispatcher.state.store import Store
from dispatcher.wiring import open_runtime

# The metrics the comparison shows, in this order (the JSON holds every metric of the report).
SHOWN = (
    "resolution_rate", "cure_rate", "amount_recovered", "days_to_resolution", "contacts_per_account",
    "contacts_per_resolution", "cost_per_resolution", "cost_per_unit_collected", "promise_kept_rate",
    "opt_out_rate", "dispute_rate",
)  # fmt: skip


@dataclass(frozen=True)
class Contender:
    """One side of the comparison: its file, its name in the output and its strategy."""

    path: Path
    name: str
    strategy: Strategy

    @property
    def sha256(self) -> str:
        return strategy_digest(self.strategy)


def load_contenders(paths: Sequence[Path]) -> tuple[list[Contender], list[str]]:
    """Both strategies, or every problem of each file as `FILE: path.to.field: problem` (as `strategy check`
    finds them: the schema, the ladder, the templates)."""
    strategies, problems = [], []
    for path in paths:
        strategy, found = check_strategy(path, TEMPLATES_DIR)
        problems += [f"{path}: {line}" for line in found]
        strategies.append(strategy)
    if problems:
        return [], problems
    names = [strategy.name for strategy in strategies if strategy is not None]
    if len(set(names)) < len(names):  # A against A, or two files of one name: told apart by their side
        names = [f"{name}-{side}" for name, side in zip(names, "ab", strict=False)]
    return [
        Contender(path, name, strategy)
        for path, name, strategy in zip(paths, names, strategies, strict=True)
        if strategy is not None
    ], []


def simulated_facts(store: Store, account_ids: Sequence[str], contender: Contender) -> list[AccountFacts]:
    """Each account's facts from its history in the simulation's Redis, read as the audit entries the results
    per variant read: its first plan naming the arm, its events, and its attempts (in the simulation every
    claimed attempt is sent)."""
    entries: list[dict[str, Any]] = []
    for index in range(0, len(account_ids), 500):
        for loaded in store.load_many(account_ids[index : index + 500]):
            record = loaded.record
            if record is None or not loaded.history:
                continue
            account = record.account
            entries.append({
                "at": loaded.history[0].at, "type": "variant", "change": "assigned", "account_id": account.id,
                "variant": contender.name, "strategy_sha256": contender.sha256, "balance": str(account.balance),
                "minimum_payment": str(account.minimum_payment), "due_date": account.due_date.isoformat(),
            })  # fmt: skip
            for entry in loaded.history:
                if entry.kind == "event":
                    entries.append(entry_audit(account.id, entry))
                elif entry.kind == "attempt" and entry.channel is not None:
                    entries.append({"at": entry.at, "type": "contact", "account_id": account.id,
                                    "status": "sent", "channel": entry.channel.value})  # fmt: skip
    return account_facts(entries)


def run_one(
    settings: Settings,
    contender: Contender,
    population: Sequence[Account],
    days: int,
    seed: int,
    start: datetime,
    model: OutcomeModel,
    debtors: DebtorParameters,
    tick: Callable[[float], None] | None = None,
) -> list[AccountFacts]:
    """One strategy over the portfolio on a fresh embedded Redis of its own (never a configured one)."""
    state_dir = settings.state_dir / "simulate-compare"
    shutil.rmtree(state_dir, ignore_errors=True)
    sim_settings = settings.model_copy(update={"redis_url": None, "state_dir": state_dir})
    clock = ManualClock(start)
    with open_runtime(
        sim_settings, clock=clock, strategy=contender.strategy, history_cache=len(population) + 1
    ) as runtime:
        routes, weights = sim_settings.routes, sim_settings.provider_weights
        simulation = Simulation(runtime.engine, clock, model, seed, routes, weights, debtors=debtors)
        simulation.run(population, days, tick)
        return simulated_facts(runtime.store, [account.id for account in population], contender)


def comparison(
    contenders: Sequence[Contender], facts: Sequence[Sequence[AccountFacts]], horizon: datetime, seed: int
) -> dict[str, Any]:
    """The `--json` document: each strategy's metrics with intervals, and B − A per metric with its verdict.
    Costs are A's price list, so a cost difference is one of contacts, not of prices."""
    first = contenders[0]
    order = [contender.name for contender in contenders]
    everyone = [one for arm in facts for one in arm]
    report = variant_report(everyone, first.name, order, price_list(first.strategy), horizon, seed)
    by_name = {contender.name: contender for contender in contenders}
    variants = []
    for variant in report["variants"]:
        contender = by_name[variant["name"]]
        variants.append({
            "name": variant["name"], "file": str(contender.path), "strategy_sha256": contender.sha256,
            "accounts": variant["accounts"], "total_recovered": variant["total_recovered"],
            "metrics": variant["metrics"],
        })  # fmt: skip
    differences = [{key: row[key] for key in row if key != "variant"} for row in report["differences"]]
    return {
        "seed": seed,
        "horizon": report["horizon"],
        "confidence": report["confidence"],
        "paired": False,
        "costs": report["costs"],
        "variants": variants,
        "differences": differences,
    }


def per_account(facts: Sequence[AccountFacts]) -> dict[str, tuple[Any, ...]]:
    """What happened to each account, for telling two runs apart account by account."""
    return {
        one.account_id: (
            one.resolved_at, one.cured_at, one.recovered, tuple(sorted(one.contacts.items())),
            one.promises_made, one.promises_kept, one.opted_out, one.disputed,
        )  # fmt: skip
        for one in facts
    }


def _fmt(value: float | None, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if metric.endswith("_rate"):
        return f"{value:.1%}"
    return f"{value:,.4f}" if 0 < abs(value) < 0.1 else f"{value:,.2f}"  # a cost per unit collected is small


def _span(one: dict[str, Any], metric: str) -> str:
    return f"{_fmt(one['value'], metric)} [{_fmt(one['low'], metric)}, {_fmt(one['high'], metric)}]"


def comparison_tables(doc: dict[str, Any]) -> Iterator[Table]:
    """Side by side: each metric under A and under B with its interval, then B − A and the verdict."""
    first, second = doc["variants"]
    title = f"{first['name']} ({first['file']}) against {second['name']} ({second['file']}), seed {doc['seed']}"
    table = Table(title=title)
    table.add_column("metric")
    for variant in (first, second):
        table.add_column(f"{variant['name']} ({variant['accounts']} accounts)")
    table.add_column("B − A [interval]")
    table.add_column("needed per arm", justify="right")
    table.add_column("verdict")
    differences = {row["metric"]: row for row in doc["differences"]}
    for metric in SHOWN:
        row = differences[metric]
        needed = "—" if row["needed_per_arm"] is None else f"{row['needed_per_arm']:,.0f}"
        table.add_row(
            metric, _span(first["metrics"][metric], metric), _span(second["metrics"][metric], metric),
            _span(row, metric), needed, row["verdict"],
        )  # fmt: skip
    yield table
    hashes = Table(title="strategies", show_header=False)
    for variant in (first, second):
        hashes.add_row(variant["name"], variant["file"], f"sha256 {variant['strategy_sha256']}")
    yield hashes


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def horizon_of(start: datetime, days: int) -> datetime:
    return start + timedelta(days=days)
