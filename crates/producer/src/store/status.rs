//! What the store tells of the producer's progress, for `tandem status`: where each account's
//! newest event landed, its epoch, when its deletes were last checked, its unsettled keys and
//! who holds it.

use std::collections::HashMap;

use super::Store;
use crate::Result;

/// Where one account's newest event landed in the topic, once the broker acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub partition: i32,
    pub offset: i64,
    /// The event's legacy commit time (epoch millis).
    pub occurred_at: i64,
    /// When the broker acknowledged it (epoch millis).
    pub published_at: i64,
}

/// The producer's view of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerAccount {
    pub account: String,
    pub epoch: i64,
    pub enrolled: bool,
    /// When the differencing check last ran (epoch millis; 0: never).
    pub deletes_checked_at: i64,
    /// Keys published as created whose checkpoint has not landed.
    pub unsettled: u64,
    pub published: Option<Published>,
    /// The instance holding the account's lease, while it holds it.
    pub leased_by: Option<String>,
}

/// Rows per multi-row statement (five values each).
const ROWS_PER_STATEMENT: usize = 200;

impl Store {
    /// Records where accounts' newest events landed; an older position never replaces a newer
    /// one of the same partition.
    pub async fn note_published(&self, accounts: &[(&str, Published)]) -> Result<()> {
        for chunk in accounts.chunks(ROWS_PER_STATEMENT) {
            let values = (0..chunk.len())
                .map(|i| {
                    let p = 5 * i;
                    format!(
                        "(${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO producer_published \
                 (account, partition_id, last_offset, occurred_at, published_at) VALUES {values} \
                 ON CONFLICT (account) DO UPDATE SET partition_id = excluded.partition_id, \
                 last_offset = excluded.last_offset, occurred_at = excluded.occurred_at, \
                 published_at = excluded.published_at \
                 WHERE producer_published.partition_id <> excluded.partition_id \
                 OR producer_published.last_offset < excluded.last_offset"
            );
            let mut query = sqlx::query(&sql);
            for (account, p) in chunk {
                query = query
                    .bind(*account)
                    .bind(i64::from(p.partition))
                    .bind(p.offset)
                    .bind(p.occurred_at)
                    .bind(p.published_at);
            }
            self.count(1);
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Every account the producer knows, by name.
    pub async fn accounts_view(&self) -> Result<Vec<ProducerAccount>> {
        let now = tandem_event::now_millis();
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT account, epoch, enrolled, deletes_checked_at FROM producer_accounts \
             ORDER BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        let unsettled: HashMap<String, i64> =
            sqlx::query_as("SELECT account, COUNT(*) FROM producer_unsettled GROUP BY account")
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        let published = sqlx::query_as::<_, (String, i64, i64, i64, i64)>(
            "SELECT account, partition_id, last_offset, occurred_at, published_at \
             FROM producer_published",
        )
        .fetch_all(&self.pool)
        .await;
        // A store from before this table: the producer adds it when it next starts.
        let published: HashMap<String, (i64, i64, i64, i64)> = match published {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("42P01")
                    || e.message().contains("no such table") =>
            {
                Vec::new()
            }
            other => other?,
        }
        .into_iter()
        .map(|(a, p, o, t, at)| (a, (p, o, t, at)))
        .collect();
        let leases: HashMap<String, String> =
            sqlx::query_as("SELECT account, owner FROM producer_leases WHERE expires_at > $1")
                .bind(now)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        Ok(rows
            .into_iter()
            .map(
                |(account, epoch, enrolled, deletes_checked_at)| ProducerAccount {
                    epoch,
                    enrolled: enrolled != 0,
                    deletes_checked_at,
                    unsettled: unsettled
                        .get(&account)
                        .and_then(|n| u64::try_from(*n).ok())
                        .unwrap_or(0),
                    published: published
                        .get(&account)
                        .map(|&(p, offset, occurred_at, at)| Published {
                            partition: i32::try_from(p).unwrap_or_default(),
                            offset,
                            occurred_at,
                            published_at: at,
                        }),
                    leased_by: leases.get(&account).cloned(),
                    account,
                },
            )
            .collect())
    }
}
