"""The WeChat channel's pure parts: the openid as an address of its own, consent that must name the channel,
the errcode translation, the template message's fields, and safe mode's crypto."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from channels.base import PermanentDeliveryError, ProviderMisconfigured, TransientDeliveryError, WebhookRejected
from channels.wechat import client_msg_id, template_fields, translate_wechat_error
from channels.wechat_crypto import BLOCK, SafeModeCipher, encrypted_envelope, open_push
from dispatcher.core.models import DEFAULT_CONSENT, AccountRecord, AddressKind, Channel
from dispatcher.core.planner import plan
from dispatcher.core.strategy import Strategy
from tests.conftest import make_account

OPENID = "oUnitDebtor00000000000000000"
KEY = "c2FuZGJveC13ZWNoYXQtYWVzLWtleS0zMi1ieXRlcyE"
NOON = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai, the early wechat step's hour


def test_an_openid_is_an_address_of_its_own_and_is_validated() -> None:
    account = make_account(wechat_openid=OPENID)
    assert Channel.WECHAT.address is AddressKind.WECHAT and account.address_for(Channel.WECHAT) == OPENID
    assert make_account().address_for(Channel.WECHAT) is None
    with pytest.raises(ValidationError, match="wechat_openid"):
        make_account(wechat_openid="+8613800138000")


def test_wechat_needs_consent_that_names_it(strategy: Strategy) -> None:
    assert Channel.WECHAT not in DEFAULT_CONSENT
    due = date(2026, 2, 14)  # 16 days past due on 2026-03-02: the early stage
    unnamed = make_account("W1", wechat_openid=OPENID, due_date=due)
    named = make_account("W2", wechat_openid=OPENID, due_date=due, consent=["wechat"], phone=None, email=None)
    denied = plan(AccountRecord(account=unnamed), (), strategy, NOON)
    assert ("early", "no_consent:wechat") in {(d.contact_id.split("/")[1], d.rule) for d in denied.decisions}
    sent = plan(AccountRecord(account=named), (), strategy, NOON)
    assert [(c.channel, c.template) for c in sent.contacts] == [(Channel.WECHAT, "early_wechat")]


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [(43004, "opted_out"), (43101, "opted_out"), (40003, "invalid_address"), (99999, "failed")],
)
def test_what_the_debtor_did_is_an_outcome(errcode: int, kind: str) -> None:
    error = translate_wechat_error(errcode, "", 0.0)
    assert isinstance(error, PermanentDeliveryError) and error.outcome_kind == kind


@pytest.mark.parametrize(
    ("errcode", "setting"),
    [(40037, "TEMPLATE_IDS"), (47003, "TEMPLATE_IDS"), (48001, "APP_ID"), (40013, "APP_ID"), (40125, "APP_SECRET")],
)
def test_what_we_configured_wrong_names_the_setting(errcode: int, setting: str) -> None:
    error = translate_wechat_error(errcode, "", 0.0)
    assert isinstance(error, ProviderMisconfigured) and error.setting == f"DISPATCHER_WECHAT_{setting}"


def test_the_daily_quota_waits_until_midnight_in_beijing() -> None:
    at_23_00_beijing = datetime(2026, 3, 2, 15, 0, tzinfo=UTC).timestamp()
    error = translate_wechat_error(45009, "", at_23_00_beijing)
    assert isinstance(error, TransientDeliveryError) and error.retry_after == 3600


def test_a_template_message_is_its_field_lines_and_a_contact_has_one_client_msg_id() -> None:
    assert template_fields("first: 你好: 王\n\nremark: 谢谢\n") == {
        "first": {"value": "你好: 王"},
        "remark": {"value": "谢谢"},
    }
    with pytest.raises(PermanentDeliveryError):
        template_fields("no field here")
    assert (
        client_msg_id("A1/early/wechat/0") == client_msg_id("A1/early/wechat/0") != client_msg_id("A1/early/wechat/1")
    )
    assert len(client_msg_id("A1/early/wechat/0")) == 32


def test_safe_mode_round_trips_pads_to_32_and_refuses_what_it_did_not_sign() -> None:
    cipher = SafeModeCipher(KEY, "wxAPP")
    xml = "<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID></xml>"
    encrypted = cipher.encrypt(xml)
    assert len(base64.b64decode(encrypted)) % BLOCK == 0 and cipher.decrypt(encrypted) == xml
    query, body = encrypted_envelope(cipher, "tok", xml, "1000", "n")
    assert open_push(cipher, "tok", query, body.encode(), now=1000.0)["MsgID"] == "1"
    with pytest.raises(WebhookRejected, match="msg_signature"):
        open_push(cipher, "tok", {**query, "msg_signature": "0" * 40}, body.encode(), now=1000.0)
    with pytest.raises(WebhookRejected, match="AppID"):
        open_push(SafeModeCipher(KEY, "wxOTHER"), "tok", query, body.encode(), now=1000.0)
    with pytest.raises(WebhookRejected, match="safe-mode"):
        open_push(cipher, "tok", {k: v for k, v in query.items() if k != "encrypt_type"}, body.encode(), now=1000.0)
    with pytest.raises(WebhookRejected, match="DTD"):
        open_push(cipher, "tok", query, b"<!DOCTYPE x [<!ENTITY a 'b'>]><xml/>", now=1000.0)
