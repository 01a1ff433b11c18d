"""`dispatcher demo` end to end, short: a few accounts on a fast clock, real workers, sandboxes and API; the
debtors of the debtor model act through the API and the sandboxes, and the summary counts every account once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

STATUSES = {"resolved", "arrangement", "promised", "disputed", "handed_off", "active"}


def test_a_short_demo_writes_accounts_by_status_that_sum_to_the_book(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    env = {**os.environ, "DISPATCHER_STATE_DIR": str(tmp_path / "state")}
    env.pop("DISPATCHER_REDIS_URL", None)  # the demo runs its own embedded Redis
    command = [sys.executable, "-m", "workers.cli", "demo", "--accounts", "12", "--days", "40", "--seconds", "12",
               "--workers", "1", "--json", str(out)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=140, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert set(summary) >= {"accounts_by_status", "collected", "contacts"}
    by_status = summary["accounts_by_status"]
    assert set(by_status) == STATUSES and all(isinstance(n, int) and n >= 0 for n in by_status.values())
    assert sum(by_status.values()) == 12
    assert summary["contacts"] > 0
    assert all(len(currency) == 3 and float(amount) > 0 for currency, amount in summary["collected"].items())
    assert "accounts by status" in result.stdout and "contacts" in result.stdout
    # The bank's side came through the API with its key: every debtor event the API log shows was accepted.
    api_log = (tmp_path / "state" / "demo" / "api.log").read_text(encoding="utf-8")
    events = [line for line in api_log.splitlines() if "http.request" in line and "/events" in line]
    assert all("status=200" in line for line in events), events
