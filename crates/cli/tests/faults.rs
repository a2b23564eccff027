//! Consumers against a flaky, slow cloud API, with and without idempotency keys: the outcome
//! must not differ.

use std::time::Duration;

use anyhow::ensure;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, drift_report, seeded_legacy, sigterm, topic, until_clean, workload, Cloud, PgDatabase,
    Running, Seeded, Tandem,
};
use tandem_workload as domain;

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Two faulty runs at once overload a 2-core machine: they take turns.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Consumers against a cloud API answering 10% of requests 503 and 5% 429, dropping the
/// connection after applying 5% of changes, and slow: the outcome must not differ.
async fn flaky_cloud_run(prefix: &str, consume_args: &[&str]) -> anyhow::Result<()> {
    let _turn = HEAVY.lock().await;
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let faults = tandem_cloudsim::Faults {
        error_rate: 0.10,
        rate_limit_rate: 0.05,
        retry_after_secs: 1,
        latency_ms: 5,
        latency_jitter_ms: 40,
        drop_after_apply_rate: 0.05,
        ..Default::default()
    };
    let cloud = Cloud::start(faults).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), prefix, 10).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let mut producer =
        Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
    let log = |n: usize| dir.path().join(format!("consumer-{n}.log"));
    let member = |n: usize| {
        Running::spawn(
            tandem()
                .consume(
                    &mapping,
                    (&brokers, &topic),
                    &stores.url,
                    &cloud.url,
                    &log(n),
                )
                .args(consume_args)
                // The cloud client's retries, so the test can tell the faults reached it, and
                // each event applied, to tell what happened if the test fails.
                .env("TANDEM_LOG", "warn,tandem_consumer=debug"),
        )
    };
    // Two members of one group, so their rebalances meet the faults too.
    let mut members = [member(0)?, member(1)?];
    let changes = workload(&legacy, &accounts, Duration::from_secs(12)).await??;
    ensure!(changes > 300, "only {changes} changes");
    // Verification reads the cloud through the same API: it reads it once the run's faults
    // are over, and gives the consumers time to retry what the faults held back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cloud.set_faults(Default::default()).await;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    let totals = Totals::of(&drift);
    let logs: String = (0..members.len())
        .map(|n| std::fs::read_to_string(log(n)).unwrap_or_default())
        .collect();
    if totals != Totals::default() || logs.contains("dead-lettered") {
        let report = drift_report(&drift, &client, dir, &stores.url).await?;
        anyhow::bail!("{totals:?}, or a message was dead-lettered\n{report}");
    }
    ensure!(
        logs.contains("retrying cloud call"),
        "the faults never reached the consumer"
    );
    for child in members.iter_mut().chain([&mut producer]) {
        sigterm(child)?;
        child.wait()?;
    }
    cloud.stop().await?;
    stores.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_slow_cloud_api_changes_nothing_in_the_outcome() -> anyhow::Result<()> {
    flaky_cloud_run("flaky", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_keys_a_flaky_cloud_api_gets_no_duplicates() -> anyhow::Result<()> {
    flaky_cloud_run("lookup", &["--create-mode", "lookup"]).await
}
