//! Every column type a legacy database hands the producer reaches the cloud as the mapping
//! says: a real PostgreSQL and a real SQLite table read by the producer, published to the
//! broker, applied by the consumer to cloudsim over HTTP, and the document the cloud holds
//! compared field by field. A value no date-time can express parks its account with the
//! reason while the others flow.

use std::path::Path;

use anyhow::{ensure, Context as _};
use serde_json::{json, Map, Value as Json};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tandem_consumer::mapping::Mapping;
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::{brokers, topic, Cloud, ConsumerSetup, PgDatabase, TestConsumer};

/// One resource per row of `bookings`, every column mapped, some coerced.
const MAPPING: &str = r#"
[[resource]]
name = "booking"
root = "bookings"
collection = "bookings"
[resource.fields]
starts_at = { column = "starts_at", type = "timestamp" }
local_at = { column = "local_at", type = "timestamp" }
local_at_text = "local_at"
day = { column = "day", type = "timestamp" }
day_text = "day"
at_time = "at_time"
amount = { column = "amount", type = "decimal" }
ref = "ref"
meta = "meta"
blob = "blob"
tags = "tags"
counts = "counts"
paid = "paid"
"#;

/// Publishes every account's rows through the producer, applies them through the consumer,
/// and returns each account's `bookings` documents as the cloud holds them (without their
/// cloud ids), plus the consumer store's parked accounts: (account, reason).
async fn through_the_pipeline(
    sources: &str,
    accounts: &[&str],
) -> anyhow::Result<(Vec<Vec<Map<String, Json>>>, Vec<(String, String)>)> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let store = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let origin = Path::new("sources.toml");
    let producer = Producer::connect(
        &Sources::parse(sources, origin)?,
        origin,
        tandem_producer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            store_url: store("producer.db"),
            ..Default::default()
        },
    )
    .await?;
    let published = producer.cycle().await?;
    let mapping = Mapping::parse(MAPPING, Path::new("mapping.toml"))?;
    mapping.check_columns(&producer.legacy().columns())?;
    let mut setup = ConsumerSetup::new(&brokers, &topic, &store("consumer.db"), &cloud.url);
    setup.mapping = MAPPING.to_owned();
    let consumer = TestConsumer::start(setup).await?;
    consumer.until_handled(published).await?;
    let client = consumer.cloud.clone();
    let mut docs = Vec::new();
    for account in accounts {
        let mut listed: Vec<Map<String, Json>> = client
            .list(account, "bookings")
            .await?
            .into_iter()
            .filter_map(|doc| match doc {
                Json::Object(mut doc) => {
                    doc.remove("id");
                    Some(doc)
                }
                _ => None,
            })
            .collect();
        listed.sort_by_key(|doc| doc["external_ref"].to_string());
        docs.push(listed);
    }
    let parked = consumer
        .store
        .parked_accounts()
        .await?
        .into_iter()
        .map(|(account, reason, _, _)| (account, reason))
        .collect();
    consumer.stop().await?;
    cloud.stop().await?;
    Ok((docs, parked))
}

