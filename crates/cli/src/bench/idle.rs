//! `tandem bench idle`: what an idle producer costs. 1,000 accounts are watched in a shared
//! legacy database that holds 100K rows, then again once it holds 10M (the other rows belong
//! to accounts not watched, as when a migration moves customers in slices): one round of
//! cycles at each size, and the producer's CPU while nothing changes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tokio_util::sync::CancellationToken;

use super::rig::{self, Bench, Stretch};

#[derive(Debug, Clone)]
pub(super) struct Setup {
    pub accounts: usize,
    pub rows_per_account: usize,
    /// Rows in the shared database for the second round, watched or not.
    pub total_rows: usize,
    /// How long the idle producer's CPU is watched.
    pub seconds: u64,
}

/// The goals: an idle producer under 2 % of a core, and a round that costs as much
/// per account at 10M rows as at 100K.
const GOAL_CPU_SHARE: f64 = 0.02;
const GOAL_COST_RATIO: f64 = 1.5;
/// Rounds measured at each size; the median is reported.
const ROUNDS: usize = 5;

/// One round of cycles over every account, as measured.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Round {
    ms: f64,
    legacy_queries: u64,
    store_queries: u64,
    legacy_rows_read: u64,
}

pub(super) async fn run(setup: Setup, rig: super::RigArgs) -> anyhow::Result<i32> {
    let bench = Bench::start("idle", rig, 16).await?;
    let (dir, broker) = (&bench.dir, &bench.broker);
    let say = |line: String| bench.say(line);

    let legacy = tandem_workload::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let watched = setup.accounts * setup.rows_per_account;
    insert_contacts(&legacy, "acct", 0, watched, setup.rows_per_account).await?;
    let accounts: Vec<String> = (1..=setup.accounts).map(account_name).collect();
    let listed = accounts
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = tandem_workload::sources_for(&legacy.url).replacen(
        "[legacy]\n",
        &format!("[legacy]\naccounts = [{listed}]\n"),
        1,
    );
    let origin = Path::new("bench-idle-sources.toml");
    let sources = Sources::parse(&text, origin)?;
    // The same database as a producer without an account list sees it: for the cost of
    // looking for accounts.
    let unlisted = Sources::parse(&tandem_workload::sources_for(&legacy.url), origin)?;
    let discovery = tandem_producer::legacy::Legacy::connect(&unlisted, origin).await?;
    let options = tandem_producer::Options {
        brokers: broker.brokers.clone(),
        topic: bench.topic.clone(),
        store_url: bench.store_url("producer.db"),
        ..Default::default()
    };
    // The rounds measured at both sizes do the same work, telling quiet accounts apart: no
    // differencing check falls due in them. The idle phase below runs with the default
    // interval, so the checks' cost is in its CPU share.
    let producer = Producer::connect(
        &sources,
        origin,
        tandem_producer::Options {
            delete_check_interval: Duration::from_secs(3600),
            ..options.clone()
        },
    )
    .await?;
    let started = Instant::now();
    let mut enrolled = 0;
    loop {
        let published = producer.cycle().await?;
        if published == 0 {
            break;
        }
        enrolled += published;
    }
    say(format!(
        "{} accounts of {} rows enrolled: {enrolled} events in {:.1} s",
        setup.accounts,
        setup.rows_per_account,
        started.elapsed().as_secs_f64()
    ));

    let small = median_round(&producer).await?;
    let small_discovery = timed(discovery.accounts()).await?;
    let others = setup.total_rows.saturating_sub(watched);
    let started = Instant::now();
    insert_contacts(&legacy, "other", watched, others, setup.rows_per_account).await?;
    say(format!(
        "{others} rows of accounts not watched added in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let large = median_round(&producer).await?;
    let large_discovery = timed(discovery.accounts()).await?;
    let ratio = large.ms / small.ms.max(0.001);

    // Idle: the producer runs as `tandem produce` would, with its default intervals.
    drop(producer);
    let producer = Arc::new(Producer::connect(&sources, origin, options).await?);
    let stop = CancellationToken::new();
    let stretch = Stretch::start();
    let task = tokio::spawn({
        let (producer, stop) = (producer.clone(), stop.clone());
        async move { producer.run(stop).await }
    });
    tokio::time::sleep(Duration::from_secs(setup.seconds)).await;
    let usage = stretch.usage();
    stop.cancel();
    task.await??;
    let cpu_share = usage.cpu_s / setup.seconds as f64;
    say(format!(
        "idle for {} s: {:.2} CPU seconds",
        setup.seconds, usage.cpu_s
    ));

    let out = json!({
        "scenario": "idle",
        "accounts": setup.accounts,
        "rows_per_account": setup.rows_per_account,
        "rows_100k": { "round": small, "discovery_ms": small_discovery },
        "rows_10m": { "rows": setup.total_rows, "round": large, "discovery_ms": large_discovery },
        "per_account_cost_ratio": rig::round3(ratio),
        "idle_seconds": setup.seconds,
        "cpu_share": rig::round3(cpu_share),
        "goal": format!("cpu_share < {GOAL_CPU_SHARE} and per_account_cost_ratio < {GOAL_COST_RATIO}"),
        "met": cpu_share < GOAL_CPU_SHARE && ratio < GOAL_COST_RATIO,
        "cpu_s": usage.cpu_s,
        "peak_rss_mb": usage.peak_rss_mb,
    });
    bench.print(&out)?;
    Ok(0)
}

fn account_name(i: usize) -> String {
    format!("acct-{i:05}")
}

/// `count` contacts after the first `offset` rows, `per_account` to an account named
/// `{prefix}-NNNNN`, each with its own version (no trigger runs for them).
async fn insert_contacts(
    legacy: &tandem_workload::LegacyDb,
    prefix: &str,
    offset: usize,
    count: usize,
    per_account: usize,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let per_account = per_account.max(1);
    legacy
        .execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO contacts (account_id, id, first_name, last_name, email, row_version, \
             changed_at_ms) SELECT '{prefix}-' || printf('%05d', 1 + (i - 1) / {per_account}), \
             i, 'First' || i, 'Last', 'c' || i || '@example.com', {offset} + i, 0 FROM n"
        ))
        .await?;
    legacy
        .execute(&format!(
            "UPDATE version_counter SET value = {} WHERE id = 1",
            offset + count
        ))
        .await?;
    Ok(())
}

/// The median of [`ROUNDS`] rounds of cycles over every account.
async fn median_round(producer: &Producer) -> anyhow::Result<Round> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (legacy, store) = (producer.legacy(), producer.store());
        let before = (legacy.queries(), store.queries(), legacy.rows_read());
        let started = Instant::now();
        producer.cycle().await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        rounds.push(Round {
            ms: rig::round3(ms),
            legacy_queries: legacy.queries() - before.0,
            store_queries: store.queries() - before.1,
            legacy_rows_read: legacy.rows_read() - before.2,
        });
    }
    rounds.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    Ok(rounds[ROUNDS / 2])
}

async fn timed<T>(
    work: impl std::future::Future<Output = tandem_producer::Result<T>>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    work.await?;
    Ok(rig::round3(started.elapsed().as_secs_f64() * 1000.0))
}
