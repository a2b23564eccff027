//! One legacy database: its pool, the tables checked against the sources file, and the
//! queries run against it.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use tandem_event::{canonical_key, Row, Value};

use crate::config::{Sources, Table};
use crate::{Error, Result};

use super::decode::{decode_postgres, decode_sqlite};
use super::{config_error, quote, Counters, LegacyRow};

#[derive(Debug, Clone)]
pub(super) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A table as configured and as found in one database.
#[derive(Debug, Clone)]
pub(super) struct TableInfo {
    pub(super) config: Table,
    pub(super) columns: Vec<String>,
    pub(super) select_list: String,
}

#[derive(Debug)]
pub(super) struct Database {
    pub(super) url: String,
    pub(super) queries: Arc<Counters>,
    pub(super) pool: Pool,
    pub(super) tables: Vec<TableInfo>,
    /// For a shared database: the account column and the SQL that binds an account to it.
    pub(super) account_filter: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub(super) enum Bind {
    Int(i64),
    Text(String),
}

impl TableInfo {
    /// The key columns and the version column, quoted, for a select list.
    pub(super) fn key_version_list(&self) -> String {
        self.config
            .key
            .iter()
            .chain([&self.config.version_column])
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn legacy_row(&self, data: Row) -> Result<LegacyRow> {
        let key = self
            .config
            .key
            .iter()
            .map(|k| data.get(k).cloned().unwrap_or(Value::Null))
            .collect::<Vec<_>>();
        let long = |column: &str| match data.get(column) {
            Some(Value::Long(n)) => Ok(Some(*n)),
            Some(Value::Null) | None => Ok(None),
            Some(other) => Err(Error::BadValue {
                table: self.config.name.clone(),
                column: column.to_owned(),
                message: format!("expected an integer, found {other:?}"),
            }),
        };
        let version = long(&self.config.version_column)?.ok_or_else(|| Error::BadValue {
            table: self.config.name.clone(),
            column: self.config.version_column.clone(),
            message: "row has no version".into(),
        })?;
        let occurred_at = match &self.config.occurred_at_column {
            Some(column) => long(column)?,
            None => None,
        };
        Ok(LegacyRow {
            entity_id: canonical_key(&key),
            version,
            occurred_at,
            data,
        })
    }
}

impl Database {
    pub(super) async fn open(
        url: &str,
        sources: &Sources,
        account_column: Option<&String>,
        origin: &Path,
        queries: &Arc<Counters>,
    ) -> Result<Self> {
        let connect_error = |source: sqlx::Error| Error::Connect {
            what: "legacy database",
            url: url.to_owned(),
            source,
        };
        let pool = if url.starts_with("sqlite:") {
            let options: SqliteConnectOptions = url.parse().map_err(connect_error)?;
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    // A file cannot be found broken: no round trip to check it before each use.
                    .test_before_acquire(false)
                    .connect_with(options.read_only(true))
                    .await
                    .map_err(connect_error)?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(4)
                    .connect(url)
                    .await
                    .map_err(connect_error)?,
            )
        } else {
            return Err(config_error(
                origin,
                "legacy.url",
                format!("{url:?} is neither a sqlite: nor a postgres: URL"),
            ));
        };
        let mut db = Database {
            url: url.to_owned(),
            queries: queries.clone(),
            pool,
            tables: Vec::new(),
            account_filter: None,
        };
        for (i, table) in sources.tables.iter().enumerate() {
            let found = db.introspect(&table.name).await?;
            if found.is_empty() {
                return Err(config_error(
                    origin,
                    &format!("tables[{i}].name"),
                    format!("table {:?} does not exist in {url}", table.name),
                ));
            }
            let names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
            let required = table
                .key
                .iter()
                .map(|c| ("key", c))
                .chain([("version_column", &table.version_column)])
                .chain(
                    table
                        .occurred_at_column
                        .iter()
                        .map(|c| ("occurred_at_column", c)),
                )
                .chain(account_column.map(|c| ("legacy.account_column", c)));
            for (key, column) in required {
                if !names.contains(column) {
                    let key = if key.starts_with("legacy.") {
                        key.to_owned()
                    } else {
                        format!("tables[{i}].{key}")
                    };
                    return Err(config_error(
                        origin,
                        &key,
                        format!(
                            "column {column:?} does not exist in table {:?} of {url}",
                            table.name
                        ),
                    ));
                }
            }
            if let Some(tomb) = &table.tombstones {
                let found = db.introspect(&tomb.table).await?;
                let key = format!("tables[{i}].tombstones");
                if found.is_empty() {
                    return Err(config_error(
                        origin,
                        &format!("{key}.table"),
                        format!("table {:?} does not exist in {url}", tomb.table),
                    ));
                }
                let columns = table
                    .key
                    .iter()
                    .chain([&tomb.version_column])
                    .chain(account_column);
                for column in columns {
                    if !found.iter().any(|(n, _)| n == column) {
                        return Err(config_error(
                            origin,
                            &key,
                            format!(
                                "column {column:?} does not exist in tombstone table {:?} of {url}",
                                tomb.table
                            ),
                        ));
                    }
                }
            }
            if let (Some(column), None) = (account_column, &db.account_filter) {
                let ty = found
                    .iter()
                    .find(|(n, _)| n == column)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                let param = match db.pool {
                    Pool::Postgres(_) => format!("CAST($N AS {ty})"),
                    Pool::Sqlite(_) => "$N".to_owned(),
                };
                db.account_filter = Some((quote(column), param));
            }
            let select_list = found
                .iter()
                .map(|(name, ty)| db.select_expression(name, ty))
                .collect::<Vec<_>>()
                .join(", ");
            db.tables.push(TableInfo {
                config: table.clone(),
                columns: names,
                select_list,
            });
        }
        Ok(db)
    }

