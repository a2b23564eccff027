//! Reading the legacy database(s): table introspection, changed rows, whole accounts.
//!
//! SQLite and PostgreSQL are read through their own sqlx drivers rather than `Any`, because
//! legacy columns come in every type (exact decimals, timestamps) and each must reach the event
//! as the right [`Value`]: integers, doubles, booleans, text and bytes natively, everything else
//! cast to text in SQL so no precision is lost.
//!
//! - this file: connecting, and what the sources file's tables and accounts are;
//! - [`database`]: one legacy database — its pool, its checked tables, its queries;
//! - [`reads`]: the version scan, whole accounts, and the restore signals' queries;
//! - [`ranges`]: the differencing check's aggregates over version ranges;
//! - [`decode`]: rows of each database turned into event values;
//! - [`operator`]: statements an operator wrote: a slice's query, a cutover's freeze.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tandem_event::{Row, Value};

use crate::config::{Layout, Sources, Table};
use crate::{Error, Result};

mod database;
mod decode;
mod operator;
mod ranges;
mod reads;

use database::{Bind, Database, Pool};

/// Statements issued and rows returned, across the legacy databases (for benchmarks).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) queries: AtomicU64,
    pub(super) rows: AtomicU64,
}

/// One legacy row as the detector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyRow {
    pub entity_id: String,
    pub version: i64,
    pub occurred_at: Option<i64>,
    pub data: Row,
}

/// The legacy data of every watched account.
#[derive(Debug)]
pub struct Legacy {
    layout: Layout,
    counters: Arc<Counters>,
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
        let queries = Arc::<Counters>::default();
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
            counters: queries,
            identity_query: sources.legacy.identity_query.clone(),
            version_query: sources.legacy.version_query.clone(),
            databases,
            tables: sources.tables.clone(),
        })
    }

    /// Statements issued against the legacy database(s) so far (for benchmarks).
    pub fn queries(&self) -> u64 {
        self.counters.queries.load(Ordering::Relaxed)
    }

    /// Rows the legacy database(s) returned so far (for benchmarks).
    pub fn rows_read(&self) -> u64 {
        self.counters.rows.load(Ordering::Relaxed)
    }

    /// Whether the account's database is PostgreSQL (where transactions can commit versions
    /// out of order).
    pub fn is_postgres(&self, account: &str) -> Result<bool> {
        Ok(matches!(self.database(account)?.pool, Pool::Postgres(_)))
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

    /// Which legacy database holds the account: "" for the shared one, else the account.
    pub fn database_key<'a>(&self, account: &'a str) -> &'a str {
        match self.layout {
            Layout::Shared { .. } => "",
            Layout::PerAccount(_) => account,
        }
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
}

pub(super) fn config_error(origin: &Path, key: &str, message: String) -> Error {
    Error::Config {
        file: PathBuf::from(origin),
        key: key.to_owned(),
        message,
    }
}
