//! Targets: the cloud account each legacy account is applied to (by default the account of
//! the same id).

use super::Store;
use crate::{Error, Result};

impl Store {
    /// The cloud account `account`'s events are applied to.
    pub async fn target_of(&self, account: &str) -> Result<String> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT target FROM consumer_targets WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or_else(|| account.to_owned(), |(t,)| t))
    }

    /// Applies `account`'s events to `target` from now on (its own id: the default again).
    /// A target belongs to one legacy account: another account's target, or another account
    /// applied to itself, is refused.
    pub async fn set_target(&self, account: &str, target: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let taken: Option<(String,)> = sqlx::query_as(
            "SELECT account FROM consumer_targets WHERE target = $1 AND account <> $2",
        )
        .bind(target)
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((other,)) = taken {
            return Err(Error::Target {
                account: account.to_owned(),
                target: target.to_owned(),
                reason: format!("it is the target of {other}"),
            });
        }
        if target == account {
            sqlx::query("DELETE FROM consumer_targets WHERE account = $1")
                .bind(account)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO consumer_targets (account, target) VALUES ($1, $2) \
                 ON CONFLICT (account) DO UPDATE SET target = excluded.target",
            )
            .bind(account)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The root keys of `resource` the ID map holds for `target`.
    pub async fn mapped_keys(
        &self,
        target: &str,
        resource: &str,
    ) -> Result<std::collections::HashSet<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT root_key FROM consumer_id_map WHERE account = $1 AND resource = $2",
        )
        .bind(target)
        .bind(resource)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(k,)| k).collect())
    }

    /// How many cloud resources the ID map holds for `target`.
    pub async fn resource_count(&self, target: &str) -> Result<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM consumer_id_map WHERE account = $1")
                .bind(target)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How many live legacy rows the mirror holds for `target`: what has been applied of it.
    pub async fn mirror_count(&self, target: &str) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM consumer_mirror WHERE account = $1 AND data IS NOT NULL",
        )
        .bind(target)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The rows the mirror holds for `target`, as the legacy rows they were: the documents
    /// Tandem last wrote, rendered again through the mapping.
    pub async fn mirror_rows(&self, target: &str) -> Result<crate::verify::LegacyRows> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT entity_type, entity_id, data FROM consumer_mirror \
             WHERE account = $1 AND data IS NOT NULL ORDER BY entity_type, entity_id",
        )
        .bind(target)
        .fetch_all(&self.pool)
        .await?;
        let mut out = crate::verify::LegacyRows::new();
        for (entity_type, entity_id, data) in rows {
            out.entry(entity_type)
                .or_default()
                .push((entity_id, serde_json::from_str(&data)?));
        }
        Ok(out)
    }

    /// The cloud ids the ID map holds for `target`, by (resource, root key).
    pub async fn id_map(&self, target: &str) -> Result<crate::verify::IdMap> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT resource, root_key, cloud_id FROM consumer_id_map WHERE account = $1",
        )
        .bind(target)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(resource, key, id)| ((resource, key), id))
            .collect())
    }

    /// Every account applied to another target than itself: (account, target).
    pub async fn targets(&self) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT account, target FROM consumer_targets ORDER BY account")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
