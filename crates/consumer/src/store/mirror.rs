//! The source mirror — the latest image of every legacy row an account's events carried —
//! and the ID map from legacy root keys to cloud ids, written with an event's positions in one
//! transaction.

use tandem_event::Row;

use super::leases::{check_lease, LeaseId};
use super::positions::{write_position, Position};
use super::Store;
use crate::{Error, Result};

/// The latest image of one legacy row; `data` is `None` once the row was deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorRow {
    pub epoch: i64,
    pub version: i64,
    pub parent: Option<String>,
    pub data: Option<Row>,
    /// Set when the row came in a snapshot.
    pub snapshot_id: Option<String>,
}

/// (resource, root key): what the ID map is keyed by within an account.
pub type ResourceKey = (String, String);
/// (cloud id, hash of the document last written).
pub type Mapped = (String, String);

/// Everything one event changes in the store, written in one transaction.
#[derive(Debug, Default)]
pub struct Bookkeeping {
    /// (entity_type, entity_id, row)
    pub mirror: Vec<(String, String, MirrorRow)>,
    /// (resource, root_key) → Some((cloud id, document hash)), or None when deleted.
    pub ids: Vec<(ResourceKey, Option<Mapped>)>,
    /// Resources now waiting for the resource they refer to (`Some`), or no longer (`None`).
    pub parked: Vec<(ResourceKey, Option<ResourceKey>)>,
    /// Rows a snapshot re-sent at a version already applied: (entity_type, entity_id,
    /// snapshot id).
    pub seen: Vec<(String, String, String)>,
    pub position: Option<Position>,
    /// The lease the event was applied under: the commit fails with [`Error::LeaseLost`]
    /// unless it is still held.
    pub lease: Option<LeaseId>,
}

