//! Reading rows: the version scan, whole accounts, and the queries behind restore signals.

use std::collections::HashMap;

use tandem_event::Value;

use crate::config::Layout;
use crate::{Error, Result};

use super::database::Pool;
use super::{quote, Bind, Legacy, LegacyRow};

/// Accounts asked about in one statement of [`Legacy::max_versions`].
const MAX_VERSIONS_PER_STATEMENT: usize = 500;

impl Legacy {
    /// The PostgreSQL snapshot bounds `(xmin, xmax)`: every transaction below `xmin` has ended;
    /// those from `xmin` on may still be running. `None` on SQLite.
    pub async fn snapshot_bounds(&self, account: &str) -> Result<Option<(i64, i64)>> {
        let db = self.database(account)?;
        if !matches!(db.pool, Pool::Postgres(_)) {
            return Ok(None);
        }
        let rows = db
            .query(
                "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT) AS xmin, \
                 CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS TEXT) AS BIGINT) AS xmax",
                &[],
            )
            .await?;
        let get = |name: &str| match rows.first().and_then(|r| r.get(name)) {
            Some(Value::Long(v)) => Ok(*v),
            other => Err(Error::LegacyAnswer {
                key: format!("pg_current_snapshot() {name}"),
                message: format!("is {other:?}, not a number"),
            }),
        };
        Ok(Some((get("xmin")?, get("xmax")?)))
    }

    /// Something that changes whenever anything is committed to any legacy database: for a
    /// SQLite file, the size and modification time of the file and its write-ahead log; for
    /// PostgreSQL, the next transaction id to be given out. `None` when it cannot be told:
    /// PostgreSQL transactions are running, which may still commit without moving it.
    pub async fn change_token(&self) -> Result<Option<Vec<i64>>> {
        let mut token = Vec::new();
        for (account, db) in &self.databases {
            match &db.pool {
                Pool::Sqlite(pool) => {
                    let file = pool.connect_options().get_filename().to_owned();
                    token.extend(tandem_sql::sqlite_change_token(&file));
                }
                Pool::Postgres(_) => match self.snapshot_bounds(account).await? {
                    Some((xmin, xmax)) if xmin == xmax => token.push(xmax),
                    _ => return Ok(None),
                },
            }
        }
        Ok(Some(token))
    }

    /// The database-identity marker (`legacy.identity_query`), if configured.
    pub async fn identity(&self, account: &str) -> Result<Option<String>> {
        match &self.identity_query {
            Some(sql) => Ok(self.scalar(account, sql).await?.map(|v| v.to_text())),
            None => Ok(None),
        }
    }

    /// The database's current version counter (`legacy.version_query`), if configured.
    pub async fn version_counter(&self, account: &str) -> Result<Option<i64>> {
        match &self.version_query {
            Some(sql) => match self.scalar(account, sql).await? {
                Some(Value::Long(v)) => Ok(Some(v)),
                Some(Value::String(s)) => {
                    s.trim().parse().map(Some).map_err(|_| Error::LegacyAnswer {
                        key: "legacy.version_query".into(),
                        message: format!("returned {s:?}, not a number"),
                    })
                }
                None | Some(Value::Null) => Ok(None),
                Some(other) => Err(Error::LegacyAnswer {
                    key: "legacy.version_query".into(),
                    message: format!("returned {other:?}, not a number"),
                }),
            },
            None => Ok(None),
        }
    }

    async fn scalar(&self, account: &str, sql: &str) -> Result<Option<Value>> {
        let rows = self.database(account)?.query(sql, &[]).await?;
        Ok(rows.into_iter().next().and_then(|r| r.into_values().next()))
    }

