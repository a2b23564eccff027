//! The demo's legacy domain, shared by `tandem demo`, `tandem workload`, the tests and the
//! benchmarks: a property-management database (SQLite, row versions stamped by triggers), its
//! sources and mapping files, and a workload that keeps changing it across many accounts —
//! creates, updates, moves, deletes, backups and restores.
//!
//! ```no_run
//! # async fn run() -> sqlx::Result<()> {
//! let legacy = tandem_workload::LegacyDb::create(std::path::Path::new("legacy.db")).await?;
//! let mut rng = tandem_workload::rng(7);
//! legacy.seed("acct-0001", &mut rng).await?;
//! let change = legacy.random_change("acct-0001", &mut rng).await?;
//! println!("{} rows written", change.rows);
//! # Ok(()) }
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tandem_event::now_millis;

mod changes;

use changes::rent;
pub use changes::{Change, Deleted};

/// The demo's sources file, with `legacy.url` pointing at `sqlite://legacy.db`.
pub const SOURCES: &str = include_str!("../../../deploy/demo/sources.toml");
/// The demo's mapping file.
pub const MAPPING: &str = include_str!("../../../deploy/demo/mapping.toml");

const TABLES: [(&str, &str); 4] = [
    (
        "contacts",
        "first_name TEXT NOT NULL, last_name TEXT NOT NULL, email TEXT",
    ),
    (
        "contact_phones",
        "contact_id INTEGER NOT NULL, kind TEXT NOT NULL, number TEXT NOT NULL",
    ),
    (
        "properties",
        "owner_contact_id INTEGER, street TEXT NOT NULL, city TEXT NOT NULL, bedrooms INTEGER",
    ),
    (
        "tenancies",
        "property_id INTEGER NOT NULL, tenant_contact_id INTEGER NOT NULL, \
         start_date TEXT NOT NULL, rent TEXT NOT NULL",
    ),
];

/// The demo's sources file for a legacy database at `url`.
pub fn sources_for(url: &str) -> String {
    SOURCES.replace("sqlite://legacy.db", url)
}

/// The legacy database of the demo.
#[derive(Debug, Clone)]
pub struct LegacyDb {
    pool: SqlitePool,
    pub url: String,
}

