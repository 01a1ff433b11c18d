"""Aliyun SMS's codes translate, in one place, into what the caller does next: the debtor's outcome, this
contact's wait, the setting an operator fixes, or a retry."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from channels.aliyun_sms import RecipientLimited, lookup_error, mainland_number, translate_aliyun_error, until_next_day
from channels.base import (
    ContactDeferred,
    LookupUnavailable,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderRefused,
    TransientDeliveryError,
)

NOW = datetime(2026, 3, 1, 14, 0, tzinfo=UTC)  # 22:00 in Beijing: two hours to the daily limits' reset


@pytest.mark.parametrize(
    ("code", "status", "setting"),
    [
        ("isv.SMS_SIGNATURE_ILLEGAL", 200, "DISPATCHER_ALIYUN_SIGN_NAME"),
        ("isv.SMS_TEMPLATE_ILLEGAL", 200, "DISPATCHER_ALIYUN_TEMPLATES"),
        ("isv.TEMPLATE_MISSING_PARAMETERS", 200, "DISPATCHER_ALIYUN_TEMPLATES"),
        ("isv.INVALID_JSON_PARAM", 200, "DISPATCHER_ALIYUN_TEMPLATES"),
        ("isv.AMOUNT_NOT_ENOUGH", 200, "DISPATCHER_ALIYUN_ACCESS_KEY_ID"),
        ("InvalidAccessKeyId.NotFound", 404, "DISPATCHER_ALIYUN_ACCESS_KEY_ID"),
        ("SignatureDoesNotMatch", 400, "DISPATCHER_ALIYUN_ACCESS_KEY_SECRET"),
        ("", 404, "DISPATCHER_ALIYUN_ENDPOINT"),
    ],
)
def test_our_setup_refused_is_misconfigured_naming_the_setting(code: str, status: int, setting: str) -> None:
    error = translate_aliyun_error(code, "refused", status, NOW)
    assert isinstance(error, ProviderMisconfigured) and (error.provider, error.setting) == ("aliyun", setting)


def test_the_numbers_daily_limit_waits_until_midnight_in_beijing_and_nothing_else() -> None:
    error = translate_aliyun_error("isv.BUSINESS_LIMIT_CONTROL", "触发号码天级流控", 200, NOW)
    assert isinstance(error, RecipientLimited) and error.retry_after == 7200.0
    assert isinstance(error, ContactDeferred) and not isinstance(error, TransientDeliveryError)  # no failover
    assert until_next_day(datetime(2026, 3, 1, 15, 59, 59, tzinfo=UTC)) == 1.0


@pytest.mark.parametrize(("code", "status"), [("isp.SYSTEM_ERROR", 200), ("Throttling.User", 400), ("", 503)])
def test_a_busy_gateway_is_transient(code: str, status: int) -> None:
    error = translate_aliyun_error(code, "busy", status, NOW)
    assert type(error) is TransientDeliveryError and not error.ambiguous


def test_a_bad_number_is_the_debtors_and_anything_unknown_fails() -> None:
    invalid = translate_aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", 200, NOW)
    unknown = translate_aliyun_error("isv.SOMETHING_NEW", "?", 200, NOW)
    assert isinstance(invalid, PermanentDeliveryError) and invalid.outcome_kind == "invalid_address"
    assert isinstance(unknown, PermanentDeliveryError) and unknown.outcome_kind == "failed"


def test_a_lookup_refused_for_our_setup_is_asked_again_and_never_absence() -> None:
    assert type(lookup_error(translate_aliyun_error("SignatureDoesNotMatch", "", 400, NOW), None)) is (
        TransientDeliveryError
    )
    assert isinstance(lookup_error(translate_aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", "", 200, NOW), None),
                      LookupUnavailable)  # fmt: skip


def test_only_plus_86_numbers_are_aliyuns_and_lose_their_prefix() -> None:
    assert mainland_number("+8613800138000") == "13800138000"
    for number in ("+15553330000", "13800138000", "+85291234567"):
        with pytest.raises(ProviderRefused):  # nothing left: the route's next provider may take it
            mainland_number(number)
