"""The bounded chaos run inside `make test`: 300 SMS contacts through real worker, beat, API, sandbox and
redis-server processes; one worker SIGKILL while sending, then one Redis SHUTDOWN and restart on the same
port and data. The goals are the chaos suite's (docs/reliability.md): nothing sent twice, nothing lost,
nothing recorded as sent without the provider's evidence, drained within the deadline.

It never sleeps for a schedule: it waits for the provider's log to show sends, and for the drain, by
polling with deadlines. `python -m tests.chaos -s bounded` runs the same thing and prints the table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.report import details, table
from tests.chaos.scenarios import BOUNDED, run

pytestmark = pytest.mark.integration


def test_one_kill_and_one_redis_restart_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    result = run(BOUNDED, tmp_path)
    summary = "\n".join([table([(BOUNDED, result)]), details([(BOUNDED, result)])])
    assert result.error is None, summary
    assert result.tally is not None, summary
    assert result.tally.duplicates == 0, summary
    assert result.tally.stray == 0, summary
    assert result.tally.sent_without_evidence == 0, summary
    assert result.tally.lost == 0, summary
    assert result.drain_seconds is not None, summary
    assert result.passed, summary
