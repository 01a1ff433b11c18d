"""The store's, the claim ledger's and the engine's single-Redis tests, run on the real cluster
(tests/cluster/conftest.py gives them its `store`). Left out: the five that write or read keys spelled by
hand in the per-account layout (`{a:ID}:...`) or build a store of another shard count than the layout's;
what they check of the layout the cluster's own tests check in the shard layout."""

from __future__ import annotations

import pytest

from tests.integration.test_engine import *  # noqa: F403
from tests.integration.test_store import *  # noqa: F403

pytestmark = pytest.mark.integration

for _by_hand in (
    "test_a_commit_stores_record_history_and_wake_up_under_the_accounts_hash_tag",
    "test_every_key_of_one_account_hashes_to_one_cluster_slot",
    "test_queueing_returns_new_and_still_queued_contacts_but_not_claimed_ones",
    "test_a_lease_takes_at_most_limit_accounts_per_shard",
    "test_an_import_that_assumes_new_accounts_still_reads_the_ones_that_exist",
):
    del globals()[_by_hand]
