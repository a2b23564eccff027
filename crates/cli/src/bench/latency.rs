//! `tandem bench latency`: steady legacy changes spread over many accounts, at one rate and
//! then another, each for a while; the latency from legacy commit to the cloud, stage by stage.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::{json, Map, Value as Json};
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::Totals;
use tandem_consumer::{CloudClient, Consumer, Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tokio_util::sync::CancellationToken;

use super::rig::{self, Bench, Cloud, Stretch};
use crate::verify::verify_accounts;

/// How the bench runs.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub accounts: usize,
    /// Legacy changes per second, one phase each.
    pub rates: Vec<u32>,
    pub seconds: u64,
    pub partitions: i32,
    pub producer_concurrency: usize,
}

/// The goals at 1,000 changes/s: p99 under a second, p50 under 150 ms.
const GOAL_P99_MS: u64 = 1_000;
const GOAL_P50_MS: u64 = 150;
/// The producer's delete check, as `tandem produce` runs it by default; the deletes made in
/// the last phase are found by one more check before the final verify.
const DELETE_CHECK: Duration = Duration::from_secs(30);

pub(super) async fn run(setup: Setup, rig: super::RigArgs) -> anyhow::Result<i32> {
    let bench = Bench::start("latency", rig, setup.partitions).await?;
    let (dir, broker, topic, suffix) = (&bench.dir, &bench.broker, &bench.topic, &bench.suffix);
    let say = |line: String| bench.say(line);

    let mut rng = tandem_workload::rng(7);
    let legacy = tandem_workload::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let accounts: Vec<String> = (1..=setup.accounts)
        .map(|i| format!("acct-{i:05}"))
        .collect();
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }
    say(format!("seeded {} accounts", accounts.len()));

    let cloud = Cloud::start(dir.path(), "cloud").await?;
    let store_url = |name: &str| bench.store_url(name);
    let origin = Path::new("deploy/demo/sources.toml");
    let sources = Sources::parse(&tandem_workload::sources_for(&legacy.url), origin)?;
    let producer = Arc::new(
        Producer::connect(
            &sources,
            origin,
            tandem_producer::Options {
                brokers: broker.brokers.clone(),
                topic: topic.clone(),
                store_url: store_url("producer.db"),
                delete_check_interval: DELETE_CHECK,
                concurrency: setup.producer_concurrency,
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
            Store::open(&store_url("consumer.db")).await?,
            client.clone(),
        ),
        tandem_consumer::Options {
            brokers: broker.brokers.clone(),
            topic: topic.clone(),
            group: format!("bench-latency-{suffix}"),
            dead_letter_topic: format!("{topic}.dlq"),
            kafka: vec![("session.timeout.ms".into(), "6000".into())],
            ..Default::default()
        },
    )?);
    let (pstats, cstats) = (producer.stats(), consumer.stats());
    let (producer_stop, consumer_stop) = (CancellationToken::new(), CancellationToken::new());
    let producer_task = tokio::spawn({
        let (producer, stop) = (producer.clone(), producer_stop.clone());
        async move { producer.run(stop).await }
    });
    let consumer_task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), consumer_stop.clone());
        async move { consumer.run(stop).await }
    });
    let stretch = Stretch::start();

    // Every account enrolled and its snapshot applied before the clock starts.
    let settled = |wait: Duration| {
        let (pstats, cstats) = (pstats.clone(), cstats.clone());
        async move {
            let deadline = Instant::now() + wait;
            let mut quiet_since = Instant::now();
            let mut last = u64::MAX;
            loop {
                let published = pstats.published.load(Ordering::Relaxed);
                let caught_up = cstats.done() >= published && published > 0;
                if published != last || !caught_up {
                    quiet_since = Instant::now();
                    last = published;
                }
                if quiet_since.elapsed() > Duration::from_secs(1) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "the consumer applied {} of {published} events within {} s",
                        cstats.done(),
                        wait.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    settled(Duration::from_secs(180)).await?;
    say(format!(
        "{} accounts enrolled: {} events applied",
        accounts.len(),
        cstats.done()
    ));

    let mut phases = Map::new();
    let mut goal_met = None;
    for &rate in &setup.rates {
        let since = tandem_event::now_millis();
        cstats.stages.measure_from(since);
        pstats.acknowledge.measure_from(since);
        let started = Instant::now();
        let length = Duration::from_secs(setup.seconds);
        let mut changes = 0u64;
        while started.elapsed() < length {
            // As many changes as the rate asks for by now, in one burst every few ms.
            let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while changes < due {
                let account = &accounts[rng.random_range(0..accounts.len())];
                legacy.random_change(account, &mut rng).await?;
                changes += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let achieved = changes as f64 / started.elapsed().as_secs_f64();
        settled(Duration::from_secs(120)).await?;
        let stages = cstats.stages.percentiles();
        say(format!(
            "{rate} changes/s ({achieved:.0} made): end to end p50 {} ms, p99 {} ms",
            stages.end_to_end_ms.p50, stages.end_to_end_ms.p99
        ));
        if rate == 1_000 {
            goal_met = Some(
                stages.end_to_end_ms.p99 < GOAL_P99_MS && stages.end_to_end_ms.p50 < GOAL_P50_MS,
            );
        }
        let mut phase = serde_json::to_value(stages)?;
        phase["acknowledge_ms"] = serde_json::to_value(pstats.acknowledge.percentiles())?;
        phase["changes"] = json!(changes);
        phase["changes_per_s"] = json!(achieved.round());
        phases.insert(format!("at_{rate}"), phase);
    }
    let usage = stretch.usage();
    let cloud_cpu = cloud.cpu_seconds();

    // The last deletes are found by the delete check; then everything is verified.
    producer_stop.cancel();
    producer_task.await??;
    crate::demo::drain(&producer, DELETE_CHECK).await?;
    settled(Duration::from_secs(60)).await?;
    let drift = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    let totals = Totals::of(&drift);
    consumer_stop.cancel();
    consumer_task.await??;

    let mut out = json!({
        "scenario": "latency",
        "accounts": setup.accounts,
        "seconds_per_rate": setup.seconds,
        "partitions": setup.partitions,
        "producer_concurrency": setup.producer_concurrency,
        "store": bench.store_kind(),
        "goal": format!("at_1000.end_to_end_ms.p99 < {GOAL_P99_MS} and p50 < {GOAL_P50_MS}"),
        "met": goal_met.map_or(Json::Null, Json::Bool),
        "drift": totals.drift,
        "duplicates": totals.duplicates,
        "cpu_s": usage.cpu_s,
        "peak_rss_mb": usage.peak_rss_mb,
        "cloudsim_cpu_s": rig::round3(cloud_cpu),
    });
    if let Some(map) = out.as_object_mut() {
        map.extend(phases);
    }
    bench.print(&out)?;
    let clean = totals.drift == Default::default() && totals.duplicates == 0;
    Ok(if clean { 0 } else { 1 })
}
