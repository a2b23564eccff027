//! Opening Tandem's own stores — the producer's checkpoints, the consumer's ID map and mirror —
//! by URL (`sqlite://…` or `postgres://…`), with the same settings for both.
//!
//! ```no_run
//! # async fn run() -> Result<(), sqlx::Error> {
//! let pool = tandem_sql::open("sqlite://tandem-consumer.db").await?; // created when missing
//! let same = tandem_sql::open_existing("sqlite://tandem-consumer.db").await?; // never created
//! # Ok(()) }
//! ```
//!
//! Each store runs its own migrations on the pool; both may share one database.

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// Opens the store at `url`, creating a SQLite file that does not exist yet.
pub async fn open(url: &str) -> Result<AnyPool, sqlx::Error> {
    connect(&with_create(url)).await
}

/// Why a store could not be opened and migrated.
#[derive(Debug)]
pub enum OpenError {
    Connect(sqlx::Error),
    Migrate(sqlx::migrate::MigrateError),
}

/// Opens the store at `url` (creating a missing SQLite file) and runs `migrator`, the calling
/// part's own migrations. The producer and the consumer may share one database, each with
/// migrations the other does not know; those are left alone.
pub async fn open_migrated(
    url: &str,
    mut migrator: sqlx::migrate::Migrator,
) -> Result<AnyPool, OpenError> {
    let pool = open(url).await.map_err(OpenError::Connect)?;
    migrator.set_ignore_missing(true);
    // Two processes opening a new SQLite store at once (a consumer starting and an operator's
    // command) both migrate it; SQLite has no migration lock, so one of them finds a version
    // recorded meanwhile. Running again then finds everything applied.
    let mut tries = 0;
    loop {
        match migrator.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(_) if tries < 5 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(OpenError::Migrate(e)),
        }
    }
}

/// Opens the store at `url` only if it exists: for commands that look at a store, which must
/// not leave an empty one behind when given a wrong path.
pub async fn open_existing(url: &str) -> Result<AnyPool, sqlx::Error> {
    connect(url).await
}

async fn connect(url: &str) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    AnyPoolOptions::new()
        // SQLite has one writer at a time; more connections would only wait for each other.
        .max_connections(if sqlite { 1 } else { 8 })
        // A SQLite connection is a file, not a socket: it cannot be found broken, so checking
        // it before each use would only cost a round trip to its worker thread per statement.
        .test_before_acquire(!sqlite)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // With the write-ahead log, a commit survives a crash of the process
                    // without waiting for the disk; only a power loss can take back the last
                    // commits, and what they recorded is repeated idempotently.
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Something that changes whenever a commit reaches the SQLite database `file`: the size and
/// modification time (ns) of the file and of its write-ahead log. A file that is missing (no
/// log yet) counts as -1.
pub fn sqlite_change_token(file: &std::path::Path) -> [i64; 4] {
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let of = |path: &std::path::Path| {
        std::fs::metadata(path).map_or((-1, -1), |m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(-1, |d| i64::try_from(d.as_nanos()).unwrap_or(-1));
            (i64::try_from(m.len()).unwrap_or(-1), modified)
        })
    };
    let (file_len, file_at) = of(file);
    let (wal_len, wal_at) = of(std::path::Path::new(&wal));
    [file_len, file_at, wal_len, wal_at]
}

/// A URL that sqlx opens as a SQLite database to create when missing.
fn with_create(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains("mode=") && !url.contains(":memory:") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=rwc")
    } else {
        url.to_owned()
    }
}

/// How long a reading of a store's clock is followed on this process's monotonic clock before
/// the database is asked again.
pub const CLOCK_READ_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// The store database's clock in epoch milliseconds, for times that different processes
/// compare through the store (leases, heartbeats): processes whose own clocks disagree still
/// agree on when a lease ran out. Read from the database at most every [`CLOCK_READ_EVERY`]
/// and followed in between on this process's monotonic clock, so a wall clock that jumps does
/// not move it either.
#[derive(Debug, Clone)]
pub struct Clock {
    pool: AnyPool,
    reading: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, i64)>>>,
}

impl Clock {
    pub fn new(pool: AnyPool) -> Self {
        Clock {
            pool,
            reading: Default::default(),
        }
    }

    /// Now, by the store's clock.
    pub async fn now_millis(&self) -> Result<i64, sqlx::Error> {
        let since = |at: std::time::Instant| i64::try_from(at.elapsed().as_millis()).unwrap_or(0);
        let last = *self.reading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, millis)) = last.filter(|(at, _)| at.elapsed() < CLOCK_READ_EVERY) {
            return Ok(millis + since(at));
        }
        let sql = if self
            .pool
            .connect_options()
            .database_url
            .scheme()
            .starts_with("sqlite")
        {
            "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)"
        } else {
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        };
        let asked = std::time::Instant::now();
        let (millis,): (i64,) = sqlx::query_as(sql).fetch_one(&self.pool).await?;
        // The database read its clock somewhere in the round trip: take the middle.
        let at = asked + asked.elapsed() / 2;
        *self.reading.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, millis));
        Ok(millis + since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sqlite_files_are_opened_to_be_created() {
        assert_eq!(with_create("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            with_create("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            with_create("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
        assert_eq!(with_create("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(with_create("postgres://h/db"), "postgres://h/db");
    }

    #[tokio::test]
    async fn a_missing_store_is_created_only_when_asked() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = std::env::temp_dir().join(format!("tandem-sql-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("store.db");
        let _ = std::fs::remove_file(&path);
        let url = format!("sqlite://{}", path.display());
        assert!(open_existing(&url).await.is_err());
        assert!(!path.exists(), "looking at a missing store created it");
        open(&url).await?.close().await;
        assert!(path.exists());
        open_existing(&url).await?.close().await;
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[tokio::test]
    async fn the_clock_is_the_stores() -> Result<(), Box<dyn std::error::Error>> {
        let pool = open("sqlite::memory:").await?;
        let clock = Clock::new(pool);
        let system = |d: std::time::SystemTime| {
            d.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default()
        };
        let before = system(std::time::SystemTime::now());
        let first = clock.now_millis().await?;
        let second = clock.now_millis().await?;
        let after = system(std::time::SystemTime::now());
        // SQLite reads this machine's clock: the store's time lies within the calls.
        assert!(before - 5 <= first && first <= second && second <= after + 5);
        Ok(())
    }
}
