//! Deletes found by the differencing check and from tombstone tables, on SQLite and
//! PostgreSQL, also after a kill lost a batch's checkpoint: the exact event sequence per
//! account.

use anyhow::{ensure, Context as _};
use sqlx::{Connection, PgConnection};
use tandem_event::{ChangeEvent, Kind};
use tandem_testkit::notes::{
    cycle, detection_producer as producer, expect, short, LostCheckpoint, Notes, A,
};
use tandem_testkit::{brokers, topic, PgDatabase, Reader};

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

    let checkpoint = LostCheckpoint::take(dir.path()).await?;
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

    let checkpoint = LostCheckpoint::take(dir.path()).await?;
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

/// Found by `tests/chaos.sh cloud-5xx`: when an account's newest rows are deleted, the
/// high-water mark is lowered to the newest version left, read after the delete check; a row
/// deleted in between is left in the manifest above the mark. The next checks must still
/// compare it, or the cloud keeps the row for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_deleted_above_a_lowered_high_water_mark_is_deleted() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=3).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 5);

    // What that race leaves: row 3, the newest, deleted; the mark lowered to row 2's version.
    let store = LostCheckpoint::take(dir.path()).await?.store;
    let (second,): (i64,) = sqlx::query_as(
        "SELECT version FROM producer_manifest WHERE account = $1 AND entity_id = '2'",
    )
    .bind(A)
    .fetch_one(&store)
    .await?;
    notes.delete(A, [3]).await?;
    sqlx::query("UPDATE producer_high_water SET high_water = $1 WHERE account = $2")
        .bind(second)
        .bind(A)
        .execute(&store)
        .await?;

    let events = cycle(&producer, &reader, A).await?;
    ensure!(events == expect(&["D notes/3@0"]), "{events:?}");
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}

/// A row handed in by another sync process is not the detector's: it never becomes a key the
/// detector must settle, so the next cycle publishes no delete for it though the legacy table
/// does not have it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_row_handed_in_is_not_deleted_by_the_detector() -> anyhow::Result<()> {
    let (brokers, dir) = (brokers()?, tempfile::tempdir()?);
    let topic = topic(&brokers, 1).await?;
    let notes = Notes::create(dir.path()).await?;
    notes.insert(A, 1..=2).await?;
    let producer = producer(&notes.sources("", ""), &brokers, &topic, dir.path()).await?;
    let reader = Reader::new(&brokers, &topic)?;
    ensure!(cycle(&producer, &reader, A).await?.len() == 4);
    let (good, rejected) = tandem_producer::ingest::parse_lines(
        r#"{"kind":"CREATED","entity_type":"notes","entity_id":"99","version":5,"data":{"id":99}}"#,
        tandem_producer::ingest::Accounts::Default(A),
    );
    ensure!(rejected.is_empty(), "{rejected:?}");
    let detections: Vec<_> = good.into_iter().map(|(_, d)| d).collect();
    tandem_producer::ingest::publish_detections(producer.outbox(), &detections).await?;
    ensure!(short(&reader.take(1).await?[0].1) == "C notes/99@0");
    // Cycles with the delete check due every time: nothing to publish.
    ensure!(
        cycle(&producer, &reader, A).await?.is_empty(),
        "the detector acted on a handed-in row"
    );
    ensure!(cycle(&producer, &reader, A).await?.is_empty());
    Ok(())
}
