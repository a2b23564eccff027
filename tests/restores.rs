//! Database restores — by the version counter, a row going back, the identity marker — and
//! the reconcile that follows: the exact event sequence per account.

use anyhow::ensure;
use tandem_testkit::notes::{cycle, detection_producer as producer, expect, Notes, A};
use tandem_testkit::{brokers, topic, Reader};

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
