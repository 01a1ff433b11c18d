"""Production refuses Aliyun SMS's sandbox settings once a route sends through Aliyun, and asks nothing of
them otherwise (a bank without an Aliyun account configures none)."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.aliyun_sms import CHINA_FIRST_ROUTES
from config.production import production_problems
from config.settings import ENV_PREFIX, load_settings
from tests.unit.test_production_guard import REAL

REAL_ALIYUN = {
    "aliyun_access_key_id": "LTAI5tRealBankKey0000000",
    "aliyun_access_key_secret": "a-real-aliyun-secret",
    "aliyun_endpoint": "https://dysmsapi.aliyuncs.com",
    "aliyun_sign_name": "某某银行",
    "aliyun_templates": {"early_sms": {"zh-CN": "SMS_480000001", "en": "SMS_480000002"}},
    "aliyun_webhook_token": "k3Jd9sLq0aZx7vB2nM5c",
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def aliyun_problems(routes: object, **overrides: object) -> list[tuple[str, str]]:
    settings = load_settings(**{**REAL, **overrides}).model_copy(update={"routes": routes})
    return [(field, why) for field, why in production_problems(settings) if field.startswith("aliyun_")]


def test_a_route_via_aliyun_refuses_every_sandbox_value_naming_each_variable() -> None:
    problems = dict(aliyun_problems(CHINA_FIRST_ROUTES))
    assert sorted(problems) == ["aliyun_access_key_id", "aliyun_access_key_secret", "aliyun_endpoint",
                                "aliyun_sign_name", "aliyun_templates", "aliyun_webhook_token"]  # fmt: skip
    assert "continuous_sms" in problems["aliyun_templates"] and "is a sandbox" in problems["aliyun_endpoint"]


def test_real_aliyun_values_pass() -> None:
    assert aliyun_problems(CHINA_FIRST_ROUTES, **REAL_ALIYUN) == []


def test_no_route_via_aliyun_asks_nothing_of_its_settings() -> None:
    assert aliyun_problems({"sms": {"*": ["twilio"]}}) == [] and aliyun_problems({}) == []
