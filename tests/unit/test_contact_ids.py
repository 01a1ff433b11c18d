"""A contact id names its account first; dispatcher.core.models.account_of is the one reader of that."""

from __future__ import annotations

import pytest

from dispatcher.core.models import CONTACT_ID, ContactRef, account_of
from workers.arguments import payload_problem


@pytest.mark.parametrize(
    "ref",
    [ContactRef("A1", "reminder", "sms", 0), ContactRef("acct.2024-07_x", "adhoc", "agent-1", 3, fallback=True)],
)
def test_a_contact_id_names_its_account_first(ref: ContactRef) -> None:
    contact_id = str(ref)
    assert CONTACT_ID.match(contact_id)
    assert account_of(contact_id) == ref.account_id == ContactRef.parse(contact_id).account_id  # type: ignore[union-attr]


def _payload(contact_id: str, account_id: str = "A1") -> dict[str, str]:
    return {"id": contact_id, "account_id": account_id, "channel": "sms", "template": "reminder",
            "stage": "reminder", "step": "sms", "due_at": "2026-03-01T09:00:00+00:00"}  # fmt: skip


def test_a_send_payload_takes_only_a_well_formed_contact_id_of_its_own_account() -> None:
    assert payload_problem(_payload("A1/reminder/sms/0")) is None
    assert "does not belong to account 'A1'" in str(payload_problem(_payload("A2/reminder/sms/0")))
    assert "is not ACCOUNT/stage/step/occurrence" in str(payload_problem(_payload("A1/reminder/sms/zero")))
    assert "is not ACCOUNT/stage/step/occurrence" in str(payload_problem(_payload("A1/reminder/sms/0/xx")))
