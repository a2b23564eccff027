//! `tandem bench rebuild`: an account rebuilt from a topic that also holds many other
//! accounts' events, as `tandem replay` does it, then verified.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tandem_cloudsim::CloudSim;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::replay::{Replay, ReplayFrom, ReplayOptions};
use tandem_consumer::{CloudClient, Engine, Store};
use tandem_event::{ChangeEvent, Codec, Kind, Value};
use tandem_producer::config::Sources;
use tandem_producer::{Producer, Publisher};
use tokio_util::sync::CancellationToken;

use crate::verify::verify_targets;

const ACCOUNT: &str = "rebuild";
const INTO: &str = "rebuild-copy";

/// How big the bench is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Setup {
    pub records: usize,
    pub accounts: usize,
    pub events: usize,
    pub partitions: i32,
    pub json: bool,
}

pub(super) async fn run(setup: Setup) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir()?;
    let say = |line: String| {
        if !setup.json {
            eprintln!("bench rebuild: {line}");
        }
    };
    // The account's legacy rows: contacts with a phone each, properties, tenancies.
    let legacy = tandem_workload::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let quarter = (setup.records / 10).max(1);
    let contacts = (setup.records - 2 * quarter) / 2;
    let rows = |table: &str, columns: &str, select: &str, n: usize| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO {table} (account_id, id, {columns}, changed_at_ms) \
             SELECT '{ACCOUNT}', i, {select}, 0 FROM n"
        )
    };
    for sql in [
        rows(
            "contacts",
            "first_name, last_name, email",
            "'First' || i, 'Last', 'c' || i || '@example.com'",
            contacts,
        ),
        rows(
            "contact_phones",
            "contact_id, kind, number",
            "i, 'mobile', '+44 20 7946 ' || i",
            contacts,
        ),
        rows(
            "properties",
            "owner_contact_id, street, city, bedrooms",
            "i, i || ' High Street', 'York', 1 + i % 5",
            quarter,
        ),
        rows(
            "tenancies",
            "property_id, tenant_contact_id, start_date, rent",
            "i, i, '2026-01-01', '1250.00'",
            quarter,
        ),
    ] {
        legacy.execute(&sql).await?;
    }
    let records = 2 * contacts + 2 * quarter;
    say(format!("{records} legacy rows in account {ACCOUNT}"));

    let mock = rdkafka::mocking::MockCluster::new(1).context("cannot start the mock broker")?;
    let brokers = mock.bootstrap_servers();
    let topic = "bench-rebuild";
    mock.create_topic(topic, setup.partitions, 1)?;
    let publisher = Publisher::connect(&brokers, topic, Codec::default(), &[]).await?;
    // Other accounts' events, half before the account's snapshot and half after.
    let per_account = setup.events / setup.accounts.max(1);
    let noise = |half: usize| -> Vec<ChangeEvent> {
        (0..setup.accounts)
            .flat_map(|a| {
                (0..per_account / 2).map(move |i| {
                    let id = half * per_account + i;
                    let mut event = ChangeEvent::new(
                        &format!("other-{a:04}"),
                        Kind::Created,
                        "contacts",
                        &id.to_string(),
                        0,
                        id as i64 + 1,
                    );
                    event.data = Some(
                        [
                            ("id".to_owned(), Value::Long(id as i64)),
                            ("first_name".to_owned(), Value::String("Other".into())),
                            ("last_name".to_owned(), Value::String(format!("N{id}"))),
                        ]
                        .into(),
                    );
                    event
                })
            })
            .collect()
    };
    let mut in_topic = 0;
    for chunk in noise(0).chunks(2_000) {
        publisher.publish(chunk).await?;
        in_topic += chunk.len();
    }
    let origin = Path::new("bench-sources.toml");
    let producer = Producer::connect(
        &Sources::parse(&tandem_workload::sources_for(&legacy.url), origin)?,
        origin,
        tandem_producer::Options {
            brokers: brokers.clone(),
            topic: topic.into(),
            store_url: format!("sqlite://{}", dir.path().join("producer.db").display()),
            ..Default::default()
        },
    )
    .await?;
    let snapshot = producer.cycle().await? as usize;
    in_topic += snapshot;
    for chunk in noise(1).chunks(2_000) {
        publisher.publish(chunk).await?;
        in_topic += chunk.len();
    }
    say(format!(
        "{in_topic} events in {} partitions, {snapshot} of them the account's snapshot",
        setup.partitions
    ));

    let stop = CancellationToken::new();
    let cloud = CloudSim::bind(
        "127.0.0.1:0".parse()?,
        tandem_cloudsim::Options {
            database_url: format!("sqlite://{}", dir.path().join("cloud.db").display()),
            ..Default::default()
        },
    )
    .await?;
    let cloud_url = cloud.base_url();
    let cloud_task = tokio::spawn(cloud.serve(stop.child_token()));
    let mapping = Arc::new(Mapping::parse(
        tandem_workload::MAPPING,
        Path::new("mapping.toml"),
    )?);
    let client = CloudClient::new(&cloud_url, Duration::from_secs(10), 8);
    let store = Store::open(&format!(
        "sqlite://{}",
        dir.path().join("consumer.db").display()
    ))
    .await?;
    let replay = Replay::new(
        Engine::new(mapping.clone(), store.clone(), client.clone()),
        ReplayOptions {
            kafka: tandem_consumer::Options {
                brokers: brokers.clone(),
                topic: topic.into(),
                ..Default::default()
            },
            account: ACCOUNT.into(),
            into: INTO.into(),
            from: ReplayFrom::Earliest,
            restart: false,
            partition: None,
            in_place: None,
        },
    )?;
    let started = Instant::now();
    let report = replay.run(&CancellationToken::new(), |_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    let pairs = [(ACCOUNT.to_owned(), INTO.to_owned())];
    let verdict = verify_targets(producer.legacy(), &mapping, &client, &pairs).await?;
    let drift = verdict[0].counts();
    let out = json!({
        "records": records,
        "events_in_topic": in_topic,
        "partitions": setup.partitions,
        "events_replayed": report.progress.events,
        "messages_read": report.progress.read,
        "share_of_topic_read": super::rig::round3(report.progress.read as f64 / in_topic.max(1) as f64),
        "resources": store.resource_count(INTO).await?,
        "seconds": super::rig::round3(seconds),
        "events_per_s": (report.progress.events as f64 / seconds.max(1e-9)).round(),
        "drift": drift,
        "duplicates": verdict[0].duplicates.len(),
    });
    stop.cancel();
    cloud_task.await??;
    if setup.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    let clean = drift == Default::default() && verdict[0].duplicates.is_empty();
    Ok(if clean { 0 } else { 1 })
}
