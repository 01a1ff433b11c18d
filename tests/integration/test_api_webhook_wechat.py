"""The WeChat official account's pushes through a real uvicorn server, encrypted and signed as WeChat's safe
mode does: a TEMPLATESENDJOBFINISH records the contact's outcome; a forged, plain-mode, foreign or stale
push is a 403 that changes nothing; a message id we never sent is acknowledged and ignored."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest

from channels import callbacks
from channels.wechat_crypto import SafeModeCipher, encrypted_envelope, sha1_signature
from dispatcher.core.models import Channel
from dispatcher.state.provider_state import ProviderState
from tests.api_fixtures import Api, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account

pytestmark = pytest.mark.integration

OPENID = "oA1Debtor0000000000000000000"
CONTACT = "A1/early/wechat/0"


def event(msgid: str, status: str = "success") -> str:
    return (
        f"<xml><ToUserName><![CDATA[gh_bank]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status></xml>"
    )


def push(api: Api, xml: str, *, app_id: str | None = None, token: str | None = None, timestamp: str | None = None,
         tamper: bool = False):  # fmt: skip
    settings = api.settings
    cipher = SafeModeCipher(settings.wechat_encoding_aes_key.get_secret_value(), app_id or settings.wechat_app_id)
    query, body = encrypted_envelope(
        cipher, token or settings.wechat_token.get_secret_value(), xml, timestamp or str(int(time.time())), "n0nce"
    )
    if tamper:  # another ciphertext under the signature WeChat gave the first
        query["msg_signature"] = sha1_signature("x", query["timestamp"], "n0nce", "y")
    return api.client.post(f"{callbacks.WECHAT}?{urlencode(query)}", content=body, headers={"Content-Type": "text/xml"})


@pytest.fixture
def sent(api: Api) -> ProviderState:
    """A1 follows the account and consented; its WeChat contact was sent as message 1001."""
    api.engine.upsert_many([make_account("A1", wechat_openid=OPENID, consent=["sms", "wechat"])])
    api.store.redis.hset("{a:A1}:claims", CONTACT, "sent")
    state = ProviderState(api.store.redis, "wechat")
    state.remember_message("1001", CONTACT)
    return state


def outcomes(api: Api) -> list[str]:
    return [e.outcome.value for e in api.store.load("A1").history if e.kind == "outcome" and e.outcome]


def test_a_signed_push_records_the_result_once(api: Api, sent: ProviderState) -> None:
    response = push(api, event("1001"))
    assert (response.status_code, response.text) == (200, "success")
    assert push(api, event("1001")).status_code == 200  # WeChat's retry of the same push
    assert outcomes(api) == ["delivered"]


def test_a_user_block_opts_the_account_out_of_wechat(api: Api, sent: ProviderState) -> None:
    assert push(api, event("1001", "failed:user block")).status_code == 200
    assert outcomes(api) == ["opted_out"]
    assert Channel.WECHAT in api.store.load("A1").record.state.opted_out


def test_a_system_failure_is_undelivered(api: Api, sent: ProviderState) -> None:
    assert push(api, event("1001", "failed: system failed")).status_code == 200
    assert outcomes(api) == ["undelivered"]


@pytest.mark.parametrize("forgery", ["tampered", "other_token", "other_app", "stale", "plain"])
def test_a_forged_push_is_403_and_changes_nothing(api: Api, sent: ProviderState, forgery: str) -> None:
    keys = {key: api.store.redis.dump(key) for key in api.store.redis.keys("*")}
    xml = event("1001", "failed:user block")
    if forgery == "plain":  # plain mode: the signature covers no byte of the body
        now, token = str(int(time.time())), api.settings.wechat_token.get_secret_value()
        query = {"signature": sha1_signature(token, now, "n0nce"), "timestamp": now, "nonce": "n0nce"}
        response = api.client.post(f"{callbacks.WECHAT}?{urlencode(query)}", content=xml)
    else:
        response = push(
            api, xml, tamper=forgery == "tampered", token="not-our-token" if forgery == "other_token" else None,
            app_id="wx_someone_else" if forgery == "other_app" else None,
            timestamp=str(int(time.time()) - 3600) if forgery == "stale" else None,
        )  # fmt: skip
    assert response.status_code == 403
    assert {key: api.store.redis.dump(key) for key in api.store.redis.keys("*")} == keys
    assert outcomes(api) == []


def test_a_push_for_a_message_we_never_sent_is_ignored(api: Api, sent: ProviderState) -> None:
    assert push(api, event("999999")).status_code == 200
    assert outcomes(api) == []


def test_the_server_url_check_echoes_only_when_signed(api: Api) -> None:
    now, token = str(int(time.time())), api.settings.wechat_token.get_secret_value()
    query = {"signature": sha1_signature(token, now, "n"), "timestamp": now, "nonce": "n", "echostr": "e123"}
    assert api.client.get(callbacks.WECHAT, params=query).text == "e123"
    assert api.client.get(callbacks.WECHAT, params={**query, "signature": "0" * 40}).status_code == 403
