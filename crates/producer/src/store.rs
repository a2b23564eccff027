//! The producer's checkpoint store (SQLite or PostgreSQL, chosen by URL): epoch, high-water marks
//! and the manifest of keys seen. Written only after Kafka acknowledged what it stands for.

use std::collections::HashSet;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::legacy::LegacyRow;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// A URL that sqlx opens as a database to create when missing.
fn with_create(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

impl Store {
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(if url.starts_with("sqlite:") { 1 } else { 8 })
            .connect(&with_create(url))
            .await
            .map_err(|source| Error::Connect {
                what: "producer store",
                url: url.to_owned(),
                source,
            })?;
        let mut migrator = sqlx::migrate!();
        // The consumer may keep its tables in the same database, with migrations of its own.
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await.map_err(Error::Migrate)?;
        Ok(Store { pool })
    }

    /// The account's restore epoch (0 until a restore is detected).
    pub async fn epoch(&self, account: &str) -> Result<i64> {
        let epoch: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM producer_accounts WHERE account = $1")
                .bind(account)
                .fetch_optional(&self.pool)
                .await?;
        Ok(epoch.map(|(e,)| e).unwrap_or(0))
    }

    pub async fn high_water(&self, account: &str, table: &str) -> Result<i64> {
        let hw: Option<(i64,)> = sqlx::query_as(
            "SELECT high_water FROM producer_high_water WHERE account = $1 AND entity_type = $2",
        )
        .bind(account)
        .bind(table)
        .fetch_optional(&self.pool)
        .await?;
        Ok(hw.map(|(v,)| v).unwrap_or(0))
    }

    /// Which of `keys` the manifest already holds for this table.
    pub async fn known_keys(
        &self,
        account: &str,
        table: &str,
        keys: &[&str],
    ) -> Result<HashSet<String>> {
        let mut known = HashSet::new();
        for chunk in keys.chunks(500) {
            let placeholders = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT entity_id FROM producer_manifest \
                 WHERE account = $1 AND entity_type = $2 AND entity_id IN ({placeholders})"
            );
            let mut query = sqlx::query_as::<_, (String,)>(&sql)
                .bind(account)
                .bind(table);
            for key in chunk {
                query = query.bind(*key);
            }
            known.extend(query.fetch_all(&self.pool).await?.into_iter().map(|(k,)| k));
        }
        Ok(known)
    }

    /// Records a published batch: manifest entries and the new high-water mark, in one
    /// transaction.
    pub async fn advance(
        &self,
        account: &str,
        table: &str,
        rows: &[LegacyRow],
        epoch: i64,
    ) -> Result<()> {
        let Some(high_water) = rows.iter().map(|r| r.version).max() else {
            return Ok(());
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO producer_accounts (account, epoch) VALUES ($1, $2) \
             ON CONFLICT (account) DO NOTHING",
        )
        .bind(account)
        .bind(epoch)
        .execute(&mut *tx)
        .await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO producer_manifest (account, entity_type, entity_id, version) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account, entity_type, entity_id) \
                 DO UPDATE SET version = excluded.version",
            )
            .bind(account)
            .bind(table)
            .bind(&row.entity_id)
            .bind(row.version)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO producer_high_water (account, entity_type, high_water) \
             VALUES ($1, $2, $3) ON CONFLICT (account, entity_type) \
             DO UPDATE SET high_water = excluded.high_water",
        )
        .bind(account)
        .bind(table)
        .bind(high_water)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
