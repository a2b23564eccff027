-- When the current holder took the lease (epoch millis). A renewal keeps it; a take by another
-- worker run, or by the same run after its lease ran out, sets it anew, so a worker can tell
-- that others may have applied the account's events since it last held it.
ALTER TABLE consumer_account_leases ADD COLUMN taken_at BIGINT NOT NULL DEFAULT 0;
