//! The `tandem` binary as users run it: a producer killed with SIGKILL again and again during a
//! busy workload loses no change; consumers of one group killed and replaced again and again
//! lose and duplicate nothing; a flaky, slow cloud API changes nothing in the outcome; and
//! `tandem publish` takes JSON lines with bad ones mixed in.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rand::Rng;
use tandem_cli::verify::verify_accounts;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::{AccountDrift, Totals};
use tandem_consumer::{CloudClient, Consumer, Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;
use tandem_testkit::{brokers, topic, Cloud, PgDatabase, Reader};
use tandem_workload as domain;
use tokio_util::sync::CancellationToken;

const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

/// The tests that run a workload, a producer and several consumers take turns: two of them at
/// once overload a 2-core machine until latencies reach the tests' time limits.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn produce(sources: &Path, brokers: &str, topic: &str, store: &str) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(sources.with_file_name("producer.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut command = Command::new(TANDEM);
    command
        .args(["produce", "--sources"])
        .arg(sources)
        .args(["--brokers", brokers, "--topic", topic, "--store", store])
        .args([
            "--interval",
            "50ms",
            "--lease-ttl",
            "1s",
            "--delete-check-interval",
            "1s",
        ])
        .env("TANDEM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    command
}

fn log_to(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// `tandem consume` as a member of `group`, logging to `log`.
fn consume(
    mapping: &Path,
    brokers: &str,
    topic: &str,
    store: &str,
    cloud: &str,
    log: &Path,
) -> Command {
    let mut command = Command::new(TANDEM);
    command
        .arg("consume")
        .arg("--mapping")
        .arg(mapping)
        .args(["--brokers", brokers, "--topic", topic, "--store", store])
        .args(["--cloud-url", cloud, "--group", &format!("{topic}-group")])
        .args(["--kafka", "session.timeout.ms=6000"])
        .env("TANDEM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log_to(log));
    command
}

/// A legacy database of `n` seeded accounts, and the sources file describing it.
async fn legacy_accounts(
    dir: &Path,
    prefix: &str,
    n: usize,
) -> anyhow::Result<(domain::LegacyDb, Vec<String>, std::path::PathBuf)> {
    let legacy = domain::LegacyDb::create(&dir.join("legacy.db")).await?;
    let accounts: Vec<String> = (1..=n).map(|i| format!("{prefix}-{i:02}")).collect();
    let mut rng = domain::rng(3);
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }
    let sources = dir.join("sources.toml");
    std::fs::write(&sources, domain::sources_for(&legacy.url))?;
    Ok((legacy, accounts, sources))
}

/// Random changes across `accounts` for `duration`; the number of rows changed.
fn workload(
    legacy: &domain::LegacyDb,
    accounts: &[String],
    duration: Duration,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    let (legacy, accounts) = (legacy.clone(), accounts.to_vec());
    tokio::spawn(async move {
        let mut rng = domain::rng(4);
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

/// Waits until the cloud matches the legacy data for every account, with no duplicate
/// creates in the audit log; returns the drift if it does not get there in time.
async fn until_clean(
    sources: &Path,
    cloud: &CloudClient,
    accounts: &[String],
    within: Duration,
) -> anyhow::Result<Vec<AccountDrift>> {
    let mapping = Mapping::parse(domain::MAPPING, Path::new("mapping.toml"))?;
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
async fn drift_report(
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

/// A child process killed when dropped, so a test that fails early leaves nothing running.
struct Running(std::process::Child);

impl Running {
    fn spawn(command: &mut Command) -> anyhow::Result<Running> {
        Ok(Running(command.spawn()?))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // An exited and reaped child is not signalled again.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Running {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

fn sigterm(child: &std::process::Child) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill -TERM failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_group_killed_and_replaced_lose_and_duplicate_nothing(
) -> anyhow::Result<()> {
    let _turn = HEAVY.lock().await;
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let (legacy, accounts, sources) = legacy_accounts(dir.path(), "crash", 12).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let mut producer = Running::spawn(&mut produce(&sources, &brokers, &topic, &stores.url))?;
    let member = |n: usize| {
        Running::spawn(
            consume(
                &mapping,
                &brokers,
                &topic,
                &stores.url,
                &cloud.url,
                &dir.path().join(format!("consumer-{n}.log")),
            )
            // Assignments and lease hand-overs, to tell what happened if the test fails.
            .env("TANDEM_LOG", "warn,tandem_consumer::run=info"),
        )
    };

    // Three members of one group; during a busy workload one of them, at random, is killed
    // with SIGKILL and replaced by a new member, again and again: every kill and every
    // start moves partitions between members.
    let mut members = [member(0)?, member(1)?, member(2)?];
    let busy = workload(&legacy, &accounts, Duration::from_secs(20));
    let mut rng = rand::rng();
    let mut kills = 0;
    while !busy.is_finished() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        let victim = rng.random_range(0..members.len());
        members[victim].kill()?;
        members[victim].wait()?;
        kills += 1;
        members[victim] = member(kills + 2)?;
        eprintln!(
            "{} killed a member; consumer-{} replaces it",
            humantime::format_rfc3339_micros(std::time::SystemTime::now()),
            kills + 2
        );
    }
    let changes = busy.await??;
    ensure!(kills >= 10, "only {kills} kills");
    ensure!(changes > 300, "only {changes} changes");

    // Then, once the killed members' sessions (6 s) have expired, one member leaves cleanly
    // (SIGTERM) and two finish. The leave makes the group rebalance among live members only:
    // Tansu 0.6's coordinator does not make the survivors rebalance when a member's session
    // merely expires, so partitions it last gave to a killed member would stay unread.
    tokio::time::sleep(Duration::from_secs(8)).await;
    sigterm(&members[0])?;
    members[0].wait()?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    let totals = Totals::of(&drift);
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            for line in std::fs::read_to_string(&path).unwrap_or_default().lines() {
                logs.push_str(&format!("{name}: {line}\n"));
            }
        }
    }
    if totals != Totals::default() {
        let report = drift_report(&drift, &client, dir, &stores.url).await?;
        anyhow::bail!("after {kills} consumer kills: {totals:?}\n{report}\n{logs}");
    }
    ensure!(!logs.contains("dead-lettered"), "{logs}");
    eprintln!("{kills} consumer kills during {changes} changes: zero drift, zero duplicates");
    for child in members.iter_mut().skip(1).chain([&mut producer]) {
        sigterm(child)?;
        child.wait()?;
    }
    cloud.stop().await?;
    stores.drop().await
}

/// A single consumer and the producer, both killed with SIGKILL and restarted every second or
/// so during a busy workload. Killed members linger in the broker's group until their
/// sessions (10 s) expire; Tansu's coordinator then hands the last, live member no partitions
/// and never rebalances again (3 of 3 runs here; without the group watchdog the test fails
/// with hundreds of documents missing three minutes later). The consumer must notice it is
/// stranded, rejoin on its own and catch up: zero drift, no duplicate create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_restarted_again_and_again_recovers_by_itself() -> anyhow::Result<()> {
    let _turn = HEAVY.lock().await;
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let (legacy, accounts, sources) = legacy_accounts(dir.path(), "restart", 10).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let log = dir.path().join("consumer.log");
    let consumer = || {
        Running::spawn(
            consume(&mapping, &brokers, &topic, &stores.url, &cloud.url, &log)
                .args(["--kafka", "session.timeout.ms=10000"])
                .env("TANDEM_LOG", "warn,tandem_consumer::run=info"),
        )
    };
    let producer = || Running::spawn(&mut produce(&sources, &brokers, &topic, &stores.url));
    let busy = workload(&legacy, &accounts, Duration::from_secs(30));
    let mut rng = rand::rng();
    let (mut member, mut publisher) = (consumer()?, producer()?);
    let mut kills = 0;
    while !busy.is_finished() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
        member.kill()?;
        member.wait()?;
        publisher.kill()?;
        publisher.wait()?;
        kills += 1;
        member = consumer()?;
        publisher = producer()?;
    }
    let changes = busy.await??;
    ensure!(kills >= 8, "only {kills} kills of each");
    ensure!(changes > 300, "only {changes} changes");
    // The last consumer and producer are left alone: the pipeline must recover by itself.
    let settling = Instant::now();
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(180)).await?;
    let recovery = settling.elapsed();
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let rejoins = logs.matches("leaving and rejoining the group").count();
    if Totals::of(&drift) != Totals::default() {
        let report = drift_report(&drift, &client, dir, &stores.url).await?;
        anyhow::bail!(
            "after {kills} kills of each: {:?}\n{report}\n{logs}",
            Totals::of(&drift)
        );
    }
    eprintln!(
        "{kills} kills of the consumer and of the producer during {changes} changes: zero drift \
         {:.1} s after the last restart; the last consumer rejoined its group {rejoins} times",
        recovery.as_secs_f64()
    );
    for child in [&mut member, &mut publisher] {
        sigterm(child)?;
        child.wait()?;
    }
    cloud.stop().await?;
    stores.drop().await
}

/// `tandem verify` with the consumer's store shows parked accounts with their reasons beside
/// the drift they explain, and `tandem accounts resume --all` brings every one of them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_shows_parked_accounts_and_resume_all_brings_them_back() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(tandem_cloudsim::Faults {
        reject_accounts: vec!["parked-02".into(), "parked-03".into()],
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let (_legacy, accounts, sources) = legacy_accounts(dir.path(), "parked", 4).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let _producer = Running::spawn(&mut produce(&sources, &brokers, &topic, &stores.url))?;
    let log = dir.path().join("consumer.log");
    let _consumer = Running::spawn(&mut consume(
        &mapping,
        &brokers,
        &topic,
        &stores.url,
        &cloud.url,
        &log,
    ))?;
    let tandem = |args: &[&str]| -> anyhow::Result<(i32, String, String)> {
        let out = Command::new(TANDEM)
            .args(args)
            .env_remove("TANDEM_CONSUMER_STORE")
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (sources_arg, mapping_arg) = (sources.display().to_string(), mapping.display().to_string());
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--sources",
            &sources_arg,
            "--mapping",
            &mapping_arg,
            "--cloud-url",
            &cloud.url,
        ];
        args.extend_from_slice(extra);
        tandem(&args)
    };

    // The two rejected accounts get parked; the others reach the cloud.
    let deadline = Instant::now() + Duration::from_secs(60);
    let store = loop {
        // The consumer makes its store when it starts.
        if let Ok(store) = Store::open_existing(&stores.url).await {
            if store.parked_accounts().await?.len() == 2 {
                break store;
            }
        }
        ensure!(Instant::now() < deadline, "the accounts were not parked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The other two accounts are in step once their enrolment is applied.
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let good = ["parked-01".to_owned(), "parked-04".to_owned()];
    let drift = until_clean(&sources, &client, &good, Duration::from_secs(60)).await?;
    ensure!(Totals::of(&drift) == Totals::default(), "{drift:#?}");
    let (code, out, err) = verify(&["--store", &stores.url, "--json"])?;
    ensure!(code == 1, "exit {code}: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        report["accounts"] == 4 && report["parked"] == 2 && report["clean"] == false,
        "{report}"
    );
    let listed = report["by_account"].as_array().cloned().unwrap_or_default();
    ensure!(
        listed.len() == 2,
        "only the parked accounts are listed: {report}"
    );
    for entry in &listed {
        ensure!(
            entry["parked"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("422"))
                && entry["drift"]["missing"].as_u64() > Some(0)
                && entry.get("keys").is_none(),
            "{entry}"
        );
    }
    let (_, table, _) = verify(&["--store", &stores.url, "--keys"])?;
    ensure!(
        table.contains("2 parked accounts")
            && table.contains("parked-02: parked")
            && table.contains("missing: contact/"),
        "{table}"
    );
    let (_, without_store, _) = verify(&[])?;
    ensure!(without_store.contains("give --store"), "{without_store}");

    // An account that is not parked is named; then the cause is fixed and all are resumed.
    let (code, _, err) = tandem(&["accounts", "resume", "parked-01", "--store", &stores.url])?;
    ensure!(
        code == 1 && err.contains("parked-01 is not parked"),
        "{err}"
    );
    cloud.set_faults(Default::default()).await;
    let (code, out, err) = tandem(&["accounts", "resume", "--all", "--store", &stores.url])?;
    ensure!(
        code == 0 && out.contains("parked-02") && out.contains("parked-03"),
        "exit {code}: {out}{err}"
    );
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(60)).await?;
    ensure!(Totals::of(&drift) == Totals::default(), "{drift:#?}");
    ensure!(store.parked_accounts().await?.is_empty());
    let (code, out, err) = verify(&["--store", &stores.url, "--json"])?;
    ensure!(code == 0, "exit {code}: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        report["clean"] == true
            && report["parked"] == 0
            && report["drift"] == serde_json::json!({"missing": 0, "extra": 0, "different": 0})
            && report["duplicates"] == 0,
        "{report}"
    );

    // Commands that only read a store never create one.
    let nowhere = dir.path().join("no-such-store.db");
    let url = format!("sqlite://{}", nowhere.display());
    let (code, _, err) = tandem(&["accounts", "status", "--store", &url])?;
    ensure!(
        code != 0 && err.contains("no consumer store") && !nowhere.exists(),
        "exit {code}: {err}"
    );
    cloud.stop().await?;
    stores.drop().await
}

/// PostgreSQL's notices (every start's migration check says "relation … already exists,
/// skipping") are not logged at the default level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_postgres_store_logs_no_notices() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let stores = PgDatabase::create().await?;
    let dir = tempfile::tempdir()?;
    let (_legacy, _accounts, sources) = legacy_accounts(dir.path(), "quiet", 1).await?;
    for run in ["first", "second"] {
        let out = produce(&sources, &brokers, &topic, &stores.url)
            .arg("--once")
            .env_remove("TANDEM_LOG")
            .stderr(Stdio::piped())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "{run} run: {stderr}");
        ensure!(
            !stderr.contains("already exists") && !stderr.contains("notice"),
            "{run} run: {stderr}"
        );
    }
    stores.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_slow_cloud_api_changes_nothing_in_the_outcome() -> anyhow::Result<()> {
    flaky_cloud_run("flaky", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotency_keys_a_flaky_cloud_api_gets_no_duplicates() -> anyhow::Result<()> {
    flaky_cloud_run("lookup", &["--create-mode", "lookup"]).await
}

/// Consumers against a cloud API answering 10% of requests 503 and 5% 429, dropping the
/// connection after applying 5% of changes, and slow: the outcome must not differ.
async fn flaky_cloud_run(prefix: &str, consume_args: &[&str]) -> anyhow::Result<()> {
    let _turn = HEAVY.lock().await;
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let faults = tandem_cloudsim::Faults {
        error_rate: 0.10,
        rate_limit_rate: 0.05,
        retry_after_secs: 1,
        latency_ms: 5,
        latency_jitter_ms: 40,
        drop_after_apply_rate: 0.05,
        ..Default::default()
    };
    let cloud = Cloud::start(faults).await?;
    let dir = tempfile::tempdir()?;
    let (legacy, accounts, sources) = legacy_accounts(dir.path(), prefix, 10).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let mut producer = Running::spawn(&mut produce(&sources, &brokers, &topic, &stores.url))?;
    let log = |n: usize| dir.path().join(format!("consumer-{n}.log"));
    let member = |n: usize| {
        Running::spawn(
            consume(&mapping, &brokers, &topic, &stores.url, &cloud.url, &log(n))
                .args(consume_args)
                // The cloud client's retries, so the test can tell the faults reached it, and
                // each event applied, to tell what happened if the test fails.
                .env("TANDEM_LOG", "warn,tandem_consumer=debug"),
        )
    };
    // Two members of one group, so their rebalances meet the faults too.
    let mut members = [member(0)?, member(1)?];
    let changes = workload(&legacy, &accounts, Duration::from_secs(12)).await??;
    ensure!(changes > 300, "only {changes} changes");
    // Verification reads the cloud through the same API: it reads it once the run's faults
    // are over, and gives the consumers time to retry what the faults held back.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cloud.set_faults(Default::default()).await;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    let totals = Totals::of(&drift);
    let logs: String = (0..members.len())
        .map(|n| std::fs::read_to_string(log(n)).unwrap_or_default())
        .collect();
    if totals != Totals::default() || logs.contains("dead-lettered") {
        let report = drift_report(&drift, &client, dir, &stores.url).await?;
        anyhow::bail!("{totals:?}, or a message was dead-lettered\n{report}");
    }
    ensure!(
        logs.contains("retrying cloud call"),
        "the faults never reached the consumer"
    );
    for child in members.iter_mut().chain([&mut producer]) {
        sigterm(child)?;
        child.wait()?;
    }
    cloud.stop().await?;
    stores.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_again_and_again_loses_no_change() -> anyhow::Result<()> {
    let _turn = HEAVY.lock().await;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let legacy = domain::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let accounts: Vec<String> = (1..=10).map(|i| format!("kill-{i:02}")).collect();
    let mut rng = domain::rng(3);
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }
    let sources_path = dir.path().join("sources.toml");
    std::fs::write(&sources_path, domain::sources_for(&legacy.url))?;

    // A busy workload for a while ...
    let workload = tokio::spawn({
        let (legacy, accounts) = (legacy.clone(), accounts.clone());
        async move {
            let mut rng = domain::rng(4);
            let started = Instant::now();
            let mut changes = 0u64;
            while started.elapsed() < Duration::from_secs(12) {
                let account = &accounts[rng.random_range(0..accounts.len())];
                changes += legacy.random_change(account, &mut rng).await?.rows;
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
            anyhow::Ok(changes)
        }
    });
    // ... while the producer is killed with SIGKILL at random moments.
    let mut kills = 0;
    let mut rng = rand::rng();
    while !workload.is_finished() {
        let mut child = Running::spawn(&mut produce(&sources_path, &brokers, &topic, &stores.url))?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        child.kill()?;
        child.wait()?;
        kills += 1;
    }
    let changes = workload.await??;
    ensure!(kills >= 8, "only {kills} kills");
    ensure!(changes > 300, "only {changes} changes");

    // Then it may finish: once the last killed instance's leases expired, one cycle publishes
    // the rest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = produce(&sources_path, &brokers, &topic, &stores.url)
        .arg("--once")
        .status()?;
    ensure!(status.success(), "the final producer run failed: {status}");

    let mapping = Arc::new(Mapping::parse(domain::MAPPING, Path::new("mapping.toml"))?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let engine = Engine::new(
        mapping.clone(),
        Store::open(&stores.url).await?,
        client.clone(),
    );
    let consumer = Arc::new(Consumer::new(
        engine,
        tandem_consumer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            group: format!("{topic}-group"),
            dead_letter_topic: format!("{topic}.dlq"),
            kafka: vec![("session.timeout.ms".into(), "6000".into())],
            ..Default::default()
        },
    )?);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run(stop).await }
    });
    let origin = Path::new("sources.toml");
    let legacy_reader = Legacy::connect(&Sources::load(&sources_path)?, origin).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let drift = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let drift = verify_accounts(&legacy_reader, &mapping, &client, &accounts).await?;
        if Totals::of(&drift) == Totals::default() || Instant::now() > deadline {
            break drift;
        }
    };
    if Totals::of(&drift) != Totals::default() {
        explain_drift(&drift, &legacy_reader, &client, &brokers, &topic).await?;
    }
    ensure!(
        Totals::of(&drift) == Totals::default(),
        "drift after {kills} kills ({} events applied, consumer finished early: {}): {drift:#?}",
        consumer.stats().applied.load(Ordering::Relaxed),
        task.is_finished()
    );
    ensure!(consumer.stats().dead_lettered.load(Ordering::Relaxed) == 0);
    eprintln!(
        "{kills} kills, {changes} changes, {} events applied, zero drift",
        consumer.stats().applied.load(Ordering::Relaxed)
    );
    stop.cancel();
    task.await??;
    cloud.stop().await?;
    stores.drop().await
}

