"""Which strategy variant an account is worked under, and what names a strategy.

A strategy is its name and the SHA-256 of its canonical content (the parsed YAML as JSON with sorted keys),
so a comment or a reordering changes nothing and any change of meaning changes the digest. An account's
variant comes from SHA-256(salt, account id) read as a number in [0, 1), never Python's `hash()` (salted per
process), so every worker, every restart and every replay puts an account in the same arm. The holdout comes
first: [0, holdout) is held out; the rest of [0, 1) is cut in the variants' weights, in the file's order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HOLDOUT = "holdout"


def canonical_digest(content: Mapping[str, Any]) -> str:
    """SHA-256 of a parsed strategy's canonical JSON: the same meaning, the same digest."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unit_draw(salt: str, account_id: str) -> float:
    """A number in [0, 1) from SHA-256(salt, account id): 53 bits, as many as a float holds exactly."""
    digest = hashlib.sha256(f"{salt}\x00{account_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    strategy: str = Field(min_length=1, description="The strategy file, relative to the experiment file.")
    weight: float = Field(gt=0, description="Relative share of the accounts outside the holdout.")

    @field_validator("name")
    @classmethod
    def _not_holdout(cls, name: str) -> str:
        if name == HOLDOUT:
            raise ValueError(f"{HOLDOUT!r} names the accounts held out; call the variant something else")
        return name


class Experiment(BaseModel):
    """An experiment file: its variants with their weights, the share held out, and the assignment's salt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    salt: str = Field(min_length=1, max_length=128)
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    variants: tuple[Variant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct_names(self) -> Experiment:
        names = [variant.name for variant in self.variants]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"variants: each name once; repeated: {', '.join(repeated)}")
        return self

    def assign(self, account_id: str) -> str:
        """The variant a new account joins (or `holdout`); weights are read only for new accounts."""
        return assign(self.salt, account_id, [(v.name, v.weight) for v in self.variants], self.holdout)


def assign(salt: str, account_id: str, weights: Sequence[tuple[str, float]], holdout: float = 0.0) -> str:
    """The variant of `account_id` under these weights: holdout first, then the variants in order."""
    if not weights:
        raise ValueError("assign needs at least one variant")
    draw = unit_draw(salt, account_id)
    if draw < holdout:
        return HOLDOUT
    position = (draw - holdout) / (1 - holdout) * sum(weight for _, weight in weights)
    for name, weight in weights:
        if position < weight:
            return name
        position -= weight
    return weights[-1][0]  # rounding at the very top of the range
