-- What `tandem status` and the consumer's page show: when each account last had an event
-- applied (or skipped) in a partition, and the messages sent to the dead-letter topic with why.
ALTER TABLE consumer_account_offsets ADD COLUMN applied_at BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS consumer_dead_letters (
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    source_offset BIGINT NOT NULL,
    account TEXT,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id, source_offset)
);

CREATE INDEX IF NOT EXISTS consumer_dead_letters_by_time ON consumer_dead_letters (at);
