"""DISPATCHER_ROUTES: every bad value refused with the variable named and the fix said; the debtor's country as
the routes read it; and no route (the default) leaves each channel with its own provider only."""

from __future__ import annotations

import re

import pytest

import channels  # noqa: F401  (declares the providers the settings are checked against)
from config.providers import declared_providers
from config.settings import SettingsError, load_settings
from dispatcher.core.models import Channel
from dispatcher.core.routing import debtor_country, route_of
from tests.conftest import make_account

ROUTES = {"sms": {"CN": ["twilio"], "*": ["twilio"]}}


@pytest.mark.parametrize(
    ("routes", "said"),
    [
        ({"sms": {"China": ["twilio"]}}, "'China' is not an ISO 3166 alpha-2 country code"),
        ({"sms": {"cn": ["twilio"]}}, "'cn' is not an ISO 3166 alpha-2 country code"),
        ({"sms": {"ZZ": ["twilio"]}}, "'ZZ' is not an ISO 3166 alpha-2 country code"),
        ({"sms": {"CN": []}}, "sms.CN: an empty list of providers; name at least one"),
        ({"sms": {}}, "sms: no country listed"),
        ({"sms": {"CN": ["twilio", "twilio"]}}, "a provider is listed twice"),
        ({"SMS": {"CN": ["twilio"]}}, "a channel 'SMS' is not a name"),
    ],
)
def test_a_malformed_route_is_refused_naming_the_variable(routes: object, said: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(routes=routes)
    assert "DISPATCHER_ROUTES: " in str(refused.value) and said in str(refused.value)


def test_an_unknown_channel_or_provider_is_refused_naming_what_is_known() -> None:
    settings = load_settings(routes={"sms": {"CN": ["aliyunn", "twilio"]}, "fax": {"*": ["x"]}})
    with pytest.raises(SettingsError) as refused:
        settings.refuse_unknown_providers(declared_providers())
    message = str(refused.value)
    # Other tests declare stand-in providers of their own in this process: what is known here at least holds these.
    assert re.search(
        r"DISPATCHER_ROUTES: sms has no provider 'aliyunn' \(providers of sms: aliyun, (.*, )?twilio", message
    )
    assert "DISPATCHER_ROUTES: 'fax' is not a channel; known: " in message
    weights = load_settings(provider_weights={"sms": {"nobody": 10}})
    with pytest.raises(SettingsError, match="DISPATCHER_PROVIDER_WEIGHTS: sms has no provider 'nobody'"):
        weights.refuse_unknown_providers(declared_providers())
    with pytest.raises(SettingsError, match="DISPATCHER_PROVIDER_WEIGHTS: .*a weight is 0 to 100, not 101"):
        load_settings(provider_weights={"sms": {"twilio": 101}})
    load_settings(routes=ROUTES).refuse_unknown_providers(declared_providers())  # a known one passes


def test_the_debtors_country_is_the_phones_region_on_a_phone_channel_else_the_addresss() -> None:
    american = make_account("C1", phone="+12125550123")  # the address stays in Shanghai
    assert debtor_country(american, Channel.SMS) == "US" and debtor_country(american, Channel.VOICE) == "US"
    assert debtor_country(american, Channel.LETTER) == "CN" and debtor_country(american, Channel.EMAIL) == "CN"
    nowhere = make_account("C2", phone=None, address=None)
    assert debtor_country(nowhere, Channel.SMS) == "*" and debtor_country(None, Channel.SMS) == "*"


def test_without_a_route_a_channel_keeps_its_own_provider() -> None:
    account = make_account("C3", phone="+12125550123")
    routes = {"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}, "voice": {"CN": ["other"]}}
    assert route_of({}, Channel.SMS, account, "twilio") == ("twilio",)  # DISPATCHER_ROUTES unset
    assert route_of(routes, Channel.EMAIL, account, "smtp") == ("smtp",)  # a channel not listed
    assert route_of(routes, Channel.SMS, account, "twilio") == ("twilio",)  # US: the "*" route
    assert route_of(routes, Channel.VOICE, account, "twilio") == ("twilio",)  # no route for US, no "*"
    chinese = make_account("C4")
    assert route_of(routes, Channel.SMS, chinese, "twilio") == ("aliyun", "twilio")
