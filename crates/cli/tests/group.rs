//! Consumer group members as users run them (`tandem consume`): killed with SIGKILL and
//! replaced again and again, restarted until the broker strands the last one, and stopped with
//! SIGTERM — losing and duplicating nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::ensure;
use rand::Rng;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, drift_report, seeded_legacy, sigterm, topic, until_clean, workload, Cloud, PgDatabase,
    Running, Seeded, Tandem,
};
use tandem_workload as domain;

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The tests that run a workload, a producer and several consumers take turns: two of them at
/// once overload a 2-core machine until latencies reach the tests' time limits.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_group_killed_and_replaced_lose_and_duplicate_nothing(
) -> anyhow::Result<()> {
    let _turn = HEAVY.lock().await;
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "crash", 12).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let mut producer =
        Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
    let member = |n: usize| {
        Running::spawn(
            tandem()
                .consume(
                    &mapping,
                    (&brokers, &topic),
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
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "restart", 10).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let log = dir.path().join("consumer.log");
    let consumer = || {
        Running::spawn(
            tandem()
                .consume(&mapping, (&brokers, &topic), &stores.url, &cloud.url, &log)
                .args(["--kafka", "session.timeout.ms=10000"])
                .env("TANDEM_LOG", "warn,tandem_consumer::run=info"),
        )
    };
    let producer =
        || Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_consumer_cleanly() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let dir = tempfile::tempdir()?;
    let cloud = Cloud::start(Default::default()).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let mut child = Running::spawn(
        tandem()
            .command()
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
    sigterm(&child)?;
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
