//! `tandem bench pipeline`: how fast the consumer takes events from the topic to the cloud,
//! beside how fast cloudsim takes the same requests from a plain HTTP load without Tandem.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::json;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::{CloudClient, Consumer, Engine, Store};
use tandem_event::{ChangeEvent, Codec, Kind};
use tandem_producer::Publisher;
use tokio_util::sync::CancellationToken;

use super::rig::{self, Bench, Cloud, Stretch};

/// How big the bench is.
#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub events: usize,
    pub accounts: usize,
    pub partitions: i32,
}

/// Tandem's events/s over the raw run's requests/s: the goal.
const GOAL_RATIO: f64 = 0.8;

pub(super) async fn run(setup: Setup, rig: super::RigArgs) -> anyhow::Result<i32> {
    let bench = Bench::start("pipeline", rig, setup.partitions).await?;
    let (dir, broker, topic, suffix) = (&bench.dir, &bench.broker, &bench.topic, &bench.suffix);
    let say = |line: String| bench.say(line);
    let publisher = Publisher::connect(&broker.brokers, topic, Codec::default(), &[]).await?;
    let events: Vec<ChangeEvent> = (0..setup.events)
        .map(|i| created(i, setup.accounts))
        .collect();
    for chunk in events.chunks(2_000) {
        publisher.publish(chunk).await?;
    }
    say(format!(
        "{} events of {} accounts in {} partitions of {}",
        setup.events, setup.accounts, setup.partitions, broker.brokers
    ));

    // Tandem: the consumer from the topic's start to the last event applied.
    let cloud = Cloud::start(dir.path(), "cloud-tandem").await?;
    let store = Store::open(&bench.store_url("consumer.db")).await?;
    let mapping = Arc::new(Mapping::parse(
        tandem_workload::MAPPING,
        Path::new("deploy/demo/mapping.toml"),
    )?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let options = tandem_consumer::Options {
        brokers: broker.brokers.clone(),
        topic: topic.clone(),
        group: format!("bench-pipeline-{suffix}"),
        dead_letter_topic: format!("{topic}.dlq"),
        kafka: vec![("session.timeout.ms".into(), "6000".into())],
        ..Default::default()
    };
    let concurrency = options.concurrency;
    let consumer = Arc::new(Consumer::new(
        Engine::new(mapping, store.clone(), client.clone()),
        options,
    )?);
    let stats = consumer.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run(stop).await }
    });
    // The clock starts once the consumer has its partitions: the group's first join is not
    // the pipeline's speed.
    let joining = Instant::now();
    while stats
        .assigned_partitions
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        if task.is_finished() || joining.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the consumer did not join its group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stretch = Stretch::start();
    let cloud_cpu = cloud.cpu_seconds();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(240);
    while stats.done() < setup.events as u64 {
        if task.is_finished() || Instant::now() > deadline {
            stop.cancel();
            task.await??;
            anyhow::bail!(
                "the consumer stopped after {} of {} events",
                stats.done(),
                setup.events
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tandem_s = started.elapsed().as_secs_f64();
    let usage = stretch.usage();
    let tandem_cloud_cpu = cloud.cpu_seconds() - cloud_cpu;
    stop.cancel();
    task.await??;
    let applied = stats.applied.load(std::sync::atomic::Ordering::Relaxed);
    let tandem_rate = setup.events as f64 / tandem_s;
    say(format!(
        "Tandem applied {applied} events in {tandem_s:.2} s: {tandem_rate:.0} events/s"
    ));

    // The same documents sent by a plain HTTP load, as many at once as the consumer applies,
    // to a fresh cloudsim.
    let mut bodies = Vec::with_capacity(setup.events);
    for a in 0..setup.accounts {
        let account = account(a);
        for mut doc in client.list(&account, "contacts").await? {
            if let Some(doc) = doc.as_object_mut() {
                doc.remove("id");
            }
            bodies.push((account.clone(), doc));
        }
    }
    let created_docs = bodies.len();
    let raw = Cloud::start(dir.path(), "cloud-raw").await?;
    let http = tandem_consumer::http_client().build()?;
    let raw_cpu = raw.cpu_seconds();
    let started = Instant::now();
    let failures = futures::stream::iter(bodies.into_iter().enumerate())
        .map(|(i, (account, doc))| {
            let request = http
                .post(format!("{}/v1/accounts/{account}/contacts", raw.url))
                .header("Idempotency-Key", format!("raw-{i}"))
                .json(&doc);
            async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => 0usize,
                    _ => 1,
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold(0usize, |sum, failed| async move { sum + failed })
        .await;
    let raw_s = started.elapsed().as_secs_f64();
    let raw_cloud_cpu = raw.cpu_seconds() - raw_cpu;
    if failures > 0 {
        anyhow::bail!("{failures} of the raw run's {created_docs} requests failed");
    }
    let raw_rate = created_docs as f64 / raw_s;
    let ratio = tandem_rate / raw_rate;
    say(format!(
        "a plain HTTP load sent the {created_docs} documents in {raw_s:.2} s: {raw_rate:.0} requests/s"
    ));
    let out = json!({
        "scenario": "pipeline",
        "events": setup.events,
        "accounts": setup.accounts,
        "partitions": setup.partitions,
        "concurrency": concurrency,
        "store": bench.store_kind(),
        "tandem": {
            "seconds": rig::round3(tandem_s),
            "events_per_s": tandem_rate.round(),
            "applied": applied,
            "cloudsim_cpu_s": rig::round3(tandem_cloud_cpu),
        },
        "raw": {
            "seconds": rig::round3(raw_s),
            "requests_per_s": raw_rate.round(),
            "requests": created_docs,
            "cloudsim_cpu_s": rig::round3(raw_cloud_cpu),
        },
        "ratio": rig::round3(ratio),
        "goal": format!("ratio >= {GOAL_RATIO}"),
        "met": ratio >= GOAL_RATIO,
        "cpu_s": usage.cpu_s,
        "peak_rss_mb": usage.peak_rss_mb,
    });
    bench.print(&out)?;
    let clean = applied == setup.events as u64 && created_docs == setup.events;
    Ok(if clean { 0 } else { 1 })
}

fn account(a: usize) -> String {
    format!("bench-{a:04}")
}

/// The `i`-th event: a contact created in account `i mod accounts`.
fn created(i: usize, accounts: usize) -> ChangeEvent {
    rig::contact(
        &account(i % accounts),
        Kind::Created,
        i,
        i as i64 + 1,
        "Bench".into(),
        format!("c{i}@example.com"),
    )
}
