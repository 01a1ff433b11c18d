"""On a channel with routes (DISPATCHER_ROUTES), a status callback counts only from the provider the contact's
attempt names: Twilio's signed callback for a contact that went through another provider changes nothing."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from config.settings import Settings, load_settings
from tests.api_fixtures import PUBLIC_BASE_URL, Api, api, api_keys  # noqa: F401
from tests.conftest import make_account

pytestmark = pytest.mark.integration


@pytest.fixture
def api_settings(redis_url: str, api_keys: dict[str, tuple[str, str]], tmp_path: Path) -> Settings:
    return load_settings(
        redis_url=redis_url, state_dir=tmp_path / "state", api_keys=",".join(entry for _, entry in api_keys.values()),
        public_base_url=PUBLIC_BASE_URL, routes={"sms": {"CN": ["gateway", "twilio"], "*": ["twilio"]}},
        _env_file=None,
    )  # fmt: skip


def _delivered(api: Api, contact_id: str) -> dict[str, object]:
    path = f"/v1/webhooks/twilio/message-status?contact_id={quote(contact_id, safe='')}"
    params = {
        "MessageSid": f"SM{contact_id[:2]}",
        "MessageStatus": "delivered",
        "AccountSid": api.settings.twilio_account_sid,
    }
    response = api.twilio(path, params)
    assert response.status_code == 200
    result: dict[str, object] = response.json()
    return result


def test_a_callback_from_a_provider_the_attempt_does_not_name_changes_nothing(api: Api) -> None:
    results = api.engine.upsert_many([make_account("W1"), make_account("W2")])
    elsewhere, here = (next(c for c in result.queued if c.channel.value == "sms") for result in results)
    assert api.engine.gate.claim(elsewhere, "gateway").verdict == "send"  # its route chose the other provider
    assert api.engine.gate.claim(here, "twilio").verdict == "send"
    ignored = _delivered(api, elsewhere.id)
    assert ignored["status"] == "ignored" and "another provider" in str(ignored["reason"])
    assert _delivered(api, here.id) == {"status": "recorded", "reason": None, "outcomes": ["delivered"]}
    outcomes = {
        account_id: [e.outcome for e in api.store.load(account_id).history if e.kind == "outcome"]
        for account_id in ("W1", "W2")
    }
    assert outcomes == {"W1": [], "W2": ["delivered"]}
