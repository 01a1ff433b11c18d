-- depends: 0002.history
-- The ids of events a closed account had applied (id -> when it may lapse, as Redis scored it), so a bank
-- event resent after the account left Redis is still a repeat once the account is restored.
ALTER TABLE closed_accounts ADD COLUMN event_ids jsonb NOT NULL DEFAULT '{}'::jsonb;
