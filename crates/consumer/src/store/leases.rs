//! Account leases per consumer group: which worker of which member applies an account's events
//! until when.

use super::Store;
use crate::{Error, Result};

/// One worker run's name in a consumer group's account leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseId {
    pub group: String,
    pub owner: String,
}

/// What became of a request for an account's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Held on without a break: nobody else can have applied the account's events meanwhile.
    Renewed,
    /// Taken afresh: other workers may have applied its events since this one last held it.
    Taken,
    /// Another worker holds it.
    Elsewhere,
}

impl Store {
    /// Takes or renews `account`'s lease for `lease.owner` until `ttl` from now, by the store
    /// database's clock: members whose own clocks disagree still agree on when it runs out.
    pub async fn try_lease(
        &self,
        lease: &LeaseId,
        account: &str,
        ttl: std::time::Duration,
    ) -> Result<Grant> {
        let now = self.clock.now_millis().await?;
        // A renewal keeps `taken_at`; a take sets it to now.
        let taken_at: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO consumer_account_leases \
             (consumer_group, account, owner, expires_at, taken_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (consumer_group, account) DO UPDATE SET \
             owner = excluded.owner, expires_at = excluded.expires_at, \
             taken_at = CASE WHEN consumer_account_leases.owner = excluded.owner \
             AND consumer_account_leases.expires_at >= excluded.taken_at \
             THEN consumer_account_leases.taken_at ELSE excluded.taken_at END \
             WHERE consumer_account_leases.owner = excluded.owner \
             OR consumer_account_leases.expires_at < excluded.taken_at \
             RETURNING taken_at",
        )
        .bind(&lease.group)
        .bind(account)
        .bind(&lease.owner)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match taken_at {
            None => Grant::Elsewhere,
            Some((at,)) if at == now => Grant::Taken,
            Some(_) => Grant::Renewed,
        })
    }

    /// Gives `account`'s lease up, if `lease.owner` still holds it.
    pub async fn release_lease(&self, lease: &LeaseId, account: &str) -> Result<()> {
        sqlx::query(
            "DELETE FROM consumer_account_leases \
             WHERE consumer_group = $1 AND account = $2 AND owner = $3",
        )
        .bind(&lease.group)
        .bind(account)
        .bind(&lease.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Fails with [`Error::LeaseLost`] unless `lease` still holds `account`. The check locks the
/// lease's row until the transaction ends, so a take by another worker waits for this commit
/// and then reads positions that include it.
pub(super) async fn check_lease(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    lease: &LeaseId,
) -> Result<()> {
    let held = sqlx::query(
        "UPDATE consumer_account_leases SET owner = owner \
         WHERE consumer_group = $1 AND account = $2 AND owner = $3",
    )
    .bind(&lease.group)
    .bind(account)
    .bind(&lease.owner)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if held == 1 {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            account: account.to_owned(),
        })
    }
}