    /// The highest version in `table` for `account` (0 when empty).
    pub async fn max_version(&self, account: &str, table: &str) -> Result<i64> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let (filter, binds) = db.account_clause(account, 1);
        let sql = format!(
            "SELECT MAX({}) AS v FROM {} WHERE 1 = 1{filter}",
            quote(&info.config.version_column),
            quote(table),
        );
        let rows = db.query(&sql, &binds).await?;
        Ok(match rows.first().and_then(|r| r.get("v")) {
            Some(Value::Long(v)) => *v,
            _ => 0,
        })
    }

    /// For each of `accounts`, the highest version in each table (in [`Legacy::tables`]'
    /// order; 0 for an empty table). On a shared database one statement answers for many
    /// accounts at once, an index lookup per account and table inside it; a database of its
    /// own is asked account by account.
    pub async fn max_versions(&self, accounts: &[String]) -> Result<HashMap<String, Vec<i64>>> {
        self.per_account(accounts, Aggregate::Max).await
    }

    /// For each of `accounts`, per table (in [`Legacy::tables`]' order), the sum of
    /// (version + 1) over the table's rows — the whole account's
    /// [checksum](Legacy::range_checksums) — and the highest version, read together (in one
    /// statement for a shared database), asked for many accounts at once like
    /// [`Legacy::max_versions`].
    pub async fn version_sums(
        &self,
        accounts: &[String],
    ) -> Result<HashMap<String, Vec<(i64, i64)>>> {
        let found = self.per_account(accounts, Aggregate::Checksum).await?;
        Ok(found
            .into_iter()
            .map(|(account, values)| {
                let pairs = values.chunks(2).map(|p| (p[0], p[p.len() - 1])).collect();
                (account, pairs)
            })
            .collect())
    }

    async fn per_account(
        &self,
        accounts: &[String],
        aggregate: Aggregate,
    ) -> Result<HashMap<String, Vec<i64>>> {
        let mut found = HashMap::with_capacity(accounts.len());
        let db = match self.layout {
            Layout::Shared { .. } => self.database("")?,
            Layout::PerAccount(_) => {
                for account in accounts {
                    let mut versions = Vec::with_capacity(self.tables.len());
                    for table in &self.tables {
                        if aggregate == Aggregate::Checksum {
                            // The checksum first: a row written above the mark after it is
                            // still seen by the highest version read next.
                            versions.push(
                                self.range_checksums(
                                    account,
                                    &table.name,
                                    &[(i64::MIN + 1, i64::MAX)],
                                )
                                .await?
                                .first()
                                .copied()
                                .unwrap_or(0),
                            );
                        }
                        versions.push(self.max_version(account, &table.name).await?);
                    }
                    found.insert(account.clone(), versions);
                }
                return Ok(found);
            }
        };
        let Some((column, param)) = &db.account_filter else {
            return Ok(found);
        };
        let matches = format!("{column} = {}", param.replace("$N", "a.account"));
        let maxima = db
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let version = quote(&t.config.version_column);
                let table = quote(&t.config.name);
                let max = format!("(SELECT MAX({version}) FROM {table} WHERE {matches}) AS m{i}");
                match aggregate {
                    Aggregate::Max => max,
                    Aggregate::Checksum => format!(
                        "(SELECT CAST(COALESCE(SUM({version} + 1), 0) AS BIGINT) FROM {table} \
                         WHERE {matches}) AS s{i}, {max}"
                    ),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        for chunk in accounts.chunks(MAX_VERSIONS_PER_STATEMENT) {
            let values = (1..=chunk.len())
                .map(|i| format!("(CAST(${i} AS TEXT))"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "WITH a(account) AS (VALUES {values}) SELECT a.account AS account, {maxima} FROM a"
            );
            let binds: Vec<Bind> = chunk.iter().map(|a| Bind::Text(a.clone())).collect();
            for row in db.query(&sql, &binds).await? {
                let Some(Value::String(account)) = row.get("account") else {
                    continue;
                };
                let value = |column: String| match row.get(&column) {
                    Some(Value::Long(v)) => *v,
                    _ => 0,
                };
                let mut versions = Vec::with_capacity(2 * db.tables.len());
                for i in 0..db.tables.len() {
                    if aggregate == Aggregate::Checksum {
                        versions.push(value(format!("s{i}")));
                    }
                    versions.push(value(format!("m{i}")));
                }
                found.insert(account.clone(), versions);
            }
        }
        Ok(found)
    }

    /// Rows of `table` for `account` with a version in `(after, upto]`, in version order.
    pub async fn changes(
        &self,
        account: &str,
        table: &str,
        (after, upto): (i64, i64),
        limit: usize,
    ) -> Result<Vec<LegacyRow>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 3);
        let limit = if limit == usize::MAX {
            String::new()
        } else {
            format!(" LIMIT {limit}")
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE {version} > $1 AND {version} <= $2{filter} \
             ORDER BY {version}{limit}",
            info.select_list,
            quote(table),
        );
        let mut all = vec![Bind::Int(after), Bind::Int(upto)];
        all.extend(binds);
        db.query(&sql, &all)
            .await?
            .into_iter()
            .map(|row| info.legacy_row(row))
            .collect()
    }

    /// Every key of `table` for `account` with its version (no other columns).
    pub async fn key_versions(&self, account: &str, table: &str) -> Result<Vec<(String, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let (filter, binds) = db.account_clause(account, 1);
        let columns = info.key_version_list();
        let sql = format!("SELECT {columns} FROM {} WHERE 1 = 1{filter}", quote(table));
        db.query(&sql, &binds)
            .await?
            .into_iter()
            .map(|row| info.legacy_row(row).map(|r| (r.entity_id, r.version)))
            .collect()
    }

    /// Every row of `table` for `account`, in key order.
    pub async fn all_rows(&self, account: &str, table: &str) -> Result<Vec<LegacyRow>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let (filter, binds) = db.account_clause(account, 1);
        let order = info
            .config
            .key
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT {} FROM {} WHERE 1 = 1{filter} ORDER BY {order}",
            info.select_list,
            quote(table),
        );
        db.query(&sql, &binds)
            .await?
            .into_iter()
            .map(|row| info.legacy_row(row))
            .collect()
    }
}

/// What [`Legacy::per_account`] asks of each table for each account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    /// The highest version.
    Max,
    /// The sum of (version + 1), as the manifest's parts keep it, and the highest version.
    Checksum,
}
