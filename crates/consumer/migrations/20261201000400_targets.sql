-- Which cloud account a legacy account is applied to, when not the account of the same id.
-- The ID map, the mirror, the positions and the leases are kept per target, so one legacy
-- account can be applied to two targets at once: the live one and a rebuild.
CREATE TABLE IF NOT EXISTS consumer_targets (
    account TEXT NOT NULL PRIMARY KEY,
    target TEXT NOT NULL
);
