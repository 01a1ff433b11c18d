"""The channel registry is the one place that lists channels for the workers: every channel the dispatcher
plans for has a spec there, and the workers' queues and senders come from it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from channels import REGISTRY, ChannelSpec, OutboundMessage, Receipt, build_adapter, spec_of
from config.settings import Settings, load_settings
from dispatcher.core.models import Channel
from workers.app import QUEUES, app, configure


class _Pigeon:
    """A channel that exists only in the test's registry entry."""

    name = "pigeon"

    def __init__(self, settings: Settings, **options: object) -> None:
        self.options = options

    def send(self, message: OutboundMessage) -> Receipt:
        return Receipt(provider_id=f"pigeon-{message.contact_id}", status="sent")

    def close(self) -> None:
        pass


PIGEON = ChannelSpec(name="pigeon", adapter=_Pigeon, sender=lambda settings: "loft-7")


@pytest.fixture
def settings() -> Settings:
    return load_settings(redis_url="redis://127.0.0.1:1/0")


@pytest.fixture
def pigeon_registered(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[None]:
    monkeypatch.setitem(REGISTRY, "pigeon", PIGEON)
    yield
    monkeypatch.undo()
    configure(settings)  # the app's queues as they were, for whatever runs next in this process


def test_every_channel_the_dispatcher_plans_for_has_a_spec_and_a_queue() -> None:
    assert sorted(REGISTRY) == sorted(channel.value for channel in Channel)
    assert all(spec.name == name for name, spec in REGISTRY.items())
    assert sorted(QUEUES) == sorted(["plan", *(spec.queue for spec in REGISTRY.values())])


def test_every_channel_has_a_default_rate_limit() -> None:
    factory = Settings.model_fields["rate_limits"].default_factory
    assert factory is not None
    assert sorted(factory()) == sorted(REGISTRY)  # type: ignore[call-arg]


def test_a_channel_only_in_the_registry_gets_its_queue_its_adapter_and_its_sender(
    pigeon_registered: None, settings: Settings
) -> None:
    configure(settings)
    assert "pigeon" in {queue.name for queue in app.conf.task_queues}
    adapter = build_adapter("pigeon", settings, timeout=3.0)
    assert isinstance(adapter, _Pigeon) and adapter.options == {"timeout": 3.0}
    assert spec_of("pigeon").sender(settings) == "loft-7"


def test_an_unknown_channel_names_the_known_ones(settings: Settings) -> None:
    with pytest.raises(KeyError, match="known: \\['agency', 'email', 'letter', 'sms', 'voice', 'wechat'\\]"):
        spec_of("carrier-pigeon")


def test_beat_sends_the_archiver_at_the_configured_interval(settings: Settings) -> None:
    try:
        configure(settings.model_copy(update={"archive_interval_seconds": 5.0}))
        archive = app.conf.beat_schedule["archive"]
        assert (archive["task"], archive["schedule"]) == ("dispatcher.archive", 5.0)
        assert 0 < archive["options"]["expires"] < 5.0  # a run not started before the next is due is dropped
    finally:
        configure(settings)
    assert app.conf.beat_schedule["archive"]["schedule"] == 60.0
