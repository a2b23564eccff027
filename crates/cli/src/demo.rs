//! `tandem demo`: the whole pipeline on the embedded default — an in-process broker, a SQLite
//! legacy database with a live workload, cloudsim on a loopback port, the producer and the
//! consumer — ending with a verification.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng;
use serde::Serialize;
use tandem_cloudsim::CloudSim;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::{Drift, Totals};
use tandem_consumer::{CloudClient, Consumer, Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tokio_util::sync::CancellationToken;

use crate::verify::verify_accounts;
use tandem_workload as domain;

/// How a demo run is set up.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub accounts: usize,
    pub duration: Duration,
    /// Legacy changes per second, across all accounts.
    pub rate: u32,
    /// A real Kafka to use instead of the in-process mock cluster.
    pub brokers: Option<String>,
    /// Store URL for the producer and the consumer (SQLite files in `dir` when absent).
    pub store_url: Option<String>,
    pub partitions: i32,
    /// Where the demo keeps its files (a temporary directory when absent).
    pub dir: Option<PathBuf>,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    pub seed: u64,
    /// Librdkafka properties for every client, applied last.
    pub kafka: Vec<(String, String)>,
    /// Accounts whose legacy data is restored from a backup during the run (the backup is
    /// taken a third of the way in, the restore made two thirds of the way in).
    pub restores: usize,
    /// Serve the consumer's metrics, health and status page here while the demo runs.
    pub http: Option<std::net::SocketAddr>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            accounts: 20,
            duration: Duration::from_secs(20),
            rate: 100,
            brokers: None,
            store_url: None,
            partitions: 4,
            dir: None,
            progress: true,
            seed: 7,
            kafka: Vec::new(),
            restores: 2,
            http: None,
        }
    }
}

/// Percentiles of a latency, in milliseconds, over `count` samples.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Latency {
    pub count: usize,
    pub p50: u64,
    pub p99: u64,
}

impl Latency {
    fn of(mut samples: Vec<u64>) -> Latency {
        samples.sort_unstable();
        Latency {
            count: samples.len(),
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
        }
    }
}

/// The demo's closing JSON line. `accounts`, `drift`, `duplicates` and `parked` read as in
/// `tandem verify --json`.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub accounts: usize,
    /// Accounts restored from a backup during the run.
    pub restored_accounts: usize,
    pub events_applied: u64,
    pub drift: Drift,
    pub duplicates: usize,
    /// Accounts parked by an event that failed permanently.
    pub parked: usize,
    /// Legacy commit → visible in the cloud, for creates and updates made during the run.
    pub latency_ms: Latency,
    /// Legacy delete → resource deleted in the cloud (per cloudsim's audit log), for root
    /// rows deleted during the run: deletes are found by the producer's delete check.
    pub delete_latency_ms: Latency,
    /// The latency split by stage, for the same changes as `latency_ms`.
    pub stages: tandem_consumer::StagePercentiles,
    /// Found by the producer → acknowledged by the broker: part of the `deliver` stage.
    pub acknowledge_ms: tandem_event::Percentiles,
}

impl DemoReport {
    pub fn is_clean(&self) -> bool {
        self.drift == Drift::default() && self.duplicates == 0 && self.parked == 0
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// How often the demo's producer checks for deletes.
pub const DELETE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Runs producer cycles until one finds nothing, each late enough to include the differencing
/// check (run every `delete_check`), so the last deletes are published too.
pub async fn drain(producer: &Producer, delete_check: Duration) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(delete_check + Duration::from_millis(100)).await;
        if producer.cycle().await? == 0 {
            return Ok(());
        }
    }
}

