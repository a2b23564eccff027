//! Which producer instance runs each account's cycles, until when.

use std::time::Duration;

use super::Store;
use crate::Result;

impl Store {
    /// Takes or renews the account's lease; false while another live owner holds it.
    pub async fn try_lease(&self, account: &str, owner: &str, ttl: Duration) -> Result<bool> {
        self.count(1);
        let now = self.now_millis().await?;
        let taken = sqlx::query(
            "INSERT INTO producer_leases (account, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at \
             WHERE producer_leases.owner = excluded.owner OR producer_leases.expires_at < $4",
        )
        .bind(account)
        .bind(owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives the lease up, so another instance need not wait for it to expire.
    pub async fn release(&self, account: &str, owner: &str) -> Result<()> {
        self.count(1);
        sqlx::query("DELETE FROM producer_leases WHERE account = $1 AND owner = $2")
            .bind(account)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
