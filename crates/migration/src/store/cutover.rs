//! What a cutover keeps per account: the snapshot it waits for, the freeze, and the drift the
//! last verify found.

use std::collections::HashMap;

use serde::Serialize;
use tandem_event::now_millis;

use super::Store;
use crate::Result;

/// What the last verify of an account found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub missing: i64,
    pub extra: i64,
    pub different: i64,
}

impl Drift {
    pub fn is_zero(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

impl Store {
    /// A cutover asks the producer for a snapshot of the account taken now (after the
    /// freeze), and waits until the consumer applied it ([`Store::drained`]). Returns the
    /// snapshot's id.
    pub async fn request_drain(&self, account: &str) -> Result<String> {
        let id = format!("cutover-{account}-{}", now_millis());
        sqlx::query("UPDATE migration_accounts SET drain_snapshot = $1 WHERE account = $2")
            .bind(&id)
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Snapshots asked for by cutovers that the producer has not asked itself for yet:
    /// (account, snapshot id).
    pub async fn drain_requests(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT account, drain_snapshot FROM migration_accounts \
             WHERE drain_snapshot IS NOT NULL \
             AND (drain_filed IS NULL OR drain_filed <> drain_snapshot)",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The producer has asked itself for the cutover's snapshot.
    pub async fn drain_filed(&self, account: &str, snapshot_id: &str) -> Result<()> {
        sqlx::query("UPDATE migration_accounts SET drain_filed = $1 WHERE account = $2")
            .bind(snapshot_id)
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the consumer has applied the snapshot in full.
    pub async fn drained(&self, account: &str, snapshot_id: &str) -> Result<bool> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT applied_snapshot FROM migration_accounts WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        Ok(matches!(row, Some((Some(id),)) if id == snapshot_id))
    }

    pub async fn set_frozen(&self, account: &str, frozen: bool) -> Result<()> {
        sqlx::query("UPDATE migration_accounts SET frozen = $1 WHERE account = $2")
            .bind(i64::from(frozen))
            .bind(account)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps what a verify of the account found, for the slice's status.
    pub async fn record_verify(&self, account: &str, drift: Drift) -> Result<()> {
        sqlx::query(
            "INSERT INTO migration_verifies (account, at, missing, extra, different) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO UPDATE SET at = excluded.at, \
             missing = excluded.missing, extra = excluded.extra, different = excluded.different",
        )
        .bind(account)
        .bind(now_millis())
        .bind(drift.missing)
        .bind(drift.extra)
        .bind(drift.different)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// What the last verify of each account found: account → (when, drift).
    pub async fn verifies(&self) -> Result<HashMap<String, (i64, Drift)>> {
        let rows: Vec<(String, i64, i64, i64, i64)> =
            sqlx::query_as("SELECT account, at, missing, extra, different FROM migration_verifies")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(account, at, missing, extra, different)| {
                (
                    account,
                    (
                        at,
                        Drift {
                            missing,
                            extra,
                            different,
                        },
                    ),
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::store;
    use super::*;
    use crate::State;

    #[tokio::test]
    async fn a_drain_waits_for_its_own_snapshot() -> Result<()> {
        let (_dir, store) = store().await;
        store.census(&[("a".into(), State::Live)], "p").await?;
        let id = store.request_drain("a").await?;
        assert_eq!(
            store.drain_requests().await?,
            [("a".to_owned(), id.clone())]
        );
        store.drain_filed("a", &id).await?;
        assert!(store.drain_requests().await?.is_empty());
        store.snapshot_applied("a", "an-older-one").await?;
        assert!(!store.drained("a", &id).await?);
        store.snapshot_applied("a", &id).await?;
        assert!(store.drained("a", &id).await?);
        Ok(())
    }
}
