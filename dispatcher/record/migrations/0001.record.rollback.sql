DROP FUNCTION record_partition(text, timestamptz);
DROP VIEW account_events;
DROP VIEW contact_attempts;
DROP TABLE closed_accounts;
DROP TABLE audit_entries;
