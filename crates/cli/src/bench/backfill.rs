//! `tandem bench backfill`: accounts enrolled in bulk. First a real migration's dataset —
//! 80,000 records of about 500 bytes, a median of 100 per account and the largest 5,000 — from
//! the producer's start to the last record live in the cloud, then verified. Then one account
//! of 1,000,000 records, published by `tandem produce --once` whole, and again with the
//! producer killed half-way and started again: the time the kill cost.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use serde_json::json;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::Totals;
use tandem_consumer::{CloudClient, Consumer, Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tokio_util::sync::CancellationToken;

use super::rig::{self, Bench, Cloud, Stretch};
use crate::verify::verify_accounts;

#[derive(Debug, Clone)]
pub(super) struct Setup {
    /// Records of the migration's dataset, in all.
    pub records: usize,
    pub median: usize,
    pub largest: usize,
    /// Records of the one large account whose snapshot is cut short.
    pub large: usize,
    pub partitions: i32,
}

/// The goal: the 80K-record migration live in under 10 s.
const GOAL_SECONDS: f64 = 10.0;
/// The producer's lease in the kill runs: a restarted producer takes the killed one's
/// account over this long after the kill.
const LEASE_TTL: Duration = Duration::from_secs(5);
/// Padding that brings a contact row to about 500 bytes.
const PAD_BYTES: usize = 200;

/// Accounts' sizes for `records` records: the largest; then, in turn, one account of ten
/// times the median and four at or a third above the median, so that it stays the median.
fn sizes(records: usize, median: usize, largest: usize) -> Vec<usize> {
    let (median, largest) = (median.max(1), largest.max(1).min(records.max(1)));
    let mut sizes = vec![largest];
    let mut left = records.saturating_sub(largest);
    // As many at the median as above it, so that it stays the median.
    while left > 0 {
        let big = (median * 10).min(left);
        sizes.push(big);
        left -= big;
        for share in [median, median + median / 3] {
            if left == 0 {
                break;
            }
            let n = share.min(left);
            sizes.push(n);
            left -= n;
            let n = median.min(left);
            if n > 0 {
                sizes.push(n);
                left -= n;
            }
        }
    }
    sizes
}

fn median_of(sizes: &[usize]) -> usize {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// `count` contacts of `account` with ids and versions from `offset + 1`, padded to about
/// 500 bytes each (no trigger runs for them).
async fn insert_contacts(
    legacy: &tandem_workload::LegacyDb,
    account: &str,
    offset: usize,
    count: usize,
) -> anyhow::Result<()> {
    legacy
        .execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO contacts (account_id, id, first_name, last_name, email, row_version, \
             changed_at_ms) SELECT '{account}', {offset} + i, 'First' || i, \
             'Backfill ' || hex(randomblob({PAD_BYTES})), 'c' || i || '@example.com', \
             {offset} + i, 0 FROM n"
        ))
        .await?;
    legacy
        .execute(&format!(
            "UPDATE version_counter SET value = max(value, {}) WHERE id = 1",
            offset + count
        ))
        .await?;
    Ok(())
}

pub(super) async fn run(setup: Setup, rig: super::RigArgs) -> anyhow::Result<i32> {
    let bench = Bench::start("backfill", rig, setup.partitions).await?;
    let (migration, clean) = migrate(&bench, &setup).await?;
    let large = large_account(&bench, &setup).await?;
    let seconds = migration["seconds"].as_f64().unwrap_or(f64::MAX);
    let out = json!({
        "scenario": "backfill",
        "store": bench.store_kind(),
        "partitions": setup.partitions,
        "records_80k": migration,
        "records_1m": large,
        "resume_overhead_s": large["resume_overhead_s"],
        "goal": format!("records_80k.seconds < {GOAL_SECONDS}"),
        "met": seconds < GOAL_SECONDS,
    });
    bench.print(&out)?;
    Ok(if clean { 0 } else { 1 })
}

