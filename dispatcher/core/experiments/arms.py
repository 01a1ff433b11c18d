"""The set of variants a process works with: each arm's name, strategy, digest and weight, the holdout, and
which arm an account is planned by.

An account's arm is recorded on it at its first plan (AccountRecord.variant) and read from there ever after,
so changing the weights moves no account: they are read only to place a new one. An account stored before
variants were recorded, or whose variant left the set, is worked by the champion (the first variant). The
holdout arm is the champion's ladder with every step taken out: its accounts keep their stages, events and
compliance rules (the rules force no contact, so none is made) and are counted like any other arm.

`published()` is what the active set in Redis holds (dispatcher.state.active_set): names, digests, weights,
the salt and the holdout, plus each strategy's step names, so a later publish can say which steps a new
version dropped. `differences()` says, line by line, how two such sets disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dispatcher.core.experiments.variants import HOLDOUT, canonical_digest, unit_draw
from dispatcher.core.models import AccountRecord
from dispatcher.core.stages import stage_index_at
from dispatcher.core.strategy import Strategy

CHAMPION = "champion"  # the one variant's name when no experiment file is set


def strategy_digest(strategy: Strategy) -> str:
    """The SHA-256 of a strategy's canonical content: its validated model with every default spelled out, so
    two files that mean the same (comments, key order, a default written or left out) share a digest."""
    return canonical_digest(strategy.model_dump(mode="json"))


def without_steps(strategy: Strategy) -> Strategy:
    """The holdout's strategy: the same stages, compliance policy and event rules, and no step to take."""
    stages = tuple(stage.model_copy(update={"steps": ()}) for stage in strategy.stages)
    return strategy.model_copy(update={"stages": stages, "name": f"{strategy.name} (holdout)"})


def stage_plan_keys(strategy: Strategy) -> tuple[str, ...]:
    """Per stage (before the first one first), a digest of all a fresh account's plan reads of the strategy
    while it is in that stage: every stage's days, that stage whole, the compliance policy, best time and
    event rules. Two arms with the same key for a stage plan a fresh account in it alike, so a bulk import
    can share one plan between them (dispatcher.core.planner.plan_shared)."""
    dump = strategy.model_dump(mode="json")
    common = {key: dump[key] for key in ("compliance", "best_time", "events")}
    common["days"] = [(stage["name"], stage["days_past_due"]) for stage in dump["stages"]]
    return tuple(canonical_digest({**common, "stage": stage}) for stage in (None, *dump["stages"]))


def step_names(strategy: Strategy) -> list[str]:
    """Every `stage/step` of the ladder: what a contact id is built from (dispatcher.core.planner)."""
    return [f"{stage.name}/{step.name}" for stage in strategy.stages for step in stage.steps]


@dataclass(frozen=True)
class Arm:
    name: str
    strategy: Strategy
    sha256: str
    weight: float


class VariantSet:
    """The arms, champion first, with the salt and holdout share that place new accounts among them."""

    def __init__(self, arms: Sequence[Arm], salt: str = "", holdout: float = 0.0):
        if not arms:
            raise ValueError("a variant set needs at least one arm")
        self.arms = tuple(arms)
        self.salt = salt
        self.holdout = holdout
        held = without_steps(self.arms[0].strategy)
        self.holdout_arm = Arm(HOLDOUT, held, strategy_digest(held), 0.0)
        self._by_name = {arm.name: arm for arm in self.arms}
        self._by_name[HOLDOUT] = self.holdout_arm
        self._total = sum(weight for _, weight in weights_of(self.arms))  # as assign() sums them, once
        self._plan_keys = {arm.name: stage_plan_keys(arm.strategy) for arm in self._by_name.values()}

    @classmethod
    def single(cls, strategy: Strategy) -> VariantSet:
        """Today's deployment: one strategy, the champion, every account."""
        return cls((Arm(CHAMPION, strategy, strategy_digest(strategy), 1.0),))

    @property
    def champion(self) -> Arm:
        return self.arms[0]

    def named(self, name: str | None) -> Arm | None:
        """The arm of that name (the holdout included), or None."""
        return None if name is None else self._by_name.get(name)

    def assign(self, account_id: str) -> Arm:
        """The arm a new account joins, by SHA-256(salt, account id) under the current weights."""
        if len(self.arms) == 1 and not self.holdout:
            return self.arms[0]
        # variants.assign's arithmetic, step for step, with the weights summed once per set, not per account
        draw = unit_draw(self.salt, account_id)
        if draw < self.holdout:
            return self.holdout_arm
        position = (draw - self.holdout) / (1 - self.holdout) * self._total
        for arm in self.arms:
            if position < arm.weight:
                return arm
            position -= arm.weight
        return self.arms[-1]

    def arm_of(self, record: AccountRecord | None, account_id: str) -> Arm:
        """The arm an account is planned by: a new account's by assignment, a stored one's as recorded; a
        stored account without one (from before variants) or whose variant left the set: the champion."""
        if record is None:
            return self.assign(account_id)
        return self.named(record.variant) or self.champion

    def plan_group(self, arm: Arm, record: AccountRecord, now: datetime) -> str:
        """The accounts whose fresh plans may be shared with this one's: its arm's, or with a set of several
        arms, every arm's that plans the stage the account is in alike (a challenger that changes one stage
        shares the others with the champion)."""
        if len(self.arms) == 1 and not self.holdout:
            return arm.name
        index = stage_index_at(record.account, record.state, arm.strategy, now)
        return self._plan_keys[arm.name][0 if index is None else index + 1]

    def published(self) -> dict[str, Any]:
        """The set as the active set in Redis holds it."""
        return {
            "salt": self.salt,
            "holdout": self.holdout,
            "variants": [
                {"name": arm.name, "strategy_sha256": arm.sha256, "weight": arm.weight,
                 "steps": step_names(arm.strategy)}
                for arm in self.arms
            ],
        }  # fmt: skip

    def digest(self) -> str:
        return published_digest(self.published())


