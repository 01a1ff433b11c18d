"""Results per variant, from the audit trail: what happened to each account, then each arm's figures with
their intervals and each arm's comparison with the champion's.

Per account (read from its audit entries in time order; the `variant` entry of its first plan says its arm
and what it owed then):

    resolved      paid in full: payments since the bank last stated the balance reach it, or the bank
                  stated a balance of 0
    cured         brought current: payments since the first plan reach the minimum payment then due (an
                  account with no minimum payment cures only by resolving)
    rolled        reached the next 30-day delinquency bucket (days past due 30, 60, 90, ... after the one it
                  was in at its first plan) neither cured nor resolved; counted only for accounts whose next
                  bucket began before the report's horizon
    recovered     the sum of its payments
    contacts      the contacts sent (claims ended `sent`), and their cost by channel
    promises      promises to pay made, and kept; opted out (any channel); disputed

Rates carry Wilson intervals and compare by Newcombe's interval; amounts and days carry bootstrap intervals;
ratios (contacts or cost per resolution, cost per unit collected) resample accounts whole. Every comparison
gives the sample each arm would need to tell a difference of the size seen from chance, and `insufficient`
while the smaller arm is below it (dispatcher.core.experiments.statistics.verdict).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from dispatcher.core.experiments import statistics as st
from dispatcher.core.experiments.variants import HOLDOUT
from dispatcher.core.strategy import Strategy

BUCKET_DAYS = 30


@dataclass
class AccountFacts:
    account_id: str
    variant: str
    strategy_sha256: str
    assigned_at: datetime
    balance: Decimal
    minimum_payment: Decimal
    due_date: date
    recovered: Decimal = Decimal(0)
    resolved_at: datetime | None = None
    cured_at: datetime | None = None
    contacts: Counter[str] = field(default_factory=Counter)
    promises_made: int = 0
    promises_kept: int = 0
    opted_out: bool = False
    disputed: bool = False
    # Running figures while reading: the bank's last stated balance and what was paid since.
    _stated: Decimal = Decimal(0)
    _paid_since_stated: Decimal = Decimal(0)
    _open_promises: int = 0  # made, neither kept nor broken yet

    def rolled(self, horizon: datetime) -> bool | None:
        """Whether it reached its next bucket uncured; None when that bucket begins after the horizon."""
        days = (self.assigned_at.date() - self.due_date).days
        boundary_day = self.due_date + timedelta(days=(max(days, 0) // BUCKET_DAYS + 1) * BUCKET_DAYS)
        boundary = datetime.combine(boundary_day, datetime.min.time(), self.assigned_at.tzinfo)
        if boundary > horizon:
            return None
        settled = [t for t in (self.cured_at, self.resolved_at) if t is not None]
        return not settled or min(settled) > boundary


def _money(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return Decimal(0)


def account_facts(entries: Iterable[Mapping[str, Any]]) -> list[AccountFacts]:
    """The facts of every account with a `variant` entry, from audit entries in time order (any accounts)."""
    facts: dict[str, AccountFacts] = {}
    for entry in entries:
        account_id = entry["account_id"]
        kind = entry.get("type")
        if kind == "variant" and entry.get("change") == "assigned" and account_id not in facts:
            balance = _money(entry.get("balance"))
            facts[account_id] = AccountFacts(
                account_id, entry["variant"], entry["strategy_sha256"], _at(entry), balance,
                _money(entry.get("minimum_payment")), date.fromisoformat(entry["due_date"]), _stated=balance,
            )  # fmt: skip
            _settle(facts[account_id], _at(entry))  # created with nothing owed
            continue
        one = facts.get(account_id)
        if one is None:
            continue
        if kind == "variant":  # a move to the champion: results stay with the arm it was assigned to
            continue
        if kind == "contact" and entry.get("status") == "sent":
            one.contacts[str(entry.get("channel") or "")] += 1
        elif kind == "event":
            _apply_event(one, entry)
    return list(facts.values())


def _at(entry: Mapping[str, Any]) -> datetime:
    at = entry["at"]
    return at if isinstance(at, datetime) else datetime.fromisoformat(at)


def _apply_event(one: AccountFacts, entry: Mapping[str, Any]) -> None:
    event, detail, at = entry.get("event"), entry.get("detail") or {}, _at(entry)
    if event == "payment":
        amount = _money(detail.get("amount"))
        one.recovered += amount
        one._paid_since_stated += amount
        if one.cured_at is None and one.minimum_payment > 0 and one.recovered >= one.minimum_payment:
            one.cured_at = at
    elif event == "account_updated":
        one._stated, one._paid_since_stated = _money(detail.get("balance")), Decimal(0)
    elif event in ("promise_to_pay",) or (event == "agent_disposition" and detail.get("disposition") == "promise"):
        one.promises_made += 1
        one._open_promises += 1
    elif event == "promise_kept":
        one.promises_kept += 1
        one._open_promises = max(0, one._open_promises - 1)
    elif event == "promise_broken":
        one._open_promises = max(0, one._open_promises - 1)
    elif event == "opt_out":
        one.opted_out = True
    elif event == "dispute":
        one.disputed = True
    if event in ("payment", "account_updated"):
        _settle(one, at)


def _settle(one: AccountFacts, at: datetime) -> None:
    if one.resolved_at is None and (one._stated <= 0 or one._paid_since_stated >= one._stated):
        one.resolved_at = at
        one.cured_at = one.cured_at or at
        # Paid in full: a promise still open is kept by it (the engine records no promise_kept then: the
        # account closes before the promise's due date comes to be judged).
        one.promises_kept += one._open_promises
        one._open_promises = 0


RATES: dict[str, Callable[[AccountFacts], bool]] = {
    "resolution_rate": lambda f: f.resolved_at is not None,
    "cure_rate": lambda f: f.cured_at is not None,
    "opt_out_rate": lambda f: f.opted_out,
    "dispute_rate": lambda f: f.disputed,
}


def _cost(one: AccountFacts, costs: Mapping[str, Decimal]) -> float:
    return float(sum((costs.get(channel, Decimal(0)) * n for channel, n in one.contacts.items()), Decimal(0)))


def _arm_samples(arm: Sequence[AccountFacts], costs: Mapping[str, Decimal], horizon: datetime) -> dict[str, Any]:
    """Per metric, what its interval and comparison are computed from."""
    rolled = [r for r in (f.rolled(horizon) for f in arm) if r is not None]
    samples: dict[str, Any] = {name: ("rate", sum(map(test, arm)), len(arm)) for name, test in RATES.items()}
    samples["roll_rate"] = ("rate", sum(rolled), len(rolled))
    made = sum(f.promises_made for f in arm)
    samples["promise_kept_rate"] = ("rate", min(sum(f.promises_kept for f in arm), made), made)
    samples["amount_recovered"] = ("mean", [float(f.recovered) for f in arm])
    samples["days_to_resolution"] = (
        "mean", [(f.resolved_at - f.assigned_at).total_seconds() / 86400 for f in arm if f.resolved_at is not None],
    )  # fmt: skip
    contacts = [float(sum(f.contacts.values())) for f in arm]
    resolved = [1.0 if f.resolved_at is not None else 0.0 for f in arm]
    cost = [_cost(f, costs) for f in arm]
    samples["contacts_per_account"] = ("mean", contacts)
    samples["contacts_per_resolution"] = ("ratio", contacts, resolved)
    samples["cost_per_resolution"] = ("ratio", cost, resolved)
    samples["cost_per_unit_collected"] = ("ratio", cost, [float(f.recovered) for f in arm])
    return samples


def _interval(sample: tuple[Any, ...], seed: int) -> st.Interval:
    if sample[0] == "rate":  # no trials: no rate to state (null), not 0 within [0, 1]
        return st.wilson(sample[1], sample[2]) if sample[2] else st.Interval(math.nan, math.nan, math.nan)
    if sample[0] == "mean":
        return st.mean_interval(sample[1], seed)
    return st.ratio_interval(sample[1], sample[2], seed)


def _comparison(base: tuple[Any, ...], other: tuple[Any, ...], seed: int) -> tuple[st.Interval, float, int]:
    """The difference other − base with its interval, the accounts per arm it needs, and the smaller arm."""
    if base[0] == "rate":
        difference = st.rate_difference(base[1], base[2], other[1], other[2])
        base_rate = base[1] / base[2] if base[2] else math.nan
        other_rate = other[1] / other[2] if other[2] else math.nan
        needed = math.inf if math.isnan(base_rate + other_rate) else st.rate_sample_needed(base_rate, other_rate)
        return difference, needed, min(base[2], other[2])
    if base[0] == "mean":
        difference = st.mean_difference(base[1], other[1], seed)
        return difference, st.mean_sample_needed(base[1], other[1]), min(len(base[1]), len(other[1]))
    difference = st.ratio_difference(base[1], base[2], other[1], other[2], seed)
    needed = st.ratio_sample_needed(base[1], base[2], other[1], other[2])
    return difference, needed, min(len(base[1]), len(other[1]))


def _number(value: float) -> float | None:
    """JSON has no NaN or infinity: nothing to say is null."""
    return None if math.isnan(value) or math.isinf(value) else value


def variant_report(
    facts: Sequence[AccountFacts],
    champion: str,
    order: Sequence[str],
    costs: Mapping[str, Decimal],
    horizon: datetime,
    seed: int = 0,
) -> dict[str, Any]:
    """The report: each arm (the set's order, then any other arm met in the record, the holdout last) with its
    metrics, and each arm's differences from the champion."""
    arms: dict[str, list[AccountFacts]] = {name: [] for name in order if name != HOLDOUT}
    for one in sorted(facts, key=lambda f: f.account_id):
        arms.setdefault(one.variant, []).append(one)
    if HOLDOUT in arms:
        arms[HOLDOUT] = arms.pop(HOLDOUT)
    samples = {name: _arm_samples(members, costs, horizon) for name, members in arms.items()}
    variants = []
    for name, members in arms.items():
        metrics = {
            metric: {k: _number(v) for k, v in _interval(sample, seed).as_dict().items()}
            for metric, sample in samples[name].items()
        }
        hashes = sorted({f.strategy_sha256 for f in members})
        recovered = float(sum((f.recovered for f in members), Decimal(0)))
        variants.append({"name": name, "strategy_sha256": hashes, "accounts": len(members),
                         "total_recovered": recovered, "metrics": metrics})  # fmt: skip
    differences = []
    for name in arms:
        if name == champion or champion not in samples:
            continue
        for metric, sample in samples[name].items():
            difference, needed, smallest = _comparison(samples[champion][metric], sample, seed)
            differences.append({
                "variant": name, "metric": metric, "value": _number(difference.value), "low": _number(difference.low),
                "high": _number(difference.high), "needed_per_arm": _number(needed), "smallest_arm": smallest,
                "verdict": st.verdict(difference, smallest, needed),
            })  # fmt: skip
    assigned = [f.assigned_at for f in facts]
    return {
        "champion": champion,
        "horizon": {"from": min(assigned).isoformat() if assigned else None, "to": horizon.isoformat()},
        "confidence": st.CONFIDENCE,
        "power": st.POWER,
        "costs": {channel: str(cost) for channel, cost in sorted(costs.items())},
        "variants": variants,
        "differences": differences,
    }


def price_list(champion: Strategy) -> dict[str, Decimal]:
    """The cost of a contact by channel: the champion strategy's `costs` (config/strategy.yaml ships them; a
    channel it does not price costs 0), one price list for every arm so a cost difference is the contacts'."""
    return {str(channel): cost for channel, cost in champion.costs.items()}
