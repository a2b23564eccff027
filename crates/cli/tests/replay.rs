//! `tandem replay` as users run it: killed with SIGKILL again and again and started again, it
//! ends with the account rebuilt and not one resource created twice.

use std::process::Stdio;
use std::time::Duration;

use anyhow::ensure;
use rand::Rng as _;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, seeded_legacy, topic, until_clean, Cloud, PgDatabase, ReplayParts, Running, Seeded,
    Tandem,
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
        let parts = ReplayParts {
            sources: &sources,
            mapping: &mapping,
            brokers: &brokers,
            topic: &topic,
            store: &stores.url,
            cloud: &cloud.url,
        };
        let mut command = tandem().replay(&account, &into, parts);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    };
    let mut rng = rand::rng();
    for kills in 0..3 {
        let mut child = Running::spawn(&mut replay())?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3500))).await;
        if let Some(status) = child.try_wait()? {
            // A run resumed after kills may finish before its own kill: fine once a kill
            // (`kills` of them so far) landed mid-run, and only if it finished well.
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
            }
            ensure!(
                kills > 0 && status.success(),
                "the replay ended before it was killed ({status}): {stderr}"
            );
            break;
        }
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

/// Every cloud document of an account: (collection, external reference) → cloud id.
async fn cloud_ids(
    client: &CloudClient,
    account: &str,
) -> anyhow::Result<std::collections::BTreeMap<(String, String), String>> {
    let mut ids = std::collections::BTreeMap::new();
    for collection in [
        "contacts",
        "properties",
        "family_homes",
        "leases",
        "charges",
    ] {
        for doc in client.list(account, collection).await? {
            let reference = doc["external_ref"].as_str().unwrap_or_default().to_owned();
            let id = doc["id"].as_str().unwrap_or_default().to_owned();
            ids.insert((collection.to_owned(), reference), id);
        }
    }
    Ok(ids)
}

/// The consumer's store is lost; the consumer starts again on an empty one, and the account is
/// rebuilt in place while it runs (and while the account changes): zero drift, no duplicate
/// create, and every cloud id as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_in_place_after_the_store_was_lost_keeps_every_cloud_id() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "inplace", 3).await?;
    let account = accounts[0].clone();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let consumer_db = dir.path().join("consumer.db");
    let consumer_store = format!("sqlite://{}", consumer_db.display());
    let _producer = Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
    let consumer = || {
        Running::spawn(&mut tandem().consume(
            &mapping,
            (&brokers, &topic),
            &consumer_store,
            &cloud.url,
            &dir.path().join("consumer.log"),
        ))
    };
    let mut live = consumer()?;
    let mut rng = tandem_workload::rng(9);
    for _ in 0..30 {
        for a in &accounts {
            legacy.random_change(a, &mut rng).await?;
        }
    }
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    ensure!(Totals::of(&drift) == Totals::default(), "{drift:#?}");
    let before = cloud_ids(&client, &account).await?;
    ensure!(before.len() > 5, "{before:?}");

    // The store is lost.
    tandem_testkit::sigterm(&live)?;
    live.wait()?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", consumer_db.display()));
    }
    let _live = consumer()?;
    // The cloud account was damaged too: a document with Tandem's reference the legacy data
    // does not have (the rebuild deletes it), and one of somebody else's (left alone).
    let doc = |pairs: &[(&str, &str)]| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect()
    };
    let ghost = doc(&[("external_ref", "9999"), ("display_name", "Ghost")]);
    client
        .create(&account, "contacts", &ghost, "test-ghost")
        .await?;
    let foreign = doc(&[("display_name", "Added by hand")]);
    let foreign_id = client
        .create(&account, "contacts", &foreign, "test-foreign")
        .await?;
    // The account changes while it is rebuilt (updates only: the set of documents stays).
    let changing = tokio::spawn({
        let (legacy, account) = (legacy.clone(), account.clone());
        async move {
            for i in 0..20 {
                legacy
                    .execute(&format!(
                        "UPDATE contacts SET email = 'during.{i}@example.com' \
                         WHERE account_id = '{account}' AND id = (SELECT MIN(id) FROM contacts \
                         WHERE account_id = '{account}')"
                    ))
                    .await?;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            anyhow::Ok(())
        }
    });
    let parts = ReplayParts {
        sources: &sources,
        mapping: &mapping,
        brokers: &brokers,
        topic: &topic,
        store: &consumer_store,
        cloud: &cloud.url,
    };
    let out = tandem()
        .replay(&account, &account, parts)
        .args(["--in-place", "--group", &format!("{topic}-group")])
        .output()?;
    changing.await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code().is_some_and(|c| c <= 1),
        "exit {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    ensure!(
        report["duplicates"] == 0 && report["deleted"] == 1,
        "{report}"
    );
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(120)).await?;
    ensure!(
        Totals::of(&drift) == Totals::default(),
        "{report}\n{drift:#?}"
    );
    let mut after = cloud_ids(&client, &account).await?;
    ensure!(
        after.remove(&("contacts".to_owned(), String::new())) == Some(foreign_id),
        "the document without Tandem's reference was touched: {after:?}"
    );
    ensure!(
        after == before,
        "cloud ids changed:\nbefore {before:?}\nafter {after:?}"
    );
    eprintln!("rebuilt in place: {report}");
    cloud.stop().await?;
    stores.drop().await
}
