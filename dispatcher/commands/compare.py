"""`dispatcher simulate --compare A.yaml B.yaml`: two strategies on one portfolio with common random numbers.

Each strategy runs on a fresh embedded Redis of its own with the same synthetic accounts and the same seed.
Every draw of the simulation is the debtor's own, from a stream seeded by (seed, account id, purpose)
(dispatcher.simulate, dispatcher.debtor_model): a debtor answers, pays and is delivered to alike under both
strategies for as long as the contacts they get are alike, so a difference comes from the strategies and
not from a luckier draw.

The figures are those of `dispatcher report variants` (dispatcher.core.experiments.results): each run's
history is read as the audit entries the report reads (a first plan naming the arm, the business events, the
sends), so a metric here means what it means there. The intervals and verdicts are the report's: unpaired
(each arm's accounts resampled on their own), which with common random numbers is conservative. Beside them,
where a metric is a sum over the same accounts in both runs, a paired interval: the bootstrap resamples
accounts, each with its figures under A and under B, so what the debtors share cancels out.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.table import Table

from config.settings import TEMPLATES_DIR, Settings
from dispatcher.core.audit import entry_audit
from dispatcher.core.clock import ManualClock
from dispatcher.core.experiments import statistics as st
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
    paired = paired_intervals(facts, price_list(first.strategy), seed)
    differences = []
    for row in report["differences"]:
        one = {key: row[key] for key in row if key != "variant"}
        interval = paired.get(row["metric"])
        one["paired"] = None if interval is None else {"low": _number(interval.low), "high": _number(interval.high)}
        differences.append(one)
    return {
        "seed": seed,
        "horizon": report["horizon"],
        "confidence": report["confidence"],
        "costs": report["costs"],
        "variants": variants,
        "differences": differences,
    }


# Per account, the figure whose mean over the accounts is the metric; and the ratios' numerator and denominator.
_PER_ACCOUNT: dict[str, Callable[[AccountFacts, dict[str, Decimal]], float]] = {
    "resolution_rate": lambda f, _: float(f.resolved_at is not None),
    "cure_rate": lambda f, _: float(f.cured_at is not None),
    "opt_out_rate": lambda f, _: float(f.opted_out),
    "dispute_rate": lambda f, _: float(f.disputed),
    "amount_recovered": lambda f, _: float(f.recovered),
    "contacts_per_account": lambda f, _: float(sum(f.contacts.values())),
}
_RATIOS: dict[str, tuple[str, str]] = {
    "contacts_per_resolution": ("contacts", "resolved"),
    "cost_per_resolution": ("cost", "resolved"),
    "cost_per_unit_collected": ("cost", "recovered"),
}


def _parts(one: AccountFacts, costs: dict[str, Decimal]) -> dict[str, float]:
    cost = sum((costs.get(channel, Decimal(0)) * n for channel, n in one.contacts.items()), Decimal(0))
    return {"contacts": float(sum(one.contacts.values())), "resolved": float(one.resolved_at is not None),
            "cost": float(cost), "recovered": float(one.recovered)}  # fmt: skip


def _paired_ratio(
    a: list[dict[str, float]], b: list[dict[str, float]], numerator: str, denominator: str, seed: int
) -> st.Interval:
    """ratio(B) − ratio(A) with a bootstrap that draws accounts, each with its figures under both."""
    columns = [[row[key] for row in arm] for arm in (a, b) for key in (numerator, denominator)]
    if not math.fsum(columns[1]) or not math.fsum(columns[3]):
        return st.Interval(math.nan, math.nan, math.nan)
    draw, indices, differences = random.Random(seed), range(len(a)), []
    for _ in range(st.RESAMPLES):
        sample = draw.choices(indices, k=len(a))
        a_num, a_den, b_num, b_den = (math.fsum(map(column.__getitem__, sample)) for column in columns)
        if a_den and b_den:
            differences.append(b_num / b_den - a_num / a_den)
    value = math.fsum(columns[2]) / math.fsum(columns[3]) - math.fsum(columns[0]) / math.fsum(columns[1])
    if not differences:
        return st.Interval(value, math.nan, math.nan)
    differences.sort()
    tail, last = (1 - st.CONFIDENCE) / 2, len(differences) - 1
    return st.Interval(value, differences[round(tail * last)], differences[round((1 - tail) * last)])


def paired_intervals(
    facts: Sequence[Sequence[AccountFacts]], costs: dict[str, Decimal], seed: int
) -> dict[str, st.Interval]:
    """B − A per metric over the accounts both runs hold, each account compared with itself."""
    a_by_id = {one.account_id: one for one in facts[0]}
    pairs = [(a_by_id[one.account_id], one) for one in sorted(facts[1], key=lambda f: f.account_id)
             if one.account_id in a_by_id]  # fmt: skip
    found = {
        metric: st.mean_interval([figure(b, costs) - figure(a, costs) for a, b in pairs], seed)
        for metric, figure in _PER_ACCOUNT.items()
    }
    a_parts, b_parts = [_parts(a, costs) for a, _ in pairs], [_parts(b, costs) for _, b in pairs]
    for metric, (numerator, denominator) in _RATIOS.items():
        found[metric] = _paired_ratio(a_parts, b_parts, numerator, denominator, seed)
    return found


def _number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def per_account(facts: Sequence[AccountFacts]) -> dict[str, tuple[Any, ...]]:
    """What happened to each account, for telling two runs apart account by account."""
    return {
        one.account_id: (
            one.resolved_at,
            one.cured_at,
            one.recovered,
            tuple(sorted(one.contacts.items())),
            one.promises_made,
            one.promises_kept,
            one.opted_out,
            one.disputed,
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


def _paired(row: dict[str, Any], metric: str) -> str:
    paired = row.get("paired")
    return "—" if paired is None else f"[{_fmt(paired['low'], metric)}, {_fmt(paired['high'], metric)}]"


def comparison_tables(doc: dict[str, Any]) -> Iterator[Table]:
    """Side by side: each metric under A and under B with its interval, then B − A and the verdict."""
    first, second = doc["variants"]
    title = f"{first['name']} ({first['file']}) against {second['name']} ({second['file']}), seed {doc['seed']}"
    table = Table(title=title)
    table.add_column("metric")
    for variant in (first, second):
        table.add_column(f"{variant['name']} ({variant['accounts']} accounts)")
    table.add_column("B − A [interval]")
    table.add_column("paired interval")
    table.add_column("needed per arm", justify="right")
    table.add_column("verdict")
    differences = {row["metric"]: row for row in doc["differences"]}
    for metric in SHOWN:
        row = differences[metric]
        needed = "—" if row["needed_per_arm"] is None else f"{row['needed_per_arm']:,.0f}"
        table.add_row(
            metric, _span(first["metrics"][metric], metric), _span(second["metrics"][metric], metric),
            _span(row, metric), _paired(row, metric), needed, row["verdict"],
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
