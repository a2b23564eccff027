//! `tandem replay`: an account rebuilt from the topic into a target, with progress, ending
//! with a verification of the target against the legacy data.

use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::replay::{Replay, ReplayOptions, ReplayProgress};
use tandem_consumer::verify::Drift;
use tandem_consumer::{Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;

use crate::args::ReplayArgs;
use crate::progress::Progress;
use crate::shutdown_on_signal;

/// The replay's closing JSON line.
#[derive(Debug, Serialize)]
struct ReplayReport {
    account: String,
    into: String,
    /// The account's events applied (or found applied by an earlier run).
    events: u64,
    /// Cloud resources the target holds for the account.
    resources: u64,
    seconds: f64,
    /// Messages of the partition read, and the share of the partition that is.
    read: u64,
    share_read: f64,
    drift: Drift,
    duplicates: usize,
    /// In place: cloud documents the rebuilt state no longer had, deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<u64>,
}

pub(super) async fn run_replay(args: ReplayArgs) -> anyhow::Result<i32> {
    let mapping = Arc::new(Mapping::load(&args.mapping)?);
    let sources = Sources::load(&args.sources)?;
    let legacy = Legacy::connect(&sources, &args.sources).await?;
    mapping.check_columns(&legacy.columns())?;
    crate::kafka::check(&args.kafka, super::produce::STARTUP_CHECK).await?;
    let store = Store::open(&args.store.url).await?;
    let cloud = args
        .cloud
        .client(args.cloud_timeout, args.cloud_attempts.max(1))
        .await?;
    if args.in_place {
        let target = store.target_of(&args.account).await?;
        anyhow::ensure!(
            target == args.into,
            "--in-place rebuilds {}'s live target, {target}: give --into {target}",
            args.account
        );
    }
    // Starting over or in place, the replay finds documents by their reference itself.
    let engine = Engine::new(mapping.clone(), store.clone(), cloud.clone());
    let replay = Replay::new(
        engine,
        ReplayOptions {
            kafka: tandem_consumer::Options {
                brokers: args.kafka.brokers.clone(),
                topic: args.kafka.topic.clone(),
                kafka: args.kafka.properties()?,
                lease_ttl: args.lease_ttl,
                schemas: args.registry.schemas(args.schema_ids.as_deref())?,
                ..Default::default()
            },
            account: args.account.clone(),
            into: args.into.clone(),
            from: args.from.0,
            restart: args.restart,
            partition: args.partition,
            in_place: args.in_place.then(|| args.group.clone()),
        },
    )?;
    let stop = shutdown_on_signal();
    let progress = Progress::new("replay: offsets");
    let (report, deleted) = if args.in_place {
        replay.run_in_place(&stop, |p| show(&progress, p)).await
    } else {
        replay
            .run(&stop, |p| show(&progress, p))
            .await
            .map(|r| (r, 0))
    }
    .with_context(|| format!("replay of {} into {}", args.account, args.into))?;
    progress.done();
    if stop.is_cancelled() {
        eprintln!(
            "tandem: replay of {} stopped at offset {}; run the same command again to carry on",
            args.account, report.progress.offset
        );
        return Ok(130);
    }
    eprintln!(
        "replayed {} events of {} into {} ({} messages of partition {} read) in {:.1} s; verifying",
        report.progress.events,
        args.account,
        args.into,
        report.progress.read,
        report.partition,
        report.seconds
    );
    let pairs = [(args.account.clone(), args.into.clone())];
    let drift = crate::verify::verify_targets(&legacy, &mapping, &cloud, &pairs)
        .await
        .with_context(|| format!("cannot verify against {}", args.cloud.url))?;
    let verdict = &drift[0];
    let resources = store.resource_count(&args.into).await?;
    let out = ReplayReport {
        account: args.account,
        into: args.into,
        events: report.progress.events,
        resources,
        seconds: (report.seconds * 100.0).round() / 100.0,
        read: report.progress.read,
        share_read: (report.share_read * 1000.0).round() / 1000.0,
        drift: verdict.counts(),
        duplicates: verdict.duplicates.len(),
        deleted: args.in_place.then_some(deleted),
    };
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{} into {}: {} events, {} resources, {:.1} s; drift: {} missing, {} extra, {} different; {} duplicates",
            out.account,
            out.into,
            out.events,
            out.resources,
            out.seconds,
            out.drift.missing,
            out.drift.extra,
            out.drift.different,
            out.duplicates
        );
    }
    let clean = out.drift == Drift::default() && out.duplicates == 0;
    Ok(if clean { 0 } else { 1 })
}

/// A replay's progress: the partition's offsets read, with the events found and applied.
fn show(progress: &Progress, p: &ReplayProgress) {
    let total = u64::try_from(p.end - p.start).unwrap_or(0);
    let done = u64::try_from(p.offset - p.start).unwrap_or(0);
    let message = format!(
        "{} read, {} events, {} applied",
        p.read, p.events, p.applied
    );
    progress.update(done, total, &message);
}
