"""DISPATCHER_ENV=production refuses sandbox and example values, naming every variable in one error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config.production import DEMO_API_KEY_HASH
from config.settings import DEFAULT_STRATEGY, ENV_PREFIX, Settings, SettingsError, load_settings
from dispatcher.wiring import build_engine

REAL_KEY = "ab" * 32 + ":admin"
# A production configuration with nothing left from the sandboxes or the examples.
REAL: dict[str, object] = {
    "env": "production",
    "redis_url": "redis://redis.internal:6379/0",
    "database_url": "postgresql://dispatcher@db.internal:5432/dispatcher",
    "twilio_account_sid": "AC" + "1f" * 16,
    "twilio_auth_token": "a-real-twilio-token",
    "twilio_from_number": "+8613900000000",
    "public_base_url": "https://collections.bank.cn",
    "smtp_host": "smtp.bank.cn",
    "smtp_port": 587,
    "email_from": "collections@bank.cn",
    "print_vendor_url": "https://api.lob.com",
    "print_vendor_api_key": "live_print_key",
    "print_vendor_webhook_secret": "a-real-print-secret",
    "agency_url": "https://agency.example.cn/cases",
    "agency_api_key": "a-real-agency-key",
    "bank_name": "Bank of Somewhere",
    "callback_phone": "+8695500",
    "pay_url": "https://pay.bank.cn/a/{account_id}",
    "unsubscribe_url": "https://pay.bank.cn/unsubscribe/{contact_id}",
    "api_keys": REAL_KEY,
    "email_webhook_secret": "a-real-email-secret",
    "unsubscribe_secret": "a-real-unsubscribe-secret",
    "letter_from_address_id": "adr_0123456789abcdef",
    "wechat_app_id": "wx1f2e3d4c5b6a7980",
    "wechat_app_secret": "a-real-wechat-secret",
    "wechat_api_base_url": "https://api.weixin.qq.com",
    "wechat_token": "a-real-wechat-token",
    "wechat_encoding_aes_key": "UmVhbEJhbmtXZWNoYXRBRVNrZXktMzItYnl0ZXMtISE",
    "wechat_template_ids": {"early_wechat": "Ab3dE_early", "continuous_wechat": "Cd4eF_continuous"},
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test passes counts: no DISPATCHER_* from the shell, no .env from the working tree."""
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(**{**REAL, **overrides})
    return str(raised.value)


def test_a_fully_configured_production_starts() -> None:
    assert load_settings(**REAL).env == "production"


def test_development_starts_on_every_default() -> None:
    assert load_settings().env == "development"


def test_staging_starts_on_sandbox_values() -> None:
    assert load_settings(env="staging", twilio_api_base_url="http://127.0.0.1:8701").env == "staging"


def test_production_on_the_defaults_names_every_offending_variable_in_one_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(env="production")
    message = str(raised.value)
    expected = {
        "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "PUBLIC_BASE_URL", "SMTP_HOST",
        "EMAIL_FROM", "PRINT_VENDOR_URL", "PRINT_VENDOR_API_KEY", "PRINT_VENDOR_WEBHOOK_SECRET", "AGENCY_URL",
        "AGENCY_API_KEY", "BANK_NAME", "CALLBACK_PHONE", "PAY_URL", "UNSUBSCRIBE_URL", "API_KEYS",
        "EMAIL_WEBHOOK_SECRET", "REDIS_URL", "UNSUBSCRIBE_SECRET", "LETTER_FROM_ADDRESS_LINE1",
        "DATABASE_URL",
    }  # fmt: skip  # WeChat's are refused only where the strategy sends WeChat (the tests below)
    named = {line.split(":")[0].strip()[len(ENV_PREFIX) :] for line in message.splitlines()[2:]}
    assert named == expected
    assert message.count("\n") == len(expected) + 1  # one error: a header and a line per variable


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("twilio_account_sid", Settings.model_fields["twilio_account_sid"].default, "test Account SID"),
        ("twilio_auth_token", "sandbox-auth-token", "sandbox"),
        ("twilio_from_number", "+15005550006", "Twilio test number"),
        ("twilio_api_base_url", "http://127.0.0.1:8701", "sandbox"),
        ("public_base_url", "https://localhost:8700", "sandbox"),
        ("public_base_url", "http://collections.bank.cn", "not https"),
        ("twilio_api_base_url", "http://sandbox:8701", "sandbox"),
        ("print_vendor_url", "http://127.0.0.1:8702", "sandbox"),
        ("agency_url", "http://[::1]:8703/cases", "sandbox"),
        ("smtp_host", "127.0.0.1", "SMTP sandbox"),
        ("email_from", "collections@example-bank.test", "example"),
        ("print_vendor_api_key", "test_print_key", "sandbox"),
        ("print_vendor_webhook_secret", "print-webhook-secret", "sandbox"),
        ("agency_api_key", "agency-key", "sandbox"),
        ("email_webhook_secret", "email-webhook-secret", "sandbox"),
        ("bank_name", "Example Bank", "example"),
        ("callback_phone", "+8640000000000", "example"),
        ("pay_url", "https://pay.example-bank.test/a/{account_id}", "example"),
        ("unsubscribe_url", "https://www.example.com/unsubscribe/{contact_id}", "example"),
        ("api_keys", "", "no API keys"),
        ("api_keys", f"{DEMO_API_KEY_HASH}:admin", "demo key"),
        ("redis_url", None, "embedded Redis"),
        ("database_url", None, "embedded PostgreSQL"),
        ("clock_factor", 86400.0, "demo only"),
    ],
)
def test_production_refuses_each_sandbox_or_example_value(field: str, value: object, why: str) -> None:
    overrides = {field: value}
    if field == "smtp_host":
        overrides["smtp_port"] = 8725
    message = _refusal(**overrides)
    lines = message.splitlines()[2:]
    assert len(lines) == 1 and lines[0].strip().startswith(f"{ENV_PREFIX}{field.upper()}: ")
    assert why in lines[0]


