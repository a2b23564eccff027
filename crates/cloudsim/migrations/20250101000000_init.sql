-- Documents of every account and collection. `seq` gives creation order and the numeric
-- part of the server-generated id; `id` is filled in right after the insert, inside the
-- same transaction, because it is derived from `seq`.
CREATE TABLE documents (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    account    TEXT    NOT NULL,
    collection TEXT    NOT NULL,
    id         TEXT    UNIQUE,
    body       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL
);

CREATE INDEX documents_by_collection ON documents (account, collection, seq);

-- The first response to each (account, Idempotency-Key), so a retry gets it back verbatim.
CREATE TABLE idempotency_keys (
    account      TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    PRIMARY KEY (account, key)
);

-- One row per applied mutation; tests and operators compare it with the legacy side.
CREATE TABLE audit (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    account         TEXT    NOT NULL,
    collection      TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    op              TEXT    NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    external_ref    TEXT,
    idempotency_key TEXT,
    at_ms           INTEGER NOT NULL
);

CREATE INDEX audit_by_account ON audit (account, seq);