fn object(value: Json) -> anyhow::Result<Map<String, Json>> {
    match value {
        Json::Object(map) => Ok(map),
        other => anyhow::bail!("not an object: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_column_types_reach_the_cloud_as_mapped() -> anyhow::Result<()> {
    let legacy = PgDatabase::create().await?;
    let mut conn = PgConnection::connect(&legacy.url).await?;
    for statement in [
        "CREATE TABLE bookings (account_id TEXT NOT NULL, id BIGINT NOT NULL, \
         starts_at TIMESTAMPTZ, local_at TIMESTAMP, day DATE, at_time TIME, \
         amount NUMERIC(12,4), ref UUID, meta JSONB, blob BYTEA, tags TEXT[], counts INT[], \
         paid BOOLEAN, row_version BIGINT NOT NULL, PRIMARY KEY (account_id, id))",
        "CREATE INDEX bookings_version ON bookings (row_version)",
        // A session in another time zone writes the timestamptz: it is stored as an instant.
        "SET TIME ZONE 'Asia/Kolkata'",
        "INSERT INTO bookings VALUES \
         ('pg-1', 1, '2027-01-21 15:17:00', '2027-01-21 09:47:00.123456', '2027-01-21', \
          '09:47:30', 1250.5, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
          '{\"b\": 1, \"a\": [true, null]}', '\\x00ff10', '{\"a b\",c}', '{1,2,3}', true, 1), \
         ('pg-1', 2, '2027-06-01 00:00:00.5+02', NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
          '{}', NULL, false, 2), \
         ('pg-2', 1, 'infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 3)",
    ] {
        sqlx::query(statement).execute(&mut conn).await?;
    }
    conn.close().await?;
    let sources = format!(
        "[legacy]\nurl = \"{}\"\naccount_column = \"account_id\"\n\
         [[tables]]\nname = \"bookings\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n",
        legacy.url
    );
    let (docs, parked) = through_the_pipeline(&sources, &["pg-1", "pg-2"]).await?;
    let want = vec![
        object(json!({
            "external_ref": "1",
            "starts_at": "2027-01-21T09:47:00.000Z",
            "local_at": "2027-01-21T09:47:00.123456Z",
            "local_at_text": "2027-01-21 09:47:00.123456",
            "day": "2027-01-21T00:00:00.000Z",
            "day_text": "2027-01-21",
            "at_time": "09:47:30",
            "amount": "1250.5000",
            "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "meta": "{\"a\": [true, null], \"b\": 1}",
            "blob": "00ff10",
            "tags": "{\"a b\",c}",
            "counts": "{1,2,3}",
            "paid": true,
        }))?,
        object(json!({
            "external_ref": "2",
            "starts_at": "2027-05-31T22:00:00.500Z",
            "local_at": null,
            "local_at_text": null,
            "day": null,
            "day_text": null,
            "at_time": null,
            "amount": null,
            "ref": null,
            "meta": null,
            "blob": null,
            "tags": "{}",
            "counts": null,
            "paid": false,
        }))?,
    ];
    ensure!(docs[0] == want, "pg-1 in the cloud: {:#?}", docs[0]);
    // `infinity` is no date-time: the account is parked with the reason, the other flowed.
    ensure!(docs[1].is_empty(), "pg-2 in the cloud: {:?}", docs[1]);
    ensure!(
        parked.len() == 1
            && parked[0].0 == "pg-2"
            && parked[0].1.contains("starts_at")
            && parked[0].1.contains("infinity"),
        "{parked:?}"
    );
    legacy.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_column_types_reach_the_cloud_as_mapped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("legacy.db");
    let url = format!("sqlite://{}", path.display());
    let mut conn = SqliteConnection::connect(&format!("{url}?mode=rwc"))
        .await
        .context("cannot create the legacy database")?;
    for statement in [
        "CREATE TABLE bookings (account_id TEXT NOT NULL, id INTEGER NOT NULL, \
         starts_at, local_at TEXT, day TEXT, at_time TEXT, amount TEXT, ref TEXT, meta TEXT, \
         blob BLOB, tags TEXT, counts TEXT, paid BOOLEAN, row_version INTEGER NOT NULL, \
         PRIMARY KEY (account_id, id))",
        "CREATE INDEX bookings_version ON bookings (row_version)",
        // starts_at holds what applications write into SQLite: its own datetime() text, with
        // milliseconds, ISO 8601 with a T and an offset, and epoch milliseconds.
        "INSERT INTO bookings VALUES \
         ('lite', 1, '2027-01-21 09:47:00', '2027-01-21 09:47:00.123', '2027-01-21', '09:47', \
          '0.10', 'k-1', '{\"a\":1}', X'00FF10', 'x,y', '1', 1, 1), \
         ('lite', 2, '2027-01-21T15:17:00+05:30', '2027-01-21T09:47:00Z', NULL, NULL, \
          '-12', NULL, NULL, NULL, NULL, NULL, 0, 2), \
         ('lite', 3, 1800524820000, '2027-01-21T09:47:00.5', NULL, NULL, \
          NULL, NULL, NULL, NULL, NULL, NULL, NULL, 3)",
    ] {
        sqlx::query(statement).execute(&mut conn).await?;
    }
    conn.close().await?;
    let sources = format!(
        "[legacy]\nurl = \"{url}\"\naccount_column = \"account_id\"\n\
         [[tables]]\nname = \"bookings\"\nkey = [\"id\"]\nversion_column = \"row_version\"\n"
    );
    let (docs, parked) = through_the_pipeline(&sources, &["lite"]).await?;
    ensure!(parked.is_empty(), "{parked:?}");
    let nulls = |external_ref: &str, starts_at: &str, local_at: &str, local_text: &str| {
        json!({
            "external_ref": external_ref,
            "starts_at": starts_at,
            "local_at": local_at,
            "local_at_text": local_text,
            "day": null,
            "day_text": null,
            "at_time": null,
            "amount": null,
            "ref": null,
            "meta": null,
            "blob": null,
            "tags": null,
            "counts": null,
            "paid": null,
        })
    };
    let mut second = nulls(
        "2",
        "2027-01-21T09:47:00.000Z",
        "2027-01-21T09:47:00.000Z",
        "2027-01-21T09:47:00Z",
    );
    second["amount"] = json!("-12");
    second["paid"] = json!(false);
    let want = vec![
        object(json!({
            "external_ref": "1",
            "starts_at": "2027-01-21T09:47:00.000Z",
            "local_at": "2027-01-21T09:47:00.123Z",
            "local_at_text": "2027-01-21 09:47:00.123",
            "day": "2027-01-21T00:00:00.000Z",
            "day_text": "2027-01-21",
            "at_time": "09:47",
            "amount": "0.10",
            "ref": "k-1",
            "meta": "{\"a\":1}",
            "blob": "00ff10",
            "tags": "x,y",
            "counts": "1",
            "paid": true,
        }))?,
        object(second)?,
        object(nulls(
            "3",
            "2027-01-21T09:47:00.000Z",
            "2027-01-21T09:47:00.500Z",
            "2027-01-21T09:47:00.5",
        ))?,
    ];
    ensure!(docs[0] == want, "lite in the cloud: {:#?}", docs[0]);
    Ok(())
}