def test_a_relay_on_this_host_is_not_the_smtp_sandbox() -> None:
    assert load_settings(**{**REAL, "smtp_host": "127.0.0.1", "smtp_port": 25}).smtp_host == "127.0.0.1"


def test_a_messaging_service_makes_the_from_number_irrelevant() -> None:
    settings = load_settings(**{**REAL, "twilio_from_number": "+15005550006", "twilio_messaging_service_sid": "MG1"})
    assert settings.twilio_messaging_service_sid == "MG1"


def test_the_refusal_never_prints_a_secret() -> None:
    message = _refusal(twilio_auth_token="sandbox-auth-token", agency_api_key="agency-key")
    assert "sandbox-auth-token" not in message and "agency-key" not in message


def test_the_environment_variable_switches_the_guard_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_ENV", "production")
    with pytest.raises(SettingsError, match="DISPATCHER_BANK_NAME"):
        load_settings()


def test_production_refuses_an_http_unsubscribe_url_naming_the_variable_and_the_fix() -> None:
    message = _refusal(unsubscribe_url="http://collections.bank.cn/v1/unsubscribe/{token}")
    lines = message.splitlines()[2:]
    assert len(lines) == 1 and lines[0].strip().startswith("DISPATCHER_UNSUBSCRIBE_URL: http://collections.bank.cn")
    assert "RFC 8058" in lines[0] and "https" in lines[0] and "DISPATCHER_PUBLIC_BASE_URL" in lines[0]


def test_production_with_the_unsubscribe_url_unset_uses_the_https_public_url() -> None:
    settings = load_settings(**{key: value for key, value in REAL.items() if key != "unsubscribe_url"})
    assert settings.unsubscribe_url == "https://collections.bank.cn/v1/unsubscribe/{token}"


WECHAT_SANDBOX_VALUES = [
    ("wechat_api_base_url", "http://sandbox:8704", "sandbox"),
    ("wechat_app_id", "wx00000000sandbox0", "example"),
    ("wechat_app_secret", "sandbox-wechat-secret", "sandbox"),
    ("wechat_token", "sandbox-wechat-token", "sandbox"),
    ("wechat_encoding_aes_key", "c2FuZGJveC13ZWNoYXQtYWVzLWtleS0zMi1ieXRlcyE", "sandbox"),
    ("wechat_template_ids", {"early_wechat": "sandbox-tmpl-early"}, "sandbox template ids for early_wechat"),
]


@pytest.mark.parametrize(("field", "value", "why"), WECHAT_SANDBOX_VALUES)
def test_production_refuses_a_sandbox_wechat_setting_when_the_strategy_sends_wechat(
    field: str, value: object, why: str
) -> None:
    settings = load_settings(**{**REAL, field: value})  # the settings alone cannot know WeChat is used
    with pytest.raises(SettingsError) as raised:
        build_engine(settings, "redis://unused.invalid:6379/0")  # the shipped ladder has WeChat steps
    lines = str(raised.value).splitlines()[2:]
    assert len(lines) == 1 and lines[0].strip().startswith(f"{ENV_PREFIX}{field.upper()}: ")
    assert why in lines[0]


def test_a_bank_whose_strategy_sends_no_wechat_configures_none_of_it(tmp_path: Path) -> None:
    sandboxed = {field: value for field, value, _ in WECHAT_SANDBOX_VALUES}
    settings = load_settings(**{**REAL, **sandboxed, "strategy_path": _ladder_without_wechat(tmp_path)})
    runtime = build_engine(settings, "redis://unused.invalid:6379/0")  # no connection is made to build it
    assert "wechat" not in {channel.value for _, channel in runtime.strategy.channels_used()}


def _ladder_without_wechat(folder: Path) -> Path:
    """The shipped strategy with its WeChat steps taken out."""
    document = yaml.safe_load(DEFAULT_STRATEGY.read_text(encoding="utf-8"))
    for stage in document["stages"]:
        stage["steps"] = [step for step in stage["steps"] if step["channel"] != "wechat"]
    path = folder / "strategy.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path
