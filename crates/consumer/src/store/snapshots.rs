//! Where each account's snapshots begin and end in the log. They describe the log, not what
//! was applied, so they are written as the consumer reads the markers, outside any event's
//! transaction.

use super::Store;
use crate::Result;

/// A snapshot found complete in the log: its id, partition, and the offsets of its markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMark {
    pub snapshot_id: String,
    pub partition: i32,
    pub begin: i64,
    pub end: i64,
}

impl Store {
    /// Records that `account`'s snapshot `snapshot_id` begins (or, with `end`, ends) at
    /// `offset` of a partition of `topic`.
    pub async fn mark_snapshot(
        &self,
        (account, snapshot_id): (&str, &str),
        (topic, partition, offset): (&str, i32, i64),
        end: bool,
    ) -> Result<()> {
        let column = if end { "end_offset" } else { "begin_offset" };
        sqlx::query(&format!(
            "INSERT INTO consumer_snapshots (account, snapshot_id, topic, partition_id, {column}) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account, snapshot_id, topic) \
             DO UPDATE SET partition_id = excluded.partition_id, {column} = excluded.{column}"
        ))
        .bind(account)
        .bind(snapshot_id)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(offset)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `account`'s latest snapshot whose beginning and end were both read from `topic`.
    pub async fn latest_snapshot(
        &self,
        account: &str,
        topic: &str,
    ) -> Result<Option<SnapshotMark>> {
        let row: Option<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT snapshot_id, partition_id, begin_offset, end_offset FROM consumer_snapshots \
             WHERE account = $1 AND topic = $2 AND begin_offset IS NOT NULL \
             AND end_offset IS NOT NULL AND end_offset > begin_offset \
             ORDER BY begin_offset DESC LIMIT 1",
        )
        .bind(account)
        .bind(topic)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(snapshot_id, partition, begin, end)| SnapshotMark {
                snapshot_id,
                partition: i32::try_from(partition).unwrap_or_default(),
                begin,
                end,
            }),
        )
    }

    /// The partition of `topic` `account`'s snapshots were read from, if any was.
    pub async fn account_partition(&self, account: &str, topic: &str) -> Result<Option<i32>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT partition_id FROM consumer_snapshots WHERE account = $1 AND topic = $2 \
             ORDER BY begin_offset DESC LIMIT 1",
        )
        .bind(account)
        .bind(topic)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(p,)| i32::try_from(p).ok()))
    }

    /// Forgets everything kept for `target` — mirror, ID map, waiting resources, parking and
    /// the positions of `groups` — so that it is built again from nothing. The cloud keeps its
    /// documents; a rebuild finds them again by their idempotency keys or external references.
    pub async fn reset_target(&self, target: &str, groups: &[&str]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for table in [
            "consumer_mirror",
            "consumer_id_map",
            "consumer_parked",
            "consumer_held",
            "consumer_accounts",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE account = $1"))
                .bind(target)
                .execute(&mut *tx)
                .await?;
        }
        for group in groups {
            sqlx::query(
                "DELETE FROM consumer_account_offsets WHERE consumer_group = $1 AND account = $2",
            )
            .bind(group)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
