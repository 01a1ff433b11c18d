"""The record's movers on the cluster: the audit archiver (a stream per shard), the history trimmer and the
closed-account mover (their SCAN cursor one per primary), the restorer of moved accounts and retention, by
their single-Redis tests run on the cluster's `store` (tests/cluster/conftest.py). Left out: the one that
points the CLI at the single Redis by its own environment."""

from __future__ import annotations

import pytest

from tests.integration.test_archive import *  # noqa: F403
from tests.integration.test_record_reports import *  # noqa: F403
from tests.integration.test_reopen import *  # noqa: F403
from tests.integration.test_retention import *  # noqa: F403

pytestmark = pytest.mark.integration

del globals()["test_the_api_and_the_cli_read_a_closed_account_from_the_record"]
