"""A second SMS provider for the routing and failover tests: `twilio_backup`, a ProviderSpec of channel sms whose
adapter is the real Twilio SMS adapter pointed at a second Twilio sandbox of its own. Test-only: it is added to
channels.PROVIDERS for the test that asks for it, and taken out after.

Reusable beyond these tests (a chaos row can run the same pair with real worker processes): `second_twilio`
starts the sandbox, `backup_provider` makes the spec for any sandbox URL, `routed_settings` gives the worker
settings with a route over both, and `sends_by_contact` counts what each sandbox accepted per contact id.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from channels import PROVIDERS, ProviderSpec
from channels.sandbox import HttpSandbox, Sandboxes
from channels.sandbox.server import EventLog, ServerHandle
from channels.sandbox.twilio_api import TwilioSandbox, create_app
from channels.sms import SmsAdapter
from channels.twilio_provider import contact_id_of
from config.settings import Settings, load_settings

BACKUP = "twilio_backup"


def start_second_twilio(state_dir: Path, settings: Settings) -> HttpSandbox[TwilioSandbox]:
    """Another Twilio sandbox (its own messages, log and faults), taking the credentials `settings` present."""
    state = TwilioSandbox(
        EventLog(state_dir / "twilio-backup.ndjson"), settings.twilio_account_sid,
        settings.twilio_auth_token.get_secret_value(),
    )  # fmt: skip
    return HttpSandbox(state, ServerHandle(create_app(state), "127.0.0.1", 0))


def backup_provider(url: str, name: str = BACKUP) -> ProviderSpec:
    """A second SMS provider: the Twilio SMS adapter, pointed at `url`."""

    def adapter(settings: Settings, **options: Any) -> SmsAdapter:
        return SmsAdapter(settings.model_copy(update={"twilio_api_base_url": url}), **options)

    return ProviderSpec(name=name, channel="sms", adapter=adapter)


def routed_settings(
    redis_url: str, sandboxes: Sandboxes, routes: Mapping[str, Mapping[str, Sequence[str]]], **more: Any
) -> Settings:
    """The worker settings of tests/worker_fixtures.py, with `routes` (validated as the environment's would be)."""
    return load_settings(redis_url=redis_url, send_retries=3, **sandboxes.settings_overrides(), routes=routes, **more)


def sends_by_contact(*sandboxes: HttpSandbox[TwilioSandbox]) -> Counter[str]:
    """How many messages the sandboxes together accepted for each contact id (a duplicate counts 2)."""
    return Counter(
        contact_id_of(m["form"]["StatusCallback"]) for sandbox in sandboxes for m in sandbox.state.messages()
    )


@pytest.fixture(scope="module")
def second_twilio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpSandbox[TwilioSandbox]]:
    running = start_second_twilio(tmp_path_factory.mktemp("twilio-backup"), load_settings())
    yield running
    running.stop()


@pytest.fixture
def backup(second_twilio: HttpSandbox[TwilioSandbox], monkeypatch: pytest.MonkeyPatch) -> ProviderSpec:
    """`twilio_backup` in channels.PROVIDERS for this test, at the second sandbox (its faults cleared)."""
    second_twilio.faults.set(fail_429=0, fail_503=0, hang=0.0, latency=0.0, accept_then_hang=0)
    second_twilio.state.closed_prefixes = ()
    spec = backup_provider(second_twilio.url)
    monkeypatch.setitem(PROVIDERS, ("sms", BACKUP), spec)
    return spec
