//! Confluent framing end to end: the producer writes messages framed with a schema id — a
//! fixed one, or the one a schema registry gives its schema under `<topic>-value` — and the
//! consumer and a replay read them, knowing the id from a map of ids to schema files or from
//! the registry. Nothing is dead-lettered and the cloud equals the legacy data.

use std::time::Duration;

use anyhow::ensure;
use tandem_consumer::CloudClient;
use tandem_testkit::{
    brokers, read_until_quiet, seeded_legacy, topic, until_clean, Cloud, PgDatabase, ReplayParts,
    Running, Seeded, Tandem,
};

fn tandem() -> Tandem {
    Tandem::new(env!("CARGO_BIN_EXE_tandem"))
}

/// The pipeline with the producer given `producer_flags` and the consumer and a replay given
/// `reader_flags`, until clean; then a replay of the first account, which must verify clean.
/// Returns the cloud, for what the test checks of it.
async fn confluent_pipeline(
    prefix: &str,
    producer_flags: impl Fn(&Cloud, &str) -> Vec<String>,
    reader_flags: impl Fn(&Cloud, &std::path::Path) -> Vec<String>,
) -> anyhow::Result<(Cloud, String)> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        accounts, sources, ..
    } = seeded_legacy(dir.path(), prefix, 2).await?;
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(&mapping, tandem_workload::MAPPING)?;
    let reader = reader_flags(&cloud, dir.path());

    let mut producer = tandem().produce(&sources, &brokers, &topic, &stores.url);
    producer.args(producer_flags(&cloud, &topic));
    let mut consumer = tandem().consume(
        &mapping,
        (&brokers, &topic),
        &stores.url,
        &cloud.url,
        &dir.path().join("consumer.log"),
    );
    consumer.args(&reader);
    let _running = (
        Running::spawn(&mut producer)?,
        Running::spawn(&mut consumer)?,
    );
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let drift = until_clean(&sources, &client, &accounts, Duration::from_secs(90)).await?;
    ensure!(drift.iter().all(|d| d.is_clean()), "{drift:#?}");
    let dead = read_until_quiet(&brokers, &format!("{topic}.dlq"), Duration::from_secs(2)).await;
    ensure!(
        matches!(&dead, Ok(letters) if letters.is_empty()),
        "dead letters: {dead:?}; consumer log: {}",
        std::fs::read_to_string(dir.path().join("consumer.log"))?
    );

    let into = format!("{}-copy", accounts[0]);
    let parts = ReplayParts {
        sources: &sources,
        mapping: &mapping,
        brokers: &brokers,
        topic: &topic,
        store: &stores.url,
        cloud: &cloud.url,
    };
    let out = tandem()
        .replay(&accounts[0], &into, parts)
        .args(&reader)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && stdout.contains(r#""drift":{"missing":0,"extra":0,"different":0}"#)
            && !stdout.contains(r#""events":0"#),
        "replay: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stores.drop().await?;
    Ok((cloud, topic))
}

/// Without a registry: the producer frames with a fixed id, and the readers are told which
/// schema file that id stands for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_framing_round_trips_through_a_map_of_schema_ids() -> anyhow::Result<()> {
    confluent_pipeline(
        "cf-map",
        |_, _| vec!["--confluent-schema-id".into(), "42".into()],
        |_, dir| {
            let (file, text) = tandem_event::SCHEMA_FILES[tandem_event::SCHEMA_FILES.len() - 1];
            let schemas = dir.join("schemas");
            let map = schemas.join("ids.toml");
            let written = std::fs::create_dir_all(&schemas)
                .and_then(|()| std::fs::write(schemas.join(file), text))
                .and_then(|()| std::fs::write(&map, format!("[ids]\n42 = \"{file}\"\n")));
            assert!(written.is_ok(), "cannot write the schema map: {written:?}");
            vec!["--schema-ids".into(), map.display().to_string()]
        },
    )
    .await?;
    Ok(())
}

/// With a registry (cloudsim's): the producer registers its schema under `<topic>-value` and
/// frames with the id it gets; the readers look the id up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_framing_round_trips_through_a_schema_registry() -> anyhow::Result<()> {
    let registry = |cloud: &Cloud| vec!["--schema-registry".to_owned(), cloud.url.clone()];
    let (cloud, topic) = confluent_pipeline(
        "cf-registry",
        |cloud, _| registry(cloud),
        |cloud, _| registry(cloud),
    )
    .await?;
    let subjects: serde_json::Value = tandem_consumer::http_client()
        .build()?
        .get(format!("{}/subjects", cloud.url))
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        subjects == serde_json::json!([format!("{topic}-value")]),
        "{subjects}"
    );
    Ok(())
}
