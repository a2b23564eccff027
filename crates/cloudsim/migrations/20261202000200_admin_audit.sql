-- Changes made through the admin API (behind the platform's API) are audited too, as
-- 'admin-update' and 'admin-delete'. SQLite cannot change a CHECK, so the table is rebuilt.
CREATE TABLE audit_new (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    account         TEXT    NOT NULL,
    collection      TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    op              TEXT    NOT NULL
        CHECK (op IN ('create', 'update', 'delete', 'admin-update', 'admin-delete')),
    external_ref    TEXT,
    idempotency_key TEXT,
    at_ms           INTEGER NOT NULL
);
INSERT INTO audit_new SELECT * FROM audit;
DROP TABLE audit;
ALTER TABLE audit_new RENAME TO audit;
CREATE INDEX audit_by_account ON audit (account, seq);
