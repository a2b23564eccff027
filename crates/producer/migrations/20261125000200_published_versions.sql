-- The highest version published for the account in epoch `published_epoch`, raised before each
-- batch is published. A batch's checkpoint can be lost (the producer killed after publishing
-- it); this mark is not, so a delete found later can carry a version above every version
-- consumers may have seen of its row.
ALTER TABLE producer_accounts ADD COLUMN published_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE producer_accounts ADD COLUMN published_max BIGINT NOT NULL DEFAULT 0;

-- Keys published as CREATED whose checkpoint has not landed yet, with the version published.
-- Written before the batch goes out and cleared by its checkpoint. One left behind (the
-- producer was killed in between) names a row consumers may have that the manifest lacks: if
-- the row is gone by the next cycle, only a DELETED published then takes it away.
CREATE TABLE IF NOT EXISTS producer_unsettled (
    account TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (account, entity_type, entity_id)
);
