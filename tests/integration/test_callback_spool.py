"""The callback spool: a verified callback that met a Redis outage is kept on disk, in order, and replayed
once Redis answers — also by the next API process when the one that spooled it died."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.api import create_app
from dispatcher.api.callback_spool import CallbackSpool
from dispatcher.core.models import ClaimStatus
from tests.api_fixtures import Api, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account
from tests.worker_fixtures import eventually

pytestmark = pytest.mark.integration


def test_a_spool_keeps_what_redis_refused_in_order_and_replays_it_when_redis_answers(tmp_path: Path) -> None:
    answered: list[str] = []
    away = {"now": True}

    def replay(record: dict[str, Any]) -> None:
        if away["now"]:
            raise redis.exceptions.ConnectionError("Connection refused")
        answered.append(record["n"])

    spool = CallbackSpool(tmp_path / "spool.ndjson", replay)
    # Written as append() writes, without starting its replayer, so the test drives the replays itself.
    spool.path.write_text("".join(json.dumps({"n": n}) + "\n" for n in ("1", "2", "3")))
    assert spool.replay_once() is False
    assert spool.pending() == 3
    away["now"] = False
    assert spool.replay_once() is True
    assert answered == ["1", "2", "3"]
    assert not spool.path.exists()


def test_a_spool_left_by_a_dead_api_process_is_replayed_by_the_next_one(api: Api) -> None:
    [contact] = api.engine.upsert(make_account("A1")).queued
    assert api.engine.gate.claim(contact).verdict == "send"
    api.engine.gate.end_claim(contact, ClaimStatus.SENT)
    left = api.settings.state_dir / "spool" / "callbacks.ndjson"
    left.parent.mkdir(parents=True, exist_ok=True)
    found = [{"contact_id": contact.id, "kind": "delivered", "provider_id": "SM9", "detail": {}}]
    record = {"kind": "outcomes", "channel": "sms", "rank": 3, "source": "twilio:delivered", "found": found}
    left.write_text(json.dumps(record) + "\n")
    create_app(api.engine, api.settings)  # the next process starts
    eventually(lambda: not left.exists(), timeout=10)
    outcomes = [e.outcome for e in api.store.load("A1").history if e.kind == "outcome"]
    assert "delivered" in outcomes