/// For a failure message: the first drifted account's legacy rows, cloud documents and stream
/// (with each event's data), as the consumer saw it.
async fn explain_drift(
    drift: &[tandem_consumer::verify::AccountDrift],
    legacy: &Legacy,
    cloud: &CloudClient,
    brokers: &str,
    topic: &str,
) -> anyhow::Result<()> {
    let Some(bad) = drift.iter().find(|a| !a.is_clean()) else {
        return Ok(());
    };
    let account = bad.account.as_str();
    eprintln!("drift of {account}: {bad:?}");
    for (table, rows) in tandem_cli::verify::legacy_rows(legacy, account).await? {
        for (key, row) in rows {
            eprintln!("legacy {table}/{key}: {row:?}");
        }
    }
    for collection in ["contacts", "properties", "leases"] {
        for doc in cloud.list(account, collection).await.unwrap_or_default() {
            eprintln!("cloud {collection}: {doc}");
        }
    }
    let reader = Reader::new(brokers, topic)?;
    while let Ok(Ok(batch)) = tokio::time::timeout(Duration::from_secs(5), reader.take(1)).await {
        for (key, e) in batch {
            if key == account {
                eprintln!(
                    "stream: {} {}/{} version {} epoch {} snapshot {:?} detected {} data {:?}",
                    e.kind,
                    e.entity_type,
                    e.entity_id,
                    e.version,
                    e.epoch,
                    e.snapshot_id,
                    e.detected_at,
                    e.data
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_takes_json_lines_and_names_the_bad_ones() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("detections.jsonl");
    std::fs::write(
        &file,
        [
            r#"{"kind":"CREATED","entity_type":"contacts","entity_id":"1","version":1,"data":{"email":"a@example.com"}}"#,
            r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","data":{"email":"b@example.com"}}"#,
            r#"{"account_id":"globex","kind":"DELETED","entity_type":"contacts","entity_id":"9","version":3}"#,
            r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","version":2,"data":{"email":["x"]}}"#,
            r#"{"kind":"UPDATED","entity_type":"contacts","entity_id":"1","version":4,"data":{"email":"c@example.com"}}"#,
        ]
        .join("\n"),
    )?;
    let output = Command::new(TANDEM)
        .arg("publish")
        .arg(&file)
        .args([
            "--account",
            "acme",
            "--brokers",
            &brokers,
            "--topic",
            &topic,
        ])
        .arg("--store")
        .arg(format!("sqlite://{}", dir.path().join("p.db").display()))
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.code() == Some(1),
        "exit {:?}: {stderr}",
        output.status
    );
    ensure!(stderr.contains("line 2: version: is required"), "{stderr}");
    ensure!(stderr.contains("line 4: data.email:"), "{stderr}");
    ensure!(
        stderr.contains("published 3 detections, rejected 2"),
        "{stderr}"
    );
    let events = Reader::new(&brokers, &topic)?.take(3).await?;
    let got: Vec<(String, String, i64)> = events
        .iter()
        .map(|(key, e)| {
            (
                key.clone(),
                format!("{} {}", e.kind, e.entity_id),
                e.version,
            )
        })
        .collect();
    let want = [
        ("acme".to_owned(), "CREATED 1".to_owned(), 1),
        ("globex".to_owned(), "DELETED 9".to_owned(), 3),
        ("acme".to_owned(), "UPDATED 1".to_owned(), 4),
    ];
    ensure!(got == want, "{got:?}");
    let _ = std::fs::remove_file(&file).context("cleanup");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_consumer_cleanly() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let dir = tempfile::tempdir()?;
    let cloud = Cloud::start(Default::default()).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let mut child = Running::spawn(
        Command::new(TANDEM)
            .arg("consume")
            .arg("--mapping")
            .arg(&mapping)
            .args([
                "--brokers",
                &brokers,
                "--topic",
                &topic,
                "--cloud-url",
                &cloud.url,
            ])
            .arg("--store")
            .arg(format!("sqlite://{}", dir.path().join("c.db").display()))
            .env("TANDEM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )?;
    // Let it join its group, then ask it to stop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        child.try_wait()?.is_none(),
        "the consumer exited on its own"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    ensure!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        ensure!(
            Instant::now() < deadline,
            "still running 30 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut log = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut log)?;
    }
    ensure!(exit.success(), "exit {exit}: {log}");
    ensure!(log.contains("consumer stopped"), "{log}");
    cloud.stop().await
}
