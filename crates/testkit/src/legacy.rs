//! The demo's legacy data for tests: seeded accounts, a workload changing them, and waiting
//! until the cloud matches them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tandem_cli::verify::verify_accounts;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::{AccountDrift, Totals};
use tandem_consumer::CloudClient;
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;
use tandem_workload::LegacyDb;

/// A legacy database of seeded accounts and the sources file describing it.
#[derive(Debug)]
pub struct Seeded {
    pub legacy: LegacyDb,
    pub accounts: Vec<String>,
    pub sources: PathBuf,
}

/// `n` accounts named `<prefix>-01`… seeded in `dir/legacy.db`, with `dir/sources.toml`.
pub async fn seeded_legacy(dir: &Path, prefix: &str, n: usize) -> anyhow::Result<Seeded> {
    let legacy = LegacyDb::create(&dir.join("legacy.db")).await?;
    let accounts: Vec<String> = (1..=n).map(|i| format!("{prefix}-{i:02}")).collect();
    let mut rng = tandem_workload::rng(3);
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }
    let sources = dir.join("sources.toml");
    std::fs::write(&sources, tandem_workload::sources_for(&legacy.url))?;
    Ok(Seeded {
        legacy,
        accounts,
        sources,
    })
}

/// Random changes across `accounts` for `duration`, one every 8 ms or so; the rows changed.
pub fn workload(
    legacy: &LegacyDb,
    accounts: &[String],
    duration: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    let (legacy, accounts) = (legacy.clone(), accounts.to_vec());
    tokio::spawn(async move {
        let mut rng = tandem_workload::rng(4);
        let started = Instant::now();
        let mut changes = 0u64;
        while started.elapsed() < duration {
            let account = &accounts[rng.random_range(0..accounts.len())];
            changes += legacy.random_change(account, &mut rng).await?.rows;
            tokio::time::sleep(Duration::from_millis(8)).await;
        }
        anyhow::Ok(changes)
    })
}

/// Each account's verdict: the legacy data at `sources`, through the demo's mapping, against
/// the cloud.
pub async fn verify_all(
    sources: &Path,
    cloud: &CloudClient,
    accounts: &[String],
) -> anyhow::Result<Vec<AccountDrift>> {
    let mapping = Mapping::parse(tandem_workload::MAPPING, Path::new("mapping.toml"))?;
    let legacy = Legacy::connect(&Sources::load(sources)?, Path::new("sources.toml")).await?;
    verify_accounts(&legacy, &mapping, cloud, accounts).await
}

/// Waits until the cloud matches the legacy data for every account, with no duplicate
/// creates in the audit log; returns the drift if it does not get there `within`.
pub async fn until_clean(
    sources: &Path,
    cloud: &CloudClient,
    accounts: &[String],
    within: Duration,
) -> anyhow::Result<Vec<AccountDrift>> {
    let mapping = Mapping::parse(tandem_workload::MAPPING, Path::new("mapping.toml"))?;
    let legacy = Legacy::connect(&Sources::load(sources)?, Path::new("sources.toml")).await?;
    let deadline = Instant::now() + within;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let drift = verify_accounts(&legacy, &mapping, cloud, accounts).await?;
        if Totals::of(&drift) == Totals::default() || Instant::now() > deadline {
            return Ok(drift);
        }
    }
}

/// For a failure message: each drifted account's verdict with the cloud's audit log of the
/// root keys concerned, and where the test's files (logs, legacy database) and store are kept.
pub async fn drift_report(
    drift: &[AccountDrift],
    cloud: &CloudClient,
    dir: tempfile::TempDir,
    store: &str,
) -> anyhow::Result<String> {
    let mut report = format!("files kept in {}; store {store}\n", dir.keep().display());
    for account in drift.iter().filter(|a| !a.is_clean()) {
        report.push_str(&format!("{account:?}\n"));
        let labels = [
            &account.missing,
            &account.extra,
            &account.different,
            &account.duplicates,
        ];
        // Labels are `resource/key` (`collection/key +n` for duplicates).
        let keys: Vec<&str> = labels
            .into_iter()
            .flatten()
            .filter_map(|label| label.split('/').nth(1))
            .filter_map(|key| key.split(' ').next())
            .collect();
        for entry in cloud.audit(&account.account).await?.unwrap_or_default() {
            if entry
                .external_ref
                .as_deref()
                .is_some_and(|r| keys.contains(&r))
            {
                report.push_str(&format!("audit: {entry:?}\n"));
            }
        }
    }
    Ok(report)
}
