"""The one-click unsubscribe URL's default follows the API: DISPATCHER_PUBLIC_BASE_URL when set, else the
API's own host and port, so a debtor's click reaches the API that serves POST /v1/unsubscribe/{token}."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from config.settings import ENV_PREFIX, UNSUBSCRIBE_PATH, load_settings
from dispatcher.api.unsubscribe import router
from dispatcher.config_cli import effective_settings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets counts: no DISPATCHER_* from the shell, no .env from the working tree."""
    for name in list(__import__("os").environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_the_default_is_the_api_on_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().unsubscribe_url == "http://127.0.0.1:8700/v1/unsubscribe/{token}"
    monkeypatch.setenv("DISPATCHER_API_PORT", "9100")
    monkeypatch.setenv("DISPATCHER_API_HOST", "10.0.0.7")
    assert load_settings().unsubscribe_url == "http://10.0.0.7:9100/v1/unsubscribe/{token}"


def test_an_api_listening_everywhere_is_reached_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_API_HOST", "0.0.0.0")
    assert load_settings().unsubscribe_url == "http://127.0.0.1:8700/v1/unsubscribe/{token}"
    assert load_settings(api_host="::1").unsubscribe_url == "http://[::1]:8700/v1/unsubscribe/{token}"


def test_the_public_base_url_wins_over_the_listening_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_PUBLIC_BASE_URL", "https://collections.bank.cn/dispatcher/")
    monkeypatch.setenv("DISPATCHER_API_PORT", "9100")
    url = load_settings().unsubscribe_url
    assert url == "https://collections.bank.cn/dispatcher/v1/unsubscribe/{token}"
    assert url.format(token="tok", account_id="a", contact_id="c").endswith("/v1/unsubscribe/tok")


def test_an_explicit_url_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_PUBLIC_BASE_URL", "https://collections.bank.cn")
    monkeypatch.setenv("DISPATCHER_UNSUBSCRIBE_URL", "https://u.bank.cn/{token}")
    assert load_settings().unsubscribe_url == "https://u.bank.cn/{token}"


def test_config_show_gives_the_derived_url_as_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_API_PORT", "9100")
    row = next(r for r in effective_settings(load_settings()) if r["variable"] == "DISPATCHER_UNSUBSCRIBE_URL")
    assert row == {"variable": "DISPATCHER_UNSUBSCRIBE_URL", "value": "http://127.0.0.1:9100/v1/unsubscribe/{token}",
                   "source": "default"}  # fmt: skip


def test_the_derived_path_is_the_apis_unsubscribe_route() -> None:
    paths = {route.path for route in router.routes if isinstance(route, APIRoute) and "POST" in route.methods}
    assert UNSUBSCRIBE_PATH in paths
