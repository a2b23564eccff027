//! The migration's lifecycle through the binary: a slice chosen by a query is enrolled, goes
//! live and is cut over, gated by a verify; a refused cutover; a rollback that lists what the
//! cloud changed; completion and the exit report. Producer, consumer and router run as child
//! processes against Tansu, PostgreSQL and cloudsim.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde_json::{json, Map, Value};
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, seeded_legacy, topic, until_clean, Cloud, PgDatabase, Running, Seeded, Tandem,
};

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The policy the test's sources file adds: enrolment by slice, and a freeze that records the
/// account in a table of the legacy database (as a real application's read-only flag would).
const MIGRATION: &str = r#"
[migration]
enroll = "slices"
new_accounts = "ignore"
freeze = "INSERT OR IGNORE INTO frozen_accounts (account_id) VALUES (:account)"
unfreeze = "DELETE FROM frozen_accounts WHERE account_id = :account"
"#;

/// Everything a `tandem` command of the test needs to find the parts.
struct Setup {
    sources: PathBuf,
    mapping: PathBuf,
    stores: String,
    cloud: String,
}

impl Setup {
    /// Runs `tandem ARGS…` with the stores, sources, mapping and cloud in its environment;
    /// returns the exit code and stdout (stderr on failure to parse is in the error).
    fn run(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let out = tandem()
            .command()
            .args(args)
            .env("TANDEM_SOURCES", &self.sources)
            .env("TANDEM_MAPPING", &self.mapping)
            .env("TANDEM_CONSUMER_STORE", &self.stores)
            .env("TANDEM_MIGRATION_STORE", &self.stores)
            .env("TANDEM_CLOUD_URL", &self.cloud)
            .env("TANDEM_LOG", "warn")
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        if !stderr.trim().is_empty() {
            eprintln!("tandem {}: {stderr}", args.join(" "));
        }
        Ok((code, stdout))
    }

    /// Runs a command that prints one JSON value on its last line.
    fn json(&self, args: &[&str]) -> anyhow::Result<(i32, Value)> {
        let (code, stdout) = self.run(args)?;
        let line = stdout.lines().last().unwrap_or_default();
        let value = serde_json::from_str(line)
            .with_context(|| format!("tandem {}: {stdout}", args.join(" ")))?;
        Ok((code, value))
    }