/// Runs the demo and returns its report.
pub async fn run(options: DemoOptions) -> anyhow::Result<DemoReport> {
    let tempdir;
    let dir: &Path = match &options.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
        None => {
            tempdir = tempfile::tempdir().context("cannot create a temporary directory")?;
            tempdir.path()
        }
    };
    let say = |line: String| {
        if options.progress {
            eprintln!("tandem demo: {line}");
        }
    };
    let mut rng = domain::rng(options.seed);
    let accounts: Vec<String> = (1..=options.accounts)
        .map(|i| format!("acct-{i:04}"))
        .collect();

    // Legacy database, seeded.
    let legacy = domain::LegacyDb::create(&dir.join("legacy.db"))
        .await
        .context("cannot create the demo legacy database")?;
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }
    say(format!(
        "seeded {} accounts in {}",
        accounts.len(),
        dir.display()
    ));

    // Broker: the in-process mock cluster unless a real one is given.
    let suffix = format!("{}-{}", std::process::id(), tandem_event::now_millis());
    let topic = format!("tandem-demo-{suffix}");
    let mock;
    let brokers = match &options.brokers {
        Some(brokers) => {
            let settings = tandem_producer::TopicSettings::new(options.partitions);
            tandem_producer::ensure_topic(brokers, &topic, &settings, &options.kafka).await?;
            let dlq = tandem_producer::TopicSettings::new(1);
            tandem_producer::ensure_topic(brokers, &format!("{topic}.dlq"), &dlq, &options.kafka)
                .await?;
            brokers.clone()
        }
        None => {
            mock = rdkafka::mocking::MockCluster::new(1).context("cannot start the mock broker")?;
            mock.create_topic(&topic, options.partitions, 1)?;
            mock.create_topic(&format!("{topic}.dlq"), 1, 1)?;
            mock.bootstrap_servers()
        }
    };
    say(format!(
        "topic {topic}, consumer group {topic} (for tandem status --topic … --group …)"
    ));

    // cloudsim on a loopback port.
    let shutdown = CancellationToken::new();
    let cloud = CloudSim::bind(
        "127.0.0.1:0".parse()?,
        tandem_cloudsim::Options {
            database_url: format!("sqlite://{}", dir.join("cloud.db").display()),
            ..Default::default()
        },
    )
    .await?;
    let cloud_url = cloud.base_url();
    let cloud_task = tokio::spawn(cloud.serve(shutdown.child_token()));

    // Producer and consumer.
    let store_url = |name: &str| {
        options
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join(name).display()))
    };
    let sources_origin = Path::new("deploy/demo/sources.toml");
    let sources = Sources::parse(&domain::sources_for(&legacy.url), sources_origin)?;
    let producer = Arc::new(
        Producer::connect(
            &sources,
            sources_origin,
            tandem_producer::Options {
                brokers: brokers.clone(),
                topic: topic.clone(),
                store_url: store_url("producer.db"),
                interval: Duration::from_millis(100),
                delete_check_interval: DELETE_CHECK_INTERVAL,
                kafka: options.kafka.clone(),
                ..Default::default()
            },
        )
        .await?,
    );
    let mapping = Arc::new(Mapping::parse(
        domain::MAPPING,
        Path::new("deploy/demo/mapping.toml"),
    )?);
    mapping.check_columns(&producer.legacy().columns())?;
    let client = CloudClient::new(&cloud_url, Duration::from_secs(10), 8);
    let consumer_store = Store::open(&store_url("consumer.db")).await?;
    let engine = Engine::new(mapping.clone(), consumer_store.clone(), client.clone());
    let mut consumer_kafka = vec![("session.timeout.ms".to_owned(), "6000".to_owned())];
    consumer_kafka.extend(options.kafka.clone());
    let consumer = Arc::new(Consumer::new(
        engine,
        tandem_consumer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            group: format!("tandem-demo-{suffix}"),
            dead_letter_topic: format!("{topic}.dlq"),
            kafka: consumer_kafka,
            ..Default::default()
        },
    )?);
    let (pstats, cstats) = (producer.stats(), consumer.stats());
    if let Some(listen) = options.http {
        let metrics = crate::observe::recorder()?;
        let ready = cstats.clone();
        consumer.report_status();
        let app = crate::observe::routes(
            metrics,
            Arc::new(move || ready.ready.load(Ordering::Relaxed)),
            None,
        )
        .merge(crate::observe::page::routes(
            crate::observe::page::Page {
                store: consumer_store.clone(),
                stats: cstats.clone(),
                group: format!("tandem-demo-{suffix}"),
                topic: topic.clone(),
            },
            crate::observe::access::ApiToken::from_env()?,
        ));
        let what = (
            "--http-listen",
            "/metrics, /healthz, /readyz and the status page",
        );
        let bound = crate::observe::serve(listen, app, shutdown.child_token(), what).await?;
        say(format!(
            "metrics on http://{bound}/metrics, the status page on http://{bound}/"
        ));
    }
    let producer_stop = CancellationToken::new();
    let producer_task = tokio::spawn({
        let (producer, stop) = (producer.clone(), producer_stop.clone());
        async move { producer.run(stop).await }
    });
    let consumer_task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), shutdown.child_token());
        async move { consumer.run(stop).await }
    });

    // Start the clock once the consumer has its partitions, so latency measures the pipeline
    // rather than the consumer group's first join.
    let joining = Instant::now();
    while cstats.assigned_partitions.load(Ordering::Relaxed) == 0 {
        if consumer_task.is_finished() || joining.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the consumer did not join its group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The workload, with a progress line every second.
    let started = Instant::now();
    // Latency of the changes made while the pipeline runs; the seed rows predate it.
    let since = tandem_event::now_millis();
    cstats.stages.measure_from(since);
    pstats.acknowledge.measure_from(since);
    let interval = Duration::from_secs_f64(1.0 / f64::from(options.rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    let mut next_report = Duration::from_secs(1);
    let mut changes = 0u64;
    let mut deletes = Vec::new();
    let restoring: Vec<String> = {
        use rand::seq::IndexedRandom;
        accounts
            .choose_multiple(&mut rng, options.restores.min(accounts.len()))
            .cloned()
            .collect()
    };
    let (backup_at, restore_at) = (options.duration / 3, options.duration * 2 / 3);
    let (mut backed_up, mut restored) = (false, false);
    let bar = (options.progress && crate::progress::on_terminal())
        .then(|| crate::progress::Progress::new("demo: seconds of workload"));
    while started.elapsed() < options.duration {
        tick.tick().await;
        if !backed_up && started.elapsed() >= backup_at {
            backed_up = true;
            for account in &restoring {
                legacy.backup(account).await?;
            }
        }
        if !restored && started.elapsed() >= restore_at {
            restored = true;
            for account in &restoring {
                let rows = legacy.restore(account).await?;
                say(format!(
                    "restored {account} from its backup ({rows} rows, taken {} s ago)",
                    (restore_at - backup_at).as_secs()
                ));
            }
        }
        let account = &accounts[rng.random_range(0..accounts.len())];
        let change = legacy.random_change(account, &mut rng).await?;
        changes += change.rows;
        if let Some(deleted) = change.deleted {
            deletes.push((account.clone(), deleted));
        }
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let counts = format!(
                "changes {changes}  cycles {}  published {}  applied {}  dead-lettered {}",
                pstats.cycles.load(Ordering::Relaxed),
                pstats.published.load(Ordering::Relaxed),
                cstats.applied.load(Ordering::Relaxed),
                cstats.dead_lettered.load(Ordering::Relaxed),
            );
            match &bar {
                // On a terminal: a bar through the workload's duration, with the counts.
                Some(bar) => bar.update(
                    started.elapsed().as_secs(),
                    options.duration.as_secs(),
                    &counts,
                ),
                None => say(format!("{:>3}s  {counts}", started.elapsed().as_secs())),
            }
        }
    }

    if let Some(bar) = &bar {
        bar.done();
    }
    // Drain: the producer runs one more delete-check interval, so the last deletes are found
    // at the pace they would be in a longer run, and a last cycle publishes anything left;
    // then the consumer applies everything published.
    say(format!(
        "workload stopped after {changes} changes; the producer runs one more delete check"
    ));
    tokio::time::sleep(DELETE_CHECK_INTERVAL + Duration::from_millis(500)).await;
    producer_stop.cancel();
    producer_task.await??;
    producer.cycle().await?;
    let published = pstats.published.load(Ordering::Relaxed);
    say(format!(
        "the consumer applies what is left of {published} events"
    ));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = cstats.done();
        if done >= published {
            break;
        }
        if consumer_task.is_finished() || Instant::now() > deadline {
            shutdown.cancel();
            consumer_task.await??;
            anyhow::bail!("the consumer stopped after {done} of {published} events");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    say("verifying".into());
    let drift = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    let totals = Totals::of(&drift);
    for account in drift.iter().filter(|a| !a.is_clean()) {
        say(format!("drift in {}: {account:?}", account.account));
    }
    let parked = consumer_store.parked_accounts().await?.len();
    let delete_latency_ms = Latency::of(delete_latencies(&client, &deletes).await?);
    shutdown.cancel();
    consumer_task.await??;
    cloud_task.await??;

    Ok(DemoReport {
        accounts: accounts.len(),
        restored_accounts: if restored { restoring.len() } else { 0 },
        events_applied: cstats.applied.load(Ordering::Relaxed),
        drift: totals.drift,
        duplicates: totals.duplicates,
        parked,
        latency_ms: Latency {
            count: usize::try_from(cstats.stages.end_to_end.count()).unwrap_or(usize::MAX),
            p50: cstats.stages.end_to_end.at(0.50),
            p99: cstats.stages.end_to_end.at(0.99),
        },
        stages: cstats.stages.percentiles(),
        acknowledge_ms: pstats.acknowledge.percentiles(),
        delete_latency_ms,
    })
}

/// For each root row the workload deleted, the time from the legacy delete until cloudsim's
/// audit log shows its resource deleted. A row a restore brought back before its delete was
/// found has no sample.
async fn delete_latencies(
    cloud: &CloudClient,
    deletes: &[(String, domain::Deleted)],
) -> anyhow::Result<Vec<u64>> {
    let mut by_account: std::collections::BTreeMap<&str, Vec<&domain::Deleted>> =
        Default::default();
    for (account, deleted) in deletes {
        by_account.entry(account).or_default().push(deleted);
    }
    let mut samples = Vec::new();
    for (account, deleted) in by_account {
        let audit = cloud.audit(account).await?.unwrap_or_default();
        for d in deleted {
            // The first delete or create of the key in the cloud after the legacy delete: a
            // create first means the delete never reached the cloud (a restore brought the
            // row back) and the key was used again.
            let next = audit.iter().find(|e| {
                (e.op == "delete" || e.op == "create")
                    && e.collection == d.collection
                    && e.external_ref.as_deref() == Some(d.id.as_str())
                    && e.at_ms >= d.at_ms
            });
            if let Some(entry) = next.filter(|e| e.op == "delete") {
                samples.push(u64::try_from(entry.at_ms - d.at_ms).unwrap_or(0));
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 50);
        assert_eq!(percentile(&values, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
