//! Statements an operator wrote, run against the legacy database: a slice's query choosing
//! accounts, and the freeze a cutover runs.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Row as _};

use super::database::Pool;
use super::Legacy;
use crate::config::Layout;
use crate::{Error, Result};

impl Legacy {
    /// Runs a slice's query and returns the first column of every row, as text (accounts
    /// chosen by business rules: region, plan, size). Needs one shared legacy database.
    pub async fn select_accounts(&self, sql: &str) -> Result<Vec<String>> {
        if !matches!(self.layout, Layout::Shared { .. }) {
            return Err(Error::Unsupported(
                "a slice's query needs one shared legacy database; with a database per account, \
                 list the accounts (--accounts)"
                    .into(),
            ));
        }
        let db = self.database("")?;
        let query_error = |source| Error::Query {
            url: db.url.clone(),
            source,
        };
        let mut accounts = Vec::new();
        match &db.pool {
            Pool::Sqlite(pool) => {
                for row in sqlx::query(sql)
                    .fetch_all(pool)
                    .await
                    .map_err(query_error)?
                {
                    let text = row
                        .try_get::<String, _>(0)
                        .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                        .map_err(query_error)?;
                    accounts.push(text);
                }
            }
            Pool::Postgres(pool) => {
                for row in sqlx::query(sql)
                    .fetch_all(pool)
                    .await
                    .map_err(query_error)?
                {
                    let text = row
                        .try_get::<String, _>(0)
                        .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                        .or_else(|_| row.try_get::<i32, _>(0).map(|n| n.to_string()))
                        .map_err(query_error)?;
                    accounts.push(text);
                }
            }
        }
        accounts.sort();
        accounts.dedup();
        Ok(accounts)
    }

    /// Runs a statement for one account, `:account` standing for it (a cutover's freeze or
    /// unfreeze). Returns the rows it changed.
    pub async fn execute_for(&self, statement: &str, account: &str) -> Result<u64> {
        let db = self.database(account)?;
        let sql = statement.replace(":account", "$1");
        let query_error = |source| Error::Query {
            url: db.url.clone(),
            source,
        };
        let done = match &db.pool {
            // The detector reads SQLite read-only; the freeze writes, on a connection of its own.
            Pool::Sqlite(_) => {
                let options: SqliteConnectOptions = db.url.parse().map_err(query_error)?;
                let mut connection = options.connect().await.map_err(query_error)?;
                sqlx::query(&sql)
                    .bind(account)
                    .execute(&mut connection)
                    .await
                    .map_err(query_error)?
                    .rows_affected()
            }
            Pool::Postgres(pool) => sqlx::query(&sql)
                .bind(account)
                .execute(pool)
                .await
                .map_err(query_error)?
                .rows_affected(),
        };
        Ok(done)
    }

    /// Rows of the account in every configured table: the size of its backfill.
    pub async fn count_rows(&self, account: &str) -> Result<u64> {
        let mut total = 0;
        for table in &self.tables {
            total += self.all_rows(account, &table.name).await?.len() as u64;
        }
        Ok(total)
    }
}
