//! PostgreSQL transactions that were open at a read: while one may still commit, later cycles
//! read again from that read's low-water mark.

use super::Store;
use crate::Result;

impl Store {
    /// Low-water marks of transactions that may still commit below the high-water mark.
    pub async fn inflight(&self, account: &str, table: &str) -> Result<Vec<(i64, i64)>> {
        self.count(1);
        Ok(sqlx::query_as(
            "SELECT next_txid, low_water FROM producer_inflight WHERE account = $1 AND entity_type = $2",
        )
        .bind(account)
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets markers whose transactions all ended (`xmax <= xmin`) and adds a new one.
    pub async fn update_inflight(
        &self,
        account: &str,
        table: &str,
        xmin: i64,
        add: Option<(i64, i64)>,
    ) -> Result<()> {
        self.count(2);
        sqlx::query(
            "DELETE FROM producer_inflight WHERE account = $1 AND entity_type = $2 AND next_txid <= $3",
        )
        .bind(account)
        .bind(table)
        .bind(xmin)
        .execute(&self.pool)
        .await?;
        if let Some((xmax, low_water)) = add {
            sqlx::query(
                "INSERT INTO producer_inflight (account, entity_type, next_txid, low_water) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account, entity_type, next_txid) \
                 DO UPDATE SET low_water = CASE WHEN excluded.low_water < producer_inflight.low_water \
                 THEN excluded.low_water ELSE producer_inflight.low_water END",
            )
            .bind(account)
            .bind(table)
            .bind(xmax)
            .bind(low_water)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }
}
