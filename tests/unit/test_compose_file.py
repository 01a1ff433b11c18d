"""docker-compose.yml names the processes the project really has (no Docker engine needed to check)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.main import get_command

from dispatcher.cli import app
from workers.app import QUEUES

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _services() -> dict[str, dict[str, object]]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def test_every_dispatcher_command_in_the_compose_file_exists() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    used = {
        service["command"][1] for service in _services().values() if service.get("command", [""])[0] == "dispatcher"
    }
    assert used and used <= commands


def test_the_workers_consume_every_queue_and_redis_keeps_an_append_only_file() -> None:
    services = _services()
    consumed = set()
    for service in services.values():
        command = service.get("command", [])
        if command[:2] == ["dispatcher", "worker"]:
            consumed |= set(command[command.index("-Q") + 1].split(","))
    assert consumed == set(QUEUES)
    assert "--appendonly" in services["redis"]["command"]
    assert sum(1 for s in services.values() if s.get("command", [])[:2] == ["dispatcher", "beat"]) == 1
