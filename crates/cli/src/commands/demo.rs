//! `tandem demo`: the whole pipeline on the embedded default, then a verification.

use std::time::Duration;

use crate::args::DemoArgs;
use crate::demo::{self, DemoOptions};

pub(super) async fn run_demo(args: DemoArgs) -> anyhow::Result<i32> {
    let report = demo::run(DemoOptions {
        accounts: args.accounts.max(1),
        duration: Duration::from_secs(args.duration),
        rate: args.rate,
        brokers: args.brokers,
        store_url: args.store,
        partitions: args.partitions.max(1),
        dir: args.dir,
        progress: true,
        seed: args.seed,
        kafka: Vec::new(),
        restores: args.restores,
        http: args.http.listen,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} accounts ({} restored from a backup during the run), {} events applied; drift: {} missing, {} extra, {} different; {} duplicates; {} parked; latency p50 {} ms, p99 {} ms; deletes p50 {} ms, p99 {} ms",
            report.accounts,
            report.restored_accounts,
            report.events_applied,
            report.drift.missing,
            report.drift.extra,
            report.drift.different,
            report.duplicates,
            report.parked,
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.delete_latency_ms.p50,
            report.delete_latency_ms.p99,
        );
        let s = &report.stages;
        println!(
            "p99 by stage: detect {} ms, deliver {} ms (broker acknowledgement {} ms), apply {} ms",
            s.detect_ms.p99, s.deliver_ms.p99, report.acknowledge_ms.p99, s.apply_ms.p99,
        );
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}
