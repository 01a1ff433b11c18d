"""What a new version of a strategy drops: `dispatcher strategy check NEW --against OLD` lists the stages and
steps renamed (their contacts would get new ids, so be made again) or removed; the digest ignores what does
not change the meaning; the active set's differences name the variant and both hashes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dispatcher.core.experiments.arms import Arm, VariantSet, differences, dropped_steps, step_changes, strategy_digest
from dispatcher.core.experiments.variants import assign
from dispatcher.core.strategy import Strategy, load_strategy, parse_strategy
from workers.cli import app

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "strategy.yaml"


def _renamed(strategy: Strategy) -> Strategy:
    reminder = strategy.stages[0]
    steps = tuple(s.model_copy(update={"name": "first_sms"}) if s.name == "sms" else s for s in reminder.steps)
    steps = tuple(s for s in steps if s.name != "call")
    return strategy.model_copy(update={"stages": (reminder.model_copy(update={"steps": steps}), *strategy.stages[1:])})


def test_renamed_and_removed_steps_are_listed() -> None:
    old = load_strategy(SHIPPED)
    assert step_changes(old, old) == []
    assert step_changes(old, _renamed(old)) == [
        "stage 'reminder': step 'sms' renamed to 'first_sms' (its contacts would be made again)",
        "stage 'reminder': step 'call' removed",
    ]
    before, after = VariantSet.single(old).published(), VariantSet.single(_renamed(old)).published()
    assert dropped_steps(before, after) == {"champion": ["reminder/sms", "reminder/call"]}
    assert differences(after, before) == [
        f"variant 'champion': this process has strategy {strategy_digest(_renamed(old))}, the active set has "
        f"{strategy_digest(old)}"
    ]


def test_the_digest_ignores_comments_order_and_spelled_out_defaults() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    commented = "# a comment\n" + text.replace("version: 1\n", "")  # the default version, left out
    assert strategy_digest(parse_strategy(commented)) == strategy_digest(parse_strategy(text))
    assert strategy_digest(parse_strategy(text.replace("hour: 10", "hour: 11", 1))) != strategy_digest(
        parse_strategy(text)
    )


def test_strategy_check_against_lists_the_changes(tmp_path: Path) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(SHIPPED.read_text(encoding="utf-8").replace("      - name: sms\n", "      - name: first_sms\n", 1))
    done = CliRunner().invoke(app, ["strategy", "check", str(new), "--against", str(SHIPPED)])
    assert done.exit_code == 0, done.output
    assert "stage 'reminder': step 'sms' renamed to 'first_sms'" in done.output
    assert "1 stage(s) or step(s) renamed or removed" in done.output


def test_a_variant_set_places_accounts_exactly_as_assign_does() -> None:
    strategy = load_strategy(SHIPPED)
    arms = tuple(Arm(name, strategy, strategy_digest(strategy), weight) for name, weight in
                 (("champion", 0.7), ("b", 0.2), ("c", 0.1)))  # fmt: skip
    for holdout in (0.0, 0.1):
        variants = VariantSet(arms, salt="exact", holdout=holdout)
        weights = [(arm.name, arm.weight) for arm in arms]
        ids = [f"A{i}" for i in range(20_000)]
        assert [variants.assign(i).name for i in ids] == [assign("exact", i, weights, holdout) for i in ids]
