"""One exception tree: everything the project raises on purpose derives from config.errors.DispatcherError,
and a bad setting still stops a command with its message and exit status 1."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from config.errors import DispatcherError, InputRejected, NotFound
from dispatcher.api.errors import install

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "channels", "dispatcher", "workers")


def _project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        names = [package] + [info.name for info in pkgutil.walk_packages([str(ROOT / package)], f"{package}.")]
        for name in names:
            module = importlib.import_module(name)
            for attribute, value in vars(module).items():
                if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                    found[f"{name}.{attribute}"] = value
    return found


def test_every_exception_of_the_project_derives_from_the_one_root() -> None:
    exceptions = _project_exceptions()
    assert "dispatcher.engine.UnknownAccount" in exceptions  # the walk reaches the modules
    assert {name for name, cls in exceptions.items() if not issubclass(cls, DispatcherError)} == set()


def test_a_bad_setting_stops_a_command_with_its_message_and_exit_status_1() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISPATCHER_TWILIO_ACCOUNT_SID": "not-a-sid"}
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "config", "show"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        "configuration error:\n  DISPATCHER_TWILIO_ACCOUNT_SID: Value error, a Twilio Account SID is 'AC' followed"
        " by 32 hex characters (got 'not-a-sid')\n"
    )


def test_a_bad_setting_stops_a_celery_worker_at_start_up_rather_than_being_logged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers.app import _worker_starting

    monkeypatch.setenv("DISPATCHER_TWILIO_ACCOUNT_SID", "not-a-sid")
    with pytest.raises(SystemExit) as stopped:
        _worker_starting(instance=object(), options={})
    assert str(stopped.value.code).startswith("configuration error:\n  DISPATCHER_TWILIO_ACCOUNT_SID:")


class _MissingWidget(NotFound):
    field = "widget_id"


class _BadColour(InputRejected):
    field = "colour"


def _app_raising(exc: Exception) -> TestClient:
    app = FastAPI()
    install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app)


def test_the_api_answers_any_not_found_by_its_kind_naming_the_field() -> None:
    response = _app_raising(_MissingWidget("widget_id: no widget 'W1'")).get("/boom")
    assert response.status_code == 404
    assert response.json()["fields"] == [{"field": "widget_id", "message": "no widget 'W1'"}]


def test_the_api_answers_any_rejected_input_by_its_kind_naming_the_field() -> None:
    response = _app_raising(_BadColour("colour: mauve is not offered")).get("/boom")
    assert response.status_code == 422
    assert response.json()["fields"] == [{"field": "colour", "message": "mauve is not offered"}]
