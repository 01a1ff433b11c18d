"""`dispatcher callbacks` through typer's runner, on the real embedded Redis, delivering to a real receiver."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from config.settings import load_settings
from dispatcher.core.events import Payment
from dispatcher.wiring import open_runtime
from tests.callback_receiver import Receiver
from tests.conftest import make_account
from workers.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCHER_REDIS_URL", redis_url)
    monkeypatch.setenv("DISPATCHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DISPATCHER_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")


def test_an_endpoint_added_listed_delivered_to_disabled_retried_rotated_and_deleted(env: None) -> None:
    refused = runner.invoke(app, ["callbacks", "add", "http://169.254.169.254/latest/meta-data"])
    assert refused.exit_code == 2 and "169.254.169.254" in refused.output
    receiver = Receiver().start()
    try:
        added = runner.invoke(app, ["callbacks", "add", receiver.url, "--type", "payment.recorded"])
        assert added.exit_code == 0, added.output
        endpoint_id = re.search(r"endpoint (ep_\w+)", added.output).group(1)  # type: ignore[union-attr]
        receiver.secrets.append(re.search(r"secret (whsec_\S+)", added.output).group(1))  # type: ignore[union-attr]
        listed = runner.invoke(app, ["callbacks", "list", "--json"])
        assert endpoint_id in listed.output and "whsec_" not in listed.output

        with open_runtime(load_settings()) as runtime:
            runtime.engine.upsert_many([make_account("CB0")])
            runtime.engine.record_event("CB0", Payment(amount=Decimal("10")))
        delivered = runner.invoke(app, ["callbacks", "deliver"])
        assert delivered.exit_code == 0 and "delivered 1" in delivered.output, delivered.output
        assert len(receiver.received) == 1 and receiver.unverified == 0

        shown = runner.invoke(app, ["callbacks", "show", endpoint_id, "--json"])
        assert '"verdict": "delivered"' in shown.output
        assert runner.invoke(app, ["callbacks", "disable", endpoint_id]).exit_code == 0
        assert "disabled by an operator" in runner.invoke(app, ["callbacks", "list"]).output
        assert runner.invoke(app, ["callbacks", "enable", endpoint_id]).exit_code == 0
        assert "0 waiting account(s) due now" in runner.invoke(app, ["callbacks", "retry", endpoint_id]).output
        missing = runner.invoke(app, ["callbacks", "retry", endpoint_id, "--event", "evt_nope"])
        assert missing.exit_code == 1 and "no failed event" in missing.output
        rotated = runner.invoke(app, ["callbacks", "rotate", endpoint_id])
        assert rotated.exit_code == 0 and "whsec_" in rotated.output
        assert runner.invoke(app, ["callbacks", "delete", endpoint_id]).exit_code == 0
        assert runner.invoke(app, ["callbacks", "show", endpoint_id]).exit_code == 1
    finally:
        receiver.stop()
