-- Snapshots asked for (`tandem snapshot`) while another instance holds the account's lease:
-- the holder publishes them in its next cycle, then removes the request.
CREATE TABLE IF NOT EXISTS producer_snapshot_requests (
    account TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    PRIMARY KEY (account, snapshot_id)
);
