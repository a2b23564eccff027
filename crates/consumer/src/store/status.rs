//! What the store tells of the consumer's progress, for `tandem status` and the status page:
//! where each account is, when it last moved, and the messages dead-lettered with why.

use std::collections::HashMap;

use serde::Serialize;

use super::Store;
use crate::Result;

/// One message sent to the dead-letter topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub account: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// When it was dead-lettered (epoch millis).
    pub at: i64,
}

/// One account's place in one partition: the offset after its last applied (or skipped)
/// event, and when that was recorded (epoch millis; 0 before this was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProgress {
    pub account: String,
    pub partition: i32,
    pub next_offset: i64,
    pub applied_at: i64,
}

impl Store {
    /// Records a message sent to the dead-letter topic; the same message again (a later
    /// holder of the account dead-lettered it again) keeps the newest reason.
    pub async fn record_dead_letter(&self, letter: &DeadLetter) -> Result<()> {
        sqlx::query(
            "INSERT INTO consumer_dead_letters \
             (topic, partition_id, source_offset, account, reason, at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (topic, partition_id, source_offset) \
             DO UPDATE SET reason = excluded.reason, at = excluded.at",
        )
        .bind(&letter.topic)
        .bind(i64::from(letter.partition))
        .bind(letter.offset)
        .bind(letter.account.as_deref())
        .bind(&letter.reason)
        .bind(letter.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest `limit` dead letters, newest first.
    pub async fn recent_dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>> {
        let rows: Vec<(Option<String>, String, i64, i64, String, i64)> = sqlx::query_as(
            "SELECT account, topic, partition_id, source_offset, reason, at \
             FROM consumer_dead_letters ORDER BY at DESC, source_offset DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(account, topic, partition, offset, reason, at)| DeadLetter {
                    account,
                    topic,
                    partition: i32::try_from(partition).unwrap_or_default(),
                    offset,
                    reason,
                    at,
                },
            )
            .collect())
    }

    /// Dead letters per account.
    pub async fn dead_letter_counts(&self) -> Result<HashMap<String, u64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT account, COUNT(*) FROM consumer_dead_letters \
             WHERE account IS NOT NULL GROUP BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, n)| (a, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Every account's place in each partition of `topic` for `group`.
    pub async fn account_progress(&self, group: &str, topic: &str) -> Result<Vec<AccountProgress>> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT account, partition_id, next_offset, applied_at FROM consumer_account_offsets \
             WHERE consumer_group = $1 AND topic = $2",
        )
        .bind(group)
        .bind(topic)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(account, partition, next_offset, applied_at)| AccountProgress {
                    account,
                    partition: i32::try_from(partition).unwrap_or_default(),
                    next_offset,
                    applied_at,
                },
            )
            .collect())
    }
}
