//! What an operator sees of a running consumer (`tandem consume --http-listen`): Prometheus
//! metrics that count what the run did, health and readiness, `tandem status`, and the status
//! page driven in headless Chromium — a parked account shown with its reason and resumed from
//! the page.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use tandem_consumer::CloudClient;
use tandem_event::Codec;
use tandem_producer::Publisher;
use tandem_testkit::{
    brokers, contact, seeded_legacy, topic, Browser, Cloud, PgDatabase, Running, Seeded, Tandem,
};

/// The consumer's API token, which the page's Resume needs.
const PAGE_TOKEN: &str = "observe-test-token-0123456789";

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Runs `tandem ARGS` (warnings only in its log), requires it to succeed, and parses the JSON
/// it prints.
fn json_of(args: &[&str]) -> anyhow::Result<Value> {
    let output = tandem()
        .command()
        .args(args)
        .env("TANDEM_LOG", "warn")
        .output()?;
    ensure!(
        output.status.success(),
        "tandem {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Sums of each metric over its label sets, from Prometheus's text format.
fn metrics(text: &str) -> HashMap<String, f64> {
    let mut sums = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(value) = value.parse::<f64>() {
            *sums.entry(name.to_owned()).or_default() += value;
        }
    }
    sums
}

async fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let answer = tandem_consumer::http_client()
        .build()?
        .get(url)
        .send()
        .await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

/// Scrapes `url` until `done` holds of the sums, or fails after a minute with the last ones.
async fn scrape_until(
    url: &str,
    what: &str,
    done: impl Fn(&HashMap<String, f64>) -> bool,
) -> anyhow::Result<HashMap<String, f64>> {
    let started = Instant::now();
    loop {
        if let Ok((200, text)) = get(url).await {
            let sums = metrics(&text);
            if done(&sums) {
                return Ok(sums);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{what}: not seen within a minute; the last scrape:\n{text}");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn sum(sums: &HashMap<String, f64>, name: &str) -> f64 {
    sums.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_counts_the_run_and_its_page_resumes_a_parked_account() -> anyhow::Result<()>
{
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(tandem_cloudsim::Faults {
        reject_accounts: vec!["bad".into()],
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;

    // Five changes that apply, three of an account whose first change the cloud rejects
    // (its account is parked, that change dead-lettered and all three held), and two
    // messages that are not events at all (dead-lettered).
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    let mut events: Vec<_> = (1..=5)
        .map(|i| contact("good", i, i, "g@example.com"))
        .collect();
    events.extend((1..=3).map(|i| contact("bad", i, i, "b@example.com")));
    publisher.publish(&events).await?;
    let raw: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    for garbage in [&b"not avro"[..], &[0xff, 0x00, 0x13]] {
        raw.send(
            FutureRecord::to(&topic).key("noise").payload(garbage),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _consumer = Running::spawn(
        tandem()
            .consume(
                &mapping,
                (&brokers, &topic),
                &store.url,
                &cloud.url,
                &dir.path().join("consumer.log"),
            )
            .args(["--http-listen", &format!("127.0.0.1:{port}")])
            .env("TANDEM_API_TOKEN", PAGE_TOKEN),
    )?;

    // The counters match what the run did.
    let sums = scrape_until(&format!("{base}/metrics"), "the run counted", |s| {
        sum(s, "tandem_consumer_events_applied_total") >= 5.0
            && sum(s, "tandem_consumer_dead_letters_total") >= 3.0
            && sum(s, "tandem_consumer_parked_accounts") >= 1.0
    })
    .await?;
    let cloud_client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    let in_cloud = cloud_client.list("good", "contacts").await?.len();
    ensure!(in_cloud == 5, "{in_cloud} contacts in the cloud");
    for (name, expected) in [
        ("tandem_consumer_events_applied_total", 5.0),
        ("tandem_consumer_dead_letters_total", 3.0),
        ("tandem_consumer_parked_accounts", 1.0),
        ("tandem_consumer_held_events", 3.0),
        ("tandem_consumer_events_held_total", 2.0),
        ("tandem_consumer_assigned_partitions", 1.0),
    ] {
        ensure!(
            sum(&sums, name) == expected,
            "{name} = {}, expected {expected}",
            sum(&sums, name)
        );
    }
    // Each applied event's way is measured, stage by stage (four stages).
    ensure!(sum(&sums, "tandem_consumer_latency_seconds_count") == 20.0);
    let (_, text) = get(&format!("{base}/metrics")).await?;
    ensure!(
        text.contains("tandem_consumer_events_applied_total{kind=\"CREATED\"} 5"),
        "applied by kind:\n{text}"
    );
    ensure!(
        text.contains("tandem_cloud_requests_total{method=\"POST\",status=\"422\"}"),
        "the rejection counted by status:\n{text}"
    );

    // Probes: alive, and ready once connected and assigned.
    ensure!(get(&format!("{base}/healthz")).await?.0 == 200);
    let started = Instant::now();
    while get(&format!("{base}/readyz")).await?.0 != 200 {
        ensure!(started.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `tandem status` reads the same from the store alone.
    let group = format!("{topic}-group");
    let status = json_of(&[
        "status",
        "--json",
        "--offline",
        "--consumer-store",
        &store.url,
        "--topic",
        &topic,
        "--group",
        &group,
    ])?;
    let bad = status["account_list"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["account"] == "bad"))
        .context("bad listed")?;
    ensure!(bad["state"] == "parked", "{bad}");
    ensure!(bad["held"] == 3 && bad["dead_letters"] == 1, "{bad}");
    ensure!(bad["lag_events"] == 3, "{bad}");
    ensure!(status["by_state"]["current"] == 1, "{status}");

    // The page, in a real browser.
    let Some(browser) = Browser::start().await? else {
        return cleanup(cloud, store).await;
    };
    // The operator opens the page with the API token, which Resume sends.
    browser.goto(&format!("{base}/#token={PAGE_TOKEN}")).await?;
    let reason = browser
        .until(
            "the parked account with its reason",
            r#"const row = document.querySelector('tr[data-parked-account="bad"] .reason');
               return row ? row.textContent : null;"#,
            Duration::from_secs(20),
        )
        .await?;
    ensure!(
        reason.as_str().is_some_and(|r| r.contains("422")),
        "reason shown: {reason}"
    );
    let shown = |id: &str| format!("return document.getElementById('{id}').textContent;");
    ensure!(browser.eval(&shown("applied")).await? == "5");
    ensure!(browser.eval(&shown("dead-lettered")).await? == "3");
    browser
        .until(
            "the dead letters with their reasons",
            "return document.querySelectorAll('tr[data-dead-letter] .reason').length === 3;",
            Duration::from_secs(10),
        )
        .await?;
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    browser.screenshot(&screenshot).await?;
    eprintln!(
        "the status page with a parked account: {}",
        screenshot.display()
    );

    // The cause is fixed; the operator resumes the account from the page.
    cloud.set_faults(Default::default()).await;
    browser
        .click(r#"button.resume[data-account="bad"]"#)
        .await?;
    browser
        .until(
            "the account resumed and its held events applied",
            r#"return document.getElementById('applied').textContent === '8'
                 && !document.querySelector('tr[data-parked-account="bad"]');"#,
            Duration::from_secs(30),
        )
        .await?;
    ensure!(cloud_client.list("bad", "contacts").await?.len() == 3);
    let message = browser.eval(&shown("message")).await?;
    ensure!(
        message
            .as_str()
            .is_some_and(|m| m.contains("resume requested")),
        "the page says what it did: {message}"
    );
    let after = dir.path().join("status-page-resumed.png");
    browser.screenshot(&after).await?;
    std::fs::copy(
        &after,
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-resumed.png"),
    )?;
    browser.close().await?;
    let sums = scrape_until(&format!("{base}/metrics"), "the resume counted", |s| {
        sum(s, "tandem_consumer_events_applied_total") == 8.0
            && sum(s, "tandem_consumer_parked_accounts") == 0.0
    })
    .await?;
    ensure!(sum(&sums, "tandem_consumer_held_events") == 0.0);
    cleanup(cloud, store).await
}

async fn cleanup(cloud: Cloud, store: PgDatabase) -> anyhow::Result<()> {
    cloud.stop().await?;
    store.drop().await
}

/// `tandem status --json` over stores of 10,000 accounts, as `tandem bench status` measures
/// it; the figure is printed, the answer checked.
#[test]
fn status_over_ten_thousand_accounts_is_measured() -> anyhow::Result<()> {
    let figures = json_of(&[
        "bench",
        "status",
        "--accounts",
        "10000",
        "--runs",
        "3",
        "--json",
    ])?;
    eprintln!("tandem status --json over 10,000 accounts: {figures}");
    ensure!(figures["accounts"] == 10_000);
    Ok(())
}

/// The consumer's resident memory over a run of updates to a fixed set of contacts, as
/// `tandem bench memory` reads it: after the first fifth (caches filled) it stays flat. The
/// 1,000,000-event figure is in docs/PERFORMANCE.md; this run is shorter.
#[test]
fn the_consumers_memory_stays_flat_over_a_long_run() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let figures = json_of(&[
        "bench",
        "memory",
        "--events",
        "60000",
        "--accounts",
        "200",
        "--keys",
        "10",
        "--partitions",
        "4",
        "--json",
        "--brokers",
        &brokers,
    ])?;
    eprintln!("the consumer's memory over 60,000 events: {figures}");
    ensure!(figures["applied"] == 60_000, "{figures}");
    let growth = figures["growth_mb_after_first_fifth"]
        .as_f64()
        .context("growth")?;
    ensure!(
        growth < 16.0,
        "the resident set grew {growth} MiB after the first fifth: {figures}"
    );
    Ok(())
}

/// `tandem status` only looks: a store that is not there is an error, and is not made.
#[test]
fn status_never_creates_a_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("consumer.db");
    let url = format!("sqlite://{}", missing.display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["status", "--offline", "--consumer-store", &url])
        .env_remove("TANDEM_PRODUCER_STORE")
        .output()?;
    ensure!(!output.status.success());
    ensure!(
        !missing.exists(),
        "tandem status created {}",
        missing.display()
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(stderr.contains("consumer.db"), "{stderr}");
    // No store named at all: told which to name.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("status")
        .env_remove("TANDEM_CONSUMER_STORE")
        .env_remove("TANDEM_PRODUCER_STORE")
        .env_remove("TANDEM_MIGRATION_STORE")
        .output()?;
    ensure!(output.status.code() == Some(2), "{output:?}");
    ensure!(String::from_utf8_lossy(&output.stderr).contains("--consumer-store"));
    Ok(())
}

/// `tandem produce --http-listen`: its counters follow what it published, its last round is
/// recent, and it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producers_metrics_follow_its_rounds() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let store = PgDatabase::create().await?;
    let dir = tempfile::tempdir()?;
    let Seeded { sources, .. } = seeded_legacy(dir.path(), "observed", 3).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _producer = Running::spawn(
        tandem()
            .produce(&sources, &brokers, &topic, &store.url)
            .args(["--http-listen", &format!("127.0.0.1:{port}")]),
    )?;
    // Three accounts enrolled: a snapshot each, begun and ended.
    let sums = scrape_until(&format!("{base}/metrics"), "the snapshots published", |s| {
        sum(s, "tandem_producer_ready") == 1.0
            && sum(s, "tandem_producer_events_published_total") >= 6.0
    })
    .await?;
    let (_, text) = get(&format!("{base}/metrics")).await?;
    ensure!(
        text.contains("tandem_producer_events_published_total{kind=\"SNAPSHOT_BEGIN\"} 3"),
        "{text}"
    );
    ensure!(sum(&sums, "tandem_producer_cycles_total") >= 1.0);
    ensure!(sum(&sums, "tandem_producer_cycle_seconds_count") >= 1.0);
    let last = sum(&sums, "tandem_producer_last_cycle_timestamp_seconds");
    let now = tandem_event::now_millis() as f64 / 1000.0;
    ensure!(
        now - last < 30.0,
        "the last round ended {} s ago",
        now - last
    );
    ensure!(get(&format!("{base}/readyz")).await?.0 == 200);
    ensure!(get(&format!("{base}/healthz")).await?.0 == 200);
    store.drop().await
}
