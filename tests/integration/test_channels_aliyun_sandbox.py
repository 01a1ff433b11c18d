"""The Aliyun SMS adapter against its sandbox, through httpx and the sandbox's real server: the signed
SendSms it makes, each refusal mapped to what the caller must do, and find_sent through QuerySendDetails
(found, absent, a claim spanning midnight, a send whose answer never came)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from channels import EXTRA_PROVIDERS, provider_spec
from channels.aliyun_sms import AliyunSmsAdapter, NotMainlandMobile, RecipientLimited
from channels.base import (
    ContactDeferred,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderRefused,
    SentQuery,
    TransientDeliveryError,
)
from channels.render import Renderer
from channels.sandbox import Sandboxes
from channels.sandbox.server import free_port
from channels.spec import Draft
from config.settings import Settings
from tests import channel_fixtures

pytestmark = pytest.mark.integration

recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

PARAMS = {"name": "王小明", "account_ref": "0001", "amount": "¥5,000.00", "pay_url": "https://pay.bank.test/a/A1"}
BEIJING = timedelta(hours=8)
WRONG_SECRET = SecretStr("not-the-secret")


def message(contact_id: str, to: str = "+8613800138000", template: str = "early_sms", locale: str = "zh-CN",
            params: Any = None) -> OutboundMessage:  # fmt: skip
    extra = {"template": template, "template_param": PARAMS if params is None else params}
    return OutboundMessage(contact_id, "A1", to, locale, "【示例银行】王小明您好", extra=extra)


@contextmanager
def adapter_for(settings: Settings, **options: Any) -> Iterator[AliyunSmsAdapter]:
    adapter = AliyunSmsAdapter(settings, **options)
    try:
        yield adapter
    finally:
        adapter.close()


def query(contact_id: str, since: datetime | None = None, to: str = "+8613800138000") -> SentQuery:
    since = since or datetime.now(UTC) - timedelta(minutes=1)
    return SentQuery(contact_id, "A1", to, None, since, since + timedelta(minutes=3))


def test_the_provider_is_listed_beside_twilio_under_sms() -> None:
    assert provider_spec("sms", "aliyun") in EXTRA_PROVIDERS


def test_a_send_is_the_approved_template_its_string_params_and_the_contact_as_out_id(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    with adapter_for(settings) as adapter:
        chinese = adapter.send(message("A1/early/sms/0"))
        english = adapter.send(message("A1/early/sms/1", to="+8613900139000", locale="en"))
    sent = {record["BizId"]: record for record in sandboxes.aliyun.state.sent}
    assert sent[chinese.provider_id]["PhoneNum"] == "13800138000"  # +86 stripped: the national digits
    assert sent[chinese.provider_id]["TemplateCode"] == settings.aliyun_templates["early_sms"]["zh-CN"]
    assert sent[english.provider_id]["TemplateCode"] == settings.aliyun_templates["early_sms"]["en"]
    assert sent[chinese.provider_id]["OutId"] == "A1/early/sms/0" and chinese.segments == 1
    logged = next(m for m in sandboxes.aliyun.state.messages() if m["biz_id"] == chinese.provider_id)
    assert logged["params"] == PARAMS


def test_compose_formats_amounts_and_dates_as_strings_in_the_debtors_locale() -> None:
    context = {"name": "王小明", "account_ref": "0001", "amount": Decimal("5000.00"), "currency": "CNY",
               "minimum_payment": Decimal("500.00"), "days_past_due": 16, "due_date": date(2026, 3, 1),
               "pay_url": "https://pay.bank.test/a/A1", "phone": "+8640000000000"}  # fmt: skip
    fields = {"contact_id": "A1/early/sms/0", "account_id": "A1", "template": "early_sms", "to": "+8613800138000",
              "text": "text", "subject": None, "html": None, "extra": {}, "renderer": Renderer(), "context": context,
              "local_today": date(2026, 3, 17), "window_seconds_left": 3600}  # fmt: skip
    drafts = {locale: Draft(locale=locale, **fields) for locale in ("zh-CN", "en")}
    composed = {locale: provider_spec("sms", "aliyun").compose(draft) for locale, draft in drafts.items()}
    params = {locale: out.extra["template_param"] for locale, out in composed.items()}
    assert all(isinstance(value, str) for values in params.values() for value in values.values())
    assert (params["zh-CN"]["amount"], params["en"]["amount"]) == ("¥5,000.00", "CN¥5,000.00")
    assert (params["zh-CN"]["due_date"], params["en"]["due_date"]) == ("2026年3月1日", "March 1, 2026")
    assert params["zh-CN"]["days"] == "16" and composed["en"].extra["template"] == "early_sms"


def test_a_bad_number_is_the_debtors_invalid_address(settings: Settings) -> None:
    with adapter_for(settings) as adapter, pytest.raises(PermanentDeliveryError) as raised:
        adapter.send(message("A1/early/sms/2", to="+8612000000000"))
    assert raised.value.outcome_kind == "invalid_address" and "isv.MOBILE_NUMBER_ILLEGAL" in str(raised.value)


def test_a_number_outside_86_never_leaves(settings: Settings, sandboxes: Sandboxes) -> None:
    before = sandboxes.aliyun.request_count
    with adapter_for(settings) as adapter, pytest.raises(NotMainlandMobile) as raised:
        adapter.send(message("A1/early/sms/3", to="+15553330000"))
    assert isinstance(raised.value, ProviderRefused) and sandboxes.aliyun.request_count == before  # next provider


def test_the_numbers_daily_limit_defers_this_contact_until_the_next_day_in_beijing(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    state = sandboxes.aliyun.state
    state.daily_limit_per_number = 1
    now = datetime.now(UTC)
    try:
        with adapter_for(settings, clock=lambda: now) as adapter:
            adapter.send(message("A1/early/sms/4", to="+8613700137000"))
            with pytest.raises(RecipientLimited) as raised:
                adapter.send(message("A1/continuous/sms/0", to="+8613700137000"))
            adapter.send(message("A2/continuous/sms/0", to="+8613700137001"))  # another number still sends
    finally:
        state.daily_limit_per_number = 50
    local = (now + BEIJING).replace(tzinfo=None)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
    assert raised.value.retry_after == pytest.approx((midnight - local).total_seconds())
    assert isinstance(raised.value, ContactDeferred) and not isinstance(raised.value, ProviderMisconfigured)


@pytest.mark.parametrize(
    ("change", "setting", "code"),
    [
        ({"aliyun_access_key_secret": WRONG_SECRET}, "DISPATCHER_ALIYUN_ACCESS_KEY_SECRET", "SignatureDoesNotMatch"),
        ({"aliyun_access_key_id": "LTAI5tSomeoneElse0000000"}, "DISPATCHER_ALIYUN_ACCESS_KEY_ID", "InvalidAccessKeyId"),
        ({"aliyun_sign_name": "别家银行"}, "DISPATCHER_ALIYUN_SIGN_NAME", "isv.SMS_SIGNATURE_ILLEGAL"),
    ],
)
def test_a_refused_key_signature_or_sign_name_names_the_setting(
    settings: Settings, sandboxes: Sandboxes, change: dict[str, Any], setting: str, code: str
) -> None:
    before = len(sandboxes.aliyun.state.sent)
    with adapter_for(settings.model_copy(update=change)) as adapter, pytest.raises(ProviderMisconfigured) as raised:
        adapter.send(message("A1/early/sms/5"))
    assert raised.value.setting == setting and raised.value.provider == "aliyun" and code in str(raised.value)
    assert len(sandboxes.aliyun.state.sent) == before


def test_a_removed_template_is_misconfigured_and_the_contact_is_not_burned(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    code = settings.aliyun_templates["continuous_sms"]["zh-CN"]
    variables = sandboxes.aliyun.state.templates[code]
    sandboxes.aliyun.state.remove_template(code)
    before, requests = len(sandboxes.aliyun.state.sent), sandboxes.aliyun.request_count
    try:
        with adapter_for(settings) as adapter:
            with pytest.raises(ProviderMisconfigured) as removed:
                adapter.send(message("A1/continuous/sms/1", template="continuous_sms"))
            with pytest.raises(ProviderMisconfigured) as unmapped:  # no TemplateCode at all: nothing leaves
                adapter.send(message("A1/continuous/sms/2", template="early_wechat"))
    finally:
        sandboxes.aliyun.state.templates[code] = variables
    assert removed.value.setting == unmapped.value.setting == "DISPATCHER_ALIYUN_TEMPLATES"
    assert "isv.SMS_TEMPLATE_ILLEGAL" in str(removed.value)
    assert len(sandboxes.aliyun.state.sent) == before and sandboxes.aliyun.request_count == requests + 1


@pytest.mark.parametrize(
    ("params", "code"),
    [({**PARAMS, "amount": 5000}, "isv.INVALID_JSON_PARAM"), ({"name": "王小明"}, "isv.TEMPLATE_MISSING_PARAMETERS")],
)
def test_params_the_approved_template_refuses_name_the_templates_setting(
    settings: Settings, params: dict[str, Any], code: str
) -> None:
    with adapter_for(settings) as adapter, pytest.raises(ProviderMisconfigured) as raised:
        adapter.send(message("A1/early/sms/6", params=params))
    assert raised.value.setting == "DISPATCHER_ALIYUN_TEMPLATES" and code in str(raised.value)


def test_an_empty_balance_is_misconfigured(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.aliyun.state.balance = 0
    try:
        with adapter_for(settings) as adapter, pytest.raises(ProviderMisconfigured, match="isv.AMOUNT_NOT_ENOUGH"):
            adapter.send(message("A1/early/sms/7"))
    finally:
        sandboxes.aliyun.state.balance = None


@pytest.mark.parametrize("fault", ["system_error", "fail_503", "fail_429"])
def test_a_system_error_or_an_unavailable_gateway_is_transient_and_definite(
    settings: Settings, sandboxes: Sandboxes, fault: str
) -> None:
    if fault == "system_error":
        sandboxes.aliyun.state.system_errors = 1
    else:
        sandboxes.aliyun.faults.set(**{fault: 1})
    with adapter_for(settings) as adapter, pytest.raises(TransientDeliveryError) as raised:
        adapter.send(message(f"A1/early/sms/{fault}"))
    assert type(raised.value) is TransientDeliveryError and not raised.value.ambiguous


def test_a_gateway_that_is_down_is_a_definite_non_send(settings: Settings) -> None:
    down = settings.model_copy(update={"aliyun_endpoint": f"http://127.0.0.1:{free_port('127.0.0.1')}"})
    with adapter_for(down) as adapter, pytest.raises(TransientDeliveryError) as raised:
        adapter.send(message("A1/early/sms/8"))
    assert not raised.value.ambiguous


def test_a_send_accepted_then_timed_out_is_ambiguous_and_found_not_resent(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    sandboxes.aliyun.faults.set(accept_then_hang=1, accept_hang_seconds=3.0)
    since = datetime.now(UTC)
    with adapter_for(settings, timeout=0.5) as adapter:
        with pytest.raises(TransientDeliveryError) as raised:
            adapter.send(message("A1/early/sms/9", to="+8613600136000"))
        evidence = adapter.find_sent(query("A1/early/sms/9", since, to="+8613600136000"))
    assert raised.value.ambiguous
    assert evidence.found and evidence.provider_id == "out:A1/early/sms/9"
    assert [r["OutId"] for r in sandboxes.aliyun.state.sent].count("A1/early/sms/9") == 1


def test_find_sent_tells_this_contact_from_another_to_the_same_number(settings: Settings) -> None:
    with adapter_for(settings) as adapter:
        adapter.send(message("A3/early/sms/0", to="+8618600186000"))
        found = adapter.find_sent(query("A3/early/sms/0", to="+8618600186000"))
        absent = adapter.find_sent(query("A3/early/sms/1", to="+8618600186000"))
    assert found.found and found.status in ("waiting", "delivered")
    assert not absent.found


def test_a_claim_spanning_midnight_in_beijing_asks_both_days(settings: Settings, sandboxes: Sandboxes) -> None:
    before_midnight = datetime(2026, 3, 1, 15, 59, 58, tzinfo=UTC)  # 23:59:58 in Beijing
    clock = {"now": before_midnight}
    state = sandboxes.aliyun.state
    state.now = lambda: clock["now"]
    try:
        with adapter_for(settings, clock=lambda: clock["now"]) as adapter:
            adapter.send(message("A4/early/sms/0", to="+8618800188000"))
            clock["now"] = before_midnight + timedelta(minutes=3)  # the next day in Beijing
            evidence = adapter.find_sent(query("A4/early/sms/0", before_midnight - timedelta(seconds=5),
                                               to="+8618800188000"))  # fmt: skip
            asked = [r for r in state.messages() if r["out_id"] == "A4/early/sms/0"]
    finally:
        state.now = lambda: datetime.now(UTC)
    assert evidence.found and len(asked) == 1


def test_a_claim_older_than_aliyun_keeps_cannot_be_told(settings: Settings) -> None:
    with adapter_for(settings) as adapter, pytest.raises(LookupUnavailable):
        adapter.find_sent(query("A1/early/sms/0", datetime.now(UTC) - timedelta(days=31)))


def test_a_lookup_the_gateway_cannot_answer_now_is_asked_again_later(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.aliyun.faults.set(fail_503=1)
    with adapter_for(settings) as adapter, pytest.raises(TransientDeliveryError):
        adapter.find_sent(query("A1/early/sms/0"))
    wrong = settings.model_copy(update={"aliyun_access_key_secret": SecretStr("not-the-secret")})
    with adapter_for(wrong) as adapter, pytest.raises(TransientDeliveryError):  # never evidence of absence
        adapter.find_sent(query("A1/early/sms/0"))


def test_every_request_is_signed_and_a_replayed_one_is_refused(settings: Settings, sandboxes: Sandboxes) -> None:
    import httpx

    from channels.aliyun_signing import signed_params

    secret = settings.aliyun_access_key_secret.get_secret_value()
    form = signed_params("QuerySendDetails", {"PhoneNumber": "13800138000", "SendDate": datetime.now(UTC).strftime(
        "%Y%m%d"), "PageSize": "10", "CurrentPage": "1"}, settings.aliyun_access_key_id, secret)  # fmt: skip
    first = httpx.post(sandboxes.aliyun.url + "/", data=form)
    again = httpx.post(sandboxes.aliyun.url + "/", data=form)
    tampered = httpx.post(sandboxes.aliyun.url + "/", data={**form, "PhoneNumber": "13900139000",
                                                            "SignatureNonce": "another"})  # fmt: skip
    assert first.json()["Code"] == "OK"
    assert (again.status_code, again.json()["Code"]) == (400, "SignatureNonceUsed")
    assert (tampered.status_code, tampered.json()["Code"]) == (400, "SignatureDoesNotMatch")
    assert json.loads(first.text)["SmsSendDetailDTOs"]["SmsSendDetailDTO"] is not None


def test_a_report_not_answered_code_0_is_pushed_again_after_1_5_and_10_minutes_on_the_sandboxs_clock(
    settings: Settings, sandboxes: Sandboxes, recorder: channel_fixtures.CallbackRecorder
) -> None:
    """The recorder answers 200 with no body (not `{"code": 0}`); a clock factor of 60,000 makes the waits
    1, 5 and 10 ms of real time."""
    state = sandboxes.aliyun.state
    state.clock_factor = 60_000
    try:
        with adapter_for(settings) as adapter:
            biz_id = adapter.send(message("A5/early/sms/0", to="+8615000150000")).provider_id
        pushed = recorder.wait_for(lambda request: biz_id.encode() in request.body, count=4)
    finally:
        state.clock_factor = 1.0
    assert all(request.url.endswith(f"/v1/webhooks/aliyun/{state.webhook_token}/sms-report") for request in pushed)
    [report] = json.loads(pushed[0].body)
    assert (report["out_id"], report["phone_number"], report["success"]) == ("A5/early/sms/0", "15000150000", True)
    deadline = time.monotonic() + 5  # the sandbox logs each push once its answer is in
    while len(attempts := [p["attempt"] for p in state.pushes() if p["body"][0]["biz_id"] == biz_id]) < 4:
        assert time.monotonic() < deadline, attempts
        time.sleep(0.02)
    assert sorted(attempts) == [0, 1, 2, 3]  # the first push and three more, then it gives up
