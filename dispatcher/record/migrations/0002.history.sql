-- depends: 0001.record
-- History entries the planner no longer reads, moved out of an active account's Redis list by the archiver
-- (dispatcher/record/history.py). One trim pass of one account is one `trimmed_at`; `kept_before` is how many
-- entries stayed in Redis ahead of the entry, which puts it back in its place when a reader rebuilds the
-- whole history (newest pass first).

CREATE TABLE history_entries (
    account_id  text        NOT NULL,
    trimmed_at  timestamptz NOT NULL,  -- the pass: the archiver's clock when it trimmed
    position    integer     NOT NULL,  -- the entry's place among the pass's entries
    kept_before integer     NOT NULL,
    at          timestamptz NOT NULL,
    entry       jsonb       NOT NULL,  -- HistoryEntry JSON as Redis held it
    claim       text,                  -- an attempt's ended claim (sent, failed), which left Redis with it
    PRIMARY KEY (account_id, trimmed_at, position, at)
) PARTITION BY RANGE (at);

CREATE INDEX history_entries_account ON history_entries (account_id, trimmed_at);
CREATE INDEX history_entries_day ON history_entries USING brin (at);