def published_digest(published: Mapping[str, Any]) -> str:
    """One digest for a published set, to compare two sets with one short read."""
    text = json.dumps(published, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def differences(ours: Mapping[str, Any], active: Mapping[str, Any]) -> list[str]:
    """How this process's set differs from the active one, one line each, naming the variant and both hashes."""
    lines = []
    mine = {v["name"]: v for v in ours.get("variants", ())}
    theirs = {v["name"]: v for v in active.get("variants", ())}
    for name, variant in mine.items():
        other = theirs.get(name)
        if other is None:
            lines.append(f"variant {name!r} ({variant['strategy_sha256'][:12]}) is not in the active set")
        elif other["strategy_sha256"] != variant["strategy_sha256"]:
            lines.append(
                f"variant {name!r}: this process has strategy {variant['strategy_sha256']}, the active set "
                f"has {other['strategy_sha256']}"
            )
        elif other["weight"] != variant["weight"]:
            lines.append(f"variant {name!r}: weight {variant['weight']} here, {other['weight']} in the active set")
    for name, other in theirs.items():
        if name not in mine:
            lines.append(f"variant {name!r} ({other['strategy_sha256'][:12]}) of the active set is not loaded here")
    if [v["name"] for v in ours.get("variants", ())] != [v["name"] for v in active.get("variants", ())] and not lines:
        lines.append("the variants are in another order (the first is the champion)")
    for key in ("salt", "holdout"):
        if ours.get(key) != active.get(key):
            lines.append(f"{key}: {ours.get(key)!r} here, {active.get(key)!r} in the active set")
    return lines


def dropped_steps(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[str]]:
    """Per variant in both sets, the `stage/step` names the new version no longer has."""
    old = {v["name"]: v.get("steps", []) for v in before.get("variants", ())}
    dropped = {}
    for variant in after.get("variants", ()):
        gone = [step for step in old.get(variant["name"], []) if step not in set(variant.get("steps", []))]
        if gone:
            dropped[variant["name"]] = gone
    return dropped


def weights_of(arms: Sequence[Arm]) -> list[tuple[str, float]]:
    return [(arm.name, arm.weight) for arm in arms]


def step_changes(old: Strategy, new: Strategy) -> list[str]:
    """The stages and steps of `old` that `new` renamed or removed, one line each. A contact's id is built
    from its stage and step names, so the planner knows a contact an account already had only under the same
    names: a renamed step's contacts would be made again, a removed one's are simply no longer planned."""
    lines = []
    new_stages = {stage.name: stage for stage in new.stages}
    old_names = {stage.name for stage in old.stages}
    for stage in old.stages:
        after = new_stages.get(stage.name)
        if after is None:
            twin = next((s for s in new.stages if s.days_past_due == stage.days_past_due and s.name not in old_names),
                        None)  # fmt: skip
            if twin is None:
                lines.append(f"stage {stage.name!r}: removed")
            else:
                lines.append(f"stage {stage.name!r}: renamed to {twin.name!r} (its contacts would be made again)")
            continue
        kept = {step.name for step in after.steps}
        added = [step for step in after.steps if step.name not in {s.name for s in stage.steps}]
        for step in stage.steps:
            if step.name in kept:
                continue
            twin_step = next((s for s in added if (s.channel, s.template, s.cadence) ==
                              (step.channel, step.template, step.cadence)), None)  # fmt: skip
            if twin_step is None:
                lines.append(f"stage {stage.name!r}: step {step.name!r} removed")
            else:
                lines.append(
                    f"stage {stage.name!r}: step {step.name!r} renamed to {twin_step.name!r} "
                    "(its contacts would be made again)"
                )
    return lines
