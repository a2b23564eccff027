-- The migration's state per account, shared by the producer, the consumer, the router and the
-- operator's commands. Times are epoch milliseconds.

-- One row: the policy the producer was started with, and when the accounts were first counted.
CREATE TABLE migration_settings (
    id INTEGER PRIMARY KEY,
    enroll TEXT NOT NULL,
    new_accounts TEXT NOT NULL,
    new_accounts_slice TEXT,
    started_at BIGINT
);

CREATE TABLE migration_accounts (
    account TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since BIGINT NOT NULL,
    -- When its enrolment snapshot was applied (it went live).
    live_at BIGINT,
    -- migrate-now: its snapshot goes before the backfills under way.
    urgent_at BIGINT,
    -- A cutover asks the producer for a snapshot taken after the freeze, and waits until the
    -- consumer applied it: everything up to the freeze is then in the cloud.
    drain_snapshot TEXT,
    -- The producer has asked itself for that snapshot.
    drain_filed TEXT,
    -- The last snapshot of the account the consumer applied in full.
    applied_snapshot TEXT,
    frozen INTEGER NOT NULL DEFAULT 0
);

-- Every change of state (and every refused cutover): who or what, when and why.
CREATE TABLE migration_history (
    account TEXT NOT NULL,
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (account, seq)
);

CREATE TABLE migration_slices (
    name TEXT PRIMARY KEY,
    query TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE migration_slice_members (
    slice TEXT NOT NULL,
    account TEXT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (slice, account)
);

-- The last verify of each account, for the slice's status.
CREATE TABLE migration_verifies (
    account TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    missing BIGINT NOT NULL,
    extra BIGINT NOT NULL,
    different BIGINT NOT NULL
);
