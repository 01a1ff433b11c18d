ALTER TABLE closed_accounts DROP COLUMN event_ids;
