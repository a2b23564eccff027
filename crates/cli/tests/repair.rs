//! `tandem verify --repair`: cloud documents deleted, changed and added behind Tandem's back
//! are put right from the legacy data; a document without Tandem's reference is left alone.

use std::time::Duration;

use anyhow::ensure;
use serde_json::{json, Map, Value};
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, seeded_legacy, sigterm, topic, until_clean, Cloud, PgDatabase, Running, Seeded, Tandem,
};

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_puts_right_what_was_changed_behind_tandems_back() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        accounts, sources, ..
    } = seeded_legacy(dir.path(), "repair", 2).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let mut producer =
        Running::spawn(&mut tandem().produce(&sources, &brokers, &topic, &stores.url))?;
    let mut consumer = Running::spawn(&mut tandem().consume(
        &mapping,
        (&brokers, &topic),
        &stores.url,
        &cloud.url,
        &dir.path().join("consumer.log"),
    ))?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(90)).await?;
    ensure!(Totals::of(&drift) == Totals::default(), "{drift:#?}");
    for child in [&mut producer, &mut consumer] {
        sigterm(child)?;
        child.wait()?;
    }

    // Behind Tandem's back: a contact and a lease deleted, a property changed, a document
    // with Tandem's reference added, and one of somebody else's.
    let account = &accounts[0];
    let id_of = |docs: &[Value]| docs[0]["id"].as_str().unwrap_or_default().to_owned();
    let contacts = client.list(account, "contacts").await?;
    client
        .delete(account, "contacts", &id_of(&contacts))
        .await?;
    let leases = client.list(account, "leases").await?;
    client.delete(account, "leases", &id_of(&leases)).await?;
    let properties = client.list(account, "properties").await?;
    let mut changed = object(properties[0].clone());
    changed.remove("id");
    changed.insert("bedrooms".into(), json!(99));
    client
        .update(account, "properties", &id_of(&properties), &changed)
        .await?;
    let extra = object(json!({"external_ref": "7777", "display_name": "Nobody"}));
    client
        .create(account, "contacts", &extra, "test-extra")
        .await?;
    let foreign = object(json!({"display_name": "Added by hand"}));
    let foreign_id = client
        .create(account, "contacts", &foreign, "test-foreign")
        .await?;

    let verify = |extra: &[&str]| -> anyhow::Result<(i32, Value)> {
        let out = tandem()
            .command()
            .arg("verify")
            .arg("--sources")
            .arg(&sources)
            .arg("--mapping")
            .arg(&mapping)
            .args(["--cloud-url", &cloud.url, "--store", &stores.url, "--json"])
            .args(extra)
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report = serde_json::from_str(stdout.trim()).map_err(|e| {
            anyhow::anyhow!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr))
        })?;
        Ok((out.status.code().unwrap_or(-1), report))
    };
    let (code, before) = verify(&[])?;
    // Documents referring to the deleted ones read differently too (their references).
    ensure!(
        code == 1
            && before["drift"]["missing"] == 2
            && before["drift"]["extra"] == 1
            && before["drift"]["different"].as_u64() >= Some(1),
        "{before}"
    );
    // A dry run says what it would do and changes nothing.
    let (_, dry) = verify(&["--repair", "--dry-run"])?;
    let planned: Vec<String> = dry["by_account"][0]["repairs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["action"].as_str().unwrap_or(""),
                r["document"].as_str().unwrap_or("")
            )
        })
        .collect();
    ensure!(planned.len() == 4, "{dry}");
    ensure!(
        planned.iter().any(|p| p == "delete contact/7777"),
        "{planned:?}"
    );
    let (_, still) = verify(&[])?;
    ensure!(
        still["drift"] == before["drift"],
        "the dry run changed something: {still}"
    );

    let (code, repaired) = verify(&["--repair"])?;
    ensure!(code == 0 && repaired["clean"] == true, "{repaired}");
    let (code, after) = verify(&[])?;
    ensure!(
        code == 0
            && after["drift"] == json!({"missing": 0, "extra": 0, "different": 0})
            && after["duplicates"] == 0,
        "{after}"
    );
    let left: Vec<Value> = client.list(account, "contacts").await?;
    ensure!(
        left.iter().any(|c| c["id"] == foreign_id.as_str()),
        "the document without Tandem's reference was touched"
    );
    eprintln!("repaired: {}", repaired["by_account"]);
    cloud.stop().await?;
    stores.drop().await
}
