-- The highest version published for the account in epoch `published_epoch`, raised before each
-- batch is published. A batch's checkpoint can be lost (the producer killed after publishing
-- it); this mark is not, so a delete found later can carry a version above every version
-- consumers may have seen of its row.
ALTER TABLE producer_accounts ADD COLUMN published_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE producer_accounts ADD COLUMN published_max BIGINT NOT NULL DEFAULT 0;
