//! The producer's checkpoint store (SQLite or PostgreSQL, chosen by URL), one file per part:
//!
//! - this file: opening it, and each account's state (epoch, enrolment, published mark);
//! - [`manifest`]: the keys published per table with their versions, kept summarised in parts
//!   of versions, and the high-water marks — moved by one transaction per acknowledged batch;
//! - [`unsettled`]: keys published as created whose checkpoint has not landed yet;
//! - [`inflight`]: PostgreSQL transactions that were open at a read;
//! - [`leases`]: which instance runs each account's cycles;
//! - [`requests`]: snapshots asked of the instance holding an account;
//! - [`status`]: where each account's newest event landed, and the view `tandem status` shows.
//!
//! Checkpoints are written only after Kafka acknowledged what they stand for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::AnyPool;

use crate::{Error, Result};

mod inflight;
mod leases;
mod manifest;
mod requests;
mod status;
mod unsettled;

pub(crate) use manifest::{ranges_cte, tombstone_mark_key, RANGES_PER_STATEMENT};
pub use manifest::{Advance, PART_VERSIONS};
pub use requests::SnapshotProgress;
pub use status::{ProducerAccount, Published};
pub use unsettled::BeforeSending;

/// `$first, $first+1, …`: `count` numbered placeholders for a list of values. The store
/// talks through sqlx's `Any` driver, whose `QueryBuilder` writes `?` placeholders that
/// PostgreSQL does not take, so lists are numbered here.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    queries: Arc<AtomicU64>,
    /// The SQLite file, when the store is one.
    file: Option<std::path::PathBuf>,
    /// The database's clock, which every instance's leases are compared on.
    clock: tandem_sql::Clock,
}

/// What the store knows of one account.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountState {
    pub epoch: i64,
    /// The enrolment snapshot was published completely.
    pub enrolled: bool,
    /// The database-identity marker as last seen.
    pub identity: Option<String>,
    /// When the differencing check last ran (epoch millis).
    pub deletes_checked_at: i64,
    /// (epoch, version): the highest version published in that epoch, checkpointed or not.
    pub published: (i64, i64),
    /// Keys were published as created and their checkpoint did not land (see
    /// [`Store::unsettled`]).
    pub unsettled: bool,
    /// A snapshot asked for and not published yet, the oldest first (see
    /// [`Store::request_snapshot`]).
    pub snapshot_requested: Option<String>,
}

impl AccountState {
    /// The highest version published in `epoch` (0 if none is known): a delete must carry at
    /// least this, or consumers may order it before a version of its row they have seen.
    pub fn published_in(&self, epoch: i64) -> i64 {
        if self.published.0 == epoch {
            self.published.1
        } else {
            0
        }
    }
}

