-- The manifest summarised in parts of 1024 versions (part = version / 1024): how many entries
-- and the sum of (version + 1) over them, kept up to date with every checkpoint, so the
-- differencing check reads the manifest's side of its first level from here instead of passing
-- over the manifest. The width is `store::PART_VERSIONS`.
CREATE TABLE IF NOT EXISTS producer_manifest_parts (
    account TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    part BIGINT NOT NULL,
    entries BIGINT NOT NULL,
    checksum BIGINT NOT NULL,
    PRIMARY KEY (account, entity_type, part)
);

INSERT INTO producer_manifest_parts (account, entity_type, part, entries, checksum)
SELECT account, entity_type, version / 1024, COUNT(*), SUM(version + 1)
FROM producer_manifest
GROUP BY account, entity_type, version / 1024;
