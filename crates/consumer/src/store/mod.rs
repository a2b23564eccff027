//! The consumer's store (SQLite or PostgreSQL, chosen by URL), one file per part:
//!
//! - [`mirror`]: the source mirror (latest row image per legacy key) and the ID map, written
//!   together with an event's positions by [`Store::commit`];
//! - [`parking`]: accounts parked by a failing event, their held events, and resources waiting
//!   for a reference;
//! - [`positions`]: applied positions per partition and per account;
//! - [`leases`]: account leases per consumer group;
//! - [`members`]: the members of each group as they see themselves;
//! - [`targets`]: the cloud account each legacy account is applied to;
//! - [`snapshots`]: where each account's snapshots begin and end in the log.

use sqlx::AnyPool;

use crate::{Error, Result};

mod batch;
mod commit;
mod leases;
mod members;
mod mirror;
mod parking;
mod positions;
mod prefetch;
mod repairs;
mod snapshots;
mod status;
mod targets;

pub use leases::{Grant, LeaseId};
pub use mirror::{Bookkeeping, Mapped, MirrorRow, ResourceKey};
pub use positions::Position;
pub use prefetch::Prefetched;
pub use snapshots::SnapshotMark;
pub use status::{AccountProgress, DeadLetter};

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    committer: commit::Committer,
    /// The database's clock, which every member's leases and heartbeats are compared on.
    clock: tandem_sql::Clock,
}

impl Store {
    pub async fn open(url: &str) -> Result<Self> {
        let pool = tandem_sql::open_migrated(url, sqlx::migrate!())
            .await
            .map_err(|e| match e {
                tandem_sql::OpenError::Connect(source) => Error::Connect {
                    what: "consumer store",
                    url: url.to_owned(),
                    source,
                },
                tandem_sql::OpenError::Migrate(e) => Error::Migrate(e),
            })?;
        Ok(Store::with_pool(pool))
    }

    /// Opens a store that `tandem consume` made, creating and migrating nothing: for commands
    /// that look at it or leave requests in it. A wrong URL is an error, not a new empty store.
    pub async fn open_existing(url: &str) -> Result<Self> {
        let missing = |reason: String| Error::StoreMissing {
            url: url.to_owned(),
            reason,
        };
        let pool = tandem_sql::open_existing(url).await.map_err(|e| {
            let relative = if url.starts_with("sqlite:") {
                " (a sqlite:// path is relative to the working directory)"
            } else {
                ""
            };
            missing(format!("{e}{relative}"))
        })?;
        let probe = sqlx::query("SELECT 1 FROM consumer_accounts LIMIT 1")
            .fetch_optional(&pool)
            .await;
        match probe {
            Ok(_) => {}
            // SQLite says "no such table", PostgreSQL "undefined table" (42P01).
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some("42P01")
                    || e.message().contains("no such table") =>
            {
                return Err(missing(
                    "it holds no consumer tables; has `tandem consume` run against it?".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Store::with_pool(pool))
    }

    fn with_pool(pool: AnyPool) -> Self {
        Store {
            committer: commit::Committer::start(pool.clone()),
            clock: tandem_sql::Clock::new(pool.clone()),
            pool,
        }
    }
}
