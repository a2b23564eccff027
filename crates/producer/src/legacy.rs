//! Reading the legacy database(s): table introspection, changed rows, whole accounts.
//!
//! SQLite and PostgreSQL are read through their own sqlx drivers rather than `Any`, because
//! legacy columns come in every type (exact decimals, timestamps) and each must reach the event
//! as the right [`Value`]: integers, doubles, booleans, text and bytes natively, everything else
//! cast to text in SQL so no precision is lost.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};
use tandem_event::{canonical_key, Row, Value};

use crate::config::{Layout, Sources, Table};
use crate::store::{ranges_cte, RANGES_PER_STATEMENT};
use crate::{Error, Result};

/// One legacy row as the detector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyRow {
    pub entity_id: String,
    pub version: i64,
    pub occurred_at: Option<i64>,
    pub data: Row,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A table as configured and as found in one database.
#[derive(Debug, Clone)]
struct TableInfo {
    config: Table,
    columns: Vec<String>,
    select_list: String,
}

#[derive(Debug)]
struct Database {
    url: String,
    queries: Arc<AtomicU64>,
    pool: Pool,
    tables: Vec<TableInfo>,
    /// For a shared database: the account column and the SQL that binds an account to it.
    account_filter: Option<(String, String)>,
}

/// The legacy data of every watched account.
#[derive(Debug)]
pub struct Legacy {
    layout: Layout,
    queries: Arc<AtomicU64>,
    identity_query: Option<String>,
    version_query: Option<String>,
    /// Shared layout: one entry keyed by "". Per-account layout: one per account.
    databases: BTreeMap<String, Database>,
    tables: Vec<Table>,
}

/// Statements the first level of the differencing check runs at once (the legacy pool holds
/// more connections than this).
const PARALLEL_READS: usize = 2;

