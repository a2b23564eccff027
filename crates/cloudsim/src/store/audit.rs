//! The audit log: one row per applied mutation, written in the mutation's transaction.

use serde::Serialize;
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::error::Result;

#[derive(Debug, Serialize)]
pub(crate) struct AuditEntry {
    pub(crate) seq: i64,
    pub(crate) account: String,
    pub(crate) collection: String,
    pub(crate) id: String,
    pub(crate) op: String,
    pub(crate) external_ref: Option<String>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) at_ms: i64,
}

type AuditRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
);

/// Audit entries after `after_seq`, for one account or all; the second value is the cursor
/// for the next page, if there is one.
pub(super) async fn page(
    pool: &SqlitePool,
    account: Option<&str>,
    after_seq: i64,
    limit: u32,
) -> Result<(Vec<AuditEntry>, Option<i64>)> {
    let mut rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT seq, account, collection, id, op, external_ref, idempotency_key, at_ms \
         FROM audit WHERE (? IS NULL OR account = ?) AND seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(account)
    .bind(account)
    .bind(after_seq)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let entries: Vec<AuditEntry> = rows
        .into_iter()
        .map(
            |(seq, account, collection, id, op, external_ref, idempotency_key, at_ms)| AuditEntry {
                seq,
                account,
                collection,
                id,
                op,
                external_ref,
                idempotency_key,
                at_ms,
            },
        )
        .collect();
    let next = if more {
        entries.last().map(|entry| entry.seq)
    } else {
        None
    };
    Ok((entries, next))
}

pub(super) struct Audit<'a> {
    pub(super) account: &'a str,
    pub(super) collection: &'a str,
    pub(super) id: &'a str,
    pub(super) op: &'static str,
    pub(super) external_ref: Option<&'a str>,
    pub(super) idempotency_key: Option<&'a str>,
    pub(super) at_ms: i64,
}

impl Audit<'_> {
    pub(super) async fn append(&self, tx: &mut Transaction<'_, Sqlite>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit \
             (account, collection, id, op, external_ref, idempotency_key, at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(self.account)
        .bind(self.collection)
        .bind(self.id)
        .bind(self.op)
        .bind(self.external_ref)
        .bind(self.idempotency_key)
        .bind(self.at_ms)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
