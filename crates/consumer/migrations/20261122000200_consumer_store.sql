-- The consumer's store: the ID map (legacy root key → cloud id, with the hash of the document
-- last written), the source mirror (latest row image per legacy key, tombstones included) and
-- the applied position of each partition, all written in one transaction per event.
CREATE TABLE IF NOT EXISTS consumer_id_map (
    account TEXT NOT NULL,
    resource TEXT NOT NULL,
    root_key TEXT NOT NULL,
    cloud_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    PRIMARY KEY (account, resource, root_key)
);

CREATE TABLE IF NOT EXISTS consumer_mirror (
    account TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    version BIGINT NOT NULL,
    parent TEXT,
    data TEXT,
    -- The last snapshot this row was seen in; SNAPSHOT_END sweeps live rows it did not see.
    snapshot_id TEXT,
    PRIMARY KEY (account, entity_type, entity_id)
);

CREATE INDEX IF NOT EXISTS consumer_mirror_by_parent
    ON consumer_mirror (account, entity_type, parent);

CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer_group TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition_id)
);

-- Resources waiting for a resource they refer to, whose legacy row has not arrived yet. The
-- waiting resource is created as soon as the one it waits for is.
CREATE TABLE IF NOT EXISTS consumer_parked (
    account TEXT NOT NULL,
    resource TEXT NOT NULL,
    root_key TEXT NOT NULL,
    target TEXT NOT NULL,
    target_key TEXT NOT NULL,
    PRIMARY KEY (account, resource, root_key)
);

CREATE INDEX IF NOT EXISTS consumer_parked_by_target
    ON consumer_parked (account, target, target_key);

-- Accounts parked after an event failed permanently: their later events are held here, in
-- order, until an operator resumes the account and the consumer applies them.
CREATE TABLE IF NOT EXISTS consumer_accounts (
    account TEXT NOT NULL PRIMARY KEY,
    parked_reason TEXT NOT NULL,
    resume_requested BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS consumer_held (
    account TEXT NOT NULL,
    seq BIGINT NOT NULL,
    -- The original message bytes, hex-encoded (one type for SQLite and PostgreSQL).
    payload TEXT NOT NULL,
    PRIMARY KEY (account, seq)
);