impl Store {
    pub async fn mirror(
        &self,
        account: &str,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Option<MirrorRow>> {
        let row: Option<(i64, i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT epoch, version, parent, data FROM consumer_mirror \
             WHERE account = $1 AND entity_type = $2 AND entity_id = $3",
        )
        .bind(account)
        .bind(entity_type)
        .bind(entity_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(epoch, version, parent, data)| {
            Ok(MirrorRow {
                epoch,
                version,
                parent,
                data: data.map(|d| serde_json::from_str(&d)).transpose()?,
                snapshot_id: None,
            })
        })
        .transpose()
    }

    /// Live child rows of `entity_type` whose parent key is `parent`.
    pub async fn children(
        &self,
        account: &str,
        entity_type: &str,
        parent: &str,
    ) -> Result<Vec<(String, Row)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT entity_id, data FROM consumer_mirror \
             WHERE account = $1 AND entity_type = $2 AND parent = $3 AND data IS NOT NULL",
        )
        .bind(account)
        .bind(entity_type)
        .bind(parent)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, data)| Ok((id, serde_json::from_str(&data)?)))
            .collect()
    }

    /// The cloud id and document hash recorded for a resource.
    pub async fn cloud_id(
        &self,
        account: &str,
        resource: &str,
        root_key: &str,
    ) -> Result<Option<Mapped>> {
        Ok(sqlx::query_as(
            "SELECT cloud_id, doc_hash FROM consumer_id_map \
             WHERE account = $1 AND resource = $2 AND root_key = $3",
        )
        .bind(account)
        .bind(resource)
        .bind(root_key)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Live rows of an account that the snapshot `snapshot_id` did not send:
    /// (entity_type, entity_id, epoch, version). With `end`, the position of the snapshot's
    /// end in the log, only rows written before it: a row written by a later event is in the
    /// mirror when old events are read again (a consumer moved to a new group) and must stay.
    pub async fn unseen(
        &self,
        account: &str,
        snapshot_id: &str,
        end: Option<&Position>,
    ) -> Result<Vec<(String, String, i64, i64)>> {
        const UNSEEN: &str = "SELECT entity_type, entity_id, epoch, version FROM consumer_mirror \
             WHERE account = $1 AND data IS NOT NULL \
             AND (snapshot_id IS NULL OR snapshot_id <> $2)";
        const ORDER: &str = " ORDER BY entity_type, entity_id";
        let rows = match end {
            None => {
                sqlx::query_as(&format!("{UNSEEN}{ORDER}"))
                    .bind(account)
                    .bind(snapshot_id)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(end) => {
                // Rows written from elsewhere (another topic or partition, or a held event
                // applied on resume, which has no position) count as written before.
                sqlx::query_as(&format!(
                    "{UNSEEN} AND (log_offset IS NULL OR log_topic <> $3 OR log_partition <> $4 \
                     OR log_offset < $5){ORDER}"
                ))
                .bind(account)
                .bind(snapshot_id)
                .bind(&end.topic)
                .bind(i64::from(end.partition))
                .bind(end.next_offset - 1)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// Writes an event's bookkeeping and its positions in one transaction.
    pub async fn commit(&self, account: &str, book: &Bookkeeping) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = &book.lease {
            check_lease(&mut tx, account, lease).await?;
        }
        for (entity_type, entity_id, row) in &book.mirror {
            let data = row.data.as_ref().map(serde_json::to_string).transpose()?;
            let at = book.position.as_ref();
            sqlx::query(
                "INSERT INTO consumer_mirror \
                 (account, entity_type, entity_id, epoch, version, parent, data, snapshot_id, \
                 log_topic, log_partition, log_offset) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (account, entity_type, entity_id) DO UPDATE SET \
                 epoch = excluded.epoch, version = excluded.version, \
                 parent = excluded.parent, data = excluded.data, \
                 snapshot_id = COALESCE(excluded.snapshot_id, consumer_mirror.snapshot_id), \
                 log_topic = excluded.log_topic, log_partition = excluded.log_partition, \
                 log_offset = excluded.log_offset \
                 WHERE consumer_mirror.epoch < excluded.epoch OR \
                 (consumer_mirror.epoch = excluded.epoch AND consumer_mirror.version <= excluded.version)",
            )
            .bind(account)
            .bind(entity_type)
            .bind(entity_id)
            .bind(row.epoch)
            .bind(row.version)
            .bind(row.parent.clone())
            .bind(data)
            .bind(row.snapshot_id.clone())
            .bind(at.map(|p| p.topic.clone()))
            .bind(at.map(|p| i64::from(p.partition)))
            .bind(at.map(|p| p.next_offset - 1))
            .execute(&mut *tx)
            .await?;
        }
        for (entity_type, entity_id, snapshot_id) in &book.seen {
            sqlx::query(
                "UPDATE consumer_mirror SET snapshot_id = $4 \
                 WHERE account = $1 AND entity_type = $2 AND entity_id = $3",
            )
            .bind(account)
            .bind(entity_type)
            .bind(entity_id)
            .bind(snapshot_id)
            .execute(&mut *tx)
            .await?;
        }
        for ((resource, root_key), id) in &book.ids {
            match id {
                Some((cloud_id, hash)) => {
                    sqlx::query(
                        "INSERT INTO consumer_id_map \
                         (account, resource, root_key, cloud_id, doc_hash) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (account, resource, root_key) DO UPDATE SET \
                         cloud_id = excluded.cloud_id, doc_hash = excluded.doc_hash",
                    )
                    .bind(account)
                    .bind(resource)
                    .bind(root_key)
                    .bind(cloud_id)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "DELETE FROM consumer_id_map \
                         WHERE account = $1 AND resource = $2 AND root_key = $3",
                    )
                    .bind(account)
                    .bind(resource)
                    .bind(root_key)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        for ((resource, root_key), waiting) in &book.parked {
            sqlx::query(
                "DELETE FROM consumer_parked WHERE account = $1 AND resource = $2 AND root_key = $3",
            )
            .bind(account)
            .bind(resource)
            .bind(root_key)
            .execute(&mut *tx)
            .await?;
            if let Some((target, target_key)) = waiting {
                sqlx::query(
                    "INSERT INTO consumer_parked (account, resource, root_key, target, target_key) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(account)
                .bind(resource)
                .bind(root_key)
                .bind(target)
                .bind(target_key)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(p) = &book.position {
            write_position(&mut tx, account, p).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::CorruptStore {
            what: format!("a stored row image is not valid JSON: {e}"),
        }
    }
}
