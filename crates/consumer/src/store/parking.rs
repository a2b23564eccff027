//! Parking: an account whose event failed permanently keeps its later events here, in order,
//! until an operator resumes it; and resources wait here for a resource they refer to.

use super::leases::{check_lease, LeaseId};
use super::mirror::ResourceKey;
use super::positions::{write_position, Position};
use super::Store;
use crate::{Error, Result};

impl Store {
    /// Why the account is parked, if it is.
    pub async fn parked_reason(&self, account: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT parked_reason FROM consumer_accounts WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(r,)| r))
    }

    /// Keeps a message of a parked account (parking it with `reason` first, if given), and
    /// records the partition position, in one transaction.
    pub async fn hold(
        &self,
        account: &str,
        payload: &[u8],
        reason: Option<&str>,
        position: Position,
        lease: Option<&LeaseId>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(lease) = lease {
            check_lease(&mut tx, account, lease).await?;
        }
        if let Some(reason) = reason {
            sqlx::query(
                "INSERT INTO consumer_accounts (account, parked_reason, resume_requested) \
                 VALUES ($1, $2, 0) ON CONFLICT (account) DO UPDATE SET \
                 parked_reason = excluded.parked_reason, resume_requested = 0",
            )
            .bind(account)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        let hex = hex::encode(payload);
        sqlx::query(
            "INSERT INTO consumer_held (account, seq, payload) \
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM consumer_held WHERE account = $1",
        )
        .bind(account)
        .bind(hex)
        .execute(&mut *tx)
        .await?;
        write_position(&mut tx, account, &position).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Parks an account on an operator's word (a paused migration): its events are held from
    /// the next one on. An account parked already keeps its reason.
    pub async fn pause(&self, account: &str, reason: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO consumer_accounts (account, parked_reason, resume_requested)              VALUES ($1, $2, 0) ON CONFLICT (account) DO NOTHING",
        )
        .bind(account)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Asks the consumer to apply a parked account's held events again.
    pub async fn request_resume(&self, account: &str) -> Result<bool> {
        let changed =
            sqlx::query("UPDATE consumer_accounts SET resume_requested = 1 WHERE account = $1")
                .bind(account)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(changed == 1)
    }

    /// Asks the consumer to apply every parked account's held events again; the accounts
    /// asked for (those not asked for already).
    pub async fn request_resume_all(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE consumer_accounts SET resume_requested = 1 WHERE resume_requested = 0 \
             RETURNING account",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut accounts: Vec<String> = rows.into_iter().map(|(a,)| a).collect();
        accounts.sort();
        Ok(accounts)
    }

    /// Parked accounts an operator asked to resume.
    pub async fn resume_requested(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT account FROM consumer_accounts WHERE resume_requested = 1 ORDER BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    /// The held messages of an account, oldest first: (seq, original bytes).
    pub async fn held(&self, account: &str) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, payload FROM consumer_held WHERE account = $1 ORDER BY seq",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(seq, text)| {
                let bytes = hex::decode(&text).map_err(|e| Error::CorruptStore {
                    what: format!("held message {seq} of account {account} is not hex: {e}"),
                })?;
                Ok((seq, bytes))
            })
            .collect()
    }

    /// Forgets a held message that was applied (or dead-lettered for good).
    pub async fn release(&self, account: &str, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM consumer_held WHERE account = $1 AND seq = $2")
            .bind(account)
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Parks the account again (a held message failed again), clearing the resume request.
    pub async fn repark(&self, account: &str, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE consumer_accounts SET parked_reason = $2, resume_requested = 0 WHERE account = $1",
        )
        .bind(account)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Unparks the account once nothing is held for it any more.
    pub async fn unpark(&self, account: &str) -> Result<bool> {
        let done = sqlx::query(
            "DELETE FROM consumer_accounts WHERE account = $1 \
             AND NOT EXISTS (SELECT 1 FROM consumer_held WHERE account = $1)",
        )
        .bind(account)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }

    /// Parked accounts: (account, reason, held messages, resume requested).
    pub async fn parked_accounts(&self) -> Result<Vec<(String, String, i64, bool)>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT a.account, a.parked_reason, \
             (SELECT COUNT(*) FROM consumer_held h WHERE h.account = a.account), a.resume_requested \
             FROM consumer_accounts a ORDER BY a.account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, r, n, q)| (a, r, n, q != 0))
            .collect())
    }

    /// Resources waiting for `(target, target_key)` to be created.
    pub async fn waiting_on(
        &self,
        account: &str,
        target: &str,
        target_key: &str,
    ) -> Result<Vec<ResourceKey>> {
        Ok(sqlx::query_as(
            "SELECT resource, root_key FROM consumer_parked \
             WHERE account = $1 AND target = $2 AND target_key = $3",
        )
        .bind(account)
        .bind(target)
        .bind(target_key)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every parked resource of every account: (account, resource, root key, waiting for).
    pub async fn parked(&self) -> Result<Vec<(String, String, String, String)>> {
        let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT account, resource, root_key, target, target_key FROM consumer_parked \
             ORDER BY account, resource, root_key",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(a, r, k, t, tk)| (a, r, k, format!("{t}/{tk}")))
            .collect())
    }
}
