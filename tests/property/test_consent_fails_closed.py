"""Never a contact on a channel without the account's consent, unless the strategy says that channel needs
none: over the shipped channels and one that exists only in this test, any consent list (or none given), any
list of channels needing no consent, any stage and moment."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.models import AccountRecord, Channel, HistoryEntry
from dispatcher.core.planner import plan
from dispatcher.core.strategy import Strategy, parse_strategy
from tests.conftest import make_account
from tests.fake_channel import PIGEON, registered_channel, strategy_with_pigeon

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London"]
ALL = ["sms", "voice", "email", "letter", "agency", "wechat", PIGEON]
OPENID = "oTestDebtor00000000000000000"  # every account can be reached on WeChat: consent alone decides


@pytest.fixture(scope="module", autouse=True)
def pigeon() -> Iterator[Channel]:
    with registered_channel() as channel:
        yield channel


@cache
def _strategy(not_required: frozenset[str]) -> Strategy:
    data = strategy_with_pigeon(every_stage=True)
    data["compliance"]["consent_not_required"] = sorted(not_required)
    return parse_strategy(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=250, deadline=None)
@given(
    consent=st.one_of(st.none(), st.frozensets(st.sampled_from(ALL))),
    not_required=st.frozensets(st.sampled_from(ALL)),
    days_past_due=st.integers(1, 120),
    minutes=st.integers(0, 60 * 72),
    timezone=st.sampled_from(ZONES),
)
def test_no_contact_on_a_channel_without_consent_unless_it_needs_none(
    consent: frozenset[str] | None, not_required: frozenset[str], days_past_due: int, minutes: int, timezone: str
) -> None:
    strategy = _strategy(not_required)
    fields: dict[str, object] = {"due_date": date(2026, 3, 2) - timedelta(days=days_past_due), "timezone": timezone,
                                 "wechat_openid": OPENID}  # fmt: skip
    if consent is not None:
        fields["consent"] = consent
    account = make_account("P1", **fields)
    now = NOW + timedelta(minutes=minutes)
    result = plan(AccountRecord(account=account), (HistoryEntry(kind="event", at=now, event="account_created"),),
                  strategy, now)  # fmt: skip
    allowed = account.consent | not_required
    assert PIGEON not in account.consent or consent is not None  # no list given: never the new channel
    assert "wechat" not in account.consent or consent is not None  # nor wechat
    for contact in result.contacts:
        assert contact.channel in allowed, (contact, account.consent, not_required)
    for decision in result.decisions:
        if decision.channel not in allowed:
            assert decision.verdict == "deny" and decision.rule == f"no_consent:{decision.channel}", decision


def test_the_new_channel_is_planned_for_an_account_that_consents_to_it() -> None:
    strategy = _strategy(frozenset({"email", "letter", "agency"}))
    account = make_account("P2", consent=["sms", PIGEON], due_date=date(2026, 3, 1))
    result = plan(AccountRecord(account=account), (), strategy, NOW)
    assert PIGEON in {contact.channel for contact in result.contacts}
    unconsented = make_account("P3", due_date=date(2026, 3, 1))  # no list: the shipped channels alone
    denied = plan(AccountRecord(account=unconsented), (), strategy, NOW)
    assert PIGEON not in {contact.channel for contact in denied.contacts}
    assert ("deny", "no_consent:pigeon") in {(d.verdict, d.rule) for d in denied.decisions}
