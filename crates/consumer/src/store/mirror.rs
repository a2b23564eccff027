//! The source mirror — the latest image of every legacy row an account's events carried —
//! and the ID map from legacy root keys to cloud ids, written with an event's positions in one
//! transaction.

use tandem_event::Row;

use super::leases::LeaseId;
use super::positions::Position;
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
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::CorruptStore {
            what: format!("a stored row image is not valid JSON: {e}"),
        }
    }
}