/// The migration's dataset enrolled by the producer and applied by the consumer, in this
/// process, with cloudsim over HTTP; timed from the producer's start to the last event applied.
/// Its figures, and whether the cloud came out equal to the legacy data.
async fn migrate(bench: &Bench, setup: &Setup) -> anyhow::Result<(serde_json::Value, bool)> {
    let (dir, broker, topic) = (&bench.dir, &bench.broker, &bench.topic);
    let legacy = tandem_workload::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let sizes = sizes(setup.records, setup.median, setup.largest);
    let accounts: Vec<String> = (1..=sizes.len()).map(|i| format!("acct-{i:05}")).collect();
    let mut offset = 0;
    for (account, &size) in accounts.iter().zip(&sizes) {
        insert_contacts(&legacy, account, offset, size).await?;
        offset += size;
    }
    bench.say(format!(
        "{offset} records in {} accounts (median {}, largest {})",
        accounts.len(),
        median_of(&sizes),
        sizes.iter().max().copied().unwrap_or(0)
    ));

    let cloud = Cloud::start(dir.path(), "cloud").await?;
    let origin = Path::new("bench-backfill-sources.toml");
    let sources = Sources::parse(&tandem_workload::sources_for(&legacy.url), origin)?;
    let producer = Arc::new(
        Producer::connect(
            &sources,
            origin,
            tandem_producer::Options {
                brokers: broker.brokers.clone(),
                topic: topic.clone(),
                store_url: bench.store_url("producer.db"),
                ..Default::default()
            },
        )
        .await?,
    );
    let mapping = Arc::new(Mapping::parse(
        tandem_workload::MAPPING,
        Path::new("deploy/demo/mapping.toml"),
    )?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let consumer = Arc::new(Consumer::new(
        Engine::new(
            mapping.clone(),
            Store::open(&bench.store_url("consumer.db")).await?,
            client.clone(),
        ),
        tandem_consumer::Options {
            brokers: broker.brokers.clone(),
            topic: topic.clone(),
            group: format!("bench-backfill-{}", bench.suffix),
            dead_letter_topic: format!("{topic}.dlq"),
            kafka: vec![("session.timeout.ms".into(), "6000".into())],
            ..Default::default()
        },
    )?);
    let (pstats, cstats) = (producer.stats(), consumer.stats());
    let (producer_stop, consumer_stop) = (CancellationToken::new(), CancellationToken::new());
    let consumer_task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), consumer_stop.clone());
        async move { consumer.run(stop).await }
    });
    // The clock starts with the producer, once the consumer has its partitions.
    let joining = Instant::now();
    while cstats.assigned_partitions.load(Ordering::Relaxed) == 0 {
        if consumer_task.is_finished() || joining.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the consumer did not join its group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stretch = Stretch::start();
    let cloud_cpu = cloud.cpu_seconds();
    let started = Instant::now();
    let producer_task = tokio::spawn({
        let (producer, stop) = (producer.clone(), producer_stop.clone());
        async move { producer.run(stop).await }
    });
    // Done when the consumer has applied every event published and nothing more came for a
    // second; the time is that of the last event applied.
    let deadline = started + Duration::from_secs(600);
    let mut last_done = (0, started);
    let mut reported = Instant::now();
    loop {
        let (published, done) = (pstats.published.load(Ordering::Relaxed), cstats.done());
        if done != last_done.0 {
            last_done = (done, Instant::now());
        }
        let records = offset as u64;
        if done >= published
            && published >= records
            && last_done.1.elapsed() > Duration::from_secs(1)
        {
            break;
        }
        if producer_task.is_finished() || consumer_task.is_finished() {
            anyhow::bail!("the producer or the consumer stopped: {done} of {published} applied");
        }
        if Instant::now() > deadline {
            anyhow::bail!("{done} of {published} events applied within 600 s");
        }
        if reported.elapsed() > Duration::from_secs(10) {
            bench.say(format!("{published} events published, {done} applied"));
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = (last_done.1 - started).as_secs_f64();
    let usage = stretch.usage();
    let cloud_cpu = cloud.cpu_seconds() - cloud_cpu;
    let published = pstats.published.load(Ordering::Relaxed);
    bench.say(format!(
        "{published} events applied in {seconds:.1} s: {:.0} records/s",
        offset as f64 / seconds
    ));
    producer_stop.cancel();
    producer_task.await??;
    let drift = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    let totals = Totals::of(&drift);
    consumer_stop.cancel();
    consumer_task.await??;
    let clean = totals.drift == Default::default() && totals.duplicates == 0;
    let figures = json!({
        "records": offset,
        "accounts": accounts.len(),
        "median": median_of(&sizes),
        "largest": sizes.iter().max(),
        "events": published,
        "seconds": rig::round3(seconds),
        "records_per_s": (offset as f64 / seconds).round(),
        "drift": totals.drift,
        "duplicates": totals.duplicates,
        "cpu_s": usage.cpu_s,
        "peak_rss_mb": usage.peak_rss_mb,
        "cloudsim_cpu_s": rig::round3(cloud_cpu),
    });
    Ok((figures, clean))
}

/// One account of `setup.large` records published by `tandem produce --once`: whole, then
/// (into a new topic, from a new store) killed half-way and started again once its lease ran
/// out. The consumer is not part of it: applying a million records takes the cloud's time.
async fn large_account(bench: &Bench, setup: &Setup) -> anyhow::Result<serde_json::Value> {
    let (dir, broker) = (bench.dir.path(), &bench.broker);
    let legacy = tandem_workload::LegacyDb::create(&dir.join("large.db")).await?;
    let started = Instant::now();
    insert_contacts(&legacy, "large-00001", 0, setup.large).await?;
    bench.say(format!(
        "{} records in one account, written in {:.1} s",
        setup.large,
        started.elapsed().as_secs_f64()
    ));
    let sources = dir.join("large-sources.toml");
    std::fs::write(&sources, tandem_workload::sources_for(&legacy.url))?;
    let produce = |topic: &str, store: &str| -> anyhow::Result<Child> {
        Command::new(std::env::current_exe()?)
            .args(["produce", "--once", "--sources"])
            .arg(&sources)
            .args(["--brokers", &broker.brokers, "--topic", topic])
            .args(["--store", store])
            .env("TANDEM_LEASE_TTL", format!("{}s", LEASE_TTL.as_secs()))
            .env("TANDEM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("large-producer.log"))?)
            .spawn()
            .context("cannot start `tandem produce`")
    };
    let store = |name: &str| match bench.store_kind() {
        "sqlite" => bench.store_url(&format!("{name}.db")),
        // A shared store (PostgreSQL) keeps each run apart by its account's leases and
        // marks; the two runs use their own SQLite files so that neither sees the other.
        _ => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
    };

    // Whole.
    let whole_topic = format!("{}-whole", bench.topic);
    broker.topic(&whole_topic, setup.partitions).await?;
    let started = Instant::now();
    let status = produce(&whole_topic, &store("large-whole"))?.wait()?;
    anyhow::ensure!(status.success(), "`tandem produce --once` failed: {status}");
    let whole_s = started.elapsed().as_secs_f64();
    let whole_events = topic_size(&broker.brokers, &whole_topic)?;
    bench.say(format!(
        "whole: {whole_events} events published in {whole_s:.1} s"
    ));

    // Killed half-way, then started again.
    let cut_topic = format!("{}-cut", bench.topic);
    broker.topic(&cut_topic, setup.partitions).await?;
    let cut_store = store("large-cut");
    let started = Instant::now();
    let mut first = produce(&cut_topic, &cut_store)?;
    tokio::time::sleep(Duration::from_secs_f64(whole_s / 2.0)).await;
    if first.try_wait()?.is_some() {
        anyhow::bail!("the producer finished before it could be killed half-way");
    }
    first.kill()?;
    first.wait()?;
    let killed_s = started.elapsed().as_secs_f64();
    let at_kill = topic_size(&broker.brokers, &cut_topic)?;
    // The killed producer's lease runs out before another can take the account.
    tokio::time::sleep(LEASE_TTL + Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = produce(&cut_topic, &cut_store)?.wait()?;
    anyhow::ensure!(
        status.success(),
        "the restarted `tandem produce --once` failed: {status}"
    );
    let resumed_s = started.elapsed().as_secs_f64();
    let cut_events = topic_size(&broker.brokers, &cut_topic)?;
    let overhead = killed_s + resumed_s - whole_s;
    bench.say(format!(
        "killed after {killed_s:.1} s ({at_kill} events published), resumed in {resumed_s:.1} s: \
         {overhead:.1} s lost, {} events sent again",
        cut_events.saturating_sub(whole_events)
    ));
    Ok(json!({
        "records": setup.large,
        "published_s": rig::round3(whole_s),
        "records_per_s": (setup.large as f64 / whole_s).round(),
        "events": whole_events,
        "killed_after_s": rig::round3(killed_s),
        "events_at_kill": at_kill,
        "lease_wait_s": rig::round3(LEASE_TTL.as_secs_f64()),
        "resumed_s": rig::round3(resumed_s),
        "events_with_kill": cut_events,
        "events_sent_again": cut_events.saturating_sub(whole_events),
        "resume_overhead_s": rig::round3(overhead),
    }))
}

/// Messages in all partitions of `topic`.
fn topic_size(brokers: &str, topic: &str) -> anyhow::Result<u64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += u64::try_from(high - low).unwrap_or(0);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dataset_has_the_asked_size_median_and_largest() {
        let dataset = sizes(80_000, 100, 5_000);
        assert_eq!(dataset.iter().sum::<usize>(), 80_000);
        assert_eq!(dataset.iter().max(), Some(&5_000));
        assert_eq!(median_of(&dataset), 100);
        let small = sizes(1_000, 100, 5_000);
        assert_eq!(small.iter().sum::<usize>(), 1_000);
    }
}
