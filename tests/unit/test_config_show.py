"""`dispatcher config show` prints the effective settings, where each came from, and never a secret."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.settings import ENV_PREFIX, Settings
from dispatcher.commands.cli import app

KEY_HASH = "cd" * 32


@pytest.fixture(autouse=True)
def _only_this_tests_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "DISPATCHER_BANK_NAME=Bank of the .env file\nDISPATCHER_TWILIO_AUTH_TOKEN=token-from-dotenv\n", encoding="utf-8"
    )
    monkeypatch.setenv("DISPATCHER_AGENCY_API_KEY", "agency-secret-from-env")
    monkeypatch.setenv("DISPATCHER_REDIS_URL", "redis://:redis-password@redis.internal:6379/0")
    monkeypatch.setenv("DISPATCHER_API_KEYS", f"{KEY_HASH}:admin")


def _shown() -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_setting_is_shown_with_its_source() -> None:
    shown = _shown()
    assert set(shown) == {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert shown["DISPATCHER_BANK_NAME"] == {"value": "Bank of the .env file", "source": ".env"}
    assert shown["DISPATCHER_SCHEDULE_SHARDS"] == {"value": 16, "source": "default"}
    assert shown["DISPATCHER_AGENCY_API_KEY"]["source"] == "env"


def test_secrets_are_masked_everywhere() -> None:
    result = CliRunner().invoke(app, ["config", "show"])
    shown = _shown()
    for text in (result.stdout, json.dumps(shown)):
        for secret in ("agency-secret-from-env", "token-from-dotenv", "redis-password", KEY_HASH, "sandbox-auth"):
            assert secret not in text
    assert shown["DISPATCHER_TWILIO_AUTH_TOKEN"] == {"value": "********", "source": ".env"}
    assert shown["DISPATCHER_REDIS_URL"]["value"] == "redis://:********@redis.internal:6379/0"
    assert shown["DISPATCHER_API_KEYS"]["value"] == [f"{KEY_HASH[:8]}…:admin"]


def test_the_table_names_each_variable_and_source() -> None:
    result = CliRunner().invoke(app, ["config", "show"], terminal_width=250)
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if "DISPATCHER_BANK_NAME" in line)
    assert "Bank of the .env file" in line and ".env" in line


def test_a_refused_production_configuration_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_ENV", "production")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code != 0
    assert "DISPATCHER_PAY_URL" in result.output and "agency-secret-from-env" not in result.output
