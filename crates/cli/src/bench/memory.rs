//! `tandem bench memory`: whether the consumer's memory stays flat over a long run. --events
//! changes to a fixed set of contacts (--accounts × --keys, each created once and then updated
//! again and again) are published up front; the consumer, in this process, applies them to
//! cloudsim over HTTP while the process's resident set (`VmRSS`) is read every second.
//! Printed: the resident set at each tenth of the events, and how much it grew from the first
//! fifth to the end.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::{CloudClient, Consumer, Engine, Store};
use tandem_event::{ChangeEvent, Codec, Kind};
use tandem_producer::Publisher;
use tokio_util::sync::CancellationToken;

use super::rig::{self, Bench, Cloud};

#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub events: usize,
    pub accounts: usize,
    pub keys: usize,
    pub partitions: i32,
}

pub(super) async fn run(setup: Setup, rig: super::RigArgs) -> anyhow::Result<i32> {
    let bench = Bench::start("memory", rig, setup.partitions).await?;
    let (dir, broker, topic, suffix) = (&bench.dir, &bench.broker, &bench.topic, &bench.suffix);
    let say = |line: String| bench.say(line);
    {
        // Made and sent a chunk at a time: the events are not kept.
        let publisher = Publisher::connect(&broker.brokers, topic, Codec::default(), &[]).await?;
        let progress = crate::progress::Progress::new("bench memory: events published");
        let mut chunk = Vec::with_capacity(5_000);
        for i in 0..setup.events {
            chunk.push(change(i, &setup));
            if chunk.len() == chunk.capacity() || i + 1 == setup.events {
                publisher.publish(&chunk).await?;
                chunk.clear();
                progress.update(i as u64 + 1, setup.events as u64, "published");
            }
        }
        progress.done();
    }
    say(format!(
        "{} changes to {} contacts of {} accounts in {} partitions",
        setup.events,
        setup.accounts * setup.keys,
        setup.accounts,
        setup.partitions
    ));
    let cloud = Cloud::start(dir.path(), "cloud").await?;
    let store = Store::open(&bench.store_url("consumer.db")).await?;
    let mapping = Arc::new(Mapping::parse(
        tandem_workload::MAPPING,
        Path::new("deploy/demo/mapping.toml"),
    )?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let consumer = Arc::new(Consumer::new(
        Engine::new(mapping, store, client),
        tandem_consumer::Options {
            brokers: broker.brokers.clone(),
            topic: topic.clone(),
            group: format!("bench-memory-{suffix}"),
            dead_letter_topic: format!("{topic}.dlq"),
            kafka: vec![("session.timeout.ms".into(), "6000".into())],
            ..Default::default()
        },
    )?);
    let stats = consumer.stats();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run(stop).await }
    });
    let total = setup.events as u64;
    let started = Instant::now();
    let progress = crate::progress::Progress::new("bench memory: events applied");
    // (events done, resident MiB) at each tenth.
    let mut marks: Vec<(u64, f64)> = Vec::new();
    let mut samples: Vec<(u64, f64)> = Vec::new();
    loop {
        let done = stats.done();
        let rss = rss_mb();
        samples.push((done, rss));
        while marks.len() < 10 && done >= total * (marks.len() as u64 + 1) / 10 {
            marks.push((done, rss));
        }
        progress.update(done, total, &format!("{rss:.0} MiB resident"));
        if done >= total {
            break;
        }
        if task.is_finished() {
            stop.cancel();
            task.await??;
            anyhow::bail!("the consumer stopped after {done} of {total} events");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress.done();
    let seconds = started.elapsed().as_secs_f64();
    stop.cancel();
    task.await??;
    // From the first fifth on: the store's and the clients' caches have filled by then.
    let after_first_fifth: Vec<f64> = samples
        .iter()
        .filter(|(done, _)| *done >= total / 5)
        .map(|(_, rss)| *rss)
        .collect();
    let at_fifth = after_first_fifth.first().copied().unwrap_or(0.0);
    let last = samples.last().map_or(0.0, |(_, rss)| *rss);
    let max_after = after_first_fifth.iter().copied().fold(0.0, f64::max);
    let out = json!({
        "scenario": "memory",
        "events": setup.events,
        "contacts": setup.accounts * setup.keys,
        "accounts": setup.accounts,
        "store": bench.store_kind(),
        "seconds": rig::round3(seconds),
        "events_per_s": (setup.events as f64 / seconds).round(),
        "applied": stats.applied.load(Ordering::Relaxed),
        "rss_mb_at_each_tenth": marks.iter().map(|(_, rss)| rig::round3(*rss)).collect::<Vec<_>>(),
        "rss_mb_at_first_fifth": rig::round3(at_fifth),
        "rss_mb_at_end": rig::round3(last),
        "rss_mb_max_after_first_fifth": rig::round3(max_after),
        "growth_mb_after_first_fifth": rig::round3(last - at_fifth),
    });
    bench.print(&out)?;
    Ok(0)
}

/// This process's resident set now, in MiB (`VmRSS`).
pub(super) fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `i`-th change: contact `(i / accounts) mod keys` of account `i mod accounts`, created
/// the first time and updated after.
fn change(i: usize, setup: &Setup) -> ChangeEvent {
    let key = (i / setup.accounts) % setup.keys;
    let kind = if i < setup.accounts * setup.keys {
        Kind::Created
    } else {
        Kind::Updated
    };
    rig::contact(
        &format!("mem-{:04}", i % setup.accounts),
        kind,
        key,
        i as i64 + 1,
        format!("Change{i}"),
        format!("c{key}@example.com"),
    )
}
