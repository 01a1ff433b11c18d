"""A channel added later fails closed: known to the registry is not allowed. An account's consent names its
channels (one stored before the channel existed has not consented to it), and a strategy whose ladder uses a
channel without a window, caps and pressure entry is refused, by name, by `strategy check` and at load."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from config.settings import DEFAULT_STRATEGY, TEMPLATES_DIR
from dispatcher.commands.reports import compliance_table
from dispatcher.core.compliance import denial
from dispatcher.core.models import DEFAULT_CONSENT, AccountState, Channel
from dispatcher.core.strategy import CompliancePolicy, Strategy, StrategyError, parse_strategy
from dispatcher.core.strategy_check import check_strategy
from dispatcher.simulate import OutcomeModel, Simulation
from tests.conftest import make_account
from tests.fake_channel import PIGEON, registered_channel, strategy_with_pigeon

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def _check(tmp_path: Path, data: dict[str, object]) -> tuple[Strategy | None, list[str]]:
    path = tmp_path / "strategy.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return check_strategy(path, TEMPLATES_DIR)


def test_a_strategy_check_passes_a_new_channel_with_its_window_caps_and_pressure_entry(tmp_path: Path) -> None:
    with registered_channel():
        strategy, errors = _check(tmp_path, strategy_with_pigeon())
        assert errors == [] and strategy is not None
        assert strategy.compliance.configured(Channel(PIGEON)) and strategy.compliance.needs_consent(Channel(PIGEON))


@pytest.mark.parametrize(
    ("left_out", "line"),
    [
        ({"window": False}, "compliance.windows: channel 'pigeon' (stages.0.steps.0.channel) has no entry"),
        ({"caps": False}, "compliance.caps: channel 'pigeon' (stages.0.steps.0.channel) has no entry"),
        ({"pressure": False}, "compliance.pressure: channel 'pigeon' (stages.0.steps.0.channel) has no entry"),
    ],
)
def test_a_strategy_check_refuses_a_channel_missing_an_entry_and_names_it(
    tmp_path: Path, left_out: dict[str, bool], line: str
) -> None:
    with registered_channel():
        strategy, errors = _check(tmp_path, strategy_with_pigeon(**left_out))
        assert strategy is None
        assert len(errors) == 1 and errors[0].startswith(line), errors
        with pytest.raises(StrategyError):  # and the processes refuse to load it
            parse_strategy(yaml.safe_dump(strategy_with_pigeon(**left_out)))


def test_the_gaps_are_reported_beside_an_unrelated_error(tmp_path: Path) -> None:
    with registered_channel():
        data = strategy_with_pigeon(window=False, caps=False, pressure=False)
        data["stages"][1]["steps"][0]["hour"] = 25  # a schema error elsewhere in the file
        _, errors = _check(tmp_path, data)
        assert any(e.startswith("stages.1.steps.0.hour") for e in errors), errors
        assert sum("channel 'pigeon'" in e for e in errors) == 3, errors


def test_a_shipped_channel_left_out_of_the_caps_is_refused_too(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8"))
    del data["compliance"]["caps"]["letter"]
    _, errors = _check(tmp_path, data)
    assert len(errors) == 1 and errors[0].startswith("compliance.caps: channel 'letter' (stages."), errors


def test_the_old_list_of_channels_needing_consent_is_refused_with_what_replaces_it() -> None:
    with pytest.raises(StrategyError, match="require_consent is replaced by consent_not_required"):
        parse_strategy(yaml.safe_dump({"compliance": {"require_consent": ["sms"]}, "stages": []}))


def test_an_account_without_a_consent_list_has_the_shipped_channels_never_one_registered_later() -> None:
    before = make_account("OLD")
    assert before.consent == DEFAULT_CONSENT == {"sms", "voice", "email", "letter", "agency"}
    with registered_channel() as pigeon:
        assert pigeon in Channel and make_account("NEW").consent == DEFAULT_CONSENT
        assert pigeon in make_account("YES", consent=["sms", PIGEON]).consent


def test_the_last_look_denies_a_channel_without_consent_or_without_a_policy() -> None:
    with registered_channel() as pigeon:
        policy = parse_strategy(yaml.safe_dump(strategy_with_pigeon())).compliance
        state = AccountState()
        assert denial(pigeon, make_account(), state, policy) == "no_consent:pigeon"
        assert denial(pigeon, make_account(consent=[PIGEON]), state, policy) is None
        bare = CompliancePolicy()  # the defaults describe the shipped channels only
        assert denial(pigeon, make_account(consent=[PIGEON]), state, bare) == "no_policy:pigeon"
        # The shipped channels keep their rules: SMS needs consent, email does not.
        assert denial(Channel.SMS, make_account(consent=["email"]), state, bare) == "no_consent:sms"
        assert denial(Channel.EMAIL, make_account(consent=["sms"]), state, bare) is None


def test_an_unknown_channel_is_refused_where_it_is_read() -> None:
    with pytest.raises(ValueError, match="Input should be 'sms', 'voice', 'email', 'letter', 'agency' or 'wechat'"):
        make_account(consent=[PIGEON])
    with pytest.raises(ValueError, match="'pigeon' is not a channel"):
        Channel(PIGEON)


def test_the_compliance_report_lists_the_registered_channels() -> None:
    console = Console(width=200, record=True)
    with registered_channel():
        console.print(compliance_table(parse_strategy(yaml.safe_dump(strategy_with_pigeon()))))
        # The default policy describes the first five channels; the shipped ladder's wechat steps need the
        # shipped strategy's own entries, so they leave with them.
        stages = strategy_with_pigeon()["stages"][1:]
        for stage in stages:
            stage["steps"] = [step for step in stage["steps"] if step["channel"] != "wechat"]
        console.print(compliance_table(Strategy.model_validate({"stages": stages})))
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    pigeon_rows = [row for row in rows if row and row[0] == PIGEON]
    assert pigeon_rows == [[PIGEON, "08:00–21:00", "≤1 in 1d", "yes"], [PIGEON, "not configured: denied", "—", "—"]]


def test_the_simulation_draws_an_outcome_for_a_channel_it_has_no_rates_for() -> None:
    with registered_channel() as pigeon:
        simulation = Simulation(engine=None, clock=None, model=OutcomeModel(), seed=1)  # type: ignore[arg-type]
        assert simulation._draw(pigeon, random.Random(1)) == "sent"


def test_a_pressure_that_counts_the_agency_as_before_still_loads_and_counts_it() -> None:
    data = yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8"))
    del data["compliance"]["pressure"]["not_counted"]
    data["compliance"]["pressure"]["channels"].append("agency")
    policy = parse_strategy(yaml.safe_dump(data, allow_unicode=True)).compliance
    assert Channel.AGENCY in policy.pressure.channels and policy.configured(Channel.AGENCY)