impl LegacyDb {
    /// Creates the schema (tables, version counter, triggers) in a new SQLite file.
    pub async fn create(path: &std::path::Path) -> sqlx::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS version_counter \
             (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        sqlx::query("INSERT OR IGNORE INTO version_counter VALUES (1, 0)")
            .execute(&pool)
            .await?;
        // Ids come from a sequence per table and account, as in the legacy product: a deleted
        // row's id is never given to a new row.
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS id_sequences (table_name TEXT NOT NULL, \
             account_id TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (table_name, account_id))",
        )
        .execute(&pool)
        .await?;
        for (table, columns) in TABLES {
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {table} (account_id TEXT NOT NULL, id INTEGER NOT NULL, \
                 {columns}, row_version INTEGER NOT NULL DEFAULT 0, changed_at_ms INTEGER NOT NULL, \
                 PRIMARY KEY (account_id, id))"
            );
            sqlx::query(&ddl).execute(&pool).await?;
            sqlx::query(&format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_version ON {table} (account_id, row_version)"
            ))
            .execute(&pool)
            .await?;
            // Every insert and every update takes the next database-wide version.
            let stamp = format!(
                "BEGIN UPDATE version_counter SET value = value + 1 WHERE id = 1; \
                 UPDATE {table} SET row_version = (SELECT value FROM version_counter WHERE id = 1) \
                 WHERE rowid = NEW.rowid; END"
            );
            // A row put back by a restore keeps the version it had (see `restore`).
            sqlx::query(&format!(
                "CREATE TRIGGER IF NOT EXISTS {table}_version_insert AFTER INSERT ON {table} \
                 WHEN NEW.row_version = 0 {stamp}"
            ))
            .execute(&pool)
            .await?;
            sqlx::query(&format!(
                "CREATE TRIGGER IF NOT EXISTS {table}_version_update AFTER UPDATE ON {table} \
                 WHEN NEW.row_version IS OLD.row_version {stamp}"
            ))
            .execute(&pool)
            .await?;
        }
        Ok(LegacyDb {
            pool,
            url: format!("sqlite://{}", path.display()),
        })
    }

    /// Runs one statement against the database, for tests that shape its data by hand; the
    /// rows it changed.
    pub async fn execute(&self, sql: &str) -> sqlx::Result<u64> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }

    async fn next_id(&self, table: &str, account: &str) -> sqlx::Result<i64> {
        let (id,): (i64,) = sqlx::query_as(&format!(
            "INSERT INTO id_sequences (table_name, account_id, value) \
             SELECT $1, $2, COALESCE(MAX(id), 0) + 1 FROM {table} WHERE account_id = $2 \
             ON CONFLICT (table_name, account_id) DO UPDATE SET value = value + 1 \
             RETURNING value"
        ))
        .bind(table)
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn random_id(
        &self,
        table: &str,
        account: &str,
        rng: &mut StdRng,
    ) -> sqlx::Result<Option<i64>> {
        let (count,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM {table} WHERE account_id = $1"
        ))
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        if count == 0 {
            return Ok(None);
        }
        let skip = rng.random_range(0..count);
        let row: Option<(i64,)> = sqlx::query_as(&format!(
            "SELECT id FROM {table} WHERE account_id = $1 ORDER BY id LIMIT 1 OFFSET $2"
        ))
        .bind(account)
        .bind(skip)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// A new contact with one or two phones, in one transaction.
    pub async fn add_contact(&self, account: &str, rng: &mut StdRng) -> sqlx::Result<i64> {
        const FIRST: [&str; 8] = [
            "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Frances", "Donald",
        ];
        const LAST: [&str; 8] = [
            "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Allen", "Knuth",
        ];
        let id = self.next_id("contacts", account).await?;
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let mut phone_ids = Vec::new();
        for _ in 0..rng.random_range(1..=2) {
            phone_ids.push(self.next_id("contact_phones", account).await?);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO contacts (account_id, id, first_name, last_name, email, changed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account)
        .bind(id)
        .bind(first)
        .bind(last)
        .bind(format!(
            "{}.{}{id}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ))
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        for (n, phone_id) in phone_ids.into_iter().enumerate() {
            sqlx::query(
                "INSERT INTO contact_phones (account_id, id, contact_id, kind, number, changed_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(account)
            .bind(phone_id)
            .bind(id)
            .bind(if n == 0 { "mobile" } else { "home" })
            .bind(format!("+44 20 7946 {:04}", rng.random_range(0..10_000)))
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// A new property owned by an existing contact (a new one when the account has none).
    pub async fn add_property(&self, account: &str, rng: &mut StdRng) -> sqlx::Result<i64> {
        let owner = match self.random_id("contacts", account, rng).await? {
            Some(id) => id,
            None => self.add_contact(account, rng).await?,
        };
        const STREETS: [&str; 5] = [
            "High Street",
            "Station Road",
            "Church Lane",
            "Mill Road",
            "Park Avenue",
        ];
        const CITIES: [&str; 4] = ["Leeds", "Bristol", "York", "Bath"];
        let id = self.next_id("properties", account).await?;
        sqlx::query(
            "INSERT INTO properties (account_id, id, owner_contact_id, street, city, bedrooms, changed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(account)
        .bind(id)
        .bind(owner)
        .bind(format!("{} {}", rng.random_range(1..200), STREETS[rng.random_range(0..STREETS.len())]))
        .bind(CITIES[rng.random_range(0..CITIES.len())])
        .bind(rng.random_range(1..6_i64))
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// A new tenancy of an existing property by an existing contact.
    pub async fn add_tenancy(&self, account: &str, rng: &mut StdRng) -> sqlx::Result<i64> {
        let property = match self.random_id("properties", account, rng).await? {
            Some(id) => id,
            None => self.add_property(account, rng).await?,
        };
        let tenant = match self.random_id("contacts", account, rng).await? {
            Some(id) => id,
            None => self.add_contact(account, rng).await?,
        };
        let id = self.next_id("tenancies", account).await?;
        sqlx::query(
            "INSERT INTO tenancies (account_id, id, property_id, tenant_contact_id, start_date, rent, changed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(account)
        .bind(id)
        .bind(property)
        .bind(tenant)
        .bind(format!("2026-{:02}-01", rng.random_range(1..=12)))
        .bind(rent(rng))
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// Keeps a copy of an account's rows, as a backup taken now.
    pub async fn backup(&self, account: &str) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (table, _) in TABLES {
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {table}_backup AS SELECT * FROM {table} WHERE 0"
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!("DELETE FROM {table}_backup WHERE account_id = $1"))
                .bind(account)
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!(
                "INSERT INTO {table}_backup SELECT * FROM {table} WHERE account_id = $1"
            ))
            .bind(account)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Restores an account from its backup, as an operator restoring a database would: the
    /// rows go back exactly as they were, versions and timestamps included; what was created
    /// since is gone, what was deleted since is back. Returns the rows put back.
    pub async fn restore(&self, account: &str) -> sqlx::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut restored = 0;
        for (table, _) in TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE account_id = $1"))
                .bind(account)
                .execute(&mut *tx)
                .await?;
            restored += sqlx::query(&format!(
                "INSERT INTO {table} SELECT * FROM {table}_backup WHERE account_id = $1"
            ))
            .bind(account)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(restored)
    }

    /// Seeds an account with a few rows of every kind, unless it has contacts already.
    pub async fn seed(&self, account: &str, rng: &mut StdRng) -> sqlx::Result<()> {
        if self.random_id("contacts", account, rng).await?.is_some() {
            return Ok(());
        }
        for _ in 0..3 {
            self.add_contact(account, rng).await?;
        }
        for _ in 0..2 {
            self.add_property(account, rng).await?;
        }
        self.add_tenancy(account, rng).await?;
        Ok(())
    }
}

/// A seeded random source, so a demo run can be repeated.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
