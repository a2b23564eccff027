//! The migration store (SQLite or PostgreSQL, chosen by URL), one file per part:
//!
//! - this file: opening it, the settings row and the census of accounts;
//! - [`accounts`]: each account's state, its changes with their history, migrate-now;
//! - [`cutover`]: the snapshot a cutover waits for, the freeze flag and the last verify;
//! - [`slices`]: named slices and their members.

use sqlx::AnyPool;
use tandem_event::now_millis;

use crate::{Enroll, Error, NewAccounts, Policy, Result, State};

mod accounts;
mod cutover;
mod slices;

pub use accounts::{Account, HistoryEntry};
pub use cutover::Drift;
pub use slices::Slice;

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// The policy the producer last started with, and when the accounts were first counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enroll: Enroll,
    pub new_accounts: NewAccounts,
    pub new_accounts_slice: Option<String>,
    /// When the census recorded the accounts found at the start; accounts found later are
    /// new accounts.
    pub started_at: Option<i64>,
}

impl Store {
    /// Opens (creating and migrating when needed) the store at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = tandem_sql::open_migrated(url, sqlx::migrate!())
            .await
            .map_err(|e| match e {
                tandem_sql::OpenError::Connect(source) => Error::Connect {
                    url: url.to_owned(),
                    source,
                },
                tandem_sql::OpenError::Migrate(e) => Error::Migrate(e),
            })?;
        Ok(Store { pool })
    }

    /// Opens a store that exists, creating nothing: for commands that only look.
    pub async fn open_existing(url: &str) -> Result<Self> {
        let missing = |reason: String| Error::StoreMissing {
            url: url.to_owned(),
            reason,
        };
        let pool = tandem_sql::open_existing(url)
            .await
            .map_err(|e| missing(e.to_string()))?;
        if let Err(e) = sqlx::query("SELECT 1 FROM migration_accounts LIMIT 1")
            .fetch_optional(&pool)
            .await
        {
            return Err(missing(format!(
                "it holds no migration tables ({e}); has `tandem produce` run with it?"
            )));
        }
        Ok(Store { pool })
    }

    /// Records the policy the producer runs with, for the router and the commands to read.
    pub async fn configure(&self, policy: &Policy) -> Result<()> {
        sqlx::query(
            "INSERT INTO migration_settings (id, enroll, new_accounts, new_accounts_slice) \
             VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET enroll = excluded.enroll, \
             new_accounts = excluded.new_accounts, \
             new_accounts_slice = excluded.new_accounts_slice",
        )
        .bind(policy.enroll.as_str())
        .bind(policy.new_accounts.as_str())
        .bind(policy.new_accounts_slice.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The recorded settings; the defaults when no producer has run yet.
    pub async fn settings(&self) -> Result<Settings> {
        let row: Option<(String, String, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT enroll, new_accounts, new_accounts_slice, started_at \
             FROM migration_settings WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some((enroll, new_accounts, slice, started_at)) = row else {
            return Ok(Settings {
                enroll: Enroll::All,
                new_accounts: NewAccounts::Ignore,
                new_accounts_slice: None,
                started_at: None,
            });
        };
        let corrupt = |what: &str, text: &str| {
            Error::Corrupt(format!(
                "settings: {what} {text:?} is not one Tandem writes"
            ))
        };
        let enroll = Enroll::from_name(&enroll).ok_or_else(|| corrupt("enroll", &enroll))?;
        let new_accounts = NewAccounts::from_name(&new_accounts)
            .ok_or_else(|| corrupt("new_accounts", &new_accounts))?;
        Ok(Settings {
            enroll,
            new_accounts,
            new_accounts_slice: slice,
            started_at,
        })
    }

    /// Counts the accounts at the start of the migration, once: each account not known yet is
    /// recorded in the state given with it (pending, or syncing when every account is
    /// enrolled). Accounts found after the census are new accounts ([`Store::discover`]).
    /// Returns the accounts recorded; nothing when the census was taken before.
    pub async fn census(&self, accounts: &[(String, State)], actor: &str) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let now = now_millis();
        // Claims the census; a second producer starting at the same time finds it taken.
        let claimed = sqlx::query(
            "INSERT INTO migration_settings (id, enroll, new_accounts, started_at) \
             VALUES (1, 'all', 'ignore', $1) ON CONFLICT (id) DO UPDATE \
             SET started_at = excluded.started_at WHERE migration_settings.started_at IS NULL",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut recorded = Vec::new();
        if claimed == 1 {
            for (account, initial) in accounts {
                if accounts::insert(
                    &mut tx,
                    account,
                    *initial,
                    actor,
                    "found when the migration started",
                )
                .await?
                {
                    recorded.push(account.clone());
                }
            }
        }
        tx.commit().await?;
        Ok(recorded)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pending(accounts: &[&str]) -> Vec<(String, State)> {
        accounts
            .iter()
            .map(|a| ((*a).to_owned(), State::Pending))
            .collect()
    }

    pub(crate) async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("migration.db").display());
        let store = Store::open(&url).await.expect("store");
        (dir, store)
    }

    #[tokio::test]
    async fn the_census_is_taken_once() -> Result<()> {
        let (_dir, store) = store().await;
        let first = store.census(&pending(&["a", "b"]), "test").await?;
        assert_eq!(first, ["a", "b"]);
        let again = store.census(&pending(&["a", "c"]), "test").await?;
        assert!(again.is_empty());
        assert!(store.account("c").await?.is_none());
        assert!(store.settings().await?.started_at.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn settings_read_back() -> Result<()> {
        let (_dir, store) = store().await;
        let policy = Policy {
            enroll: Enroll::Slices,
            new_accounts: NewAccounts::Enroll,
            new_accounts_slice: Some("late".into()),
            ..Policy::default()
        };
        store.configure(&policy).await?;
        let settings = store.settings().await?;
        assert_eq!(settings.enroll, Enroll::Slices);
        assert_eq!(settings.new_accounts, NewAccounts::Enroll);
        assert_eq!(settings.new_accounts_slice.as_deref(), Some("late"));
        Ok(())
    }
}
