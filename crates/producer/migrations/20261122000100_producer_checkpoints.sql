-- The producer's checkpoints: per account its restore epoch, per (account, table) the highest
-- version published, and the manifest of every key seen with its last version.
CREATE TABLE IF NOT EXISTS producer_accounts (
    account TEXT NOT NULL PRIMARY KEY,
    epoch BIGINT NOT NULL
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
