"""`dispatcher strategy check` as people run it: every error in one pass, templates rendered for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import DEFAULT_STRATEGY, Settings
from config.settings_fields import ALIYUN_SANDBOX_TEMPLATES

DISPATCHER = [sys.executable, "-m", "workers.cli"]


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DISPATCHER, "strategy", "check", str(path)], capture_output=True, text=True, timeout=120)


def test_the_shipped_strategy_passes_with_every_template_rendered_for_a_sample_account() -> None:
    result = check(Path(DEFAULT_STRATEGY))
    assert result.returncode == 0, result.stderr


def test_a_misspelt_template_and_a_gap_between_stages_are_reported_together(tmp_path: Path) -> None:
    # Acceptance found `reminder_smss` passing, and the overlap reported only once the schema was fixed.
    text = Path(DEFAULT_STRATEGY).read_text(encoding="utf-8")
    text = text.replace("template: reminder_sms\n", "template: reminder_smss\n", 1)
    text = text.replace("days_past_due: [8, 15]", "days_past_due: [9, 15]").replace("hour: 11\n", "hour: 25\n", 1)
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    result = check(path)
    assert result.returncode == 2
    lines = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == [
        "stages.0.steps.1.hour", "stages.1.days_past_due", "stages.0.steps.0.template",
    ]  # fmt: skip


def test_bad_offers_are_reported_with_the_rest_in_one_pass(tmp_path: Path) -> None:
    """A plan with no months, a negative share, a stage and a template naming an offer that does not exist."""
    text = Path(DEFAULT_STRATEGY).read_text(encoding="utf-8")
    text = text.replace("instalment_3:  {kind: instalment, months: 3}", "instalment_3:  {kind: instalment, months: 0}")
    text = text.replace("share: 0.10,", "share: -0.10,")
    text = text.replace("  instalment_6:  {kind: instalment, months: 6}\n", "")
    path = tmp_path / "offers.yaml"
    path.write_text(text, encoding="utf-8")
    result = check(path)
    assert result.returncode == 2
    lines = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert "offers.minimum_payment.minimum_payment.share: Input should be greater than or equal to 0" in lines
    assert "offers.instalment_3.instalment.months: Input should be greater than or equal to 1" in lines
    assert any(line.startswith("stages.3.offers.2: no offer 'instalment_6' in `offers`") for line in lines), lines
    assert any("en/continuous_sms.sms.txt names offer 'instalment_6', which `offers` does not declare" in line
               for line in lines), lines  # fmt: skip


def test_an_instalment_reminder_outside_its_window_is_refused(tmp_path: Path) -> None:
    text = (
        Path(DEFAULT_STRATEGY)
        .read_text(encoding="utf-8")
        .replace("days_before: 2, hour: 10}", "days_before: 2, hour: 22}")
    )
    path = tmp_path / "late.yaml"
    path.write_text(text, encoding="utf-8")
    result = check(path)
    lines = [line.strip() for line in result.stderr.splitlines() if line.startswith("  ")]
    assert (result.returncode, lines) == (
        2,
        ["arrangements.reminder.hour: hour 22 lies outside the sms window 08:00-21:00"],
    )


@pytest.mark.skipif("routes" not in Settings.model_fields, reason="DISPATCHER_ROUTES arrives with the routing layer")
def test_a_route_via_aliyun_without_a_template_code_fails_naming_template_and_locale() -> None:
    codes = {name: dict(locales) for name, locales in ALIYUN_SANDBOX_TEMPLATES.items()}
    del codes["continuous_sms"]["zh-CN"]
    env = {**os.environ, "DISPATCHER_ROUTES": json.dumps({"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}),
           "DISPATCHER_ALIYUN_TEMPLATES": json.dumps(codes)}  # fmt: skip
    result = subprocess.run([*DISPATCHER, "strategy", "check", str(DEFAULT_STRATEGY)], capture_output=True, text=True,
                            timeout=120, env=env)  # fmt: skip
    assert result.returncode == 2
    assert "template 'continuous_sms' has no aliyun TemplateCode for locale zh-CN" in result.stderr
