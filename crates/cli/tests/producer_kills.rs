//! `tandem produce` killed with SIGKILL again and again during a busy workload loses no
//! change.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::ensure;
use rand::Rng as _;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_event::Kind;
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;
use tandem_testkit::{
    brokers, read_until_quiet, seeded_legacy, topic, until_clean, workload, Cloud, ConsumerSetup,
    PgDatabase, Reader, Running, Seeded, Tandem, TestConsumer,
};

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// For a failure message: the first drifted account's legacy rows, cloud documents and stream
/// (with each event's data), as the consumer saw it.
async fn explain_drift(
    drift: &[tandem_consumer::verify::AccountDrift],
    legacy: &Legacy,
    cloud: &CloudClient,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<()> {
    let Some(bad) = drift.iter().find(|a| !a.is_clean()) else {
        return Ok(());
    };
    let account = bad.account.as_str();
    eprintln!("drift of {account}: {bad:?}");
    for (table, rows) in tandem_cli::verify::legacy_rows(legacy, account).await? {
        for (key, row) in rows {
            eprintln!("legacy {table}/{key}: {row:?}");
        }
    }
    for collection in ["contacts", "properties", "leases"] {
        for doc in cloud.list(account, collection).await.unwrap_or_default() {
            eprintln!("cloud {collection}: {doc}");
        }
    }
    let reader = Reader::new(brokers, topic)?;
    while let Ok(Ok(batch)) = tokio::time::timeout(Duration::from_secs(5), reader.take(1)).await {
        for (key, e) in batch {
            if key == account {
                eprintln!(
                    "stream: {} {}/{} version {} epoch {} snapshot {:?} detected {} data {:?}",
                    e.kind,
                    e.entity_type,
                    e.entity_id,
                    e.version,
                    e.epoch,
                    e.snapshot_id,
                    e.detected_at,
                    e.data
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_again_and_again_loses_no_change() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "kill", 10).await?;

    // A busy workload for a while, while the producer is killed with SIGKILL at random moments.
    let busy = workload(&legacy, &accounts, Duration::from_secs(12));
    let mut kills = 0;
    let mut rng = rand::rng();
    while !busy.is_finished() {
        let mut child =
            Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        child.kill()?;
        child.wait()?;
        kills += 1;
    }
    let changes = busy.await??;
    ensure!(kills >= 8, "only {kills} kills");
    ensure!(changes > 300, "only {changes} changes");

    // Then it may finish: once the last killed instance's leases expired, one cycle publishes
    // the rest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = tandem()
        .produce(&sources, &brokers, &topic, &stores.url)
        .arg("--once")
        .status()?;
    ensure!(status.success(), "the final producer run failed: {status}");

    let consumer = TestConsumer::start(ConsumerSetup::new(
        &brokers,
        &topic,
        &stores.url,
        &cloud.url,
    ))
    .await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(90)).await?;
    if Totals::of(&drift) != Totals::default() {
        let legacy = Legacy::connect(&Sources::load(&sources)?, Path::new("sources.toml")).await?;
        explain_drift(&drift, &legacy, &client, &brokers, &topic).await?;
    }
    let applied = consumer.stats().applied.load(Ordering::Relaxed);
    ensure!(
        Totals::of(&drift) == Totals::default(),
        "drift after {kills} kills ({applied} events applied): {drift:#?}"
    );
    ensure!(consumer.stats().dead_lettered.load(Ordering::Relaxed) == 0);
    eprintln!("{kills} kills, {changes} changes, {applied} events applied, zero drift");
    consumer.stop().await?;
    cloud.stop().await?;
    stores.drop().await
}

/// An account's enrolment snapshot cut short by SIGKILL goes on from its last acknowledged
/// chunk under the same snapshot id: nothing before it is sent again but the chunk under way,
/// and the consumer's sweep at the snapshot's end removes nothing the snapshot sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_short_by_a_kill_goes_on_where_it_got_to() -> anyhow::Result<()> {
    const ROWS: usize = 4_000;
    const BATCH: usize = 20;
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let dir = tempfile::tempdir()?;
    let legacy = tandem_workload::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let account = "large-01";
    legacy
        .execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
             INSERT INTO contacts (account_id, id, first_name, last_name, email, row_version, \
             changed_at_ms) SELECT '{account}', i, 'First' || i, 'Large', \
             'c' || i || '@example.com', i, 0 FROM n"
        ))
        .await?;
    legacy
        .execute(&format!(
            "UPDATE version_counter SET value = {ROWS} WHERE id = 1"
        ))
        .await?;
    let sources = dir.path().join("sources.toml");
    std::fs::write(&sources, tandem_workload::sources_for(&legacy.url))?;
    let store_url = format!("sqlite://{}", dir.path().join("producer.db").display());
    let produce = || {
        let mut command = tandem().produce(&sources, &brokers, &topic, &store_url);
        command
            .arg("--once")
            .env("TANDEM_BATCH_SIZE", BATCH.to_string());
        command
    };

    // Killed once a third of the rows is acknowledged.
    let mut first = Running::spawn(&mut produce())?;
    let store = tandem_producer::Store::open(&store_url).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        if let Some(progress) = store.snapshot_progress(account).await? {
            if progress.after >= (ROWS / 3) as i64 {
                break progress;
            }
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the snapshot did not get a third of the way within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.kill()?;
    first.wait()?;
    let progress = store
        .snapshot_progress(account)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the killed snapshot left no progress"))?;
    ensure!(progress.snapshot_id == at_kill.snapshot_id);
    ensure!(
        (progress.after as usize) < ROWS,
        "the snapshot finished before the kill: {progress:?}"
    );

    // Started again once the killed instance's lease ran out: it finishes the snapshot.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = produce().status()?;
    ensure!(status.success(), "the restarted producer failed: {status}");
    ensure!(store.snapshot_progress(account).await?.is_none());
    ensure!(store.account(account).await?.enrolled);

    let events = read_until_quiet(&brokers, &topic, Duration::from_secs(3)).await?;
    let of_kind = |kind: Kind| events.iter().filter(|(_, e)| e.kind == kind).count();
    ensure!(
        of_kind(Kind::SnapshotBegin) == 1,
        "the snapshot began again"
    );
    ensure!(of_kind(Kind::SnapshotEnd) == 1);
    ensure!(events
        .iter()
        .all(|(_, e)| e.snapshot_id.as_deref() == Some(progress.snapshot_id.as_str())));
    let rows = of_kind(Kind::Created) + of_kind(Kind::Updated);
    // Sent again: at most the chunks between the last checkpoint and the kill.
    ensure!(
        (ROWS..=ROWS + 2 * BATCH).contains(&rows),
        "{rows} row events for {ROWS} rows (killed at version {})",
        progress.after
    );

    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let consumer = TestConsumer::start(ConsumerSetup::new(
        &brokers,
        &topic,
        &stores.url,
        &cloud.url,
    ))
    .await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let accounts = vec![account.to_owned()];
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    ensure!(
        Totals::of(&drift) == Totals::default(),
        "drift after the resumed snapshot: {drift:#?}"
    );
    consumer.stop().await?;
    cloud.stop().await?;
    stores.drop().await
}
