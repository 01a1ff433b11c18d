"""Variant assignment: SHA-256 of salt and account id, stable across processes, holdout first, shares as
weighted; the experiment file refuses what it cannot mean, naming the field."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from dispatcher.core.experiments.variants import HOLDOUT, Experiment, assign, canonical_digest, unit_draw

NINETY_TEN = {
    "salt": "2026-12",
    "holdout": 0.05,
    "variants": [
        {"name": "champion", "strategy": "strategy.yaml", "weight": 90},
        {"name": "challenger", "strategy": "challenger.yaml", "weight": 10},
    ],
}


def test_shares_follow_the_weights_after_the_holdout() -> None:
    """100,000 ids: each arm's share within one point of its weight (holdout 5 %, then 90/10 of the rest)."""
    experiment = Experiment.model_validate(NINETY_TEN)
    total = 100_000
    counts = Counter(experiment.assign(f"ACC-{number}") for number in range(total))
    expected = {HOLDOUT: 0.05, "champion": 0.95 * 0.9, "challenger": 0.95 * 0.1}
    assert {arm: abs(counts[arm] / total - share) < 0.01 for arm, share in expected.items()} == dict.fromkeys(
        expected, True
    ), counts


@pytest.mark.parametrize("hash_seed", ["0", "12345", "random"])
def test_assignment_is_the_same_in_another_process(hash_seed: str) -> None:
    # Python's hash() of a string differs per process (PYTHONHASHSEED); the assignment must not.
    code = (
        "from dispatcher.core.experiments.variants import assign;"
        "print(','.join(assign('s', f'A{i}', [('a', 1), ('b', 1)]) for i in range(200)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={
        "PYTHONHASHSEED": hash_seed, "PATH": ""})  # fmt: skip
    here = ",".join(assign("s", f"A{i}", [("a", 1), ("b", 1)]) for i in range(200))
    assert other.stdout.strip() == here


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=40))
def test_the_draw_is_in_zero_one(salt: str, account_id: str) -> None:
    assert 0.0 <= unit_draw(salt, account_id) < 1.0


def test_the_salt_reshuffles_the_arms() -> None:
    weights = [("a", 1.0), ("b", 1.0)]
    first = [assign("one", f"A{i}", weights) for i in range(200)]
    second = [assign("two", f"A{i}", weights) for i in range(200)]
    assert first != second


def test_the_digest_ignores_order_and_sees_meaning() -> None:
    assert canonical_digest({"a": 1, "b": [1, 2]}) == canonical_digest({"b": [1, 2], "a": 1})
    assert canonical_digest({"a": 1}) != canonical_digest({"a": 2})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"holdout": 1.0}, "holdout"),
        ({"salt": ""}, "salt"),
        ({"variants": []}, "variants"),
        ({"variants": [{"name": "holdout", "strategy": "s.yaml", "weight": 1}]}, "variants.0.name"),
        ({"variants": [{"name": "a", "strategy": "s.yaml", "weight": 0}]}, "variants.0.weight"),
        ({"variants": [{"name": "a", "strategy": "s.yaml", "weight": 1}] * 2}, "each name once"),
    ],
)
def test_a_bad_experiment_file_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Experiment.model_validate({**NINETY_TEN, **change})
    assert field in str(raised.value)
