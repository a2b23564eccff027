//! Keys published as created whose checkpoint has not landed yet: recorded before their batch
//! goes out, cleared by its checkpoint.

use super::Store;
use crate::Result;

pub(super) async fn settle(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    table: &str,
    keys: &[&str],
) -> Result<()> {
    for chunk in keys.chunks(500) {
        let mut query =
            sqlx::QueryBuilder::<sqlx::Any>::new("DELETE FROM producer_unsettled WHERE account = ");
        query.push_bind(account);
        query.push(" AND entity_type = ").push_bind(table);
        query.push(" AND entity_id IN (");
        let mut keys = query.separated(", ");
        for key in chunk {
            keys.push_bind(*key);
        }
        query.push(")");
        query.build().execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Records keys about to be published as created: (table, key, version).
    pub async fn unsettle(&self, account: &str, created: &[(&str, &str, i64)]) -> Result<()> {
        for chunk in created.chunks(200) {
            self.count(1);
            let mut query = sqlx::QueryBuilder::<sqlx::Any>::new(
                "INSERT INTO producer_unsettled (account, entity_type, entity_id, version) ",
            );
            query.push_values(chunk, |mut row, (table, key, version)| {
                row.push_bind(account)
                    .push_bind(*table)
                    .push_bind(*key)
                    .push_bind(*version);
            });
            query.push(
                " ON CONFLICT (account, entity_type, entity_id) \
                 DO UPDATE SET version = excluded.version",
            );
            query.build().execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Keys of `table` published as created whose checkpoint did not land, with the version
    /// published.
    pub async fn unsettled(&self, account: &str, table: &str) -> Result<Vec<(String, i64)>> {
        self.keys_and_versions("producer_unsettled", account, table)
            .await
    }

    /// (key, version) of every row of `relation` (a store table, not user text) for a table.
    pub(super) async fn keys_and_versions(
        &self,
        relation: &'static str,
        account: &str,
        table: &str,
    ) -> Result<Vec<(String, i64)>> {
        self.count(1);
        Ok(sqlx::query_as(&format!(
            "SELECT entity_id, version FROM {relation} WHERE account = $1 AND entity_type = $2"
        ))
        .bind(account)
        .bind(table)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Forgets unsettled keys of `table`: their rows were dealt with.
    pub async fn settle(&self, account: &str, table: &str, keys: &[String]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.count(keys.len().div_ceil(500) as u64);
        settle(&mut conn, account, table, &keys).await
    }
}