    pub(super) fn table(&self, name: &str) -> Result<&TableInfo> {
        self.tables
            .iter()
            .find(|t| t.config.name == name)
            .ok_or_else(|| Error::UnknownTable(name.to_owned()))
    }

    /// ` AND account = $n` for a shared database, nothing for a database of its own.
    pub(super) fn account_clause(&self, account: &str, n: usize) -> (String, Vec<Bind>) {
        match &self.account_filter {
            Some((column, param)) => (
                format!(" AND {column} = {}", param.replace("$N", &format!("${n}"))),
                vec![Bind::Text(account.to_owned())],
            ),
            None => (String::new(), Vec::new()),
        }
    }

    /// (column name, declared type) of a table; empty when the table does not exist.
    pub(super) async fn introspect(&self, table: &str) -> Result<Vec<(String, String)>> {
        let result = match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT column_name::text, udt_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                )
                .bind(table)
                .fetch_all(pool)
                .await
            }
        };
        result.map_err(|source| Error::Query {
            url: self.url.clone(),
            source,
        })
    }

    /// How a column is selected: natively when its type maps to an event value, else as text.
    pub(super) fn select_expression(&self, name: &str, ty: &str) -> String {
        let column = quote(name);
        match self.pool {
            Pool::Sqlite(_) => column,
            Pool::Postgres(_) => match ty {
                "bool" | "int2" | "int4" | "int8" | "float4" | "float8" | "text" | "varchar"
                | "bpchar" | "name" | "bytea" => column,
                _ => format!("CAST({column} AS TEXT) AS {column}"),
            },
        }
    }

    fn count_rows(&self, rows: usize) {
        self.queries.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(super) async fn query(&self, sql: &str, binds: &[Bind]) -> Result<Vec<Row>> {
        self.queries.queries.fetch_add(1, Ordering::Relaxed);
        let query_error = |source| Error::Query {
            url: self.url.clone(),
            source,
        };
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut query = sqlx::query(sql);
                for bind in binds {
                    query = match bind {
                        Bind::Int(n) => query.bind(*n),
                        Bind::Text(s) => query.bind(s.as_str()),
                    };
                }
                let rows = query.fetch_all(pool).await.map_err(query_error)?;
                self.count_rows(rows.len());
                rows.iter().map(decode_sqlite).collect::<Result<_, _>>()
            }
            Pool::Postgres(pool) => {
                let mut query = sqlx::query(sql);
                for bind in binds {
                    query = match bind {
                        Bind::Int(n) => query.bind(*n),
                        Bind::Text(s) => query.bind(s.as_str()),
                    };
                }
                let rows = query.fetch_all(pool).await.map_err(query_error)?;
                self.count_rows(rows.len());
                rows.iter().map(decode_postgres).collect::<Result<_, _>>()
            }
        }
        .map_err(query_error)
    }
}
