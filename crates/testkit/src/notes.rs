//! Fixtures for the detection tests: small legacy `notes` tables on SQLite and PostgreSQL, a
//! producer that checks for deletes every cycle, events as short strings, and a producer store
//! put back to an earlier checkpoint, as a kill between publishing and checkpointing leaves it.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, PgConnection, SqlitePool};
use tandem_event::{ChangeEvent, Kind};
use tandem_producer::config::Sources;
use tandem_producer::Producer;

use crate::Reader;

/// An event as a short string: `C notes/7@0` (kind, table/key, epoch); markers `RESTORED@1`,
/// `BEGIN`, `END`.
pub fn short(event: &ChangeEvent) -> String {
    match event.kind {
        Kind::DatabaseRestored => format!("RESTORED@{}", event.epoch),
        Kind::SnapshotBegin => "BEGIN".into(),
        Kind::SnapshotEnd => "END".into(),
        kind => {
            let k = match kind {
                Kind::Created => "C",
                Kind::Updated => "U",
                _ => "D",
            };
            format!(
                "{k} {}/{}@{}",
                event.entity_type, event.entity_id, event.epoch
            )
        }
    }
}

pub fn expect(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs one cycle and reads exactly what it published.
pub async fn cycle(
    producer: &Producer,
    reader: &Reader,
    account: &str,
) -> anyhow::Result<Vec<String>> {
    let published = producer.cycle_account(account).await? as usize;
    let events = reader.take(published).await?;
    ensure!(events
        .iter()
        .all(|(key, e)| key == account && e.account_id == account));
    Ok(events.iter().map(|(_, e)| short(e)).collect())
}

/// A SQLite legacy table `notes` whose rows get a database-wide version on every insert and
/// update — unless the insert carries a version, as a restore's does.
#[derive(Debug)]
pub struct Notes {
    pool: SqlitePool,
    pub url: String,
}

impl Notes {
    pub async fn create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("legacy.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        for statement in [
            "CREATE TABLE version_counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO version_counter VALUES (1, 0)",
            "CREATE TABLE db_identity (value TEXT NOT NULL)",
            "INSERT INTO db_identity VALUES ('original')",
            "CREATE TABLE notes (account_id TEXT NOT NULL, id INTEGER NOT NULL, body TEXT, \
             row_version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (account_id, id))",
            "CREATE INDEX notes_by_version ON notes (account_id, row_version)",
            "CREATE TABLE notes_deleted (account_id TEXT NOT NULL, id INTEGER NOT NULL, \
             deleted_version INTEGER NOT NULL)",
            "CREATE TRIGGER notes_insert AFTER INSERT ON notes WHEN NEW.row_version = 0 BEGIN \
             UPDATE version_counter SET value = value + 1; \
             UPDATE notes SET row_version = (SELECT value FROM version_counter) WHERE rowid = NEW.rowid; END",
            "CREATE TRIGGER notes_update AFTER UPDATE ON notes WHEN NEW.row_version IS OLD.row_version BEGIN \
             UPDATE version_counter SET value = value + 1; \
             UPDATE notes SET row_version = (SELECT value FROM version_counter) WHERE rowid = NEW.rowid; END",
        ] {
            sqlx::query(statement).execute(&pool).await?;
        }
        Ok(Notes {
            pool,
            url: format!("sqlite://{}", path.display()),
        })
    }

    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn insert(
        &self,
        account: &str,
        ids: impl IntoIterator<Item = i64>,
    ) -> anyhow::Result<()> {
        for id in ids {
            sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ($1, $2, 'note ' || $2)")
                .bind(account)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn update(&self, account: &str, id: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE notes SET body = body || '!' WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete(
        &self,
        account: &str,
        ids: impl IntoIterator<Item = i64>,
    ) -> anyhow::Result<()> {
        for id in ids {
            sqlx::query("DELETE FROM notes WHERE account_id = $1 AND id = $2")
                .bind(account)
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// A backup: a consistent copy of the whole database.
    pub async fn backup(&self, dir: &Path, name: &str) -> anyhow::Result<()> {
        copy_database(&self.pool, &dir.join(name)).await
    }

    /// Restores a backup in place: every table's content, the version counter included.
    pub async fn restore(&self, dir: &Path, name: &str) -> anyhow::Result<()> {
        let tables = ["version_counter", "db_identity", "notes", "notes_deleted"];
        put_back(&self.pool, &dir.join(name), &tables).await
    }

    pub fn sources(&self, extra_legacy: &str, extra_table: &str) -> String {
        format!(
            "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\n{extra_legacy}\n\
             [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n{extra_table}\n",
            self.url
        )
    }
}

/// A consistent copy of a whole SQLite database, written to `to`.
pub async fn copy_database(pool: &SqlitePool, to: &Path) -> anyhow::Result<()> {
    sqlx::query(&format!("VACUUM INTO '{}'", to.display()))
        .execute(pool)
        .await?;
    Ok(())
}

/// Replaces the content of `tables` with their content in the copy at `from`.
pub async fn put_back(pool: &SqlitePool, from: &Path, tables: &[&str]) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("ATTACH DATABASE '{}' AS copy", from.display()))
        .execute(&mut *conn)
        .await?;
    for table in tables {
        sqlx::query(&format!("DELETE FROM main.{table}"))
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO main.{table} SELECT * FROM copy.{table}"
        ))
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("DETACH DATABASE copy")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn detection_producer(
    sources: &str,
    brokers: &str,
    topic: &str,
    dir: &Path,
) -> anyhow::Result<Producer> {
    let origin = Path::new("sources.toml");
    Ok(Producer::connect(
        &Sources::parse(sources, origin)?,
        origin,
        tandem_producer::Options {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            store_url: format!("sqlite://{}", dir.join("producer.db").display()),
            // Every cycle checks for deletes.
            delete_check_interval: Duration::ZERO,
            ..Default::default()
        },
    )
    .await?)
}

pub const A: &str = "acme";

/// A PostgreSQL legacy table `notes` stamped from a sequence by a trigger, with one row of
/// account "acme"; returns a connection to it.
pub async fn pg_notes(url: &str) -> anyhow::Result<PgConnection> {
    let mut pg = PgConnection::connect(url).await?;
    for statement in [
        "CREATE SEQUENCE legacy_version",
        "CREATE FUNCTION stamp() RETURNS trigger AS $$ BEGIN \
         NEW.row_version := nextval('legacy_version'); RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TABLE notes (account_id TEXT NOT NULL, id BIGINT NOT NULL, body TEXT, \
         row_version BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (account_id, id))",
        "CREATE TRIGGER notes_stamp BEFORE INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION stamp()",
        "INSERT INTO notes (account_id, id, body) VALUES ('acme', 1, 'first')",
    ] {
        sqlx::query(statement).execute(&mut pg).await?;
    }
    Ok(pg)
}

/// The producer's store at one moment, to go back to: what a kill between publishing a
/// batch and checkpointing it leaves is the checkpoint from before the batch.
#[derive(Debug)]
pub struct LostCheckpoint {
    pub store: SqlitePool,
    saved: std::path::PathBuf,
}

impl LostCheckpoint {
    pub async fn take(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("producer.db");
        let store = SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
        let saved = dir.join("checkpoint.db");
        copy_database(&store, &saved).await?;
        Ok(LostCheckpoint { store, saved })
    }

    /// Puts back what a batch's checkpoint writes: the manifest and the high-water marks.
    /// What the producer writes before it publishes (the published mark, the keys it publishes
    /// as created) stays.
    pub async fn lose_the_last_batch(&self) -> anyhow::Result<()> {
        let tables = [
            "producer_high_water",
            "producer_manifest",
            "producer_manifest_parts",
        ];
        put_back(&self.store, &self.saved, &tables).await
    }
}
