//! SQLite persistence: documents, idempotency keys and the audit log.
//!
//! Every mutation runs in one transaction on a single writer connection, so concurrent
//! requests queue for the pool instead of failing with `SQLITE_BUSY`, and the idempotency
//! check-then-insert cannot race with itself.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use crate::error::{Error, Result};

mod audit;
pub(crate) mod request_hash;

use audit::{Audit, AuditEntry};
use request_hash::request_hash;

/// How long a connection waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READER_CONNECTIONS: u32 = 4;

#[derive(Debug, Clone)]
pub(crate) struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
}

/// A response to replay verbatim: the status and the exact body bytes of the first answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) body: String,
}

#[derive(Debug)]
pub(crate) enum CreateOutcome {
    Created(StoredResponse),
    Replayed(StoredResponse),
    /// The idempotency key was first used with another request.
    KeyConflict,
}

#[derive(Debug)]
pub(crate) struct Page {
    pub(crate) items: Vec<Value>,
    pub(crate) next: Option<String>,
}

impl Store {
    pub(crate) async fn open(url: &str) -> Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| Error::DatabaseUrl {
                url: url.to_owned(),
                source,
            })?
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT);
        let open_error = |source| Error::OpenDatabase {
            url: url.to_owned(),
            source,
        };

        // An in-memory database lives only as long as its connection, so it gets exactly one
        // that never idles out; readers share it.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let store = if in_memory {
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .map_err(open_error)?;
            Store {
                writer: pool.clone(),
                reader: pool,
            }
        } else {
            // WAL lets readers proceed while the single writer commits.
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .map_err(open_error)?;
            let reader = SqlitePoolOptions::new()
                .max_connections(READER_CONNECTIONS)
                .connect_with(options)
                .await
                .map_err(open_error)?;
            Store { writer, reader }
        };

        sqlx::migrate!()
            .run(&store.writer)
            .await
            .map_err(|source| Error::Migrate {
                url: url.to_owned(),
                source,
            })?;
        Ok(store)
    }

    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Creates a document with a server-generated id, or replays the stored answer when
    /// `idempotency_key` was already used for the same request.
    pub(crate) async fn create(
        &self,
        account: &str,
        collection: &str,
        mut doc: Map<String, Value>,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome> {
        let request_hash = request_hash(collection, &doc);
        let mut tx = self.writer.begin().await?;

        if let Some(key) = idempotency_key {
            let seen: Option<(String, i64, String)> = sqlx::query_as(
                "SELECT request_hash, status, body FROM idempotency_keys \
                 WHERE account = ? AND key = ?",
            )
            .bind(account)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((seen_hash, status, body)) = seen {
                if seen_hash != request_hash {
                    return Ok(CreateOutcome::KeyConflict);
                }
                let status = u16::try_from(status).map_err(|_| Error::CorruptRecord {
                    what: format!("idempotency key {key:?} of account {account}"),
                    reason: format!("status {status} is not an HTTP status"),
                })?;
                return Ok(CreateOutcome::Replayed(StoredResponse { status, body }));
            }
        }

        let now = now_ms();
        // The id is derived from the row's own sequence number, hence insert-then-update.
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO documents (account, collection, body, created_ms) \
             VALUES (?, ?, '', ?) RETURNING seq",
        )
        .bind(account)
        .bind(collection)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id = format!("{collection}_{seq}");
        doc.insert("id".to_owned(), Value::String(id.clone()));
        let external_ref = external_ref(&doc);
        let body = Value::Object(doc).to_string();
        sqlx::query("UPDATE documents SET id = ?, body = ? WHERE seq = ?")
            .bind(&id)
            .bind(&body)
            .bind(seq)
            .execute(&mut *tx)
            .await?;

        let response = StoredResponse { status: 201, body };
        if let Some(key) = idempotency_key {
            sqlx::query(
                "INSERT INTO idempotency_keys \
                 (account, key, request_hash, status, body, created_ms) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(account)
            .bind(key)
            .bind(&request_hash)
            .bind(i64::from(response.status))
            .bind(&response.body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let audit = Audit {
            account,
            collection,
            id: &id,
            op: "create",
            external_ref: external_ref.as_deref(),
            idempotency_key,
            at_ms: now,
        };
        audit.append(&mut tx).await?;
        tx.commit().await?;
        Ok(CreateOutcome::Created(response))
    }

    pub(crate) async fn get(
        &self,
        account: &str,
        collection: &str,
        id: &str,
    ) -> Result<Option<Value>> {
        let body: Option<String> = sqlx::query_scalar(
            "SELECT body FROM documents WHERE account = ? AND collection = ? AND id = ?",
        )
        .bind(account)
        .bind(collection)
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        body.map(|body| parse_document(id, &body)).transpose()
    }

    /// Documents created after sequence number `after_seq`, oldest first.
    pub(crate) async fn list(
        &self,
        account: &str,
        collection: &str,
        after_seq: i64,
        limit: u32,
        external_ref: Option<&str>,
    ) -> Result<Page> {
        // One extra row tells whether another page exists.
        let mut rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, body FROM documents \
             WHERE account = ? AND collection = ? AND seq > ? AND id IS NOT NULL \
             AND (? IS NULL OR json_extract(body, '$.external_ref') = ?) \
             ORDER BY seq LIMIT ?",
        )
        .bind(account)
        .bind(collection)
        .bind(after_seq)
        .bind(external_ref)
        .bind(external_ref)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.reader)
        .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|(id, _)| id.clone())
        } else {
            None
        };
        let items = rows
            .iter()
            .map(|(id, body)| parse_document(id, body))
            .collect::<Result<_>>()?;
        Ok(Page { items, next })
    }

    /// Replaces the document's body, keeping its id; `None` when it does not exist.
    pub(crate) async fn replace(
        &self,
        account: &str,
        collection: &str,
        id: &str,
        mut doc: Map<String, Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Option<Value>> {
        doc.insert("id".to_owned(), Value::String(id.to_owned()));
        let external_ref = external_ref(&doc);
        let doc = Value::Object(doc);
        let mut tx = self.writer.begin().await?;
        let updated = sqlx::query(
            "UPDATE documents SET body = ? WHERE account = ? AND collection = ? AND id = ?",
        )
        .bind(doc.to_string())
        .bind(account)
        .bind(collection)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let audit = Audit {
            account,
            collection,
            id,
            op: "update",
            external_ref: external_ref.as_deref(),
            idempotency_key,
            at_ms: now_ms(),
        };
        audit.append(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(doc))
    }

    /// Changes a document behind the API's back, as an operator with database access or
    /// storage damage would: its body replaced, or the document removed (`doc` of `None`).
    /// The audit log records it as `admin-update` or `admin-delete`, so that it stays the
    /// ledger of what happened to each document. False when it did not exist.
    pub(crate) async fn corrupt(
        &self,
        account: &str,
        collection: &str,
        id: &str,
        doc: Option<Map<String, Value>>,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let before: Option<String> = sqlx::query_scalar(
            "SELECT body FROM documents WHERE account = ? AND collection = ? AND id = ?",
        )
        .bind(account)
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Ok(false);
        };
        let external_ref = match parse_document(id, &before)? {
            Value::Object(doc) => external_ref(&doc),
            _ => None,
        };
        let op = match doc {
            Some(mut doc) => {
                doc.insert("id".to_owned(), Value::String(id.to_owned()));
                sqlx::query(
                    "UPDATE documents SET body = ? WHERE account = ? AND collection = ? AND id = ?",
                )
                .bind(Value::Object(doc).to_string())
                .bind(account)
                .bind(collection)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                "admin-update"
            }
            None => {
                sqlx::query(
                    "DELETE FROM documents WHERE account = ? AND collection = ? AND id = ?",
                )
                .bind(account)
                .bind(collection)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                "admin-delete"
            }
        };
        let audit = Audit {
            account,
            collection,
            id,
            op,
            external_ref: external_ref.as_deref(),
            idempotency_key: None,
            at_ms: now_ms(),
        };
        audit.append(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Audit entries after `after_seq`, for one account or all; the second value is the
    /// cursor for the next page, if there is one.
    pub(crate) async fn audit(
        &self,
        account: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<(Vec<AuditEntry>, Option<i64>)> {
        audit::page(&self.reader, account, after_seq, limit).await
    }

    /// Deletes the document; `false` when it did not exist.
    pub(crate) async fn delete(
        &self,
        account: &str,
        collection: &str,
        id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<bool> {
        let mut tx = self.writer.begin().await?;
        let body: Option<String> = sqlx::query_scalar(
            "DELETE FROM documents WHERE account = ? AND collection = ? AND id = ? RETURNING body",
        )
        .bind(account)
        .bind(collection)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(body) = body else {
            return Ok(false);
        };
        let external_ref = match parse_document(id, &body)? {
            Value::Object(doc) => external_ref(&doc),
            _ => None,
        };
        let audit = Audit {
            account,
            collection,
            id,
            op: "delete",
            external_ref: external_ref.as_deref(),
            idempotency_key,
            at_ms: now_ms(),
        };
        audit.append(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn parse_document(id: &str, body: &str) -> Result<Value> {
    serde_json::from_str(body).map_err(|source| Error::CorruptRecord {
        what: format!("document {id}"),
        reason: source.to_string(),
    })
}

fn external_ref(doc: &Map<String, Value>) -> Option<String> {
    doc.get("external_ref")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn now_ms() -> i64 {
    // A clock before 1970 is not worth failing a request over.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
