//! `tandem workload`: the demo's legacy database, seeded and changed until stopped.

use std::time::Duration;

use anyhow::Context as _;

use crate::args::WorkloadArgs;
use crate::shutdown_on_signal;

pub(super) async fn run_workload(args: WorkloadArgs) -> anyhow::Result<i32> {
    use rand::Rng as _;
    let legacy = tandem_workload::LegacyDb::create(&args.legacy)
        .await
        .with_context(|| {
            format!(
                "cannot create the legacy database {}",
                args.legacy.display()
            )
        })?;
    let mut rng = tandem_workload::rng(args.seed);
    let accounts: Vec<String> = (1..=args.accounts.max(1))
        .map(|i| format!("acct-{i:04}"))
        .collect();
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }
    eprintln!(
        "seeded {} accounts in {}; changing about {} rows a second",
        accounts.len(),
        args.legacy.display(),
        args.rate
    );
    let stop = shutdown_on_signal();
    let started = std::time::Instant::now();
    let mut tick =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    let mut changes = 0u64;
    while !stop.is_cancelled() && args.duration.is_none_or(|d| started.elapsed() < d) {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let account = &accounts[rng.random_range(0..accounts.len())];
        changes += legacy.random_change(account, &mut rng).await?.rows;
    }
    eprintln!("made {changes} changes");
    Ok(0)
}
