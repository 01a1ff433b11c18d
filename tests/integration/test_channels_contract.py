"""One contract every channel keeps, run against each adapter and its sandbox."""

from __future__ import annotations

import pytest

from channels import REGISTRY, build_adapter
from channels.base import ChannelAdapter, OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from channels.sandbox import Sandboxes
from config.settings import Settings
from tests import channel_fixtures

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so pytest finds them (no conftest or plugin needed).
recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

GOOD = {
    "sms": "+15553330000",
    "voice": "+15553330000",
    "email": "wu@example.test",
    "letter": {"name": "Wu", "address_line1": "2 Side Road", "address_city": "Beijing"},
    "agency": "",
}
EXTRA = {"email": {"unsubscribe_url": "https://bank.test/u"}, "agency": {"case_file": {"balance": "10.00"}}}


def message(channel: str, contact_id: str) -> OutboundMessage:
    return OutboundMessage(
        contact_id, "acct-c", GOOD[channel], "en", "Hello", subject="Hi", extra=EXTRA.get(channel, {})
    )


@pytest.mark.parametrize("channel", sorted(REGISTRY))
def test_every_channel_sends_and_returns_a_receipt(settings: Settings, channel: str) -> None:
    adapter = build_adapter(channel, settings)
    try:
        assert isinstance(adapter, ChannelAdapter) and adapter.name == channel
        receipt = adapter.send(message(channel, f"c-contract-{channel}"))
        assert receipt.provider_id
    finally:
        adapter.close()


@pytest.mark.parametrize("channel", ["sms", "voice", "letter", "agency"])
def test_every_http_channel_turns_a_503_into_a_transient_error(
    settings: Settings,
    sandboxes: Sandboxes,
    channel: str,
) -> None:
    handle = {"sms": sandboxes.twilio, "voice": sandboxes.twilio, "letter": sandboxes.print_vendor}.get(
        channel, sandboxes.agency
    )
    handle.faults.set(fail_503=1)
    with pytest.raises(TransientDeliveryError):
        build_adapter(channel, settings).send(message(channel, f"c-contract-503-{channel}"))


def test_an_unknown_channel_names_the_known_ones(settings: Settings) -> None:
    with pytest.raises(KeyError, match="sms"):
        build_adapter("carrier-pigeon", settings)


def test_permanent_errors_carry_a_known_outcome_kind() -> None:
    with pytest.raises(ValueError):
        PermanentDeliveryError("x", "exploded")
