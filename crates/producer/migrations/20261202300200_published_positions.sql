-- Where each account's newest event landed in the topic, and when: `tandem status` compares it
-- with the consumer's position to tell how far behind the account is. Written after the
-- broker acknowledged; a stop that loses a write leaves the next publish to make it right.
CREATE TABLE IF NOT EXISTS producer_published (
    account TEXT NOT NULL PRIMARY KEY,
    partition_id BIGINT NOT NULL,
    last_offset BIGINT NOT NULL,
    -- The newest event's legacy commit time, and when the broker acknowledged it.
    occurred_at BIGINT NOT NULL,
    published_at BIGINT NOT NULL
);
