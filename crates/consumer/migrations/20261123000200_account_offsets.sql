-- Per account, the next offset to apply in a partition. Accounts of one partition are applied
-- concurrently, so the partition's position (consumer_offsets) is only the lowest offset not
-- yet durable; an event at or above it is skipped when its account already moved past it.
CREATE TABLE IF NOT EXISTS consumer_account_offsets (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    account TEXT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id, account)
);
