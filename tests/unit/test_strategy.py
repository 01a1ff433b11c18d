"""The strategy file: the shipped ladder loads, and a bad file is rejected with one `path: message` line per fault."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.settings import CONFIG_DIR, DEFAULT_STRATEGY
from dispatcher.core.models import Channel
from dispatcher.core.strategy import Strategy, StrategyError, load_strategy, parse_strategy
from dispatcher.core.strategy_check import check_strategy

TEMPLATES = CONFIG_DIR / "templates"


def minimal() -> dict[str, Any]:
    """A small valid ladder: two stages, one SMS step."""
    return {
        "stages": [
            {
                "name": "first",
                "days_past_due": [1, 7],
                "steps": [
                    {"name": "sms", "channel": "sms", "template": "t_sms", "cadence": {"days": [0, 3]}, "hour": 10}
                ],
            },
            {"name": "second", "days_past_due": [8, None], "steps": []},
        ]
    }


def errors_of(data: object) -> list[str]:
    with pytest.raises(StrategyError) as caught:
        parse_strategy(yaml.safe_dump(data, allow_unicode=True), "test.yaml")
    return caught.value.errors


def changed(**edits: Any) -> dict[str, Any]:
    data = copy.deepcopy(minimal())
    step = data["stages"][0]["steps"][0]
    for key, value in edits.items():
        if key == "second_days":
            data["stages"][1]["days_past_due"] = value
        else:
            step[key] = value
    return data


def test_default_strategy_loads_the_six_stage_ladder_in_order(strategy: Strategy) -> None:
    names = [stage.name for stage in strategy.stages]
    assert names == ["reminder", "second_notice", "early", "continuous", "letter", "legal"]


def test_default_ladder_stages_follow_each_other_without_gaps(strategy: Strategy) -> None:
    days = [stage.days_past_due for stage in strategy.stages]
    assert days == [(1, 7), (8, 15), (16, 30), (31, 59), (60, 89), (90, None)]


@pytest.mark.parametrize(
    ("days_past_due", "stage"),
    [(0, None), (-3, None), (1, "reminder"), (7, "reminder"), (8, "second_notice"), (30, "early"),
     (31, "continuous"), (60, "letter"), (89, "letter"), (90, "legal"), (1000, "legal")],
)  # fmt: skip
def test_days_past_due_pick_the_stage_they_fall_in(strategy: Strategy, days_past_due: int, stage: str | None) -> None:
    index = strategy.stage_index(days_past_due)
    assert (None if index is None else strategy.stages[index].name) == stage


def test_legal_stage_hands_the_case_to_the_agency_and_nothing_else(strategy: Strategy) -> None:
    legal = strategy.stages[-1]
    assert [(step.channel, step.template) for step in legal.steps] == [(Channel.AGENCY, "legal_handoff")]


def test_a_step_with_explicit_days_is_limited_to_that_many_attempts(strategy: Strategy) -> None:
    reminder_sms = strategy.step("reminder", "sms")
    assert reminder_sms is not None and reminder_sms.attempt_limit == 2
    second_call = strategy.step("second_notice", "call")
    assert second_call is not None and second_call.attempt_limit == 4
    continuous_sms = strategy.step("continuous", "sms")
    assert continuous_sms is not None and continuous_sms.attempt_limit is None


def test_unknown_step_lookup_returns_none(strategy: Strategy) -> None:
    assert strategy.step("reminder", "fax") is None
    assert strategy.step("nowhere", "sms") is None


def test_default_compliance_policy_matches_the_design(strategy: Strategy) -> None:
    policy = strategy.compliance
    window = policy.windows[Channel.VOICE]
    assert window is not None and (window.start.hour, window.end.hour) == (8, 21)
    assert policy.windows[Channel.LETTER] is None
    assert [(cap.max, cap.days) for cap in policy.caps[Channel.VOICE]] == [(7, 7)]
    assert [(cap.max, cap.days) for cap in policy.caps[Channel.SMS]] == [(2, 1)]
    assert policy.quiet_after_conversation is not None and policy.quiet_after_conversation.days == 7
    assert set(policy.consent_not_required) == {Channel.EMAIL, Channel.LETTER, Channel.AGENCY}


def test_minimal_ladder_parses() -> None:
    parsed = parse_strategy(yaml.safe_dump(minimal()))
    assert [stage.name for stage in parsed.stages] == ["first", "second"]


def test_both_days_and_every_in_a_cadence_is_rejected_at_the_cadence() -> None:
    errors = errors_of(changed(cadence={"days": [0], "every": 2}))
    assert errors == [f"stages.0.steps.0.cadence: {errors[0].split(': ', 1)[1]}"]
    assert "exactly one of `days`" in errors[0]


def test_unknown_channel_is_rejected_at_the_step_channel() -> None:
    errors = errors_of(changed(channel="fax"))
    assert len(errors) == 1 and errors[0].startswith("stages.0.steps.0.channel: ")
    assert "'sms'" in errors[0]


def test_unknown_outcome_key_is_rejected_under_the_step_outcomes() -> None:
    errors = errors_of(changed(outcomes={"hung_up": {"escalate": True}}))
    assert len(errors) == 1 and errors[0].startswith("stages.0.steps.0.outcomes.hung_up")
    assert "no_answer" in errors[0]


def test_unknown_field_in_a_step_is_rejected_by_name() -> None:
    errors = errors_of(changed(retries=3))
    assert errors == ["stages.0.steps.0.retries: Extra inputs are not permitted"]


def test_every_fault_in_a_file_gets_its_own_line() -> None:
    errors = errors_of(changed(channel="fax", template=""))
    assert sorted(line.split(":")[0] for line in errors) == ["stages.0.steps.0.channel", "stages.0.steps.0.template"]


def test_a_gap_between_stages_is_rejected_with_both_stage_names() -> None:
    errors = errors_of(changed(second_days=[9, None]))
    assert len(errors) == 1
    assert "'second' must start the day after 'first' ends (day 8), not day 9" in errors[0]


def test_a_gap_between_stages_is_reported_at_the_later_stages_days_past_due() -> None:
    errors = errors_of(changed(second_days=[9, None]))
    assert errors == ["stages.1.days_past_due: stage 'second' must start the day after 'first' ends (day 8), not day 9"]


def test_an_hour_outside_the_channels_window_is_rejected_naming_stage_step_and_window() -> None:
    errors = errors_of(changed(hour=22))
    assert len(errors) == 1
    assert "stage 'first' step 'sms': hour 22 lies outside the sms window 08:00-21:00" in errors[0]


def test_an_hour_outside_the_window_is_reported_at_the_steps_hour() -> None:
    errors = errors_of(changed(hour=22))
    assert len(errors) == 1 and errors[0].startswith("stages.0.steps.0.hour: ")


def test_several_ladder_faults_are_each_reported_at_their_own_path() -> None:
    data = changed(hour=7, second_days=[10, None])
    data["stages"].append({"name": "first", "days_past_due": [400, None]})
    paths = sorted(line.split(": ", 1)[0] for line in errors_of(data))
    assert paths == ["stages.0.steps.0.hour", "stages.1.days_past_due", "stages.1.days_past_due", "stages.2.name"]


def test_an_hour_on_the_windows_closing_hour_is_outside_it() -> None:
    errors = errors_of(changed(hour=21))
    assert "hour 21 lies outside" in errors[0]


def test_an_hour_inside_a_window_ending_at_half_past_is_accepted() -> None:
    data = changed(hour=21)
    data["compliance"] = {"windows": {"sms": {"start": "08:00", "end": "21:30"}}}
    assert parse_strategy(yaml.safe_dump(data)).stages[0].steps[0].hour == 21


def test_letters_without_a_window_accept_any_hour() -> None:
    data = changed(channel="letter", hour=3)
    assert parse_strategy(yaml.safe_dump(data)).stages[0].steps[0].hour == 3


def test_an_open_ended_stage_before_the_last_is_rejected_at_its_days_past_due() -> None:
    data = minimal()
    data["stages"][0]["days_past_due"] = [1, None]
    assert errors_of(data) == ["stages.0.days_past_due: stage 'first' is open-ended but is not the last stage"]


def test_a_window_that_ends_before_it_starts_is_rejected_at_the_window() -> None:
    data = minimal()
    data["compliance"] = {"windows": {"voice": {"start": "21:00", "end": "08:00"}}}
    errors = errors_of(data)
    assert len(errors) == 1 and errors[0].startswith("compliance.windows.voice")
    assert "end must come after its start" in errors[0]


def test_days_offsets_out_of_order_are_rejected() -> None:
    errors = errors_of(changed(cadence={"days": [3, 0]}))
    assert errors[0].startswith("stages.0.steps.0.cadence: ")
    assert "increasing order" in errors[0]


def test_duplicate_stage_names_are_rejected() -> None:
    data = minimal()
    data["stages"][1]["name"] = "first"
    assert errors_of(data) == ["stages.1.name: stage names must be unique; 'first' is used twice"]


def test_a_file_without_stages_names_the_missing_field() -> None:
    assert errors_of({"name": "empty"}) == ["stages: Field required"]


def test_a_file_that_is_not_a_mapping_is_rejected_at_the_top_level() -> None:
    with pytest.raises(StrategyError) as caught:
        parse_strategy("- just\n- a list\n")
    assert caught.value.errors == ["(top level): expected a mapping with `stages`"]


def test_broken_yaml_syntax_is_reported_as_a_yaml_error() -> None:
    with pytest.raises(StrategyError) as caught:
        parse_strategy("stages: [unclosed\n", "broken.yaml")
    assert caught.value.source == "broken.yaml"
    assert caught.value.errors[0].startswith("(yaml): ")


def test_a_missing_file_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(StrategyError) as caught:
        load_strategy(missing)
    assert caught.value.source == str(missing)
    assert caught.value.errors[0].startswith("(file): ")


def test_the_error_message_counts_the_faults_and_lists_them(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(changed(channel="fax", template="")), encoding="utf-8")
    with pytest.raises(StrategyError) as caught:
        load_strategy(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 2 error(s)\n")
    assert all(line in message for line in caught.value.errors)


def test_the_default_file_round_trips_through_parse_strategy() -> None:
    text = Path(DEFAULT_STRATEGY).read_text(encoding="utf-8")
    assert parse_strategy(text) == load_strategy(Path(DEFAULT_STRATEGY))


# `dispatcher strategy check`: every error in one pass.
def write_bad_strategy(tmp_path: Path) -> Path:
    text = Path(DEFAULT_STRATEGY).read_text(encoding="utf-8")
    text = text.replace("template: reminder_sms\n", "template: reminder_smss\n", 1)  # a typo (acceptance)
    text = text.replace("days_past_due: [8, 15]", "days_past_due: [9, 15]")  # a gap between stages
    text = text.replace("hour: 11\n", "hour: 25\n", 1)  # a schema error
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_strategy_check_reports_schema_ladder_and_template_errors_in_one_pass(tmp_path: Path) -> None:
    strategy, errors = check_strategy(write_bad_strategy(tmp_path), TEMPLATES)
    assert strategy is None
    assert [line.split(":")[0] for line in errors] == [
        "stages.0.steps.1.hour",
        "stages.1.days_past_due",
        "stages.0.steps.0.template",
    ]
    assert "reminder_smss" in errors[2] and "zh-CN" in errors[2] and "en" in errors[2]


def test_strategy_check_finds_a_template_missing_in_one_locale_only(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    (templates / "en" / "early_sms.sms.txt").unlink()
    _, errors = check_strategy(Path(DEFAULT_STRATEGY), templates)
    assert errors and all("'early_sms' for locale en " in line for line in errors)
    assert {line.split(":")[0] for line in errors} >= {"stages.2.steps.0.template"}


def test_strategy_check_names_fallback_templates_too(tmp_path: Path) -> None:
    text = Path(DEFAULT_STRATEGY).read_text(encoding="utf-8").replace("template: missed_call_sms}", "template: nope}")
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    _, errors = check_strategy(path, TEMPLATES)
    assert "stages.0.steps.1.outcomes.no_answer.fallback.template" in {line.split(":")[0] for line in errors}


def test_strategy_check_reports_templates_that_fail_to_render_through_the_given_check() -> None:
    def render(template: str, channel: Channel, locale: str) -> str | None:
        return "'amount' is undefined" if (template, locale) == ("early_email", "en") else None

    strategy, errors = check_strategy(Path(DEFAULT_STRATEGY), TEMPLATES, render)
    assert strategy is None
    assert errors == ["stages.2.steps.1.template: template 'early_email' (en) does not render: 'amount' is undefined"]


def test_the_shipped_strategy_passes_the_check_with_every_template() -> None:
    strategy, errors = check_strategy(Path(DEFAULT_STRATEGY), TEMPLATES, lambda *_: None)
    assert (strategy is not None, errors) == (True, [])
