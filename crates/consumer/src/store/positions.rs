//! Applied positions: per partition, the lowest offset not yet durable; per account, the
//! offset after its last applied event. Both only move forward.

use std::collections::HashMap;

use super::Store;
use crate::Result;

/// Where an event sits in Kafka, recorded with its bookkeeping: the account's next offset in
/// the partition, and the partition's position — every offset below `watermark` is durable
/// (applied, held or dead-lettered). Both only ever move forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The offset after this event's: where its account continues in this partition.
    pub next_offset: i64,
    /// The lowest offset of the partition not yet durable, as far as this member knows; 0
    /// when it no longer owns the partition (nothing is recorded for the partition then).
    pub watermark: i64,
}

impl Store {
    /// Every recorded position of a group's partitions of `topic`: partition → next offset.
    pub async fn positions(&self, group: &str, topic: &str) -> Result<HashMap<i32, i64>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT partition_id, next_offset FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(p, o)| Some((i32::try_from(p).ok()?, o)))
            .collect())
    }

    /// The next offset to apply for a partition, if one was ever recorded.
    pub async fn position(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM consumer_offsets \
             WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(o,)| o))
    }

    /// The next offset to apply for `account` in a partition, if one was ever recorded.
    pub async fn account_position(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        account: &str,
    ) -> Result<Option<i64>> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT next_offset FROM consumer_account_offsets \
             WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3 AND account = $4",
        )
        .bind(group)
        .bind(topic)
        .bind(i64::from(partition))
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(o,)| o))
    }
}

pub(super) async fn write_position(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    p: &Position,
) -> Result<()> {
    if !account.is_empty() {
        sqlx::query(
            "INSERT INTO consumer_account_offsets \
             (consumer_group, topic, partition_id, account, next_offset, applied_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (consumer_group, topic, partition_id, account) \
             DO UPDATE SET next_offset = excluded.next_offset, applied_at = excluded.applied_at \
             WHERE consumer_account_offsets.next_offset < excluded.next_offset",
        )
        .bind(&p.group)
        .bind(&p.topic)
        .bind(i64::from(p.partition))
        .bind(account)
        .bind(p.next_offset)
        .bind(tandem_event::now_millis())
        .execute(&mut *conn)
        .await?;
    }
    if p.watermark > 0 {
        sqlx::query(
            "INSERT INTO consumer_offsets (consumer_group, topic, partition_id, next_offset) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (consumer_group, topic, partition_id) \
             DO UPDATE SET next_offset = excluded.next_offset \
             WHERE consumer_offsets.next_offset < excluded.next_offset",
        )
        .bind(&p.group)
        .bind(&p.topic)
        .bind(i64::from(p.partition))
        .bind(p.watermark)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