/// An integer column of a result row (0 when absent or NULL).
fn long(row: &Row, name: &str) -> i64 {
    match row.get(name) {
        Some(Value::Long(v)) => *v,
        _ => 0,
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

impl Legacy {
    /// Connects to the legacy database(s) and checks every configured table and column exists.
    pub async fn connect(sources: &Sources, origin: &Path) -> Result<Self> {
        let layout = sources.layout(origin)?;
        let queries = Arc::<AtomicU64>::default();
        let mut databases = BTreeMap::new();
        match &layout {
            Layout::Shared {
                url,
                account_column,
                ..
            } => {
                let db =
                    Database::open(url, sources, Some(account_column), origin, &queries).await?;
                databases.insert(String::new(), db);
            }
            Layout::PerAccount(urls) => {
                for (account, url) in urls {
                    databases.insert(
                        account.clone(),
                        Database::open(url, sources, None, origin, &queries).await?,
                    );
                }
            }
        }
        Ok(Legacy {
            layout,
            queries,
            identity_query: sources.legacy.identity_query.clone(),
            version_query: sources.legacy.version_query.clone(),
            databases,
            tables: sources.tables.clone(),
        })
    }

    /// Statements issued against the legacy database(s) so far (for benchmarks).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether the account's database is PostgreSQL (where transactions can commit versions
    /// out of order).
    pub fn is_postgres(&self, account: &str) -> Result<bool> {
        Ok(matches!(self.database(account)?.pool, Pool::Postgres(_)))
    }

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

    /// Per `[lo, hi)` range, in order, a checksum of the versions of the rows of `table` for
    /// `account` in it: the sum of (version + 1), so that a row deleted, added, or at another
    /// version changes it (one aggregate per range). The ranges are split over
    /// [`PARALLEL_READS`] statements on as many connections, each reading its own slice of
    /// the version index.
    pub async fn range_checksums(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<i64>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let per_statement = ranges
            .len()
            .div_ceil(PARALLEL_READS)
            .clamp(1, RANGES_PER_STATEMENT);
        let statements = ranges.chunks(per_statement).map(|chunk| {
            let sql = format!(
                "{} SELECT CAST(r.tandem_lo AS BIGINT) AS lo, \
                 (SELECT CAST(COALESCE(SUM({version} + 1), 0) AS BIGINT) FROM {} \
                 WHERE {version} >= r.tandem_lo AND {version} < r.tandem_hi{filter}) AS total \
                 FROM tandem_ranges r",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
                quote(table)
            );
            let binds = &binds;
            async move { db.query(&sql, binds).await }
        });
        let found: HashMap<i64, i64> = futures::future::try_join_all(statements)
            .await?
            .iter()
            .flatten()
            .map(|row| (long(row, "lo"), long(row, "total")))
            .collect();
        Ok(ranges
            .iter()
            .map(|(lo, _)| found.get(lo).copied().unwrap_or(0))
            .collect())
    }

    /// Per `[lo, hi)` range, in order: how many rows of `table` for `account` have a version
    /// in it, and the sum of those versions. One statement per few
    /// thousand ranges.
    pub async fn range_summaries(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<(i64, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let from = format!(
            "FROM {} WHERE {version} >= r.tandem_lo AND {version} < r.tandem_hi{filter}",
            quote(table)
        );
        let total = format!("(SELECT CAST(COALESCE(SUM({version}), 0) AS BIGINT) {from})");
        let mut out = Vec::with_capacity(ranges.len());
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            let sql = format!(
                "{} SELECT CAST(r.tandem_lo AS BIGINT) AS lo, (SELECT COUNT(*) {from}) AS n, \
                 {total} AS total FROM tandem_ranges r",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
            );
            let found: HashMap<i64, (i64, i64)> = db
                .query(&sql, &binds)
                .await?
                .iter()
                .map(|row| (long(row, "lo"), (long(row, "n"), long(row, "total"))))
                .collect();
            out.extend(
                chunk
                    .iter()
                    .map(|(lo, _)| found.get(lo).copied().unwrap_or_default()),
            );
        }
        Ok(out)
    }

    /// Keys and versions (no other columns) of the rows with a version in any of the
    /// `[lo, hi)` ranges.
    pub async fn key_versions_in(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<(String, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let mut out = Vec::new();
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            let sql = format!(
                "{} SELECT {} FROM tandem_ranges r JOIN {} ON {version} >= r.tandem_lo \
                 AND {version} < r.tandem_hi WHERE 1 = 1{filter}",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
                info.key_version_list(),
                quote(table)
            );
            for row in db.query(&sql, &binds).await? {
                let row = info.legacy_row(row)?;
                out.push((row.entity_id, row.version));
            }
        }
        Ok(out)
    }

    /// Rows of `table` for `account` with a version in any of the `[lo, hi)` ranges.
    pub async fn rows_in(
        &self,
        account: &str,
        table: &str,
        ranges: &[(i64, i64)],
    ) -> Result<Vec<LegacyRow>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let version = quote(&info.config.version_column);
        let (filter, binds) = db.account_clause(account, 1);
        let mut out = Vec::new();
        for chunk in ranges.chunks(RANGES_PER_STATEMENT) {
            let sql = format!(
                "{} SELECT {} FROM tandem_ranges r JOIN {} ON {version} >= r.tandem_lo \
                 AND {version} < r.tandem_hi WHERE 1 = 1{filter}",
                ranges_cte(chunk.iter().map(|&(lo, hi)| (lo, hi, 1))),
                info.select_list,
                quote(table)
            );
            for row in db.query(&sql, &binds).await? {
                out.push(info.legacy_row(row)?);
            }
        }
        Ok(out)
    }

    /// Keys listed in the table's tombstone table with a version in `(after, upto]`, with
    /// those versions.
    pub async fn tombstones(
        &self,
        account: &str,
        table: &str,
        (after, upto): (i64, i64),
    ) -> Result<Vec<(String, i64)>> {
        let db = self.database(account)?;
        let info = db.table(table)?;
        let Some(tomb) = &info.config.tombstones else {
            return Ok(Vec::new());
        };
        let version = quote(&tomb.version_column);
        let keys = info
            .config
            .key
            .iter()
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ");
        let (filter, binds) = db.account_clause(account, 3);
        let sql = format!(
            "SELECT {keys}, {version} AS tandem_version FROM {} \
             WHERE {version} > $1 AND {version} <= $2{filter} ORDER BY {version}",
            quote(&tomb.table)
        );
        let mut all = vec![Bind::Int(after), Bind::Int(upto)];
        all.extend(binds);
        db.query(&sql, &all)
            .await?
            .into_iter()
            .map(|row| {
                let parts: Vec<Value> = info
                    .config
                    .key
                    .iter()
                    .map(|k| row.get(k).cloned().unwrap_or(Value::Null))
                    .collect();
                match row.get("tandem_version") {
                    Some(Value::Long(v)) => Ok((canonical_key(&parts), *v)),
                    other => Err(Error::BadValue {
                        table: tomb.table.clone(),
                        column: tomb.version_column.clone(),
                        message: format!("expected an integer version, found {other:?}"),
                    }),
                }
            })
            .collect()
    }

    /// Table name → its columns, as found in the legacy database.
    pub fn columns(&self) -> BTreeMap<String, Vec<String>> {
        self.databases
            .values()
            .next()
            .map(|db| {
                db.tables
                    .iter()
                    .map(|t| (t.config.name.clone(), t.columns.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    fn database(&self, account: &str) -> Result<&Database> {
        let key = match self.layout {
            Layout::Shared { .. } => "",
            Layout::PerAccount(_) => account,
        };
        self.databases
            .get(key)
            .ok_or_else(|| Error::UnknownAccount(account.to_owned()))
    }

    /// The accounts to watch: configured, or every account found in the shared tables.
    pub async fn accounts(&self) -> Result<Vec<String>> {
        match &self.layout {
            Layout::PerAccount(urls) => Ok(urls.keys().cloned().collect()),
            Layout::Shared {
                accounts: Some(list),
                ..
            } => Ok(list.clone()),
            Layout::Shared { account_column, .. } => {
                let db = self.database("")?;
                let column = quote(account_column);
                let sql = db
                    .tables
                    .iter()
                    .map(|t| {
                        format!(
                            "SELECT DISTINCT CAST({column} AS TEXT) AS account FROM {}",
                            quote(&t.config.name)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ")
                    + " ORDER BY account";
                let rows = db.query(&sql, &[]).await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|mut r| match r.remove("account") {
                        Some(Value::String(s)) => Some(s),
                        _ => None,
                    })
                    .collect())
            }
        }
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

#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

impl TableInfo {
    /// The key columns and the version column, quoted, for a select list.
    fn key_version_list(&self) -> String {
        self.config
            .key
            .iter()
            .chain([&self.config.version_column])
            .map(|k| quote(k))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn legacy_row(&self, data: Row) -> Result<LegacyRow> {
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
    async fn open(
        url: &str,
        sources: &Sources,
        account_column: Option<&String>,
        origin: &Path,
        queries: &Arc<AtomicU64>,
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

    fn table(&self, name: &str) -> Result<&TableInfo> {
        self.tables
            .iter()
            .find(|t| t.config.name == name)
            .ok_or_else(|| Error::UnknownTable(name.to_owned()))
    }

    /// ` AND account = $n` for a shared database, nothing for a database of its own.
    fn account_clause(&self, account: &str, n: usize) -> (String, Vec<Bind>) {
        match &self.account_filter {
            Some((column, param)) => (
                format!(" AND {column} = {}", param.replace("$N", &format!("${n}"))),
                vec![Bind::Text(account.to_owned())],
            ),
            None => (String::new(), Vec::new()),
        }
    }

    /// (column name, declared type) of a table; empty when the table does not exist.
    async fn introspect(&self, table: &str) -> Result<Vec<(String, String)>> {
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
    fn select_expression(&self, name: &str, ty: &str) -> String {
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

    async fn query(&self, sql: &str, binds: &[Bind]) -> Result<Vec<Row>> {
        self.queries.fetch_add(1, Ordering::Relaxed);
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
                rows.iter().map(decode_postgres).collect::<Result<_, _>>()
            }
        }
        .map_err(query_error)
    }
}

fn config_error(origin: &Path, key: &str, message: String) -> Error {
    Error::Config {
        file: PathBuf::from(origin),
        key: key.to_owned(),
        message,
    }
}

/// SQLite types values, not columns: decode each value by its own storage class.
fn decode_sqlite(row: &SqliteRow) -> Result<Row, sqlx::Error> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        let declared = column.type_info().name().to_ascii_uppercase();
        let value = if raw.is_null() {
            Value::Null
        } else {
            let storage = raw.type_info().name().to_ascii_uppercase();
            match storage.as_str() {
                "INTEGER" if declared.contains("BOOL") => {
                    Value::Boolean(row.try_get_unchecked::<i64, _>(i)? != 0)
                }
                "INTEGER" | "BOOLEAN" => Value::Long(row.try_get_unchecked(i)?),
                "REAL" => Value::Double(row.try_get_unchecked(i)?),
                "BLOB" => Value::Bytes(row.try_get_unchecked(i)?),
                _ => Value::String(row.try_get_unchecked(i)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}

fn decode_postgres(row: &PgRow) -> Result<Row, sqlx::Error> {
    let mut out = Row::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = if row.try_get_raw(i)?.is_null() {
            Value::Null
        } else {
            match column.type_info().name() {
                "BOOL" => Value::Boolean(row.try_get(i)?),
                "INT2" => Value::Long(row.try_get::<i16, _>(i)?.into()),
                "INT4" => Value::Long(row.try_get::<i32, _>(i)?.into()),
                "INT8" => Value::Long(row.try_get(i)?),
                "FLOAT4" => Value::Double(row.try_get::<f32, _>(i)?.into()),
                "FLOAT8" => Value::Double(row.try_get(i)?),
                "BYTEA" => Value::Bytes(row.try_get(i)?),
                _ => Value::String(row.try_get_unchecked(i)?),
            }
        };
        out.insert(column.name().to_owned(), value);
    }
    Ok(out)
}