pub(super) async fn set_account(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    state: &AccountState,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO producer_accounts (account, epoch, enrolled, identity, deletes_checked_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO UPDATE SET \
         epoch = excluded.epoch, enrolled = excluded.enrolled, identity = excluded.identity, \
         deletes_checked_at = excluded.deletes_checked_at",
    )
    .bind(account)
    .bind(state.epoch)
    .bind(i64::from(state.enrolled))
    .bind(state.identity.clone())
    .bind(state.deletes_checked_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a cycle needs to know of an account to tell it has nothing to do (see
/// [`Store::account_views`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountView {
    pub enrolled: bool,
    pub epoch: i64,
    pub identity: Option<String>,
    pub deletes_checked_at: i64,
    /// Keys unsettled, a snapshot asked for, or PostgreSQL transactions in flight at a read.
    pub pending: bool,
    /// Table → high-water mark.
    pub high_water: HashMap<String, i64>,
}

impl Store {
    /// Every account's [`AccountView`], in two statements whatever the number of accounts.
    pub async fn account_views(&self) -> Result<HashMap<String, AccountView>> {
        self.count(2);
        type Columns = (String, i64, i64, Option<String>, i64, i64);
        let rows: Vec<Columns> = sqlx::query_as(
            "SELECT a.account, a.enrolled, a.epoch, a.identity, a.deletes_checked_at, \
             CASE WHEN EXISTS (SELECT 1 FROM producer_unsettled u WHERE u.account = a.account) \
             OR EXISTS (SELECT 1 FROM producer_snapshot_requests r WHERE r.account = a.account) \
             OR EXISTS (SELECT 1 FROM producer_inflight i WHERE i.account = a.account) \
             THEN 1 ELSE 0 END FROM producer_accounts a",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut views: HashMap<String, AccountView> = rows
            .into_iter()
            .map(
                |(account, enrolled, epoch, identity, deletes_checked_at, pending)| {
                    let view = AccountView {
                        enrolled: enrolled != 0,
                        epoch,
                        identity,
                        deletes_checked_at,
                        pending: pending != 0,
                        high_water: HashMap::new(),
                    };
                    (account, view)
                },
            )
            .collect();
        let marks: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT account, entity_type, high_water FROM producer_high_water")
                .fetch_all(&self.pool)
                .await?;
        for (account, table, high_water) in marks {
            if let Some(view) = views.get_mut(&account) {
                view.high_water.insert(table, high_water);
            }
        }
        Ok(views)
    }

    /// Per (account, table), the sum of the manifest's part checksums: the whole account's
    /// checksum as published, to compare with [`crate::legacy::Legacy::version_sums`].
    pub async fn manifest_sums(&self) -> Result<HashMap<(String, String), i64>> {
        self.count(1);
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT account, entity_type, CAST(SUM(checksum) AS BIGINT) \
             FROM producer_manifest_parts GROUP BY account, entity_type",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(account, table, sum)| ((account, table), sum))
            .collect())
    }

    /// Something that changes whenever anything is committed to the store, as
    /// [`crate::legacy::Legacy::change_token`] for the legacy databases; `None` when it cannot
    /// be told.
    pub async fn change_token(&self) -> Result<Option<Vec<i64>>> {
        if let Some(file) = &self.file {
            if file.to_str().is_some_and(|f| f.contains(":memory:")) {
                return Ok(None);
            }
            return Ok(Some(tandem_sql::sqlite_change_token(file).to_vec()));
        }
        self.count(1);
        let (xmin, xmax): (i64, i64) = sqlx::query_as(
            "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS TEXT) AS BIGINT), \
             CAST(CAST(pg_snapshot_xmax(pg_current_snapshot()) AS TEXT) AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((xmin == xmax).then(|| vec![xmax]))
    }

    /// Records that the accounts' differencing checks found nothing at `at` (epoch millis).
    pub async fn deletes_checked(&self, accounts: &[String], at: i64) -> Result<()> {
        for chunk in accounts.chunks(500) {
            self.count(1);
            let list = (2..chunk.len() + 2)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE producer_accounts SET deletes_checked_at = $1 WHERE account IN ({list})"
            );
            let mut query = sqlx::query(&sql).bind(at);
            for account in chunk {
                query = query.bind(account);
            }
            query.execute(&self.pool).await?;
        }
        Ok(())
    }

    pub async fn open(url: &str) -> Result<Self> {
        let pool = tandem_sql::open_migrated(url, sqlx::migrate!())
            .await
            .map_err(|e| match e {
                tandem_sql::OpenError::Connect(source) => Error::Connect {
                    what: "producer store",
                    url: url.to_owned(),
                    source,
                },
                tandem_sql::OpenError::Migrate(e) => Error::Migrate(e),
            })?;
        let file = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest).into())
            .filter(|path: &std::path::PathBuf| !path.as_os_str().is_empty());
        Ok(Store {
            clock: tandem_sql::Clock::new(pool.clone()),
            pool,
            queries: Arc::default(),
            file,
        })
    }

    /// Opens a store `tandem produce` made, creating and migrating nothing: for commands that
    /// only look at it (`tandem status`).
    pub async fn open_existing(url: &str) -> Result<Self> {
        let pool = tandem_sql::open_existing(url)
            .await
            .map_err(|source| Error::Connect {
                what: "producer store (it is never created by this command)",
                url: url.to_owned(),
                source,
            })?;
        Ok(Store {
            clock: tandem_sql::Clock::new(pool.clone()),
            pool,
            queries: Arc::default(),
            file: None,
        })
    }

    /// Statements issued so far (for benchmarks).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn count(&self, n: u64) {
        self.queries.fetch_add(n, Ordering::Relaxed);
    }

    /// Now by the store database's clock (see [`tandem_sql::Clock`]): what leases are taken and
    /// compared on, so that instances whose clocks disagree agree on who holds an account.
    pub async fn now_millis(&self) -> Result<i64> {
        Ok(self.clock.now_millis().await?)
    }

    pub async fn account(&self, account: &str) -> Result<AccountState> {
        self.count(1);
        type Columns = (i64, i64, Option<String>, i64, i64, i64, i64, Option<String>);
        let row: Option<Columns> = sqlx::query_as(
            "SELECT epoch, enrolled, identity, deletes_checked_at, published_epoch, \
             published_max, CASE WHEN EXISTS (SELECT 1 FROM producer_unsettled u \
             WHERE u.account = a.account) THEN 1 ELSE 0 END, \
             (SELECT r.snapshot_id FROM producer_snapshot_requests r \
             WHERE r.account = a.account ORDER BY r.requested_at, r.snapshot_id LIMIT 1) \
             FROM producer_accounts a WHERE account = $1",
        )
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(
                |(
                    epoch,
                    enrolled,
                    identity,
                    deletes_checked_at,
                    published_epoch,
                    published_max,
                    unsettled,
                    snapshot_requested,
                )| {
                    AccountState {
                        epoch,
                        enrolled: enrolled != 0,
                        identity,
                        deletes_checked_at,
                        published: (published_epoch, published_max),
                        unsettled: unsettled != 0,
                        snapshot_requested,
                    }
                },
            )
            .unwrap_or_default())
    }

    /// Records that versions up to `version` of `epoch` are about to be published: the mark
    /// only rises within an epoch, and a later epoch starts it afresh.
    pub async fn raise_published(&self, account: &str, epoch: i64, version: i64) -> Result<()> {
        self.count(1);
        let mut conn = self.pool.acquire().await?;
        raise_published(&mut conn, account, epoch, version).await
    }

    pub async fn set_account(&self, account: &str, state: &AccountState) -> Result<()> {
        self.count(1);
        let mut conn = self.pool.acquire().await?;
        set_account(&mut conn, account, state).await?;
        Ok(())
    }
}

/// See [`Store::raise_published`].
async fn raise_published(
    conn: &mut sqlx::AnyConnection,
    account: &str,
    epoch: i64,
    version: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO producer_accounts (account, epoch, published_epoch, published_max) \
         VALUES ($1, $2, $2, $3) ON CONFLICT (account) DO UPDATE SET \
         published_max = CASE WHEN producer_accounts.published_epoch = $2 \
         AND producer_accounts.published_max > $3 \
         THEN producer_accounts.published_max ELSE $3 END, published_epoch = $2 \
         WHERE producer_accounts.published_epoch <= $2",
    )
    .bind(account)
    .bind(epoch)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}
