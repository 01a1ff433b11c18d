"""Aliyun SMS's pushes through a real uvicorn server, confirmed against the Aliyun sandbox over real HTTP: a
wrong path token is a 404 that changes nothing; a report is recorded only as QuerySendDetails has it (a
forged one changes nothing, an altered one records Aliyun's truth); a report Aliyun cannot confirm yet is
answered non-zero so Aliyun pushes it again; a 退订 reply opts the account out of sms; and the sandbox's own
pushes reach the API end to end."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from channels import callbacks
from channels.aliyun_sms import AliyunSmsAdapter
from channels.base import OutboundMessage
from channels.sandbox import HttpSandbox
from channels.sandbox.aliyun import DEFAULT_VARIABLES, AliyunSandbox, create_app
from channels.sandbox.server import ServerHandle
from config.settings import Settings, load_settings
from config.settings_fields import ALIYUN_SANDBOX_TEMPLATES
from dispatcher.core.models import Channel
from tests.api_fixtures import PUBLIC_BASE_URL, Api, api, api_keys  # noqa: F401
from tests.conftest import make_account

pytestmark = pytest.mark.integration

TOKEN = "sandbox-aliyun-report-token"
CONTACT = "A1/early/sms/0"
Aliyun = HttpSandbox[AliyunSandbox]
PARAMS = {"name": "王小明", "account_ref": "0001", "amount": "¥5,000.00", "pay_url": "https://pay.bank.test/a/A1"}


@pytest.fixture
def aliyun(tmp_path: Path) -> Iterator[Aliyun]:
    codes = [code for locales in ALIYUN_SANDBOX_TEMPLATES.values() for code in locales.values()]
    state = AliyunSandbox(tmp_path / "aliyun", "LTAI5tSandbox00000000000", "sandbox-aliyun-secret", ("示例银行",),
                          dict.fromkeys(codes, DEFAULT_VARIABLES), None, TOKEN)  # fmt: skip
    running = HttpSandbox(state, ServerHandle(create_app(state), "127.0.0.1", 0))
    yield running
    running.stop()


@pytest.fixture
def api_settings(redis_url: str, api_keys: dict[str, tuple[str, str]], tmp_path: Path, aliyun: Aliyun) -> Settings:
    return load_settings(
        redis_url=redis_url, state_dir=tmp_path / "state", api_keys=",".join(e for _, e in api_keys.values()),
        public_base_url=PUBLIC_BASE_URL, aliyun_endpoint=aliyun.url, _env_file=None,
    )  # fmt: skip


def send(api: Api, contact_id: str = CONTACT, phone: str = "+8613800138000") -> str:
    """Send through the adapter to the sandbox, as a worker would; the BizId."""
    adapter = AliyunSmsAdapter(api.settings)
    try:
        message = OutboundMessage(contact_id, "A1", phone, "zh-CN", "text",
                                  extra={"template": "early_sms", "template_param": PARAMS})  # fmt: skip
        return adapter.send(message).provider_id
    finally:
        adapter.close()


def settled(aliyun: Aliyun, count: int = 1) -> None:
    deadline = time.monotonic() + 5
    while sum(record["SendStatus"] != 1 for record in aliyun.state.sent) < count:
        assert time.monotonic() < deadline, "the sandbox never settled its messages"
        time.sleep(0.02)


@pytest.fixture
def account(api: Api) -> None:
    api.engine.upsert_many([make_account("A1", consent=["sms", "voice"])])
    api.store.redis.hset("{a:A1}:claims", CONTACT, "sent")


def report(biz_id: str, out_id: str = CONTACT, phone: str = "13800138000", success: bool = True) -> dict[str, Any]:
    return {"phone_number": phone, "send_time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + 8 * 3600)),
            "report_time": "2026-03-02 10:00:05", "success": success, "err_code": "DELIVERED" if success else "X",
            "err_msg": "用户接收成功", "sms_size": "1", "biz_id": biz_id, "out_id": out_id}  # fmt: skip


def push(api: Api, body: Any, token: str = TOKEN, path: str = callbacks.ALIYUN_SMS_REPORT) -> httpx.Response:
    return api.client.post(path.replace("{token}", token), json=body)


def outcomes(api: Api) -> list[str]:
    return [e.outcome.value for e in api.store.load("A1").history if e.kind == "outcome" and e.outcome]


def snapshot(api: Api) -> dict[bytes, Any]:
    return {key: api.store.redis.dump(key) for key in api.store.redis.keys("*")}


def test_a_genuine_report_records_delivered_once(api: Api, aliyun: Aliyun, account: None) -> None:
    biz_id = send(api)
    settled(aliyun)
    first = push(api, [report(biz_id)])
    assert (first.status_code, first.json()["code"]) == (200, 0)
    assert push(api, [report(biz_id)]).json()["code"] == 0  # Aliyun's push again: recorded once
    assert outcomes(api) == ["delivered"]


@pytest.mark.parametrize("path", [callbacks.ALIYUN_SMS_REPORT, callbacks.ALIYUN_SMS_UP])
def test_a_wrong_path_token_is_404_and_changes_nothing(api: Api, aliyun: Aliyun, account: None, path: str) -> None:
    biz_id = send(api)
    settled(aliyun)
    before = snapshot(api)
    reply = {"phone_number": "13800138000", "content": "TD"}
    body = [report(biz_id)] if path == callbacks.ALIYUN_SMS_REPORT else [reply]
    for token in ("sandbox-aliyun-report-tokeN", "x" * 40, TOKEN[:-1]):
        assert push(api, body, token=token, path=path).status_code == 404
    assert snapshot(api) == before and outcomes(api) == []


def test_a_forged_report_changes_nothing(api: Api, aliyun: Aliyun, account: None) -> None:
    """The path token leaked: a report for a message Aliyun never sent (the claim is ours) is ignored."""
    before = snapshot(api)
    answer = push(api, [report("123456789012345^0000000000"), report("", out_id=CONTACT)])
    assert (answer.status_code, answer.json()["code"]) == (200, 0)  # nothing for Aliyun to push again
    assert snapshot(api) == before and outcomes(api) == []


def test_an_altered_report_records_what_aliyun_says(api: Api, aliyun: Aliyun, account: None) -> None:
    """A report claiming success for a text that failed records the failure QuerySendDetails gives."""
    biz_id = send(api, phone="+8613800000001")  # the sandbox fails numbers ending 0001
    settled(aliyun)
    assert push(api, [report(biz_id, phone="13800000001", success=True)]).json()["code"] == 0
    assert outcomes(api) == ["undelivered"]


def test_a_report_aliyun_cannot_confirm_yet_is_pushed_again(api: Api, aliyun: Aliyun, account: None) -> None:
    aliyun.state.push_delay = 3600  # the carrier's receipt has not come: QuerySendDetails says waiting
    biz_id = send(api)
    answer = push(api, [report(biz_id)])
    assert answer.status_code == 200 and answer.json()["code"] != 0
    assert outcomes(api) == []


def test_a_body_that_is_not_an_array_is_422(api: Api, aliyun: Aliyun) -> None:
    answer = push(api, {"biz_id": "1"})
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "body"


@pytest.mark.parametrize("content", [" 退订 ", "td", "T", "Stop"])
def test_an_opt_out_reply_opts_the_account_out_of_sms(api: Api, aliyun: Aliyun, account: None, content: str) -> None:
    up = {"phone_number": "13800138000", "send_time": "2026-03-02 10:00:00", "content": content,
          "sign_name": "示例银行", "dest_code": "", "sequence_id": 1234567}  # fmt: skip
    assert push(api, [up], path=callbacks.ALIYUN_SMS_UP).json() == {"code": 0, "msg": "接收成功"}
    assert Channel.SMS in api.store.load("A1").record.state.opted_out


def test_any_other_reply_changes_nothing(api: Api, aliyun: Aliyun, account: None) -> None:
    before = snapshot(api)
    up = {"phone_number": "13800138000", "content": "我下周还款", "sequence_id": 7}
    assert push(api, [up], path=callbacks.ALIYUN_SMS_UP).json()["code"] == 0
    assert snapshot(api) == before


def test_the_sandbox_pushes_reach_the_api_end_to_end(api: Api, aliyun: Aliyun, account: None) -> None:
    aliyun.state.callback_base_url = api.url
    send(api)
    deadline = time.monotonic() + 10
    while outcomes(api) != ["delivered"]:
        assert time.monotonic() < deadline, f"no delivered outcome; pushes: {aliyun.state.pushes()}"
        time.sleep(0.05)
    httpx.post(f"{aliyun.url}/_sandbox/sms-up", json={"phone_number": "13800138000", "content": "退订"})
    # The account is opted out as the API answers; the sandbox notes the answer a moment later.
    while Channel.SMS not in api.store.load("A1").record.state.opted_out or len(aliyun.state.pushes()) < 2:
        assert time.monotonic() < deadline, "the SmsUp push never opted the account out"
        time.sleep(0.05)
    assert [push["answer"] for push in aliyun.state.pushes()] == [{"code": 0, "msg": "接收成功"}] * 2
