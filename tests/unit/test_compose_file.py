"""docker-compose.yml starts the processes the project really has, with options and settings that exist.

There is no Docker engine in CI: every service's command is parsed by the real CLI (typer's click
command, or celery's and Flower's for the flower service), every DISPATCHER_* variable must be a Settings
field, and each service's environment must load as Settings, as it would after `cp .env.example .env`.
`make compose-check` adds docker-compose's own validation where it is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from config.settings import ENV_PREFIX, Settings, load_settings
from tests.cli_parsing import flower_option_names, parse_celery_flower, parse_dispatcher
from workers.app import QUEUES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
SEND_QUEUES = set(QUEUES) - {"plan"}


def _dotenv(text: str) -> dict[str, str]:
    """The uncommented KEY=value lines: what `cp .env.example .env` gives compose and the containers."""
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


DOTENV = _dotenv(ENV_EXAMPLE)
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def _interpolate(text: str) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and ${VAR:?error}, from .env.example alone."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        current = DOTENV.get(name)
        if op == ":?" and not current:
            raise AssertionError(f"${{{name}}} is required ({arg}) but .env.example does not set it")
        if (op == ":-" and not current) or (op == "-" and current is None):
            return arg
        return current or ""

    return _VARIABLE.sub(value, text)


SERVICES: dict[str, dict[str, Any]] = yaml.safe_load(_interpolate(COMPOSE_TEXT))["services"]
OURS = {name: service for name, service in SERVICES.items() if service.get("image", "").startswith("collections")}


def _argv(service: dict[str, Any]) -> list[str]:
    return [str(arg) for arg in service.get("command", [])]


def _dispatcher_params(name: str) -> dict[str, Any]:
    return parse_dispatcher(_argv(OURS[name])).params


def _workers() -> dict[str, dict[str, Any]]:
    return {name: _dispatcher_params(name) for name in OURS if _argv(OURS[name])[:1] == ["worker"]}


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_service_of_our_image_runs_a_command_the_cli_accepts(name: str) -> None:
    service = OURS[name]
    if service.get("entrypoint") == ["celery"]:
        parse_celery_flower(_argv(service))
    else:
        assert "entrypoint" not in service, "the image's entrypoint is `dispatcher`"
        parse_dispatcher(_argv(service))


@pytest.mark.parametrize("name", sorted(OURS))
def test_every_service_environment_loads_as_settings(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for variable in list(os.environ):
        if variable.startswith(ENV_PREFIX):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)  # no .env of the working tree; the container has only its environment
    for variable, value in {**DOTENV, **OURS[name]["environment"]}.items():
        monkeypatch.setenv(variable, str(value))
    settings = load_settings()
    assert settings.redis_url == "redis://redis:6379/0"
    # The one record, in the postgres service: never an embedded server in the container's own filesystem.
    assert settings.database_url is not None and urlsplit(settings.database_url).hostname == "postgres"


def test_every_dispatcher_variable_in_compose_and_env_example_is_a_setting() -> None:
    fields = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    named = set(re.findall(r"\bDISPATCHER_[A-Z0-9_]+", COMPOSE_TEXT + ENV_EXAMPLE))
    assert named - fields - {"DISPATCHER_"} == set()


def test_flower_variables_are_flower_options_or_its_login() -> None:
    flower = set(re.findall(r"\bFLOWER_[A-Z0-9_]+", COMPOSE_TEXT + ENV_EXAMPLE))
    assert flower - flower_option_names() == {"FLOWER_USER", "FLOWER_PASSWORD"}


def test_every_queue_has_its_own_worker_with_the_pool_the_docs_prescribe() -> None:
    workers = _workers()
    consumed = [queue for params in workers.values() for queue in params["queues"].split(",")]
    assert sorted(consumed) == sorted(QUEUES)  # each queue exactly once: a slow provider holds only its own
    for params in workers.values():
        if params["queues"] == "plan":
            assert params["pool"] == "prefork"
        else:
            assert params["queues"] in SEND_QUEUES
            assert (params["pool"], params["concurrency"]) == ("threads", 16)
    names = [params["name"] for params in workers.values()]
    assert len(set(names)) == len(names)  # Flower tells them apart


def test_exactly_one_beat() -> None:
    assert [name for name in OURS if _argv(OURS[name])[:1] == ["beat"]] == ["beat"]


def test_redis_keeps_an_append_only_file_fsynced_every_second_on_a_volume_and_answers_ping() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_the_api_listens_on_its_published_port_and_checks_readyz_without_curl() -> None:
    api = OURS["api"]
    settings = Settings(**{k[len(ENV_PREFIX) :].lower(): v for k, v in api["environment"].items()})
    assert settings.api_host == "0.0.0.0"
    assert [f"{settings.api_port}:{settings.api_port}"] == api["ports"]
    check = api["healthcheck"]["test"]
    assert check[:2] == ["CMD", "python"] and f"127.0.0.1:{settings.api_port}/readyz" in check[-1]
    from dispatcher.api.health import router

    assert "/readyz" in {route.path for route in router.routes}  # type: ignore[attr-defined]


def test_flower_is_read_only_persistent_with_auth_from_the_env_file() -> None:
    flower = OURS["flower"]
    options = parse_celery_flower(_argv(flower))
    assert options["read_only"] is True and options["persistent"] is True
    assert str(options["db"]).startswith("/var/lib/dispatcher/")  # the flower-state volume
    assert any(volume.endswith(":/var/lib/dispatcher") for volume in flower["volumes"])
    assert int(str(options["max_tasks"])) <= 10_000
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == f"{DOTENV['FLOWER_USER']}:{DOTENV['FLOWER_PASSWORD']}"
    assert [f"{options['port']}:{options['port']}"] == flower["ports"]
    assert _argv(flower)[0] == f"--broker={flower['environment']['DISPATCHER_REDIS_URL']}"


def test_the_staging_profile_adds_sandboxes_that_the_default_urls_point_at() -> None:
    sandbox = OURS["sandbox"]
    assert sandbox["profiles"] == ["staging"]
    assert [name for name, service in SERVICES.items() if service.get("profiles")] == ["sandbox"]
    params = _dispatcher_params("sandbox")
    assert params["host"] == "0.0.0.0"  # reachable from the other containers
    env = OURS["worker-sms"]["environment"]
    urls = {
        "twilio_port": env["DISPATCHER_TWILIO_API_BASE_URL"],
        "print_port": env["DISPATCHER_PRINT_VENDOR_URL"],
        "agency_port": env["DISPATCHER_AGENCY_URL"],
        "wechat_port": env["DISPATCHER_WECHAT_API_BASE_URL"],
        "aliyun_port": env["DISPATCHER_ALIYUN_ENDPOINT"],
    }
    for option, url in urls.items():
        assert (urlsplit(url).hostname, urlsplit(url).port) == ("sandbox", params[option])
    assert (env["DISPATCHER_SMTP_HOST"], int(env["DISPATCHER_SMTP_PORT"])) == ("sandbox", params["smtp_port"])
    # Callbacks from the sandboxes reach the API service.
    assert urlsplit(env["DISPATCHER_PUBLIC_BASE_URL"]).hostname == "api"


def test_every_service_of_our_image_shares_the_postgres_service_as_its_record() -> None:
    postgres = SERVICES["postgres"]
    environment = postgres["environment"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name, service in OURS.items():
        if name in ("sandbox", "flower"):
            continue  # neither opens the record
        url = urlsplit(service["environment"]["DISPATCHER_DATABASE_URL"])
        assert (url.hostname, url.port or 5432) == ("postgres", 5432)
        assert (url.username, url.path.lstrip("/")) == (environment["POSTGRES_USER"], environment["POSTGRES_DB"])
        # libpq's PGPASSWORD: the URL carries no password, the service's password is the one set in .env.
        assert url.password is None and service["environment"]["PGPASSWORD"] == environment["POSTGRES_PASSWORD"]
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_every_service_of_our_image_runs_under_an_init_that_passes_sigterm_on() -> None:
    # As PID 1 a process without its own SIGTERM handler (the sandbox) ignores `docker compose stop`.
    assert {name: service.get("init") for name, service in OURS.items()} == {name: True for name in OURS}


def test_the_base_images_can_be_named_for_a_host_without_a_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DOTENV, "PYTHON_IMAGE", "local/python:3.11")
    monkeypatch.setitem(DOTENV, "REDIS_IMAGE", "local/redis")
    monkeypatch.setitem(DOTENV, "POSTGRES_IMAGE", "local/postgres")
    services = yaml.safe_load(_interpolate(COMPOSE_TEXT))["services"]
    assert services["api"]["build"]["args"]["PYTHON_IMAGE"] == "local/python:3.11"
    assert (services["redis"]["image"], services["postgres"]["image"]) == ("local/redis", "local/postgres")
    # Unset, the usual public images: a host with a registry is unaffected.
    assert OURS["api"]["build"]["args"]["PYTHON_IMAGE"] == "python:3.11-slim"
