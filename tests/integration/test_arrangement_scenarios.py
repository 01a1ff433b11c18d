"""Arrangement scenarios end to end: the bank's side through the real API (the plan, the payments), the
provider's side through its signed webhook (a STOP), the real engine and store on the real Redis, every
queued contact claimed and sent as a worker would, on a manual clock advanced a quarter-day at a time.

- a plan kept to the end: only the reminders before each instalment, then resolved, and nothing after;
- a plan broken at its second instalment: the ladder resumes at the stage the days past due give;
- a STOP while a plan is kept: no SMS from then on, no dunning, the plan still ends kept.
"""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from dispatcher.core.models import ClaimStatus, zone
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account

pytestmark = pytest.mark.integration
SHANGHAI = zone("Asia/Shanghai")
QUARTER = timedelta(hours=6)


def arrange(api: Api, instalments: list[tuple[str, str]], arrangement_id: str = "P1") -> dict[str, Any]:
    body = {"arrangement_id": arrangement_id, "instalments": [{"due": d, "amount": a} for d, a in instalments]}
    response = api.post("/v1/accounts/A1/arrangements", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def pay(api: Api, amount: str) -> None:
    response = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": amount})
    assert response.status_code == 200, response.text


def run_until(api: Api, end: datetime, on_day: Callable[[date], None] | None = None) -> list[tuple[datetime, str, str]]:
    """Re-plan A1 every quarter-day until `end`, sending what each pass queues; `on_day(local day)` runs at
    the first pass of each local day (the bank's payments). The (time, contact id, channel) sent."""
    sent: list[tuple[datetime, str, str]] = []
    seen_days: set[date] = set()
    while api.clock.now() < end:
        today = api.clock.now().astimezone(SHANGHAI).date()
        if on_day is not None and today not in seen_days:
            seen_days.add(today)
            on_day(today)
        for result in api.engine.replan_many(["A1"]):
            for contact in result.queued:
                if api.engine.gate.claim(contact).verdict == "send":
                    api.engine.gate.end_claim(contact, ClaimStatus.SENT)
                    sent.append((api.clock.now(), contact.id, contact.channel.value))
        api.clock.advance(QUARTER)
    return sent


def state(api: Api) -> Any:
    record = api.store.load("A1").record
    assert record is not None
    return record


def test_an_arrangement_kept_to_the_end_resolves_the_account_with_no_dunning(api: Api) -> None:
    # 36 days past due: without the plan, the continuous stage would call and text within the day.
    api.put_account("A1", account_body(balance="300.00", due_date="2026-01-25"))
    arrange(api, [("2026-03-10", "100.00"), ("2026-04-10", "100.00"), ("2026-05-10", "100.00")])
    dues = {date(2026, 3, 9), date(2026, 4, 9), date(2026, 5, 9)}
    sent = run_until(api, datetime(2026, 5, 25, tzinfo=UTC), lambda day: pay(api, "100.00") if day in dues else None)
    assert [cid for _, cid, _ in sent] == ["A1/arrangement/P1/0", "A1/arrangement/P1/1", "A1/arrangement/P1/2"]
    # Each reminder two days before its instalment, at the step's hour in the debtor's zone.
    assert [at.astimezone(SHANGHAI).date() for at, _, _ in sent] == [
        date(2026, 3, 8), date(2026, 4, 8), date(2026, 5, 8)
    ]  # fmt: skip
    record = state(api)
    assert record.state.status == "resolved"
    assert record.state.arrangements[0].status == "kept"
    events = [e.event for e in api.store.load("A1").history if e.kind == "event"]
    assert events[-1] == "arrangement_kept"


def test_an_arrangement_broken_at_the_second_instalment_resumes_the_ladder_at_its_stage(api: Api) -> None:
    # 10 days past due (second notice) when the plan is made; the second instalment is missed.
    api.put_account("A1", account_body(balance="300.00", due_date="2026-02-20"))
    arrange(api, [("2026-03-05", "100.00"), ("2026-03-20", "100.00"), ("2026-04-05", "100.00")])
    sent = run_until(
        api, datetime(2026, 3, 26, tzinfo=UTC), lambda day: pay(api, "100.00") if day == date(2026, 3, 4) else None
    )
    # The end of 03-20 plus three days of grace, in Shanghai: 03-24 00:00 local, 03-23 16:00 UTC.
    breaks = datetime(2026, 3, 23, 16, tzinfo=UTC)
    before = [cid for at, cid, _ in sent if at < breaks]
    after = [cid for at, cid, _ in sent if at >= breaks]
    assert before == ["A1/arrangement/P1/0", "A1/arrangement/P1/1"]  # reminders only while kept
    # 03-24 is 32 days past due: the continuous stage, not second notice (where the plan began) nor early.
    assert after and all(cid.startswith("A1/continuous/") for cid in after), after
    record = state(api)
    assert record.state.arrangements[0].status == "broken" and record.state.arrangements[0].missed == 2
    broken = [e for e in api.store.load("A1").history if e.event == "arrangement_broken"]
    assert [(e.detail["instalment"], e.detail["stage"], e.detail["days_past_due"]) for e in broken] == [
        ("2", "continuous", "32")
    ]  # fmt: skip
    assert breaks <= broken[0].at < breaks + QUARTER  # at the first look after the grace ran out
    audited = [a for a in api.store.audit("A1") if a.get("event") == "arrangement_broken"]
    assert len(audited) == 1  # audited, with the stage the ladder resumes at
    assert audited[0]["detail"]["stage"] == "continuous"  # type: ignore[index]


def test_a_stop_during_an_arrangement_ends_its_sms_but_not_the_plan(api: Api) -> None:
    api.put_account("A1", account_body(balance="200.00", due_date="2026-01-25"))
    arrange(api, [("2026-03-10", "100.00"), ("2026-04-10", "100.00")])

    def bank_and_debtor(day: date) -> None:
        if day == date(2026, 3, 9):  # after the first reminder: STOP, through Twilio's signed webhook
            params = {"MessageSid": "SMstop1", "From": "+8613800138000", "To": "+15005550006", "Body": "STOP"}
            assert api.twilio("/v1/webhooks/twilio/inbound-sms", params).status_code == 200
            pay(api, "100.00")
        if day == date(2026, 4, 9):
            pay(api, "100.00")

    sent = run_until(api, datetime(2026, 4, 20, tzinfo=UTC), bank_and_debtor)
    assert [cid for _, cid, _ in sent] == ["A1/arrangement/P1/0"]  # the second reminder would be an SMS: none
    denied = [d for d in api.store.audit("A1") if d.get("contact_id") == "A1/arrangement/P1/1"]
    assert denied and all(d["verdict"] == "deny" and d["rule"] == "opted_out:sms" for d in denied), [
        (d["verdict"], d["rule"]) for d in denied
    ]
    record = state(api)
    assert record.state.opted_out == {"sms"}
    assert (record.state.status, record.state.arrangements[0].status) == ("resolved", "kept")


def test_the_last_look_holds_back_what_was_queued_before_the_plan_changed(api: Api) -> None:
    """A ladder contact queued before the plan was agreed is denied at the last moment; so is a reminder
    queued before the plan was cancelled."""
    from dispatcher.core.arrangements.events import ArrangementCancelled, ArrangementMade
    from dispatcher.core.arrangements.terms import Instalment

    ladder = list(api.engine.upsert(make_account(balance="300.00", due_date=date(2026, 1, 30))).queued)
    while not ladder:  # the continuous stage's first day: its text at 10:00, spread over the hours after
        api.clock.advance(timedelta(hours=1))
        ladder = [c for r in api.engine.replan_many(["A1"]) for c in r.queued]
    assert ladder and all(c.stage == "continuous" for c in ladder)
    terms = (Instalment(due=date(2026, 3, 3), amount=Decimal("100.00")),)  # its reminder is due today
    reminders = list(api.engine.record_event("A1", ArrangementMade(arrangement_id="P1", instalments=terms)).queued)
    claimed = api.engine.gate.claim(ladder[0])
    assert (claimed.verdict, claimed.rule) == ("deny", "arrangement")
    while not reminders:  # once the spacing after the ladder's contact allows it
        api.clock.advance(timedelta(hours=1))
        reminders = [c for r in api.engine.replan_many(["A1"]) for c in r.queued]
    assert [c.id for c in reminders] == ["A1/arrangement/P1/0"]
    api.engine.record_event("A1", ArrangementCancelled(arrangement_id="P1"))
    claimed = api.engine.gate.claim(reminders[0])
    assert (claimed.verdict, claimed.rule) == ("deny", "arrangement_ended")
