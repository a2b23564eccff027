//! The `tandem` commands an operator runs beside the pipeline: `verify` with parked accounts,
//! `accounts resume`, `publish` with bad lines mixed in, `snapshot` while a producer runs, and
//! the logs of a restart.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use tandem_consumer::verify::Totals;
use tandem_consumer::{CloudClient, Store};
use tandem_testkit::{
    brokers, seeded_legacy, sigterm, topic, until_clean, Cloud, PgDatabase, Reader, Running,
    Seeded, Tandem,
};
use tandem_workload as domain;

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
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
    let Seeded {
        legacy: _legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "parked", 4).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let _producer = Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
    let log = dir.path().join("consumer.log");
    let _consumer = Running::spawn(&mut tandem().consume(
        &mapping,
        (&brokers, &topic),
        &stores.url,
        &cloud.url,
        &log,
    ))?;
    let tandem = |args: &[&str]| -> anyhow::Result<(i32, String, String)> {
        let out = tandem()
            .command()
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
    let Seeded {
        legacy: _legacy,
        accounts: _accounts,
        sources,
    } = seeded_legacy(dir.path(), "quiet", 1).await?;
    for run in ["first", "second"] {
        let out = tandem()
            .produce(&sources, &brokers, &topic, &stores.url)
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
    let output = tandem()
        .command()
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
    // In order within each account; accounts are independent of one another.
    let mut got = got;
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let want = [
        ("acme".to_owned(), "CREATED 1".to_owned(), 1),
        ("acme".to_owned(), "UPDATED 1".to_owned(), 4),
        ("globex".to_owned(), "DELETED 9".to_owned(), 3),
    ];
    ensure!(got == want, "{got:?}");
    let _ = std::fs::remove_file(&file).context("cleanup");
    Ok(())
}

/// The producer's state of an account, from its store.
async fn producer_state(
    store: &str,
    account: &str,
) -> anyhow::Result<tandem_producer::AccountState> {
    Ok(tandem_producer::Store::open(store)
        .await?
        .account(account)
        .await?)
}

/// `tandem snapshot` while `tandem produce` runs: the running producer holds the account's
/// lease, so the command asks it for the snapshot through the store and waits until it is
/// published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_asked_of_the_running_producer() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let stores = PgDatabase::create().await?;
    let dir = tempfile::tempdir()?;
    let Seeded { sources, .. } = seeded_legacy(dir.path(), "snap", 2).await?;
    let _producer = Running::spawn(
        tandem()
            .produce(&sources, &brokers, &topic, &stores.url)
            // A lease that outlives the test: the command cannot take the account over.
            .args(["--lease-ttl", "5m"]),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !producer_state(&stores.url, "snap-01")
        .await
        .is_ok_and(|s| s.enrolled)
    {
        ensure!(Instant::now() < deadline, "snap-01 was not enrolled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tandem()
        .command()
        .args([
            "snapshot",
            "--account",
            "snap-01",
            "--snapshot-id",
            "asked-1",
        ])
        .arg("--sources")
        .arg(&sources)
        .args([
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--store",
            &stores.url,
        ])
        .args(["--wait", "60s"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "exit {}: {stderr}", out.status);
    ensure!(
        stderr.contains("asked it to publish") && stderr.contains("published by the running"),
        "{stderr}"
    );
    // The topic holds the requested snapshot, markers and rows carrying its id.
    let reader = Reader::new(&brokers, &topic)?;
    let mut asked = Vec::new();
    while !asked.contains(&tandem_event::Kind::SnapshotEnd) {
        for (key, event) in reader.take(1).await? {
            if event.snapshot_id.as_deref() == Some("asked-1") {
                ensure!(key == "snap-01", "{key}");
                asked.push(event.kind);
            }
        }
    }
    ensure!(
        asked.first() == Some(&tandem_event::Kind::SnapshotBegin) && asked.len() > 2,
        "{asked:?}"
    );
    stores.drop().await
}

/// SIGTERM while an account's snapshot is under way: the producer stops within its grace
/// period, between two batches, and leaves the snapshot unfinished — the account is not
/// recorded as enrolled, so the next start snapshots it again from the beginning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_under_way_stops_within_the_grace_period() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let stores = PgDatabase::create().await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy, sources, ..
    } = seeded_legacy(dir.path(), "big", 1).await?;
    // 100,000 contacts, published 50 to a batch: the snapshot takes far longer than the test
    // waits before stopping the producer.
    legacy
        .execute(
            "WITH RECURSIVE n(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM n WHERE i < 101000) \
             INSERT INTO contacts (account_id, id, first_name, last_name, email, changed_at_ms) \
             SELECT 'big-01', i, 'First', 'Last', NULL, 0 FROM n",
        )
        .await?;
    let mut producer = Running::spawn(
        tandem()
            .produce(&sources, &brokers, &topic, &stores.url)
            .args(["--batch-size", "50", "--grace", "2s"]),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let state = loop {
        if let Ok(state) = producer_state(&stores.url, "big-01").await {
            if state.published.1 > 0 {
                break state;
            }
        }
        ensure!(Instant::now() < deadline, "the snapshot did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(
        !state.enrolled,
        "the snapshot ended before the test could stop it"
    );
    sigterm(&producer)?;
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = producer.try_wait()? {
            break exit;
        }
        ensure!(
            stopped.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM with a 2 s grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(exit.success(), "exit {exit}");
    let after = producer_state(&stores.url, "big-01").await?;
    ensure!(!after.enrolled, "a half snapshot was recorded as complete");
    let log = std::fs::read_to_string(dir.path().join("producer.log")).unwrap_or_default();
    ensure!(
        !log.contains("did not stop within the grace period"),
        "{log}"
    );
    eprintln!(
        "stopped {} ms after SIGTERM, mid-snapshot",
        stopped.elapsed().as_millis()
    );
    stores.drop().await
}

/// Exit codes: 2 for a mistake to fix in the call or its configuration, 3 for something the
/// command needed that failed, 1 for drift; `--help` lists them. `demo` does not take the
/// pipeline's `TANDEM_BROKERS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_what_went_wrong() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Seeded { sources, .. } = seeded_legacy(dir.path(), "exit", 1).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, domain::MAPPING)?;
    let run = |args: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let out = tandem()
            .command()
            .args(args)
            .env("TANDEM_LOG", "error")
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    };
    let sources = sources.display().to_string();
    let mapping = mapping.display().to_string();
    // Usage: a flag clap refuses, a missing sources file, a store that is not there, a command
    // that needs the migration store.
    let missing = dir.path().join("nowhere.toml").display().to_string();
    let store = format!("sqlite://{}", dir.path().join("none.db").display());
    for (args, why) in [
        (vec!["verify", "--no-such-flag"], "unexpected argument"),
        (
            vec!["verify", "--sources", &missing, "--mapping", &mapping],
            "cannot read",
        ),
        (
            vec!["accounts", "status", "--store", &store],
            "no consumer store",
        ),
        (vec!["status", "--migration"], "needs the migration store"),
    ] {
        let (code, out) = run(&args)?;
        ensure!(
            code == Some(2) && out.contains(why),
            "{args:?}: {code:?} {out}"
        );
    }
    // Failure: the cloud cannot be reached.
    let (code, out) = run(&[
        "verify",
        "--sources",
        &sources,
        "--mapping",
        &mapping,
        "--cloud-url",
        "http://127.0.0.1:9",
    ])?;
    ensure!(code == Some(3), "{code:?} {out}");
    // Drift: the cloud is empty.
    let cloud = Cloud::start(Default::default()).await?;
    let (code, out) = run(&[
        "verify",
        "--sources",
        &sources,
        "--mapping",
        &mapping,
        "--cloud-url",
        &cloud.url,
    ])?;
    ensure!(code == Some(1) && out.contains("missing"), "{code:?} {out}");
    let (code, help) = run(&["--help"])?;
    ensure!(
        code == Some(0) && help.contains("Exit codes: 0 done; 1 drift"),
        "{help}"
    );
    // The demo's broker has a variable of its own: a pipeline's TANDEM_BROKERS is not taken.
    let help = tandem()
        .command()
        .args(["demo", "--help"])
        .env("TANDEM_BROKERS", "kafka.example:9092")
        .output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    ensure!(
        help.contains("TANDEM_DEMO_BROKERS") && !help.contains("kafka.example"),
        "{help}"
    );
    Ok(())
}

/// `tandem health`, the containers' probe: 0 when the role's broker and store answer, 3 with
/// the part that does not when either is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_names_the_part_that_does_not_answer() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let stores = PgDatabase::create().await?;
    let health = |brokers: &str, store: &str| -> anyhow::Result<(Option<i32>, String)> {
        let out = tandem()
            .command()
            .args(["health", "--role", "consumer", "--timeout", "3s"])
            .env("TANDEM_BROKERS", brokers)
            .env("TANDEM_CONSUMER_STORE", store)
            .env("TANDEM_LOG", "off")
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    let (code, out) = health(&brokers, &stores.url)?;
    ensure!(
        code == Some(0) && out.contains("broker: ok") && out.contains("store: ok"),
        "{code:?} {out}"
    );
    let (code, out) = health("127.0.0.1:9", &stores.url)?;
    ensure!(
        code == Some(3) && out.contains("broker: no answer") && out.contains("store: ok"),
        "{code:?} {out}"
    );
    let (code, out) = health(&brokers, "postgres://postgres@127.0.0.1:9/none")?;
    ensure!(
        code == Some(3) && out.contains("broker: ok") && !out.contains("store: ok"),
        "{code:?} {out}"
    );
    stores.drop().await
}
