-- How far an account's snapshot got: written after each acknowledged chunk, so that a
-- snapshot interrupted by a stop or a kill goes on from there under the same snapshot id.
CREATE TABLE IF NOT EXISTS producer_snapshot_progress (
    account TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    upto BIGINT NOT NULL,
    bounds_xmin BIGINT,
    bounds_xmax BIGINT,
    table_index BIGINT NOT NULL,
    after_version BIGINT NOT NULL
);
