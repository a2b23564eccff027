//! Bad configuration stops at start-up with a message naming the file, the key and what is
//! wrong — checked against a real SQLite legacy database.

use std::path::Path;

use anyhow::ensure;
use tandem_consumer::mapping::Mapping;
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;
use tandem_producer::Producer;
use tandem_workload as domain;

async fn demo_legacy(dir: &Path) -> anyhow::Result<domain::LegacyDb> {
    Ok(domain::LegacyDb::create(&dir.join("legacy.db")).await?)
}

async fn connect_error(sources: &str) -> anyhow::Result<String> {
    let origin = Path::new("sources.toml");
    let sources = Sources::parse(sources, origin)?;
    match Legacy::connect(&sources, origin).await {
        Ok(_) => anyhow::bail!("connect succeeded"),
        Err(e) => Ok(e.to_string()),
    }
}

#[tokio::test]
async fn unknown_table_is_named_with_file_and_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let legacy = demo_legacy(dir.path()).await?;
    let text =
        domain::sources_for(&legacy.url).replace("name = \"properties\"", "name = \"propertees\"");
    let message = connect_error(&text).await?;
    ensure!(
        message.contains("sources.toml: tables[2].name")
            && message.contains("\"propertees\" does not exist"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn missing_column_is_named_with_file_and_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let legacy = demo_legacy(dir.path()).await?;
    let text = domain::sources_for(&legacy.url).replacen(
        "version_column = \"row_version\"",
        "version_column = \"rowversion\"",
        1,
    );
    let message = connect_error(&text).await?;
    ensure!(
        message.contains("sources.toml: tables[0].version_column")
            && message.contains("column \"rowversion\" does not exist in table \"contacts\""),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn mapping_with_an_unknown_field_is_named_with_file_resource_and_field() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let legacy = demo_legacy(dir.path()).await?;
    let origin = Path::new("sources.toml");
    let connected = Legacy::connect(
        &Sources::parse(&domain::sources_for(&legacy.url), origin)?,
        origin,
    )
    .await?;
    let text = domain::MAPPING.replace(
        "bedrooms = { column = \"bedrooms\"",
        "bedrooms = { column = \"bedroom_count\"",
    );
    let mapping = Mapping::parse(&text, Path::new("mapping.toml"))?;
    let message = mapping
        .check_columns(&connected.columns())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        message.contains("mapping.toml: resource.property.fields.bedrooms")
            && message.contains("\"bedroom_count\" does not exist in table \"properties\""),
        "{message}"
    );
    let text = domain::MAPPING.replace(
        "ref = \"contact\", column = \"owner_contact_id\"",
        "ref = \"kontact\", column = \"owner_contact_id\"",
    );
    let message = Mapping::parse(&text, Path::new("mapping.toml"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(
        message.contains("mapping.toml: resource.property.fields.owner_id")
            && message.contains("unknown resource \"kontact\""),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_broker_is_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let legacy = demo_legacy(dir.path()).await?;
    let origin = Path::new("sources.toml");
    let sources = Sources::parse(&domain::sources_for(&legacy.url), origin)?;
    let result = Producer::connect(
        &sources,
        origin,
        tandem_producer::Options {
            // Nothing listens on port 1.
            brokers: "127.0.0.1:1".into(),
            store_url: format!("sqlite://{}", dir.path().join("producer.db").display()),
            ..Default::default()
        },
    )
    .await;
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    ensure!(
        message.contains("cannot reach broker 127.0.0.1:1"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn unreachable_legacy_database_is_named() -> anyhow::Result<()> {
    let message = connect_error(&domain::sources_for(
        "postgres://postgres@127.0.0.1:1/legacy",
    ))
    .await?;
    ensure!(
        message.contains("cannot open legacy database postgres://postgres@127.0.0.1:1/legacy"),
        "{message}"
    );
    Ok(())
}

/// The producer and the consumer may share one database, and sqlx records every migration
/// by its version in one table there: a version used by both would make the second part's
/// start fail with "previously applied but has been modified".
#[test]
fn producer_and_consumer_migrations_never_share_a_version() -> anyhow::Result<()> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut seen = std::collections::BTreeMap::new();
    for part in ["producer", "consumer"] {
        for entry in std::fs::read_dir(crates.join(part).join("migrations"))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let version = name.split('_').next().unwrap_or_default().to_owned();
            if let Some(other) = seen.insert(version.clone(), format!("{part}/{name}")) {
                anyhow::bail!("version {version} is used by {other} and {part}/{name}");
            }
        }
    }
    Ok(())
}
