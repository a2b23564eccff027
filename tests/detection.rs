//! Change detection against real legacy databases (SQLite and PostgreSQL) and the real broker:
//! deletes, restores, transactions that commit late, snapshots and handed-in detections. Each
//! test asserts the exact event sequence of its account.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Connection, PgConnection, SqlitePool};
use tandem_event::{ChangeEvent, Kind};
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::{brokers, topic, PgDatabase, Reader};

/// An event as a short string: `C notes/7@0` (kind, table/key, epoch); markers `RESTORED@1`,
/// `BEGIN`, `END`.
fn short(event: &ChangeEvent) -> String {
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

fn expect(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Runs one cycle and reads exactly what it published.
async fn cycle(producer: &Producer, reader: &Reader, account: &str) -> anyhow::Result<Vec<String>> {
    let published = producer.cycle_account(account).await? as usize;
    let events = reader.take(published).await?;
    ensure!(events
        .iter()
        .all(|(key, e)| key == account && e.account_id == account));
    Ok(events.iter().map(|(_, e)| short(e)).collect())
}

/// A SQLite legacy table `notes` whose rows get a database-wide version on every insert and
/// update — unless the insert carries a version, as a restore's does.
struct Notes {
    pool: SqlitePool,
    url: String,
}

impl Notes {
    async fn create(dir: &Path) -> anyhow::Result<Self> {
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

    async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }

    async fn insert(
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

    async fn update(&self, account: &str, id: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE notes SET body = body || '!' WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete(
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
    async fn backup(&self, dir: &Path, name: &str) -> anyhow::Result<()> {
        copy_database(&self.pool, &dir.join(name)).await
    }

    /// Restores a backup in place: every table's content, the version counter included.
    async fn restore(&self, dir: &Path, name: &str) -> anyhow::Result<()> {
        let tables = ["version_counter", "db_identity", "notes", "notes_deleted"];
        put_back(&self.pool, &dir.join(name), &tables).await
    }

    fn sources(&self, extra_legacy: &str, extra_table: &str) -> String {
        format!(
            "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\n{extra_legacy}\n\
             [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n{extra_table}\n",
            self.url
        )
    }
}

/// A consistent copy of a whole SQLite database, written to `to`.
async fn copy_database(pool: &SqlitePool, to: &Path) -> anyhow::Result<()> {
    sqlx::query(&format!("VACUUM INTO '{}'", to.display()))
        .execute(pool)
        .await?;
    Ok(())
}

/// Replaces the content of `tables` with their content in the copy at `from`.
async fn put_back(pool: &SqlitePool, from: &Path, tables: &[&str]) -> anyhow::Result<()> {
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

async fn producer(
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

const A: &str = "acme";

/// A PostgreSQL legacy table `notes` stamped from a sequence by a trigger, with one row of
/// account "acme"; returns a connection to it.
async fn pg_notes(url: &str) -> anyhow::Result<PgConnection> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_single_bulk_range_first_and_last_on_sqlite() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=600).await?;
    notes.insert("other", 1..=3).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;

    let enrolment = cycle(&producer, &reader, A).await?;
    ensure!(enrolment.len() == 602 && enrolment[0] == "BEGIN" && enrolment[601] == "END");
    ensure!(
        cycle(&producer, &reader, A).await?.is_empty(),
        "an idle cycle publishes nothing"
    );

    notes.delete(A, [1, 600]).await?;
    let ends = cycle(&producer, &reader, A).await?;
    ensure!(
        ends == expect(&["D notes/1@0", "D notes/600@0"]),
        "{ends:?}"
    );

    notes.delete(A, 300..=399).await?;
    let bulk = cycle(&producer, &reader, A).await?;
    let mut range: Vec<String> = (300..=399).map(|id| format!("D notes/{id}@0")).collect();
    range.sort();
    ensure!(bulk == range, "{bulk:?}");

    notes.update(A, 7).await?;
    notes.delete(A, [8]).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/7@0", "D notes/8@0"]));

    // A deleted row's key comes back: it is new again, with a version above its delete.
    notes.insert(A, [8]).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["C notes/8@0"]));
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    // The other account is untouched by all of this.
    ensure!(producer.cycle_account("other").await? == 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_with_string_and_composite_keys_on_postgres() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let mut pg = PgConnection::connect(&db.url).await?;
    for statement in [
        "CREATE SEQUENCE legacy_version",
        "CREATE FUNCTION stamp() RETURNS trigger AS $$ BEGIN \
         NEW.row_version := nextval('legacy_version'); RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TABLE codes (tenant TEXT NOT NULL, code TEXT NOT NULL, label TEXT, \
         row_version BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, code))",
        "CREATE TABLE cells (tenant TEXT NOT NULL, x INTEGER NOT NULL, y TEXT NOT NULL, \
         row_version BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (tenant, x, y))",
        "CREATE INDEX codes_by_version ON codes (tenant, row_version)",
        "CREATE INDEX cells_by_version ON cells (tenant, row_version)",
        "CREATE TRIGGER codes_stamp BEFORE INSERT OR UPDATE ON codes FOR EACH ROW EXECUTE FUNCTION stamp()",
        "CREATE TRIGGER cells_stamp BEFORE INSERT OR UPDATE ON cells FOR EACH ROW EXECUTE FUNCTION stamp()",
        "INSERT INTO codes (tenant, code, label) SELECT 'acme', 'k' || lpad(i::text, 4, '0'), 'l' \
         FROM generate_series(1, 400) AS i",
        "INSERT INTO cells (tenant, x, y) SELECT 'acme', i % 20, 'y|' || (i / 20) \
         FROM generate_series(0, 399) AS i",
    ] {
        sqlx::query(statement).execute(&mut pg).await?;
    }
    let sources = format!(
        "[legacy]\nurl = \"{}\"\naccount_column = \"tenant\"\n\
         [[tables]]\nname = \"codes\"\nkey = [\"code\"]\nversion_column = \"row_version\"\n\
         [[tables]]\nname = \"cells\"\nkey = [\"x\", \"y\"]\nversion_column = \"row_version\"\n",
        db.url
    );
    let producer = producer(&sources, &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 802);

    for statement in [
        "DELETE FROM codes WHERE code IN ('k0001', 'k0400')",
        "DELETE FROM codes WHERE code BETWEEN 'k0100' AND 'k0104'",
        "DELETE FROM cells WHERE x = 0 AND y IN ('y|0', 'y|19')",
    ] {
        sqlx::query(statement).execute(&mut pg).await?;
    }
    let found = cycle(&producer, &reader, A).await?;
    ensure!(
        found
            == expect(&[
                "D codes/k0001@0",
                "D codes/k0100@0",
                "D codes/k0101@0",
                "D codes/k0102@0",
                "D codes/k0103@0",
                "D codes/k0104@0",
                "D codes/k0400@0",
                "D cells/0|y\\|0@0",
                "D cells/0|y\\|19@0",
            ]),
        "{found:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    pg.close().await?;
    db.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_table_replaces_the_differencing_check() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes
        .exec(
            "CREATE TRIGGER notes_tombstone AFTER DELETE ON notes BEGIN \
             UPDATE version_counter SET value = value + 1; \
             INSERT INTO notes_deleted VALUES (OLD.account_id, OLD.id, (SELECT value FROM version_counter)); END",
        )
        .await?;
    notes.insert(A, 1..=5).await?;
    let tombstones =
        "tombstones = { table = \"notes_deleted\", version_column = \"deleted_version\" }";
    let producer = producer(&notes.sources("", tombstones), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 7);
    notes.delete(A, [2, 4]).await?;
    let published = producer.cycle_account(A).await? as usize;
    let events = reader.take(published).await?;
    let shorts: Vec<String> = events.iter().map(|(_, e)| short(e)).collect();
    ensure!(
        shorts == expect(&["D notes/2@0", "D notes/4@0"]),
        "{shorts:?}"
    );
    // The delete carries the version the tombstone was stamped with.
    ensure!(events[0].1.version == 6 && events[1].1.version == 7);
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_below_the_high_water_mark_undoes_creates_and_updates() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=5).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 7);

    notes.backup(dir.path(), "monday.db").await?;
    notes.insert(A, [6, 7]).await?;
    notes.update(A, 2).await?;
    ensure!(
        cycle(&producer, &reader, A).await?
            == expect(&["C notes/6@0", "C notes/7@0", "U notes/2@0"])
    );

    notes.restore(dir.path(), "monday.db").await?;
    let events = cycle(&producer, &reader, A).await?;
    ensure!(
        events == expect(&["RESTORED@1", "U notes/2@1", "D notes/6@1", "D notes/7@1"]),
        "{events:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    // Life goes on in the new epoch.
    notes.update(A, 3).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/3@1"]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_detected_by_the_version_counter_going_back() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=5).await?;
    let counter = "version_query = \"SELECT value FROM version_counter\"";
    let producer = producer(&notes.sources(counter, ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 7);
    notes.backup(dir.path(), "b.db").await?;
    notes.insert(A, [6, 7]).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["C notes/6@0", "C notes/7@0"]));
    // Back to before two creates: by the data alone this looks like two deletes, but the
    // database's own counter went back.
    notes.restore(dir.path(), "b.db").await?;
    let events = cycle(&producer, &reader, A).await?;
    ensure!(
        events == expect(&["RESTORED@1", "D notes/6@1", "D notes/7@1"]),
        "{events:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_before_deletes_brings_rows_back() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=5).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 7);
    notes.backup(dir.path(), "before.db").await?;
    notes.delete(A, [3]).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["D notes/3@0"]));
    notes.restore(dir.path(), "before.db").await?;
    let events = cycle(&producer, &reader, A).await?;
    ensure!(
        events == expect(&["RESTORED@1", "C notes/3@1"]),
        "{events:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_then_writes_past_the_old_high_water_mark_is_caught_by_a_row_going_back(
) -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=5).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 7);
    notes.backup(dir.path(), "b.db").await?;
    notes.update(A, 2).await?; // v6
    notes.update(A, 3).await?; // v7
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/2@0", "U notes/3@0"]));

    notes.restore(dir.path(), "b.db").await?; // counter back at 5
    notes.insert(A, 6..=12).await?; // v6..v12, past the old high-water mark 7
    let events = cycle(&producer, &reader, A).await?;
    // Versions 8..12 look new and are published; then the differencing check sees rows 2 and 3
    // back at old versions: a restore. The reconcile brings epoch 1 to the restored state.
    ensure!(
        events
            == expect(&[
                "C notes/8@0",
                "C notes/9@0",
                "C notes/10@0",
                "C notes/11@0",
                "C notes/12@0",
                "RESTORED@1",
                "U notes/2@1",
                "U notes/3@1",
                "C notes/6@1",
                "C notes/7@1",
            ]),
        "{events:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_that_only_took_a_row_back_is_caught_though_the_row_count_is_unchanged(
) -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=5).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 7);
    notes.backup(dir.path(), "b.db").await?;
    notes.update(A, 2).await?; // v6
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/2@0"]));
    // Same rows, same count: only row 2's version differs (v2 again, the manifest has v6).
    notes.restore(dir.path(), "b.db").await?;
    let events = cycle(&producer, &reader, A).await?;
    ensure!(
        events == expect(&["RESTORED@1", "U notes/2@1"]),
        "{events:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_detected_by_the_identity_marker() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=3).await?;
    let identity = "identity_query = \"SELECT value FROM db_identity\"";
    let producer = producer(&notes.sources(identity, ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 5);
    notes.backup(dir.path(), "b.db").await?;
    notes.update(A, 1).await?; // v4
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/1@0"]));
    // The restore marks the database (as restore tooling does), and writes follow at once,
    // past the old high-water mark, before the producer looks again.
    notes.restore(dir.path(), "b.db").await?;
    notes
        .exec("UPDATE db_identity SET value = 'restored-2026-11-22'")
        .await?;
    notes.insert(A, 4..=6).await?; // v4..v6
    let events = cycle(&producer, &reader, A).await?;
    ensure!(
        events
            == expect(&[
                "RESTORED@1",
                "U notes/1@1",
                "C notes/4@1",
                "C notes/5@1",
                "C notes/6@1"
            ]),
        "{events:?}"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_held_open_across_cycles_is_not_missed() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let mut setup = pg_notes(&db.url).await?;
    let sources = format!(
        "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\n\
         [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n",
        db.url
    );
    let producer = producer(&sources, &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["BEGIN", "C notes/1@0", "END"]));

    // A long transaction stamps its row early (version 2) and stays open ...
    let mut long = PgConnection::connect(&db.url).await?;
    sqlx::query("BEGIN").execute(&mut long).await?;
    sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ('acme', 2, 'slow')")
        .execute(&mut long)
        .await?;
    // ... while others commit versions 3 and 4, seen by two cycles.
    sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ('acme', 3, 'quick')")
        .execute(&mut setup)
        .await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["C notes/3@0"]));
    sqlx::query("UPDATE notes SET body = 'again' WHERE id = 1")
        .execute(&mut setup)
        .await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["U notes/1@0"]));
    // The long transaction commits version 2, below what was published already.
    sqlx::query("COMMIT").execute(&mut long).await?;
    ensure!(cycle(&producer, &reader, A).await? == expect(&["C notes/2@0"]));
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    long.close().await?;
    setup.close().await?;
    db.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_wraps_every_row_in_markers() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=3).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    let enrol = reader
        .take(producer.cycle_account(A).await? as usize)
        .await?;
    ensure!(
        enrol.iter().map(|(_, e)| short(e)).collect::<Vec<_>>()
            == expect(&["BEGIN", "C notes/1@0", "C notes/2@0", "C notes/3@0", "END"])
    );
    ensure!(enrol.iter().all(|(_, e)| e
        .snapshot_id
        .as_deref()
        .is_some_and(|id| id.starts_with("enrol-"))));

    notes.update(A, 2).await?;
    notes.delete(A, [3]).await?;
    let tandem_producer::Snapshot::Published(published) = producer.snapshot(A, "snap-1").await?
    else {
        anyhow::bail!("the snapshot was asked of another instance");
    };
    let published = published as usize;
    let events = reader.take(published).await?;
    let shorts: Vec<String> = events.iter().map(|(_, e)| short(e)).collect();
    ensure!(
        shorts == expect(&["BEGIN", "U notes/1@0", "U notes/2@0", "D notes/3@0", "END"]),
        "{shorts:?}"
    );
    ensure!(events
        .iter()
        .all(|(_, e)| e.snapshot_id.as_deref() == Some("snap-1")));
    ensure!(
        cycle(&producer, &reader, A).await?.is_empty(),
        "the snapshot moved the checkpoint"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detections_handed_in_over_http_with_bad_lines_mixed_in() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let store =
        tandem_producer::Store::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
            .await?;
    let publisher =
        tandem_producer::Publisher::connect(&brokers, &topic, tandem_event::Codec::default(), &[])
            .await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let outbox = tandem_producer::Outbox::new(store, publisher);
    let (addr, server) =
        tandem_producer::ingest::serve("127.0.0.1:0".parse()?, outbox, stop.clone()).await?;
    let body = [
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"1","version":10,"data":{"name":"Ada","balance":"12.50"}}"#,
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"2","version":"eleven","data":{}}"#,
        r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","version":12,"data":{"name":"Ada L."},"occurred_at":1790000000000}"#,
        r#"{"kind":"DELETED","entity_type":"contacts","version":13}"#,
        r#"{"kind":"DATABASE_RESTORED","version":9}"#,
        r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"1","version":9,"data":{"name":"Ada"}}"#,
    ]
    .join("\n");
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/v1/accounts/{A}/detections"))
        .body(body)
        .send()
        .await?;
    ensure!(response.status() == 400);
    let answer: serde_json::Value = response.json().await?;
    ensure!(answer["accepted"] == 4, "{answer}");
    let rejected: Vec<(i64, String)> = answer["rejected"]
        .as_array()
        .context("rejected list")?
        .iter()
        .map(|r| {
            (
                r["line"].as_i64().unwrap_or(0),
                r["field"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    ensure!(
        rejected == [(2, "version".to_owned()), (4, "entity_id".to_owned())],
        "{rejected:?}"
    );

    let reader = Reader::new(&brokers, &topic)?;
    let events = reader.take(4).await?;
    let shorts: Vec<String> = events.iter().map(|(_, e)| short(e)).collect();
    ensure!(
        shorts
            == expect(&[
                "C contacts/1@0",
                "U contacts/1@0",
                "RESTORED@1",
                "C contacts/1@1"
            ]),
        "{shorts:?}"
    );
    let first = &events[0].1;
    ensure!(first.event_id == tandem_event::event_id(A, "contacts", "1", 0, 10, Kind::Created));
    ensure!(
        first.data.as_ref().and_then(|d| d.get("balance"))
            == Some(&tandem_event::Value::String("12.50".into()))
    );
    ensure!(events[1].1.occurred_at == 1_790_000_000_000);
    stop.cancel();
    server.await??;
    Ok(())
}

/// The producer's store at one moment, to go back to: what a kill between publishing a
/// batch and checkpointing it leaves is the checkpoint from before the batch.
struct Checkpoint {
    store: SqlitePool,
    saved: std::path::PathBuf,
}

impl Checkpoint {
    async fn take(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("producer.db");
        let store = SqlitePool::connect(&format!("sqlite://{}", path.display())).await?;
        let saved = dir.join("checkpoint.db");
        copy_database(&store, &saved).await?;
        Ok(Checkpoint { store, saved })
    }

    /// Puts back what a batch's checkpoint writes: the manifest and the high-water marks.
    /// What the producer writes before it publishes (the published mark, the keys it publishes
    /// as created) stays.
    async fn lose_the_last_batch(&self) -> anyhow::Result<()> {
        let tables = [
            "producer_high_water",
            "producer_manifest",
            "producer_manifest_parts",
        ];
        put_back(&self.store, &self.saved, &tables).await
    }
}

/// A producer killed between publishing a batch and checkpointing it loses the checkpoint, not
/// the events: consumers have seen versions its store does not know. A delete found afterwards
/// must still order after them, or consumers would take it for an old one and keep the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_after_a_lost_checkpoint_orders_after_what_was_published() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=3).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 5);

    let checkpoint = Checkpoint::take(dir.path()).await?;
    // The account's newest row changes, and that change is published ...
    notes.update(A, 3).await?;
    ensure!(producer.cycle_account(A).await? == 1);
    let update = reader.take(1).await?.remove(0).1;
    ensure!(short(&update) == "U notes/3@0");
    // ... but its checkpoint is lost.
    checkpoint.lose_the_last_batch().await?;

    // Then the row is deleted, before any other row of the account is written: the account's
    // newest version is now below the one published.
    notes.delete(A, [3]).await?;
    let published = producer.cycle_account(A).await? as usize;
    let events = reader.take(published).await?;
    let delete = events
        .iter()
        .map(|(_, e)| e)
        .find(|e| e.kind == Kind::Deleted)
        .context("the delete was not published")?;
    ensure!(
        (delete.epoch, delete.version) >= (update.epoch, update.version),
        "delete at version {} orders before the update published at {}",
        delete.version,
        update.version
    );
    Ok(())
}

/// A row published as created whose checkpoint is lost is missing from the manifest, so the
/// differencing check cannot see it go. Deleted before the next cycle, it must still be
/// published as deleted, or consumers keep it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_created_before_a_lost_checkpoint_and_deleted_is_deleted() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=3).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 5);

    let checkpoint = Checkpoint::take(dir.path()).await?;
    notes.insert(A, [4]).await?;
    ensure!(producer.cycle_account(A).await? == 1);
    let create = reader.take(1).await?.remove(0).1;
    ensure!(short(&create) == "C notes/4@0");
    // A kill before the checkpoint leaves the key recorded as published-as-created, the
    // manifest without it.
    checkpoint.lose_the_last_batch().await?;
    sqlx::query(
        "INSERT INTO producer_unsettled (account, entity_type, entity_id, version) \
         VALUES ($1, 'notes', '4', $2)",
    )
    .bind(A)
    .bind(create.version)
    .execute(&checkpoint.store)
    .await?;

    notes.delete(A, [4]).await?;
    let events: Vec<ChangeEvent> = {
        let published = producer.cycle_account(A).await? as usize;
        reader
            .take(published)
            .await?
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    };
    let shorts: Vec<String> = events.iter().map(short).collect();
    ensure!(shorts == ["D notes/4@0"], "{shorts:?}");
    ensure!(events[0].version >= create.version);
    // Settled: the next cycles publish nothing more.
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_share_accounts_without_publishing_twice_and_take_over() -> anyhow::Result<()>
{
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 2).await?;
    let store = PgDatabase::create().await?;
    let notes = Notes::create(dir.path()).await?;
    let accounts: Vec<String> = (1..=12).map(|i| format!("a{i:02}")).collect();
    for account in &accounts {
        notes.insert(account, 1..=4).await?;
    }
    let origin = Path::new("sources.toml");
    let sources = Sources::parse(&notes.sources("", ""), origin)?;
    let options = tandem_producer::Options {
        brokers: brokers.clone(),
        topic: topic.clone(),
        store_url: store.url.clone(),
        lease_ttl: Duration::from_secs(6),
        delete_check_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let first = Producer::connect(&sources, origin, options.clone()).await?;
    let second = Producer::connect(&sources, origin, options).await?;

    // Both cycle every account at the same time: each account is enrolled exactly once.
    let (a, b) = tokio::join!(first.cycle(), second.cycle());
    let (a, b) = (a?, b?);
    ensure!(a + b == 12 * 6, "published {a} + {b}");
    ensure!(a > 0 && b > 0, "both instances got accounts: {a} and {b}");

    // The first instance dies holding its leases; the second takes its accounts over once
    // they expire, and nothing is published twice or missed.
    drop(first);
    for account in &accounts {
        notes.update(account, 1).await?;
    }
    let before_expiry = second.cycle().await?;
    ensure!(
        before_expiry == b / 6,
        "only its own accounts before expiry: {before_expiry}"
    );
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let after_expiry = second.cycle().await?;
    ensure!(
        before_expiry + after_expiry == 12,
        "{before_expiry} + {after_expiry}"
    );

    let reader = Reader::new(&brokers, &topic)?;
    let events = reader.take(72 + 12).await?;
    let mut ids: Vec<&str> = events.iter().map(|(_, e)| e.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    ensure!(ids.len() == 84, "an event was published twice");
    let updates: Vec<_> = events
        .iter()
        .filter(|(_, e)| e.kind == Kind::Updated)
        .collect();
    let mut updated: Vec<&str> = updates.iter().map(|(key, _)| key.as_str()).collect();
    updated.sort();
    ensure!(updated == accounts.iter().map(String::as_str).collect::<Vec<_>>());
    ensure!(updates.iter().all(|(_, e)| short(e) == "U notes/1@0"));
    drop(second);
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_the_detector_before_its_interval() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let mut pg = pg_notes(&db.url).await?;
    let sources = format!(
        "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\nnotify_channel = \"notes_changed\"\n\
         [[tables]]\nname = \"notes\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n",
        db.url
    );
    let origin = Path::new("sources.toml");
    let producer = std::sync::Arc::new(
        Producer::connect(
            &Sources::parse(&sources, origin)?,
            origin,
            tandem_producer::Options {
                brokers: brokers.clone(),
                topic: topic.clone(),
                store_url: format!("sqlite://{}", dir.path().join("p.db").display()),
                // Without a wake-up, the next cycle would be an hour away.
                interval: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .await?,
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let (producer, stop) = (producer.clone(), stop.clone());
        async move { producer.run(stop).await }
    });
    let reader = Reader::new(&brokers, &topic)?;
    let enrol: Vec<String> = reader
        .take(3)
        .await?
        .iter()
        .map(|(_, e)| short(e))
        .collect();
    ensure!(enrol == expect(&["BEGIN", "C notes/1@0", "END"]));
    // The listener may still be connecting: notify until the change shows up (each take waits
    // up to 30 s; the interval is an hour).
    sqlx::query("INSERT INTO notes (account_id, id, body) VALUES ('acme', 2, 'second')")
        .execute(&mut pg)
        .await?;
    let mut woken = None;
    for _ in 0..20 {
        sqlx::query("NOTIFY notes_changed, 'acme'")
            .execute(&mut pg)
            .await?;
        if let Ok(Ok(events)) = tokio::time::timeout(Duration::from_secs(1), reader.take(1)).await {
            woken = Some(short(&events[0].1));
            break;
        }
    }
    ensure!(woken.as_deref() == Some("C notes/2@0"), "{woken:?}");

    // Notifications sent while the listener was connecting may still wake a cycle: let them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A payload wakes only the account it names: globex's row is published, acme's waits ...
    for statement in [
        "INSERT INTO notes (account_id, id, body) VALUES ('acme', 3, 'third')",
        "INSERT INTO notes (account_id, id, body) VALUES ('globex', 1, 'first')",
        "NOTIFY notes_changed, 'globex'",
    ] {
        sqlx::query(statement).execute(&mut pg).await?;
    }
    let globex: Vec<(String, String)> = reader
        .take(3)
        .await?
        .iter()
        .map(|(key, e)| (key.clone(), short(e)))
        .collect();
    let want: Vec<(String, String)> = expect(&["BEGIN", "C notes/1@0", "END"])
        .into_iter()
        .map(|e| ("globex".to_owned(), e))
        .collect();
    ensure!(globex == want, "{globex:?}");
    let early = tokio::time::timeout(Duration::from_secs(2), reader.take(1)).await;
    ensure!(
        early.is_err(),
        "acme was woken by globex's notification: {early:?}"
    );
    // ... until an empty payload wakes every account.
    sqlx::query("NOTIFY notes_changed").execute(&mut pg).await?;
    let acme = reader.take(1).await?;
    ensure!(
        acme[0].0 == "acme" && short(&acme[0].1) == "C notes/3@0",
        "{acme:?}"
    );
    stop.cancel();
    run.await??;
    pg.close().await?;
    db.drop().await
}
