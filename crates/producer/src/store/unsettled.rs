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
        let placeholders = super::placeholders(3, chunk.len());
        let sql = format!(
            "DELETE FROM producer_unsettled \
             WHERE account = $1 AND entity_type = $2 AND entity_id IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql).bind(account).bind(table);
        for key in chunk {
            query = query.bind(*key);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What one account's batches need recorded before they are sent (see
/// [`Store::before_sending`]).
#[derive(Debug)]
pub struct BeforeSending<'a> {
    pub account: &'a str,
    /// The keys about to be published as created: (table, key, version).
    pub created: Vec<(&'a str, &'a str, i64)>,
    /// The published mark (epoch, version) to raise, if it must rise.
    pub mark: Option<(i64, i64)>,
}

/// Records keys about to be published as created; the statements it took.
async fn unsettle(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    created: &[(&str, &str, i64)],
) -> Result<u64> {
    let mut statements = 0;
    for chunk in created.chunks(200) {
        statements += 1;
        let values = (0..chunk.len())
            .map(|i| format!("($1, ${}, ${}, ${})", 3 * i + 2, 3 * i + 3, 3 * i + 4))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO producer_unsettled (account, entity_type, entity_id, version) \
             VALUES {values} ON CONFLICT (account, entity_type, entity_id) \
             DO UPDATE SET version = excluded.version"
        );
        let mut query = sqlx::query(&sql).bind(account);
        for (table, key, version) in chunk {
            query = query.bind(*table).bind(*key).bind(*version);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(statements)
}

impl Store {
    /// Records keys about to be published as created: (table, key, version).
    pub async fn unsettle(&self, account: &str, created: &[(&str, &str, i64)]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        self.count(unsettle(&mut conn, account, created).await?);
        Ok(())
    }

    /// What must be recorded before the batches of many accounts go out, in one transaction:
    /// per account, the keys about to be published as created (see [`Store::unsettle`]) and
    /// the published mark (epoch, version) to raise (see [`Store::raise_published`]).
    pub async fn before_sending(&self, accounts: &[BeforeSending<'_>]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let mut statements = 1;
        for before in accounts {
            statements += unsettle(&mut tx, before.account, &before.created).await?;
            if let Some((epoch, version)) = before.mark {
                statements += 1;
                super::raise_published(&mut tx, before.account, epoch, version).await?;
            }
        }
        tx.commit().await?;
        self.count(statements);
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
