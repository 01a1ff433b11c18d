"""The WeChat adapter against its sandbox, through httpx and the sandbox's real server: what WeChat accepts
and refuses, the token shared through the real Redis (one refresh when it expires mid-batch, each contact
sent once), and a repeat of a contact dropped by its client_msg_id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from channels.base import (
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    SentQuery,
    TransientDeliveryError,
)
from channels.sandbox import Sandboxes
from channels.wechat import REFRESH_MARGIN, WechatAdapter, client_msg_id
from config.settings import Settings
from dispatcher.state.provider_state import ProviderState
from tests import channel_fixtures

pytestmark = pytest.mark.integration

recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

FIELDS = "first: 王小明您好\nkeyword1: ¥5,000.00\nkeyword2: 2026年3月1日\nkeyword3: 16天\nremark: 请尽快还款\n"


def openid(prefix: str = "o", seed: str = "") -> str:
    return (prefix + seed + "x" * 28)[:28]


def message(
    contact_id: str, to: str | None = None, text: str = FIELDS, template: str = "early_wechat"
) -> OutboundMessage:
    return OutboundMessage(contact_id, "A1", to or openid("oDebtor"), "zh-CN", text,
                           extra={"template": template, "url": "https://pay.bank.test/a/A1"})  # fmt: skip


@pytest.fixture
def shared(redis_url: str) -> Iterator[ProviderState]:
    client = redis.Redis.from_url(redis_url)
    state = ProviderState(client, "wechat")
    client.delete(*[key for key in client.keys("{tok:wechat}*")] or ["none"])
    yield state
    client.close()


def test_a_template_message_is_accepted_with_its_fields_and_a_client_msg_id_of_the_contact(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    adapter = WechatAdapter(settings)
    try:
        receipt = adapter.send(message("A1/early/wechat/0"))
    finally:
        adapter.close()
    sent = sandboxes.wechat.state.sent[receipt.provider_id]
    assert sent["template_id"] == settings.wechat_template_ids["early_wechat"]
    assert sent["data"]["keyword3"] == {"value": "16天"} and sent["url"] == "https://pay.bank.test/a/A1"
    assert sent["client_msg_id"] == client_msg_id("A1/early/wechat/0") == receipt.detail["client_msg_id"]


def test_a_repeat_of_one_contact_is_dropped_by_wechat(settings: Settings, sandboxes: Sandboxes) -> None:
    adapter = WechatAdapter(settings)
    try:
        first = adapter.send(message("A1/early/wechat/7"))
        again = adapter.send(message("A1/early/wechat/7"))
    finally:
        adapter.close()
    assert first.provider_id == again.provider_id
    sends = [m for m in sandboxes.wechat.state.messages() if m["client_msg_id"] == client_msg_id("A1/early/wechat/7")]
    assert len(sends) == 1


@pytest.mark.parametrize(
    ("to", "kind"),
    [(openid("o-unfollowed"), "opted_out"), (openid("o-refused"), "opted_out"), ("+8613800138000", "invalid_address")],
)
def test_what_the_debtor_did_is_an_outcome(settings: Settings, to: str, kind: str) -> None:
    adapter = WechatAdapter(settings)
    try:
        with pytest.raises(PermanentDeliveryError) as raised:
            adapter.send(message(f"A1/early/wechat/{kind}", to=to))
    finally:
        adapter.close()
    assert raised.value.outcome_kind == kind


def test_a_removed_template_is_a_misconfiguration_naming_the_setting(settings: Settings, sandboxes: Sandboxes) -> None:
    template_id = settings.wechat_template_ids["continuous_wechat"]
    fields = sandboxes.wechat.state.templates[template_id]
    sandboxes.wechat.state.remove_template(template_id)
    adapter = WechatAdapter(settings)
    try:
        with pytest.raises(ProviderMisconfigured) as raised:
            adapter.send(message("A1/continuous/wechat/0", template="continuous_wechat"))
        with pytest.raises(ProviderMisconfigured) as unmapped:  # no template_id at all: nothing leaves
            adapter.send(message("A1/continuous/wechat/1", template="early_sms"))
    finally:
        sandboxes.wechat.state.templates[template_id] = fields
        adapter.close()
    assert raised.value.setting == unmapped.value.setting == "DISPATCHER_WECHAT_TEMPLATE_IDS"
    assert "40037" in str(raised.value)


def test_a_missing_data_field_is_refused_as_the_vendor_does(settings: Settings) -> None:
    adapter = WechatAdapter(settings)
    try:
        with pytest.raises(ProviderMisconfigured, match="47003") as raised:
            adapter.send(message("A1/early/wechat/2", text="first: hi\nkeyword1: 1\n"))
    finally:
        adapter.close()
    assert raised.value.setting == "DISPATCHER_WECHAT_TEMPLATE_IDS"


def test_a_wrong_secret_names_the_secret(settings: Settings) -> None:
    adapter = WechatAdapter(settings.model_copy(update={"wechat_app_secret": settings.wechat_token}))
    try:
        with pytest.raises(ProviderMisconfigured) as raised:
            adapter.send(message("A1/early/wechat/3"))
    finally:
        adapter.close()
    assert raised.value.setting == "DISPATCHER_WECHAT_APP_SECRET"


def test_the_daily_quota_waits_until_midnight_in_beijing(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.wechat.state.daily_quota = 0
    adapter = WechatAdapter(settings)
    try:
        with pytest.raises(TransientDeliveryError) as raised:
            adapter.send(message("A1/early/wechat/4"))
    finally:
        sandboxes.wechat.state.daily_quota = None
        adapter.close()
    assert not raised.value.ambiguous and 0 < (raised.value.retry_after or 0) <= 86_400


def test_a_busy_or_unreachable_wechat_is_transient(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.wechat.faults.set(fail_503=1)
    adapter = WechatAdapter(settings)
    try:
        with pytest.raises(TransientDeliveryError):
            adapter.send(message("A1/early/wechat/5"))
    finally:
        adapter.close()
    down = WechatAdapter(settings.model_copy(update={"wechat_api_base_url": "http://127.0.0.1:9"}))
    with pytest.raises(TransientDeliveryError) as raised:
        down.send(message("A1/early/wechat/6"))
    assert not raised.value.ambiguous  # refused before it reached WeChat


def test_a_token_expiring_mid_batch_is_refreshed_once_and_each_contact_sent_once(
    settings: Settings, sandboxes: Sandboxes, shared: ProviderState
) -> None:
    workers = [WechatAdapter(settings, store=shared), WechatAdapter(settings, store=shared)]  # one token for both
    ids = [f"B{n}/early/wechat/0" for n in range(10)]
    before = len(sandboxes.wechat.state.messages())
    try:
        for index, contact_id in enumerate(ids):
            if index == 5:
                sandboxes.wechat.state.expire_tokens()  # WeChat's 7200 s end in the middle of the batch
            workers[index % 2].send(message(contact_id))
    finally:
        for adapter in workers:
            adapter.close()
    sent = sandboxes.wechat.state.messages()[before:]
    assert sorted(m["client_msg_id"] for m in sent) == sorted(client_msg_id(c) for c in ids)  # each once
    assert sum(adapter.token_fetches for adapter in workers) == 2  # the first token, and one refresh


def test_a_token_is_refreshed_before_it_expires_by_one_worker(settings: Settings, shared: ProviderState) -> None:
    adapter = WechatAdapter(settings, store=shared)
    try:
        adapter.send(message("C1/early/wechat/0"))
        token, expires_at = shared.read_token() or ("", 0.0)
        shared.write_token(token, time.time() + REFRESH_MARGIN - 1)  # inside the margin: due for a refresh
        assert shared.try_refresh(5)  # another worker is refreshing right now: the old token still serves
        adapter.send(message("C1/early/wechat/1"))
        assert adapter.token_fetches == 1
        shared.refreshed()
        adapter.send(message("C1/early/wechat/2"))
        assert adapter.token_fetches == 2 and (shared.read_token() or ("", 0.0))[1] > time.time() + REFRESH_MARGIN
    finally:
        adapter.close()


def test_a_send_in_doubt_cannot_be_looked_up(settings: Settings) -> None:
    now = datetime.now(UTC)
    query = SentQuery("A1/early/wechat/0", "A1", openid("oDebtor"), None, now, now + timedelta(minutes=2))
    with pytest.raises(LookupUnavailable):
        WechatAdapter(settings).find_sent(query)
