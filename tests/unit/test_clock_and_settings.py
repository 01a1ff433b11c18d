"""The one clock every component asks, and the settings read once from the environment."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from config.settings import DEFAULT_STRATEGY, SettingsError, load_settings
from dispatcher.core.clock import AcceleratedClock, ManualClock, SystemClock

START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def test_a_manual_clock_stands_still_until_told_to_move() -> None:
    clock = ManualClock(START)
    assert clock.now() == START
    clock.advance(timedelta(hours=3))
    assert clock.now() == START + timedelta(hours=3)
    clock.set(START + timedelta(days=2))
    assert clock.now() == START + timedelta(days=2)


def test_a_manual_clock_keeps_utc_whatever_zone_it_is_given() -> None:
    clock = ManualClock(datetime(2026, 3, 2, 10, 0, tzinfo=timezone(timedelta(hours=8))))
    assert clock.now() == START and clock.now().tzinfo is UTC


def test_a_manual_clock_refuses_a_naive_start() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ManualClock(datetime(2026, 3, 2, 2, 0))


def test_a_manual_clock_refuses_to_run_backwards() -> None:
    clock = ManualClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(START - timedelta(seconds=1))
    assert clock.now() == START


def test_the_system_clock_tells_aware_utc_time() -> None:
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is UTC and before <= now <= datetime.now(UTC)


def test_an_accelerated_clock_runs_factor_times_faster_from_its_start() -> None:
    clock = AcceleratedClock(START, factor=60, origin=time.time() - 10)
    elapsed = clock.now() - START
    assert timedelta(seconds=600) <= elapsed < timedelta(seconds=660)


def test_accelerated_clocks_with_the_same_start_and_origin_agree() -> None:
    origin = time.time() - 5
    first, second = AcceleratedClock(START, 3600, origin), AcceleratedClock(START, 3600, origin)
    assert abs(first.now() - second.now()) < timedelta(minutes=5)  # a few ms of real time apart


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No DISPATCHER_* variables and no .env from the developer's checkout."""
    for name in list(os.environ):
        if name.startswith("DISPATCHER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_settings_default_to_the_embedded_redis_and_the_shipped_strategy(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.strategy_path == DEFAULT_STRATEGY
    assert (settings.schedule_shards, settings.lease_seconds) == (16, 120)


def test_settings_are_read_from_dispatcher_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DISPATCHER_REDIS_URL", "redis://example:6380/2")
    clean_env.setenv("DISPATCHER_SCHEDULE_SHARDS", "64")
    settings = load_settings()
    assert (settings.redis_url, settings.schedule_shards) == ("redis://example:6380/2", 64)


def test_settings_are_read_from_a_dot_env_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DISPATCHER_LEASE_SECONDS=300\n", encoding="utf-8")
    assert load_settings().lease_seconds == 300


def test_a_bad_setting_stops_with_the_variables_name(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DISPATCHER_SCHEDULE_SHARDS", "0")
    clean_env.setenv("DISPATCHER_LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "DISPATCHER_SCHEDULE_SHARDS" in message and "DISPATCHER_LOG_LEVEL" in message
    assert "'LOUD'" in message


def test_a_twilio_sid_must_have_its_shape(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DISPATCHER_TWILIO_ACCOUNT_SID", "XX123")
    with pytest.raises(SettingsError, match="DISPATCHER_TWILIO_ACCOUNT_SID"):
        load_settings()


def test_secrets_do_not_show_in_the_settings_repr(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DISPATCHER_TWILIO_AUTH_TOKEN", "very-secret-token")
    settings = load_settings()
    assert "very-secret-token" not in repr(settings)
    assert settings.twilio_auth_token.get_secret_value() == "very-secret-token"
