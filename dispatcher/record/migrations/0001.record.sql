-- The durable record: audit entries archived from the Redis streams, and closed accounts moved out of Redis.
-- Append-only (retention only rewrites personal fields), partitioned by month of the fact's own time, so a
-- month is dropped or moved to cold storage as one table and reports read only the months they ask for.
-- Partitions are made on demand by record_partition() (the archiver calls it for the months of a batch).

CREATE TABLE audit_entries (
    shard      integer     NOT NULL,  -- the Redis stream {s:N}:audit it came from
    stream_ms  bigint      NOT NULL,  -- the stream entry id, ms-seq: with shard and position, the key that
    stream_seq bigint      NOT NULL,  -- makes archiving idempotent
    position   integer     NOT NULL,  -- the entry's place in its stream entry (one stream entry per write)
    at         timestamptz NOT NULL,
    account_id text        NOT NULL,
    type       text        NOT NULL,  -- event, outcome, decision, last_look, contact
    contact_id text,
    channel    text,
    entry      jsonb       NOT NULL,  -- the whole entry as the engine wrote it
    PRIMARY KEY (shard, stream_ms, stream_seq, position, at)
) PARTITION BY RANGE (at);

-- One account's timeline (GET /v1/accounts/{id}, `dispatcher account show`).
CREATE INDEX audit_entries_account ON audit_entries (account_id, at);
-- Per-day reports: entries arrive roughly in time order, so a BRIN index is tiny and nearly free to keep.
CREATE INDEX audit_entries_day ON audit_entries USING brin (at);

-- What was sent, and what happened to the account: views over the one append-only table, not copies.
CREATE VIEW contact_attempts AS
    SELECT at, account_id, contact_id, channel, entry->>'status' AS status, entry
    FROM audit_entries WHERE type = 'contact';
CREATE VIEW account_events AS
    SELECT at, account_id, type, coalesce(entry->>'event', entry->>'outcome') AS kind, contact_id, channel, entry
    FROM audit_entries WHERE type IN ('event', 'outcome');

-- A resolved or handed-off account, moved out of Redis after its retention there: the record, full history
-- and claims as they were. An account closed twice (reopened by the bank) has two rows.
CREATE TABLE closed_accounts (
    account_id       text        NOT NULL,
    closed_at        timestamptz NOT NULL,  -- its last history entry: when it was resolved or handed off
    archived_at      timestamptz NOT NULL,
    status           text        NOT NULL,
    version          bigint      NOT NULL,
    record           jsonb       NOT NULL,  -- AccountRecord JSON; personal fields erased by retention
    history          jsonb       NOT NULL,  -- HistoryEntry JSON objects, oldest first
    claims           jsonb       NOT NULL,
    pseudonymised_at timestamptz,
    PRIMARY KEY (account_id, closed_at)
) PARTITION BY RANGE (closed_at);

CREATE INDEX closed_accounts_account ON closed_accounts (account_id);
CREATE INDEX closed_accounts_pending_erasure ON closed_accounts (closed_at) WHERE pseudonymised_at IS NULL;

-- The month's partition of `parent` that holds `moment`, created once; a lock keeps two archivers from
-- racing to create the same one.
CREATE FUNCTION record_partition(parent text, moment timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    month date := date_trunc('month', moment AT TIME ZONE 'UTC')::date;
    name text := format('%s_y%sm%s', parent, to_char(month, 'YYYY'), to_char(month, 'MM'));
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(name));
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
        name, parent, month::timestamp AT TIME ZONE 'UTC', (month + interval '1 month')::timestamp AT TIME ZONE 'UTC'
    );
END
$$;