    /// Waits until `done` holds for `tandem status --migration --json`.
    async fn until_status(
        &self,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            // Until the producer made the migration store, there is no status to read.
            let status = self.json(&["status", "--migration", "--json"]);
            match status {
                Ok((_, status)) if done(&status) => return Ok(status),
                Ok((_, status)) if Instant::now() > deadline => {
                    anyhow::bail!("status never came to it: {status}")
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

async fn route(router: &str, account: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(format!("{router}/v1/route/{account}"))
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Waits until the router (which reads the store every 100 ms) answers `target`.
async fn until_routed(router: &str, account: &str, target: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The router may still be starting.
        match route(router, account).await {
            Ok(answer) if answer["target"] == target => return Ok(answer),
            Ok(answer) if Instant::now() > deadline => return Ok(answer),
            Err(e) if Instant::now() > deadline => return Err(e),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn frozen(legacy: &Path) -> anyhow::Result<Vec<String>> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", legacy.display())).await?;
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT account_id FROM frozen_accounts ORDER BY account_id")
            .fetch_all(&pool)
            .await?;
    Ok(rows.into_iter().map(|(a,)| a).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_is_enrolled_cut_over_rolled_back_and_completed() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "mig", 8).await?;
    legacy
        .execute("CREATE TABLE frozen_accounts (account_id TEXT PRIMARY KEY)")
        .await?;
    let text = std::fs::read_to_string(&sources)? + MIGRATION;
    std::fs::write(&sources, text)?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let setup = Setup {
        sources: sources.clone(),
        mapping: mapping.clone(),
        stores: stores.url.clone(),
        cloud: cloud.url.clone(),
    };
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let _producer = Running::spawn(
        tandem()
            .produce(&sources, &brokers, &topic, &stores.url)
            .env("TANDEM_MIGRATION_STORE", &stores.url),
    )?;
    let _consumer = Running::spawn(
        tandem()
            .consume(
                &mapping,
                (&brokers, &topic),
                &stores.url,
                &cloud.url,
                &dir.path().join("consumer.log"),
            )
            .env("TANDEM_MIGRATION_STORE", &stores.url),
    )?;

    // The census: every account pending, nothing published for any of them.
    let status = setup
        .until_status(Duration::from_secs(30), |s| s["accounts"] == 8)
        .await?;
    ensure!(status["states"] == json!({"pending": 8}), "{status}");
    let port = free_port()?;
    let router_url = format!("http://127.0.0.1:{port}");
    let _router = Running::spawn(
        tandem()
            .command()
            .args([
                "router",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--refresh",
                "100ms",
            ])
            .env("TANDEM_MIGRATION_STORE", &stores.url)
            .env("TANDEM_LOG", "warn"),
    )?;
    let answer = until_routed(&router_url, "mig-01", "legacy").await?;
    ensure!(answer["state"] == "pending", "{answer}");

    // A slice of five chosen by a query over the legacy data.
    let (code, out) = setup.run(&[
        "slice",
        "create",
        "first",
        "--query",
        "SELECT DISTINCT account_id FROM contacts WHERE account_id <= 'mig-05'",
    ])?;
    ensure!(code == 0 && out.contains("5 accounts"), "{out}");
    let slice: Vec<String> = accounts[..5].to_vec();
    let others: Vec<String> = accounts[5..].to_vec();
    ensure!(
        client.list(&accounts[0], "contacts").await?.is_empty(),
        "a pending account was applied"
    );
    let (code, out) = setup.run(&["slice", "enroll", "first"])?;
    ensure!(code == 0 && out.contains("5 accounts enrolled"), "{out}");
    let mut enroll_others = vec!["accounts", "enroll"];
    enroll_others.extend(others.iter().map(String::as_str));
    ensure!(setup.run(&enroll_others)?.0 == 0);
    setup
        .until_status(Duration::from_secs(120), |s| s["states"]["live"] == 8)
        .await?;
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(60)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    let (_, status) = setup.json(&["slice", "status", "first", "--json"])?;
    ensure!(
        status["states"] == json!({"live": 5})
            && status["rows"]["backfilled"] == status["rows"]["total"],
        "{status}"
    );

    // The other accounts keep changing while the slice is cut over.
    let workload = tandem_testkit::workload(&legacy, &others, Duration::from_secs(20));

    // A cutover refused: a contact of mig-05 deleted in the cloud behind Tandem's back.
    let contacts = client.list("mig-05", "contacts").await?;
    let gone = contacts[0]["id"].as_str().unwrap_or_default().to_owned();
    client.delete("mig-05", "contacts", &gone).await?;
    let (code, refused) = setup.json(&["accounts", "cutover", "mig-05", "--json"])?;
    ensure!(
        code == 1
            && refused["cut_over"] == false
            && refused["drift"]["missing"] == 1
            && refused["refused"]
                .as_str()
                .is_some_and(|r| r.contains("1 missing")),
        "{refused}"
    );
    ensure!(
        frozen(&dir.path().join("legacy.db")).await?.is_empty(),
        "left frozen"
    );
    ensure!(route(&router_url, "mig-05").await?["target"] == "legacy");
    let (_, history) = setup.run(&["accounts", "history", "mig-05"])?;
    ensure!(history.contains("cutover refused"), "{history}");
    let (code, repaired) = setup.run(&[
        "verify",
        "--account",
        "mig-05",
        "--store",
        &stores.url,
        "--repair",
    ])?;
    ensure!(code == 0, "{repaired}");

    // The whole slice, gated account by account.
    let (code, cut) = setup.json(&["slice", "cutover", "first", "--json"])?;
    ensure!(
        code == 0 && cut["cut_over"] == 5 && cut["refused"] == 0,
        "{cut}"
    );
    ensure!(
        frozen(&dir.path().join("legacy.db")).await? == slice,
        "the slice stays frozen in legacy"
    );
    for account in &slice {
        let answer = until_routed(&router_url, account, "cloud").await?;
        ensure!(answer["state"] == "cut-over", "{answer}");
    }
    ensure!(route(&router_url, "mig-06").await?["target"] == "legacy");

    // Cut over, an account is no longer followed: a stray legacy write stays in legacy, while
    // a change of an account still followed arrives.
    let before = client.list("mig-01", "contacts").await?.len();
    let mut rng = tandem_workload::rng(11);
    legacy.add_contact("mig-01", &mut rng).await?;
    workload.await??;
    let drift = until_clean(&sources, &client, &others, Duration::from_secs(60)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    ensure!(
        client.list("mig-01", "contacts").await?.len() == before,
        "a cut-over account's legacy change was applied"
    );

    // Rollback: the cloud changed since the cutover — one document created, one changed, one
    // deleted — and the report lists exactly those.
    let foreign = object(json!({"display_name": "Created in the cloud"}));
    let foreign_id = client
        .create("mig-02", "contacts", &foreign, "test-foreign")
        .await?;
    let properties = client.list("mig-02", "properties").await?;
    let property_id = properties[0]["id"].as_str().unwrap_or_default().to_owned();
    let property_ref = properties[0]["external_ref"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut changed = object(properties[0].clone());
    changed.remove("id");
    changed.insert("bedrooms".into(), json!(42));
    client
        .update("mig-02", "properties", &property_id, &changed)
        .await?;
    let leases = client.list("mig-02", "leases").await?;
    let lease_ref = leases[0]["external_ref"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let lease_id = leases[0]["id"].as_str().unwrap_or_default().to_owned();
    client.delete("mig-02", "leases", &lease_id).await?;
    let (code, report) = setup.json(&["accounts", "rollback", "mig-02", "--json"])?;
    ensure!(code == 3 && report["rolled_back"] == false, "{report}");
    ensure!(
        report["created"] == json!([format!("contacts/{foreign_id}")])
            && report["changed"] == json!([format!("property/{property_ref}")])
            && report["deleted"] == json!([format!("lease/{lease_ref}")]),
        "{report}"
    );
    ensure!(route(&router_url, "mig-02").await?["target"] == "cloud");
    let (code, report) = setup.json(&["accounts", "rollback", "mig-02", "--yes", "--json"])?;
    ensure!(code == 0 && report["rolled_back"] == true, "{report}");
    let answer = until_routed(&router_url, "mig-02", "legacy").await?;
    ensure!(answer["state"] == "rolled-back", "{answer}");
    ensure!(
        !frozen(&dir.path().join("legacy.db"))
            .await?
            .contains(&"mig-02".to_owned()),
        "still frozen after the rollback"
    );
    // Followed again: a legacy change arrives, and the cloud equals legacy.
    legacy.add_contact("mig-02", &mut rng).await?;
    let two = ["mig-02".to_owned()];
    let drift = until_clean(&sources, &client, &two, Duration::from_secs(60)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");

    // Everyone over, and done: the exit.
    let mut cutover = vec!["accounts", "cutover", "mig-02"];
    cutover.extend(others.iter().map(String::as_str));
    let (code, out) = setup.run(&cutover)?;
    ensure!(code == 0, "{out}");
    let mut complete = vec!["accounts", "complete"];
    complete.extend(accounts.iter().map(String::as_str));
    let (code, out) = setup.run(&complete)?;
    ensure!(code == 0, "{out}");
    let (_, status) = setup.json(&["status", "--migration", "--json"])?;
    ensure!(
        status["complete"] == true
            && status["states"] == json!({"done": 8})
            && status["next_steps"][0]
                .as_str()
                .is_some_and(|s| s.contains("tandem produce") && s.contains("tandem router")),
        "{status}"
    );
    let (_, history) = setup.run(&["accounts", "history", "mig-02"])?;
    for step in [
        "pending -> syncing",
        "syncing -> live",
        "live -> cut-over",
        "cut-over -> rolled-back",
        "rolled-back -> cut-over",
        "cut-over -> done",
    ] {
        ensure!(history.contains(step), "{step} missing from {history}");
    }
    // Completed: the cloud keeps the account, and what the consumer kept of it is gone.
    ensure!(!client.list("mig-02", "contacts").await?.is_empty());
    let consumer = tandem_consumer::Store::open_existing(&stores.url).await?;
    ensure!(consumer.resource_count("mig-02").await? == 0);
    Ok(())
}
