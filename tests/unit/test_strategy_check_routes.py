"""`strategy check` against the routes: a template a route sends through Aliyun SMS (approved templates only)
must have a TemplateCode for every locale, named by template and locale; the shipped mapping covers the
shipped ladder; a route that does not use Aliyun asks nothing of its mapping."""

from __future__ import annotations

from pathlib import Path

from config.settings import DEFAULT_STRATEGY, TEMPLATES_DIR
from config.settings_fields import ALIYUN_SANDBOX_TEMPLATES
from dispatcher.core.strategy_check import check_strategy

CHINA_FIRST = {"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}


def shipped_without(template: str, locale: str) -> dict[str, dict[str, str]]:
    codes = {name: dict(locales) for name, locales in ALIYUN_SANDBOX_TEMPLATES.items()}
    del codes[template][locale]
    return codes


def test_the_shipped_ladder_has_a_template_code_for_every_sms_template_and_locale() -> None:
    strategy, errors = check_strategy(Path(DEFAULT_STRATEGY), TEMPLATES_DIR, None, CHINA_FIRST,
                                      {"aliyun": ALIYUN_SANDBOX_TEMPLATES})  # fmt: skip
    assert (strategy is not None, errors) == (True, [])


def test_a_template_without_a_code_for_one_locale_fails_naming_template_and_locale() -> None:
    approved = {"aliyun": shipped_without("early_sms", "en")}
    strategy, errors = check_strategy(Path(DEFAULT_STRATEGY), TEMPLATES_DIR, None, CHINA_FIRST, approved)
    assert strategy is None and errors
    assert all("template 'early_sms' has no aliyun TemplateCode for locale en " in line for line in errors)
    assert all("routes sms.CN send sms via aliyun" in line and "DISPATCHER_ALIYUN_TEMPLATES" in line for line in errors)
    # The step and the two fallbacks to early_sms in the early stage, each at its own path.
    assert {line.split(":")[0] for line in errors} == {
        "stages.2.steps.0.template",
        "stages.2.steps.1.outcomes.bounced.fallback.template",
        "stages.2.steps.1.outcomes.invalid_address.fallback.template",
    }


def test_a_template_missing_from_the_mapping_fails_for_every_locale() -> None:
    approved = {"aliyun": {k: v for k, v in ALIYUN_SANDBOX_TEMPLATES.items() if k != "missed_call_sms"}}
    _, errors = check_strategy(Path(DEFAULT_STRATEGY), TEMPLATES_DIR, None, {"sms": {"*": ["aliyun"]}}, approved)
    assert errors and all("'missed_call_sms' has no aliyun TemplateCode for locale zh-CN, en " in e for e in errors)


def test_routes_without_aliyun_ask_nothing_of_its_mapping() -> None:
    approved = {"aliyun": {}}
    for routes in ({}, {"sms": {"*": ["twilio"]}}, {"wechat": {"CN": ["wechat"]}}):
        strategy, errors = check_strategy(Path(DEFAULT_STRATEGY), TEMPLATES_DIR, None, routes, approved)
        assert (strategy is not None, errors) == (True, [])
