"""One contract every channel keeps, run against each adapter and its sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from channels import EXTRA_PROVIDERS, REGISTRY, ProviderSpec, build_adapter
from channels.base import (
    ChannelAdapter,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    Reconcilable,
    SentQuery,
    TransientDeliveryError,
)
from channels.sandbox import HttpSandbox, Sandboxes
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
    "letter": {"name": "Wu", "address_line1": "2 Side Road", "address_city": "Beijing", "address_country": "CN"},
    "agency": "",
    "wechat": "oContract0000000000000000000",
}
EXTRA = {
    "email": {"unsubscribe_url": "https://bank.test/u"},
    "agency": {"case_file": {"balance": "10.00"}},
    "wechat": {"template": "early_wechat"},
}
# A WeChat template message is its fields, one `key: value` line each, as its template renders them.
TEXT = {"wechat": "first: Hello\nkeyword1: 1\nkeyword2: 2\nkeyword3: 3\nremark: Hi\n"}


def message(channel: str, contact_id: str) -> OutboundMessage:
    return OutboundMessage(
        contact_id,
        "acct-c",
        GOOD[channel],
        "en",
        TEXT.get(channel, "Hello"),
        subject="Hi",
        extra=EXTRA.get(channel, {}),
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


@pytest.mark.parametrize("channel", ["sms", "voice", "letter", "agency", "wechat"])
def test_every_http_channel_turns_a_503_into_a_transient_error(
    settings: Settings,
    sandboxes: Sandboxes,
    channel: str,
) -> None:
    handles: dict[str, HttpSandbox[Any]] = {"sms": sandboxes.twilio, "voice": sandboxes.twilio}
    handles |= {"letter": sandboxes.print_vendor, "agency": sandboxes.agency, "wechat": sandboxes.wechat}
    handle = handles[channel]
    handle.faults.set(fail_503=1)
    with pytest.raises(TransientDeliveryError):
        build_adapter(channel, settings).send(message(channel, f"c-contract-503-{channel}"))


def test_an_unknown_channel_names_the_known_ones(settings: Settings) -> None:
    with pytest.raises(KeyError, match="sms"):
        build_adapter("carrier-pigeon", settings)


def test_permanent_errors_carry_a_known_outcome_kind() -> None:
    with pytest.raises(ValueError):
        PermanentDeliveryError("x", "exploded")


def sent_query(channel: str, contact_id: str) -> SentQuery:
    since = datetime.now(UTC) - timedelta(minutes=1)
    to = cast(str | dict[str, str], GOOD[channel])
    return SentQuery(contact_id, "acct-c", to, None, since, since + timedelta(minutes=2), "Hello")


@pytest.mark.parametrize("channel", sorted(REGISTRY))
def test_every_channel_can_be_asked_whether_a_contact_reached_its_provider(settings: Settings, channel: str) -> None:
    adapter = build_adapter(channel, settings)
    try:
        assert isinstance(adapter, Reconcilable)
        contact_id = f"c-contract-find-{channel}"
        if channel in ("email", "wechat"):  # SMTP and WeChat's template messages cannot be asked: unknown
            with pytest.raises(LookupUnavailable):
                adapter.find_sent(sent_query(channel, contact_id))
            return
        sent = message(channel, contact_id)
        if channel in ("sms", "voice"):  # a number of its own: lookups go by number and time
            sent = OutboundMessage(contact_id, "acct-c", "+15553339999", "en", "Hello")
        receipt = adapter.send(sent)
        asked = sent_query(channel, contact_id)
        evidence = adapter.find_sent(SentQuery(**{**asked.__dict__, "to": sent.to}))
        assert evidence.found and evidence.provider_id == receipt.provider_id
    finally:
        adapter.close()


@pytest.mark.parametrize("channel", ["sms", "voice", "letter", "agency"])  # wechat has no lookup: above
def test_every_http_channel_lookup_turns_a_503_into_a_transient_error(
    settings: Settings, sandboxes: Sandboxes, channel: str
) -> None:
    handles: dict[str, HttpSandbox[Any]] = {"sms": sandboxes.twilio, "voice": sandboxes.twilio}
    handles |= {"letter": sandboxes.print_vendor, "agency": sandboxes.agency}
    handles[channel].faults.set(fail_503=1)
    adapter = build_adapter(channel, settings)
    try:
        assert isinstance(adapter, Reconcilable)
        with pytest.raises(TransientDeliveryError):
            adapter.find_sent(sent_query(channel, f"c-contract-find-503-{channel}"))
    finally:
        adapter.close()


# The providers beyond each channel's own (channels.EXTRA_PROVIDERS) keep the same contract, each against its
# sandbox (the Sandboxes attribute named after it).
EXTRA_GOOD = {"aliyun": "+8613500135000"}
ALIYUN_PARAMS = {"name": "Wu", "account_ref": "0001", "amount": "¥10.00", "pay_url": "https://b.test"}
EXTRA_MESSAGE = {"aliyun": {"template": "early_sms", "template_param": ALIYUN_PARAMS}}
# Found evidence names the provider's id of the message; where the provider's lookup does not carry the id its
# send answered (Aliyun's QuerySendDetails has no BizId), the id the adapter documents instead.
EXTRA_EVIDENCE_ID = {"aliyun": "out:{contact_id}"}
EXTRA_SPECS = sorted(EXTRA_PROVIDERS, key=lambda provider: provider.name)


def extra_message(provider: ProviderSpec, contact_id: str) -> OutboundMessage:
    return OutboundMessage(contact_id, "acct-c", EXTRA_GOOD[provider.name], "en", "Hello",
                           extra=EXTRA_MESSAGE.get(provider.name, {}))  # fmt: skip


@pytest.mark.parametrize("provider", EXTRA_SPECS, ids=lambda provider: provider.name)
def test_every_extra_provider_sends_and_returns_a_receipt(settings: Settings, provider: ProviderSpec) -> None:
    adapter = provider.adapter(settings)
    try:
        assert isinstance(adapter, ChannelAdapter) and adapter.name == provider.name
        assert adapter.send(extra_message(provider, f"c-contract-{provider.name}")).provider_id
    finally:
        adapter.close()


@pytest.mark.parametrize("provider", EXTRA_SPECS, ids=lambda provider: provider.name)
def test_every_extra_provider_turns_a_503_into_a_transient_error(
    settings: Settings, sandboxes: Sandboxes, provider: ProviderSpec
) -> None:
    adapter = provider.adapter(settings)
    try:
        getattr(sandboxes, provider.name).faults.set(fail_503=1)
        with pytest.raises(TransientDeliveryError):
            adapter.send(extra_message(provider, f"c-contract-503-{provider.name}"))
        getattr(sandboxes, provider.name).faults.set(fail_503=1)
        assert isinstance(adapter, Reconcilable)
        with pytest.raises(TransientDeliveryError):
            asked = sent_query("sms", f"c-contract-find-503-{provider.name}")
            adapter.find_sent(SentQuery(**{**asked.__dict__, "to": EXTRA_GOOD[provider.name]}))
    finally:
        adapter.close()


@pytest.mark.parametrize("provider", EXTRA_SPECS, ids=lambda provider: provider.name)
def test_every_extra_provider_can_be_asked_whether_a_contact_reached_it(
    settings: Settings, provider: ProviderSpec
) -> None:
    adapter = provider.adapter(settings)
    try:
        assert isinstance(adapter, Reconcilable)
        contact_id = f"c-contract-find-{provider.name}"
        sent = extra_message(provider, contact_id)
        receipt = adapter.send(sent)
        asked = sent_query("sms", contact_id)
        evidence = adapter.find_sent(SentQuery(**{**asked.__dict__, "to": sent.to, "text": None}))
        expected = EXTRA_EVIDENCE_ID.get(provider.name, receipt.provider_id).format(contact_id=contact_id)
        assert evidence.found and evidence.provider_id == expected
        absent = adapter.find_sent(SentQuery(**{**asked.__dict__, "to": sent.to, "contact_id": contact_id + "x"}))
        assert not absent.found
    finally:
        adapter.close()
