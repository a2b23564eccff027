-- The producer's checkpoints. Per account: its restore epoch, whether its enrolment snapshot is
-- complete, the last database-identity marker seen, when deletes were last checked. Per
-- (account, table): the highest version published, versions that in-flight transactions may
-- still fill below it, and the manifest of every key seen with its last version.
CREATE TABLE IF NOT EXISTS producer_accounts (
    account TEXT NOT NULL PRIMARY KEY,
    epoch BIGINT NOT NULL,
    enrolled BIGINT NOT NULL DEFAULT 0,
    identity TEXT,
    deletes_checked_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS producer_high_water (
    account TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    high_water BIGINT NOT NULL,
    PRIMARY KEY (account, entity_type)
);

CREATE TABLE IF NOT EXISTS producer_manifest (
    account TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (account, entity_type, entity_id)
);

CREATE INDEX IF NOT EXISTS producer_manifest_by_version
    ON producer_manifest (account, entity_type, version);

-- A transaction still open when a cycle read may commit rows with versions at or below what
-- that cycle published; until every such transaction ended (next_txid at or below the database's oldest
-- running transaction), cycles re-read from low_water.
CREATE TABLE IF NOT EXISTS producer_inflight (
    account TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    next_txid BIGINT NOT NULL,
    low_water BIGINT NOT NULL,
    PRIMARY KEY (account, entity_type, next_txid)
);

-- One cycle per account at a time across producer instances.
CREATE TABLE IF NOT EXISTS producer_leases (
    account TEXT NOT NULL PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
