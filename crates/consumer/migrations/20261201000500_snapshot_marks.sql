-- Where each account's snapshots begin and end in the log, as the consumer read them: a
-- replay from an account's latest complete snapshot seeks there instead of scanning.
CREATE TABLE IF NOT EXISTS consumer_snapshots (
    account TEXT NOT NULL,
    snapshot_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    begin_offset BIGINT,
    end_offset BIGINT,
    PRIMARY KEY (account, snapshot_id, topic)
);
