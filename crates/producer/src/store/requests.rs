//! Snapshots asked for while another instance holds the account's lease.

use super::Store;
use crate::{now_millis, Result};

impl Store {
    /// Asks the instance holding `account`'s lease for a snapshot with this id.
    pub async fn request_snapshot(&self, account: &str, snapshot_id: &str) -> Result<()> {
        self.count(1);
        sqlx::query(
            "INSERT INTO producer_snapshot_requests (account, snapshot_id, requested_at) \
             VALUES ($1, $2, $3) ON CONFLICT (account, snapshot_id) DO NOTHING",
        )
        .bind(account)
        .bind(snapshot_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the snapshot asked for is still waiting to be published.
    pub async fn snapshot_pending(&self, account: &str, snapshot_id: &str) -> Result<bool> {
        self.count(1);
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM producer_snapshot_requests WHERE account = $1 AND snapshot_id = $2",
        )
        .bind(account)
        .bind(snapshot_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The snapshot asked for was published.
    pub async fn snapshot_done(&self, account: &str, snapshot_id: &str) -> Result<()> {
        self.count(1);
        sqlx::query(
            "DELETE FROM producer_snapshot_requests WHERE account = $1 AND snapshot_id = $2",
        )
        .bind(account)
        .bind(snapshot_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
