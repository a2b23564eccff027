//! `tandem produce` killed with SIGKILL again and again during a busy workload loses no
//! change.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::ensure;
use rand::Rng as _;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;
use tandem_testkit::{
    brokers, seeded_legacy, topic, until_clean, workload, Cloud, ConsumerSetup, PgDatabase, Reader,
    Running, Seeded, Tandem, TestConsumer,
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
