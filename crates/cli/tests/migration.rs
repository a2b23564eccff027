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
    brokers, read_until_quiet, seeded_legacy, topic, until_clean, Cloud, PgDatabase, Running,
    Seeded, Tandem,
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
    Ok(tandem_consumer::http_client()
        .build()?
        .get(format!("{router}/v1/route/{account}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Waits until the router (which reads the store every 100 ms) answers `target`.
async fn until_routed(router: &str, account: &str, target: &str) -> anyhow::Result<Value> {
    until_answer(router, account, |a| a["target"] == target).await
}

/// Waits until the router's answer for `account` satisfies `done`; the last answer.
async fn until_answer(
    router: &str,
    account: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The router may still be starting.
        match route(router, account).await {
            Ok(answer) if done(&answer) => return Ok(answer),
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
    let run = Migration::start("mig", 8, MIGRATION, &[]).await?;
    let Migration {
        setup,
        seeded: Seeded {
            legacy,
            accounts,
            sources,
        },
        router: router_url,
        client,
        ..
    } = &run;
    let (brokers, topic, stores) = (&run.brokers, &run.topic, &run.setup.stores);
    let legacy_db = run.dir.path().join("legacy.db");
    legacy
        .execute("CREATE TABLE frozen_accounts (account_id TEXT PRIMARY KEY)")
        .await?;

    // The census: every account pending, nothing published for any of them.
    let (_, status) = setup.json(&["status", "--migration", "--json"])?;
    ensure!(status["states"] == json!({"pending": 8}), "{status}");
    let answer = until_routed(router_url, "mig-01", "legacy").await?;
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
    let drift = until_clean(sources, client, accounts, Duration::from_secs(60)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    let (_, status) = setup.json(&["slice", "status", "first", "--json"])?;
    ensure!(
        status["states"] == json!({"live": 5})
            && status["rows"]["backfilled"] == status["rows"]["total"],
        "{status}"
    );

    // The other accounts keep changing while the slice is cut over.
    let workload = tandem_testkit::workload(legacy, &others, Duration::from_secs(20));

    // A cutover refused: a contact of mig-05 lost and a property damaged in the cloud,
    // behind the API's back (cloudsim's admin API).
    let contacts = client.list("mig-05", "contacts").await?;
    let gone = contacts[0]["id"].as_str().unwrap_or_default().to_owned();
    run.cloud
        .corrupt(("mig-05", "contacts", &gone), None)
        .await?;
    let properties = client.list("mig-05", "properties").await?;
    let damaged = properties[0]["id"].as_str().unwrap_or_default().to_owned();
    let damaged_ref = properties[0]["external_ref"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut body = properties[0].clone();
    body["bedrooms"] = json!(-1);
    run.cloud
        .corrupt(("mig-05", "properties", &damaged), Some(&body))
        .await?;
    let (code, refused) = setup.json(&["accounts", "cutover", "mig-05", "--json"])?;
    ensure!(
        code == 1
            && refused["cut_over"] == false
            && refused["drift"]["missing"] == 1
            && refused["different"]
                .as_array()
                .is_some_and(|d| d.contains(&json!(format!("property/{damaged_ref}"))))
            && refused["refused"]
                .as_str()
                .is_some_and(|r| r.contains("1 missing, 0 extra")),
        "{refused}"
    );
    ensure!(frozen(&legacy_db).await?.is_empty(), "left frozen");
    ensure!(route(router_url, "mig-05").await?["target"] == "legacy");
    let (_, history) = setup.run(&["accounts", "history", "mig-05"])?;
    ensure!(history.contains("cutover refused"), "{history}");
    let (code, repaired) = setup.run(&[
        "verify",
        "--account",
        "mig-05",
        "--store",
        stores,
        "--repair",
    ])?;
    ensure!(code == 0, "{repaired}");

    // The whole slice, gated account by account. A cutover's own snapshot is detected before
    // it ends; nothing of a cut-over account is detected after.
    let (code, cut) = setup.json(&["slice", "cutover", "first", "--json"])?;
    let cut_at = tandem_event::now_millis();
    ensure!(
        code == 0 && cut["cut_over"] == 5 && cut["refused"] == 0,
        "{cut}"
    );
    ensure!(
        frozen(&legacy_db).await? == slice,
        "the slice stays frozen in legacy"
    );
    for account in &slice {
        let answer = until_routed(router_url, account, "cloud").await?;
        ensure!(answer["state"] == "cut-over", "{answer}");
    }
    ensure!(route(router_url, "mig-06").await?["target"] == "legacy");

    // Cut over, an account is no longer followed: a stray legacy write stays in legacy, while
    // a change of an account still followed arrives.
    let before = client.list("mig-01", "contacts").await?.len();
    let mut rng = tandem_workload::rng(11);
    legacy.add_contact("mig-01", &mut rng).await?;
    workload.await??;
    let drift = until_clean(sources, client, &others, Duration::from_secs(60)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    ensure!(
        client.list("mig-01", "contacts").await?.len() == before,
        "a cut-over account's legacy change was applied"
    );
    // Nor was it published: the topic holds nothing of mig-01 detected after its cutover,
    // while the accounts still followed kept publishing.
    let events = read_until_quiet(brokers, topic, Duration::from_secs(5)).await?;
    let after = |account: &str| {
        events
            .iter()
            .filter(|(key, e)| key == account && e.detected_at > cut_at)
            .count()
    };
    ensure!(
        after("mig-01") == 0,
        "{} events of mig-01 after its cutover",
        after("mig-01")
    );
    ensure!(
        after("mig-06") + after("mig-07") + after("mig-08") > 0,
        "nothing published after the cutover"
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
    ensure!(code == 1 && report["rolled_back"] == false, "{report}");
    ensure!(
        report["created"] == json!([format!("contacts/{foreign_id}")])
            && report["changed"] == json!([format!("property/{property_ref}")])
            && report["deleted"] == json!([format!("lease/{lease_ref}")]),
        "{report}"
    );
    ensure!(route(router_url, "mig-02").await?["target"] == "cloud");
    let (code, report) = setup.json(&["accounts", "rollback", "mig-02", "--yes", "--json"])?;
    ensure!(code == 0 && report["rolled_back"] == true, "{report}");
    let answer = until_routed(router_url, "mig-02", "legacy").await?;
    ensure!(answer["state"] == "rolled-back", "{answer}");
    ensure!(
        !frozen(&legacy_db).await?.contains(&"mig-02".to_owned()),
        "still frozen after the rollback"
    );
    // Followed again: a legacy change arrives, and the cloud equals legacy.
    legacy.add_contact("mig-02", &mut rng).await?;
    let two = ["mig-02".to_owned()];
    let drift = until_clean(sources, client, &two, Duration::from_secs(60)).await?;
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
    let consumer = tandem_consumer::Store::open_existing(stores).await?;
    ensure!(consumer.resource_count("mig-02").await? == 0);

    // The slice's query run again finds an account created since; only --apply adds it.
    legacy.seed("mig-00", &mut rng).await?;
    setup
        .until_status(Duration::from_secs(30), |s| s["accounts"] == 9)
        .await?;
    let (code, out) = setup.run(&["slice", "reevaluate", "first"])?;
    ensure!(
        code == 0 && out.contains("finds 1 accounts") && out.contains("mig-00"),
        "{out}"
    );
    ensure!(setup
        .run(&["slice", "status", "first", "--json"])?
        .1
        .contains("\"accounts\":5"));
    let (code, out) = setup.run(&["slice", "reevaluate", "first", "--apply"])?;
    ensure!(code == 0 && out.contains("1 accounts added"), "{out}");
    let (_, status) = setup.json(&["slice", "status", "first", "--json"])?;
    ensure!(
        status["accounts"] == 6 && status["states"]["pending"] == 1,
        "{status}"
    );
    Ok(())
}

/// A producer, a consumer and a router over fresh stores, a topic and cloudsim, for `n`
/// seeded accounts named `<prefix>-NN`, with `policy` as the sources file's `[migration]`.
struct Migration {
    setup: Setup,
    seeded: Seeded,
    router: String,
    client: CloudClient,
    brokers: String,
    topic: String,
    dir: tempfile::TempDir,
    _stores: PgDatabase,
    cloud: Cloud,
    _children: Vec<Running>,
}

impl Migration {
    async fn start(
        prefix: &str,
        n: usize,
        policy: &str,
        producer_flags: &[&str],
    ) -> anyhow::Result<Migration> {
        let brokers = brokers()?;
        let topic = topic(&brokers, 2).await?;
        let stores = PgDatabase::create().await?;
        let cloud = Cloud::start(Default::default()).await?;
        let dir = tempfile::tempdir()?;
        let seeded = seeded_legacy(dir.path(), prefix, n).await?;
        let text = std::fs::read_to_string(&seeded.sources)? + policy;
        std::fs::write(&seeded.sources, text)?;
        let mapping = dir.path().join("mapping.toml");
        std::fs::write(&mapping, tandem_workload::MAPPING)?;
        let mut children = vec![
            Running::spawn(
                tandem()
                    .produce(&seeded.sources, &brokers, &topic, &stores.url)
                    .args(producer_flags)
                    .env("TANDEM_MIGRATION_STORE", &stores.url),
            )?,
            Running::spawn(
                tandem()
                    .consume(
                        &mapping,
                        (&brokers, &topic),
                        &stores.url,
                        &cloud.url,
                        &dir.path().join("consumer.log"),
                    )
                    .env("TANDEM_MIGRATION_STORE", &stores.url),
            )?,
        ];
        let setup = Setup {
            sources: seeded.sources.clone(),
            mapping,
            stores: stores.url.clone(),
            cloud: cloud.url.clone(),
        };
        setup
            .until_status(Duration::from_secs(30), |s| s["accounts"] == n)
            .await?;
        let port = free_port()?;
        children.push(Running::spawn(
            tandem()
                .command()
                .args(["router", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--refresh", "100ms"])
                .env("TANDEM_MIGRATION_STORE", &stores.url)
                .env("TANDEM_LOG", "warn"),
        )?);
        Ok(Migration {
            setup,
            seeded,
            router: format!("http://127.0.0.1:{port}"),
            client: CloudClient::new(&cloud.url, Duration::from_secs(10), 8),
            brokers,
            topic,
            dir,
            _stores: stores,
            cloud,
            _children: children,
        })
    }

    /// The account's state, once `done` holds for it.
    async fn until_state(
        &self,
        account: &str,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let status = self
            .setup
            .until_status(Duration::from_secs(120), |s| done(state_of(s, account)))
            .await?;
        Ok(state_of(&status, account).to_owned())
    }
}

fn state_of<'a>(status: &'a Value, account: &str) -> &'a str {
    status["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["account"] == account))
        .and_then(|m| m["state"].as_str())
        .unwrap_or("unknown")
}

/// An account that appears in legacy after the census, under each of the three policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_account_follows_the_new_account_policy() -> anyhow::Result<()> {
    for (policy, expected, route_to) in [
        ("cloud", "done", "cloud"),
        ("enroll", "live", "legacy"),
        ("ignore", "pending", "legacy"),
    ] {
        let text = format!(
            "\n[migration]\nenroll = \"slices\"\nnew_accounts = \"{policy}\"\n\
             new_accounts_slice = \"late\"\n"
        );
        let run = Migration::start(&format!("new-{policy}"), 2, &text, &[]).await?;
        // Before the account exists, the router answers by the policy.
        let newcomer = format!("new-{policy}-99");
        let answer = until_routed(&run.router, &newcomer, route_to).await?;
        ensure!(answer["state"].is_null(), "{policy}: {answer}");
        let mut rng = tandem_workload::rng(5);
        run.seeded.legacy.seed(&newcomer, &mut rng).await?;
        let state = run.until_state(&newcomer, |s| s == expected).await?;
        ensure!(state == expected, "{policy}: {state}");
        let answer = until_answer(&run.router, &newcomer, |a| a["state"] == expected).await?;
        ensure!(
            answer["target"] == route_to && answer["state"] == expected,
            "{policy}: {answer}"
        );
        let (_, history) = run.setup.run(&["accounts", "history", &newcomer])?;
        ensure!(history.contains("new account"), "{policy}: {history}");
        let newcomer = [newcomer];
        if policy == "enroll" {
            let (_, late) = run.setup.json(&["slice", "status", "late", "--json"])?;
            ensure!(late["states"] == json!({"live": 1}), "{late}");
            let drift = until_clean(
                &run.seeded.sources,
                &run.client,
                &newcomer,
                Duration::from_secs(60),
            )
            .await?;
            ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
        } else {
            // Not followed: nothing of it reaches the cloud, while a change of an account
            // the same producer follows would (none is enrolled here, so the wait is fixed).
            tokio::time::sleep(Duration::from_secs(3)).await;
            ensure!(
                run.client.list(&newcomer[0], "contacts").await?.is_empty(),
                "{policy}: a new account was applied"
            );
        }
        let newcomer = &newcomer[0];
        if policy == "ignore" {
            // A user touches it: the route enrols it at the head of the queue.
            let answer = route(&run.router, &format!("{newcomer}?enroll=true")).await?;
            ensure!(
                answer["state"] == "syncing" && answer["target"] == "legacy",
                "{answer}"
            );
            ensure!(run.until_state(newcomer, |s| s == "live").await? == "live");
            let (_, history) = run.setup.run(&["accounts", "history", newcomer])?;
            ensure!(history.contains("migrate-now"), "{history}");
        }
    }
    Ok(())
}

/// Migrate on first use: an account a user touches is enrolled at the head of the queue and
/// goes live while a slice of 50 accounts is still backfilling. Pausing holds an account's
/// changes; resuming applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_migrated_now_goes_live_before_a_backfilling_slice() -> anyhow::Result<()> {
    let policy = "\n[migration]\nenroll = \"slices\"\n";
    // One account detected at a time, one row a batch: the producer's backfill of the slice
    // takes longer than the consumer needs to apply it, so the order the producer publishes
    // the snapshots in is the order the accounts go live in.
    let flags = ["--concurrency", "1", "--batch-size", "1"];
    let run = Migration::start("now", 51, policy, &flags).await?;
    let slice: Vec<String> = run.seeded.accounts[..50].to_vec();
    let urgent = run.seeded.accounts[50].clone();
    let mut rng = tandem_workload::rng(9);
    for account in &slice {
        for _ in 0..40 {
            run.seeded.legacy.add_contact(account, &mut rng).await?;
        }
    }
    let list = slice.join(",");
    let (code, out) = run
        .setup
        .run(&["slice", "create", "fifty", "--accounts", &list])?;
    ensure!(code == 0, "{out}");
    let (code, out) = run.setup.run(&["slice", "enroll", "fifty"])?;
    ensure!(code == 0, "{out}");
    // The slice is under way when the user comes.
    run.setup
        .until_status(Duration::from_secs(60), |s| {
            s["states"]["live"].as_u64() >= Some(1)
        })
        .await?;
    let answer: Value = tandem_consumer::http_client()
        .build()?
        .post(format!("{}/v1/accounts/{urgent}/migrate-now", run.router))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        answer["state"] == "syncing" && answer["ahead"] == 0 && answer["target"] == "legacy",
        "{answer}"
    );
    // It says when it should be live, from how long the accounts live so far took.
    ensure!(answer["expected_live_at"].as_i64() > Some(0), "{answer}");
    let status = run
        .setup
        .until_status(Duration::from_secs(120), |s| state_of(s, &urgent) == "live")
        .await?;
    let slice_live = slice
        .iter()
        .filter(|a| state_of(&status, a) == "live")
        .count();
    eprintln!("the account migrated now went live with {slice_live} of the slice's 50 live");
    ensure!(
        slice_live < slice.len() / 2,
        "the slice went live before the account migrated now: {status}"
    );
    let drift = until_clean(
        &run.seeded.sources,
        &run.client,
        std::slice::from_ref(&urgent),
        Duration::from_secs(30),
    )
    .await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");

    // The slice ends live too; then an account is paused.
    run.setup
        .until_status(Duration::from_secs(180), |s| s["states"]["live"] == 51)
        .await?;
    // Paused: its change is published and held, not applied; resumed, it is applied.
    let (code, out) = run.setup.run(&["accounts", "pause", &urgent])?;
    ensure!(code == 0, "{out}");
    let answer = until_answer(&run.router, &urgent, |a| a["state"] == "paused").await?;
    ensure!(
        answer["target"] == "legacy" && answer["state"] == "paused",
        "{answer}"
    );
    let contacts = run.client.list(&urgent, "contacts").await?.len();
    run.seeded.legacy.add_contact(&urgent, &mut rng).await?;
    // Held: the consumer keeps it, and the cloud does not get it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, parked) = run.setup.run(&["accounts", "status"])?;
        let line = parked
            .lines()
            .find(|l| l.contains(&format!("{urgent}: parked")));
        if line.is_some_and(|l| l.contains("paused") && !l.contains(" 0 events held")) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the change was not held: {parked}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensure!(
        run.client.list(&urgent, "contacts").await?.len() == contacts,
        "a paused account's change was applied"
    );
    let (code, out) = run.setup.run(&["accounts", "resume", &urgent])?;
    ensure!(code == 0, "{out}");
    let drift = until_clean(
        &run.seeded.sources,
        &run.client,
        std::slice::from_ref(&urgent),
        Duration::from_secs(30),
    )
    .await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    ensure!(run.until_state(&urgent, |s| s == "live").await? == "live");
    Ok(())
}

/// Without `[migration]` in the sources file, a producer given the migration store enrols every
/// account it finds, as it did before the store existed; each goes live once applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_account_is_enrolled_by_default() -> anyhow::Result<()> {
    let run = Migration::start("all", 3, "", &[]).await?;
    let status = run
        .setup
        .until_status(Duration::from_secs(60), |s| s["states"]["live"] == 3)
        .await?;
    ensure!(status["states"] == json!({"live": 3}), "{status}");
    let mut rng = tandem_workload::rng(8);
    run.seeded.legacy.seed("all-04", &mut rng).await?;
    ensure!(run.until_state("all-04", |s| s == "live").await? == "live");
    let mut accounts = run.seeded.accounts.clone();
    accounts.push("all-04".into());
    let drift = until_clean(
        &run.seeded.sources,
        &run.client,
        &accounts,
        Duration::from_secs(60),
    )
    .await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    Ok(())
}
