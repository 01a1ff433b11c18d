"""A channel that exists only in the tests: registered in the core for the length of a `with`, then gone, so
the rest of the suite sees the shipped channels alone. It reaches the debtor's phone, like a chat app would."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from config.settings import DEFAULT_STRATEGY
from dispatcher.core import channel_registry
from dispatcher.core.models import AddressKind, Channel

PIGEON = "pigeon"


@contextmanager
def registered_channel(name: str = PIGEON, address: AddressKind | None = AddressKind.PHONE) -> Iterator[Channel]:
    channel = channel_registry.register_channel(name, address)
    try:
        yield channel
    finally:
        channel_registry._REGISTERED.pop(name, None)


def strategy_with_pigeon(
    *, window: bool = True, caps: bool = True, pressure: bool = True, every_stage: bool = False
) -> dict[str, Any]:
    """The shipped strategy with a pigeon step first in its first stage (or in every stage; the SMS's template
    and hour), and the pigeon's compliance entries, each left out when asked."""
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load(Path(DEFAULT_STRATEGY).read_text(encoding="utf-8")))
    step = {"name": "pigeon", "channel": PIGEON, "template": "reminder_sms", "cadence": {"days": [0]}, "hour": 10}
    for stage in data["stages"] if every_stage else data["stages"][:1]:
        stage["steps"].insert(0, {**step, "cadence": {"every": 2}} if every_stage else step)
    compliance = data["compliance"]
    if window:
        compliance["windows"][PIGEON] = {"start": "08:00", "end": "21:00"}
    if caps:
        compliance["caps"][PIGEON] = [{"max": 1, "days": 1}]
    if pressure:
        compliance["pressure"]["channels"].append(PIGEON)
    return data
