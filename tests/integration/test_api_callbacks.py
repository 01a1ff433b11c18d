"""The admin routes of the outcome callbacks, over the real server and Redis: an endpoint registered (its
secret shown once), refused when it points inside the network, rotated, disabled, its attempts and failed
events read and retried, deleted."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from config.settings import Settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Payment
from dispatcher.engine import Engine
from dispatcher.state.store import Store
from dispatcher.webhook_sender import callbacks_for
from tests.api_fixtures import Api, api_keys, api_settings  # noqa: F401
from tests.callback_receiver import Receiver
from tests.conftest import make_account

pytestmark = pytest.mark.integration
ROUTE = "/v1/admin/webhook-endpoints"


@pytest.fixture
def local_api(api_settings: Settings, engine: Engine, store: Store, clock: ManualClock,
              api_keys: dict[str, tuple[str, str]]) -> Iterator[Api]:  # fmt: skip
    settings = api_settings.model_copy(
        update={"webhook_allowed_hosts": ("127.0.0.1",), "webhook_retry_schedule": (5.0,)}
    )
    with ServerThread(create_app(engine, settings)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield Api(server.url, client, api_keys, settings, engine, store, clock)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://10.0.0.5/hooks", "10.0.0.5"),
        ("http://[::1]:8080/hooks", "::1"),
        ("ftp://hooks.bank.test/", "scheme"),
    ],  # fmt: skip
)
def test_a_target_inside_the_network_is_refused_at_registration(local_api: Api, url: str, named: str) -> None:
    answer = local_api.post(ROUTE, {"url": url})
    assert answer.status_code == 422, answer.text
    assert answer.json()["fields"][0]["field"] == "url" and named in answer.json()["message"]


def test_unknown_types_and_a_key_without_admin_are_refused(local_api: Api) -> None:
    answer = local_api.post(ROUTE, {"url": "http://127.0.0.1:9/hooks", "types": ["contact.teleported"]})
    assert answer.status_code == 422 and answer.json()["fields"][0]["field"] == "types"
    assert local_api.post(ROUTE, {"url": "http://127.0.0.1:9/hooks"}, key="reader").status_code == 403
    assert local_api.client.get(ROUTE, headers=local_api.auth("ops")).status_code == 403


def test_an_endpoint_registered_delivers_and_is_managed_through_the_routes(local_api: Api) -> None:
    receiver = Receiver().start()
    try:
        made = local_api.post(ROUTE, {"url": receiver.url, "types": ["payment.recorded"]})
        assert made.status_code == 201, made.text
        endpoint_id, secret = made.json()["id"], made.json()["secret"]
        assert secret.startswith("whsec_")
        receiver.secrets.append(secret)
        listed = local_api.client.get(ROUTE, headers=local_api.auth()).json()
        assert [e["id"] for e in listed] == [endpoint_id] and "secret" not in listed[0]
        assert secret not in local_api.client.get(f"{ROUTE}/{endpoint_id}", headers=local_api.auth()).text

        engine, clock = local_api.engine, local_api.clock
        relay, sender = callbacks_for(local_api.store, clock, local_api.settings)
        engine.upsert_many([make_account("CB0")])
        engine.record_event("CB0", Payment(amount=Decimal("10")))
        receiver.status = 500
        relay.run(), sender.deliver_due()
        clock.advance(timedelta(seconds=10))
        relay.run(), sender.deliver_due()  # the schedule (one wait) is spent: failed for good
        attempts = local_api.client.get(f"{ROUTE}/{endpoint_id}/attempts", headers=local_api.auth()).json()
        assert [a["verdict"] for a in attempts] == ["failed_for_good", "retry_scheduled"]
        assert attempts[0]["status"] == 500
        failed = local_api.client.get(f"{ROUTE}/{endpoint_id}/failed", headers=local_api.auth()).json()
        assert [f["type"] for f in failed] == ["payment.recorded"]

        rotated = local_api.post(f"{ROUTE}/{endpoint_id}/rotate-secret")
        assert rotated.status_code == 200 and rotated.json()["secret"] != secret
        receiver.secrets, receiver.status = [rotated.json()["secret"]], 204
        retried = local_api.post(f"{ROUTE}/{endpoint_id}/retry", params={"event_id": failed[0]["id"]})
        assert retried.json() == {"requeued": 1}
        relay.run(), sender.deliver_due()
        assert receiver.ids() == [failed[0]["id"]] and receiver.unverified == 0

        disabled = local_api.post(f"{ROUTE}/{endpoint_id}/disable").json()
        assert disabled["enabled"] is False and disabled["disabled_reason"] == "disabled by an operator"
        assert local_api.post(f"{ROUTE}/{endpoint_id}/enable").json()["enabled"] is True
        assert local_api.post(f"{ROUTE}/{endpoint_id}/retry", params={"event_id": "evt_nope"}).status_code == 404

        deleted = local_api.client.delete(f"{ROUTE}/{endpoint_id}", headers=local_api.auth())
        assert deleted.status_code == 204
        assert local_api.client.get(f"{ROUTE}/{endpoint_id}", headers=local_api.auth()).status_code == 404
        sender.close()
    finally:
        receiver.stop()
