//! `tandem replay` as users run it: killed with SIGKILL again and again and started again, it
//! ends with the account rebuilt and not one resource created twice.

use std::process::Stdio;
use std::time::Duration;

use anyhow::ensure;
use rand::Rng as _;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, seeded_legacy, topic, until_clean, Cloud, PgDatabase, Running, Seeded, Tandem,
};

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_killed_three_times_and_run_again_creates_nothing_twice() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "rekill", 2).await?;
    let account = accounts[0].clone();
    // 2,000 more contacts: a replay that takes long enough to be killed in the middle.
    legacy
        .execute(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM n WHERE i < 2999) \
             INSERT INTO contacts (account_id, id, first_name, last_name, email, changed_at_ms) \
             SELECT '{account}', i, 'First', 'Last', NULL, 0 FROM n"
        ))
        .await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let _producer = Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
    let _consumer = Running::spawn(&mut tandem().consume(
        &mapping,
        (&brokers, &topic),
        &stores.url,
        &cloud.url,
        &dir.path().join("consumer.log"),
    ))?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    ensure!(Totals::of(&drift) == Totals::default(), "{drift:#?}");

    let into = format!("{account}-rebuilt");
    let replay = || {
        let mut command = tandem().command();
        command
            .args(["replay", "--account", &account, "--into", &into, "--json"])
            .arg("--sources")
            .arg(&sources)
            .arg("--mapping")
            .arg(&mapping)
            .args([
                "--brokers",
                &brokers,
                "--topic",
                &topic,
                "--store",
                &stores.url,
            ])
            .args(["--cloud-url", &cloud.url])
            .env("TANDEM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let mut rng = rand::rng();
    for _ in 0..3 {
        let mut child = Running::spawn(&mut replay())?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3500))).await;
        ensure!(
            child.try_wait()?.is_none(),
            "the replay ended before it was killed"
        );
        child.kill()?;
        child.wait()?;
    }
    let out = replay().output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "exit {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    ensure!(
        report["drift"] == serde_json::json!({"missing": 0, "extra": 0, "different": 0})
            && report["duplicates"] == 0
            && report["account"] == account.as_str()
            && report["into"] == into.as_str()
            && report["resources"].as_u64() > Some(2000),
        "{report}"
    );
    eprintln!("after 3 kills: {report}");
    cloud.stop().await?;
    stores.drop().await
}
