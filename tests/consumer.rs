//! The consumer against the real broker, PostgreSQL and cloudsim over HTTP: the store decides
//! where a restarted consumer resumes, and bad messages are dead-lettered with their original
//! bytes while valid events keep flowing.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::TopicPartitionList;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::{
    Bookkeeping, CloudClient, Consumer, Engine, Fence, Grant, LeaseId, Position, Stats, Store,
};
use tandem_event::{ChangeEvent, Codec, Kind, Row, Value};
use tandem_producer::Publisher;
use tandem_testkit::{brokers, topic, unique, Cloud, PgDatabase};
use tandem_workload as domain;
use tokio_util::sync::CancellationToken;

fn contact(account: &str, id: i64, version: i64, email: &str) -> ChangeEvent {
    let kind = if version == id {
        Kind::Created
    } else {
        Kind::Updated
    };
    let mut event = ChangeEvent::new(account, kind, "contacts", &id.to_string(), 0, version);
    let row: Row = [
        ("id", Value::Long(id)),
        ("first_name", Value::String(format!("First{id}"))),
        ("last_name", Value::String("Last".into())),
        ("email", Value::String(email.into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    event.data = Some(row);
    event.occurred_at = tandem_producer::now_millis();
    event
}

struct Running {
    consumer: Arc<Consumer>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<tandem_consumer::Result<()>>,
}

async fn start(
    brokers: &str,
    topic: &str,
    group: &str,
    store: &str,
    cloud: &str,
) -> anyhow::Result<Running> {
    let mapping = Arc::new(Mapping::parse(domain::MAPPING, Path::new("mapping.toml"))?);
    let client = CloudClient::new(cloud, Duration::from_secs(10), 8);
    let engine = Engine::new(mapping, Store::open(store).await?, client);
    let consumer = Arc::new(Consumer::new(
        engine,
        tandem_consumer::Options {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            dead_letter_topic: format!("{topic}.dlq"),
            // No Kafka-side commits at all: where a restart resumes is the store's call alone.
            kafka: vec![
                ("session.timeout.ms".into(), "6000".into()),
                ("enable.auto.commit".into(), "false".into()),
            ],
            ..Default::default()
        },
    )?);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (consumer, stop) = (consumer.clone(), stop.clone());
        async move { consumer.run(stop).await }
    });
    Ok(Running {
        consumer,
        stop,
        task,
    })
}

impl Running {
    async fn until(&self, what: &str, done: impl Fn(&Stats) -> bool) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(&self.consumer.stats()) {
            ensure!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.consumer.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_where_the_store_says() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let group = unique("group");
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    let events: Vec<ChangeEvent> = (1..=5)
        .map(|i| contact("acme", i, i, "a@example.com"))
        .collect();
    publisher.publish(&events).await?;

    let first = start(&brokers, &topic, &group, &store.url, &cloud.url).await?;
    first
        .until("5 applied", |s| s.applied.load(Ordering::Relaxed) == 5)
        .await?;
    first.stop().await?;

    // Kafka has no committed offset for the group, so it re-delivers everything; the store
    // says all five are applied, and nothing reaches the cloud twice.
    let second = start(&brokers, &topic, &group, &store.url, &cloud.url).await?;
    second
        .until("5 re-deliveries", |s| {
            s.already_applied.load(Ordering::Relaxed) == 5
        })
        .await?;
    publisher
        .publish(&[contact("acme", 3, 9, "changed@example.com")])
        .await?;
    second
        .until("the update", |s| s.applied.load(Ordering::Relaxed) == 1)
        .await?;
    second.stop().await?;

    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    let audit = client
        .audit("acme")
        .await?
        .context("cloudsim has an audit log")?;
    let ops: Vec<&str> = audit.iter().map(|e| e.op.as_str()).collect();
    ensure!(
        ops == ["create", "create", "create", "create", "create", "update"],
        "{ops:?}"
    );
    let contacts = client.list("acme", "contacts").await?;
    let third = contacts
        .iter()
        .find(|c| c["external_ref"] == "3")
        .context("contact 3")?;
    ensure!(third["email"] == "changed@example.com", "{third}");

    cloud.stop().await?;
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dead_lettered_with_its_bytes_and_valid_events_flow() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    // 1,000 bad messages of every kind, with 50 valid events among them.
    let valid = Codec::default().encode(&contact("acme", 1, 1, "x@example.com"))?;
    let garbage: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| match i % 5 {
            0 => format!("not avro at all #{i}").into_bytes(),
            1 => vec![0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, (i % 256) as u8],
            2 => valid[..valid.len() - 1 - (i as usize % 20)].to_vec(),
            3 => vec![0, 0, 0, 0, 42, 2, 4],
            _ => Vec::new(),
        })
        .collect();
    let mut sends = Vec::new();
    for (i, bytes) in garbage.iter().enumerate() {
        if i % 20 == 0 {
            let id = (i / 20) as i64 + 1;
            publisher
                .publish(&[contact("acme", id, id, "x@example.com")])
                .await?;
        }
        sends.push(
            raw.send(
                FutureRecord::to(&topic)
                    .key("acme")
                    .payload(bytes.as_slice()),
                Duration::from_secs(10),
            ),
        );
        if sends.len() == 100 || i == garbage.len() - 1 {
            for sent in futures::future::join_all(sends.drain(..)).await {
                sent.map_err(|(e, _)| e)?;
            }
        }
    }

    let running = start(&brokers, &topic, &unique("group"), &store.url, &cloud.url).await?;
    running
        .until("50 applied and 1,000 dead-lettered", |s| {
            s.applied.load(Ordering::Relaxed) == 50
                && s.dead_lettered.load(Ordering::Relaxed) == 1000
        })
        .await?;
    running.stop().await?;

    let reader: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&[&format!("{topic}.dlq")])?;
    let mut dead: Vec<Vec<u8>> = Vec::new();
    while dead.len() < garbage.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv()).await??;
        let headers = message.headers().context("dead letters carry headers")?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        ensure!(header("tandem.source.topic").as_deref() == Some(topic.as_str()));
        ensure!(header("tandem.source.offset").is_some());
        ensure!(header("tandem.reason").is_some_and(|r| !r.is_empty()));
        dead.push(message.payload().unwrap_or_default().to_vec());
    }
    ensure!(
        dead == garbage,
        "every bad message is dead-lettered with its original bytes, in order"
    );
    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    ensure!(client.list("acme", "contacts").await?.len() == 50);

    cloud.stop().await?;
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_to_a_row_not_yet_seen_waits_for_it() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    // The property arrives before the contact it names as owner (the contact changed after the
    // producer's cycle read the contacts table).
    let mut property = ChangeEvent::new("acme", Kind::Created, "properties", "1", 0, 5);
    property.data = Some(
        [
            ("id", Value::Long(1)),
            ("owner_contact_id", Value::Long(9)),
            ("street", Value::String("1 High Street".into())),
            ("city", Value::String("York".into())),
            ("bedrooms", Value::Long(3)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    publisher.publish(&[property]).await?;
    let running = start(&brokers, &topic, &unique("group"), &store.url, &cloud.url).await?;
    running
        .until("the property event", |s| {
            s.applied.load(Ordering::Relaxed) == 1
        })
        .await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    ensure!(
        client.list("acme", "properties").await?.is_empty(),
        "sent with a dangling owner"
    );
    let parked = Store::open(&store.url).await?.parked().await?;
    ensure!(
        parked
            == [(
                "acme".into(),
                "property".into(),
                "1".into(),
                "contact/9".into()
            )],
        "{parked:?}"
    );

    publisher
        .publish(&[contact("acme", 9, 9, "owner@example.com")])
        .await?;
    running
        .until("the contact event", |s| {
            s.applied.load(Ordering::Relaxed) == 2
        })
        .await?;
    running.stop().await?;
    let contacts = client.list("acme", "contacts").await?;
    let properties = client.list("acme", "properties").await?;
    ensure!(contacts.len() == 1 && properties.len() == 1);
    ensure!(
        properties[0]["owner_id"] == contacts[0]["id"],
        "{properties:?}"
    );
    ensure!(Store::open(&store.url).await?.parked().await?.is_empty());
    cloud.stop().await?;
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_end_sweeps_what_the_snapshot_did_not_send() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    let contacts: Vec<ChangeEvent> = (1..=3)
        .map(|i| contact("acme", i, i, "a@example.com"))
        .collect();
    publisher.publish(&contacts).await?;
    let running = start(&brokers, &topic, &unique("group"), &store.url, &cloud.url).await?;
    running
        .until("3 contacts", |s| s.applied.load(Ordering::Relaxed) == 3)
        .await?;

    // Contact 2 was deleted while nobody watched; a snapshot re-sends 1 (unchanged) and 3
    // (changed) only.
    let marker = |kind| {
        let mut event = ChangeEvent::new("acme", kind, "", "s1", 0, 20);
        event.snapshot_id = Some("s1".into());
        event
    };
    let mut one = contact("acme", 1, 1, "a@example.com");
    one.snapshot_id = Some("s1".into());
    let mut three = contact("acme", 3, 12, "three@example.com");
    three.snapshot_id = Some("s1".into());
    publisher
        .publish(&[
            marker(Kind::SnapshotBegin),
            one,
            three,
            marker(Kind::SnapshotEnd),
        ])
        .await?;
    running
        .until("the snapshot", |s| {
            s.applied.load(Ordering::Relaxed) + s.skipped.load(Ordering::Relaxed) == 7
        })
        .await?;
    running.stop().await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    let mut refs: Vec<String> = client
        .list("acme", "contacts")
        .await?
        .iter()
        .map(|c| c["external_ref"].as_str().unwrap_or_default().to_owned())
        .collect();
    refs.sort();
    ensure!(refs == ["1", "3"], "{refs:?}");
    let audit = client.audit("acme").await?.context("audit")?;
    let ops: Vec<&str> = audit.iter().map(|e| e.op.as_str()).collect();
    ensure!(
        ops == ["create", "create", "create", "update", "delete"],
        "{ops:?}"
    );
    cloud.stop().await?;
    store.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failing_account_is_parked_and_resumed() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(tandem_cloudsim::Faults {
        reject_accounts: vec!["bad".into()],
        ..Default::default()
    })
    .await?;
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    let mut events = Vec::new();
    for i in 1..=3 {
        events.push(contact("good", i, i, "g@example.com"));
        events.push(contact("bad", i, i, "b@example.com"));
    }
    publisher.publish(&events).await?;
    let running = start(&brokers, &topic, &unique("group"), &store.url, &cloud.url).await?;
    running
        .until("good applied, bad parked", |s| {
            s.applied.load(Ordering::Relaxed) == 3
                && s.dead_lettered.load(Ordering::Relaxed) == 1
                && s.held.load(Ordering::Relaxed) == 2
        })
        .await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    ensure!(client.list("good", "contacts").await?.len() == 3);
    let consumer_store = Store::open(&store.url).await?;
    let parked = consumer_store.parked_accounts().await?;
    ensure!(
        parked.len() == 1 && parked[0].0 == "bad" && parked[0].2 == 3,
        "{parked:?}"
    );
    ensure!(
        parked[0].1.contains("422"),
        "the reason names the rejection: {}",
        parked[0].1
    );

    // The cause is fixed; the operator resumes the account.
    reqwest::Client::new()
        .put(format!("{}/admin/faults", cloud.url))
        .json(&serde_json::json!({}))
        .send()
        .await?
        .error_for_status()?;
    ensure!(consumer_store.request_resume("bad").await?);
    running
        .until("bad resumed", |s| s.applied.load(Ordering::Relaxed) == 6)
        .await?;
    ensure!(consumer_store.parked_accounts().await?.is_empty());
    publisher
        .publish(&[contact("bad", 2, 9, "later@example.com")])
        .await?;
    running
        .until("bad flows again", |s| {
            s.applied.load(Ordering::Relaxed) == 7
        })
        .await?;
    running.stop().await?;
    let bad = client.list("bad", "contacts").await?;
    ensure!(bad.len() == 3, "{bad:?}");
    ensure!(bad.iter().any(|c| c["email"] == "later@example.com"));
    cloud.stop().await?;
    store.drop().await
}

/// A worker whose lease on an account ran out while it was applying an event records nothing
/// once another worker took the account over: a late commit could undo what the new holder
/// recorded since. The new holder repeats the event, and the cloud sees one create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_records_nothing() -> anyhow::Result<()> {
    let db = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let mapping = Arc::new(Mapping::parse(domain::MAPPING, Path::new("mapping.toml"))?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let store = Store::open(&db.url).await?;
    let engine = Engine::new(mapping, store.clone(), client.clone());
    let lease = |owner: &str| LeaseId {
        group: "g".into(),
        owner: owner.into(),
    };
    let (first, second) = (lease("first"), lease("second"));
    let short = Duration::from_secs(1);
    ensure!(store.try_lease(&first, "acme", short).await? == Grant::Taken);
    ensure!(store.try_lease(&first, "acme", short).await? == Grant::Renewed);
    ensure!(store.try_lease(&second, "acme", short).await? == Grant::Elsewhere);
    // The first worker stalls past its lease, and the second takes the account over.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let long = Duration::from_secs(30);
    ensure!(store.try_lease(&second, "acme", long).await? == Grant::Taken);

    let open = Fence {
        cancelled: CancellationToken::new(),
        until: None,
        answers_by: None,
    };
    let at = |next_offset| Position {
        group: "g".into(),
        topic: "t".into(),
        partition: 0,
        next_offset,
        watermark: next_offset,
    };
    let created = contact("acme", 1, 1, "a@example.com");
    let late = engine
        .apply_until(&created, Some(at(1)), &open, &first)
        .await;
    ensure!(matches!(&late, Err(e) if e.is_fenced()), "{late:?}");
    ensure!(store.account_position("g", "t", 0, "acme").await?.is_none());
    ensure!(store.cloud_id("acme", "contact", "1").await?.is_none());

    engine
        .apply_until(&created, Some(at(1)), &open, &second)
        .await?;
    ensure!(store.account_position("g", "t", 0, "acme").await? == Some(1));
    ensure!(store.cloud_id("acme", "contact", "1").await?.is_some());
    let audit = client
        .audit("acme")
        .await?
        .context("cloudsim has an audit log")?;
    let ops: Vec<&str> = audit.iter().map(|e| e.op.as_str()).collect();
    ensure!(ops == ["create"], "{ops:?}");

    // Once the second worker gives the account up, the first may take it again: as a new
    // take, so it reads where the account is before it applies anything.
    store.release_lease(&second, "acme").await?;
    ensure!(store.try_lease(&first, "acme", short).await? == Grant::Taken);
    cloud.stop().await?;
    db.drop().await
}

/// Kafka's committed offset can lie inside a record batch (the producer sends many events in
/// one), and some brokers (Tansu 0.6) then deliver the partition from the next batch on. The
/// consumer must still apply every event from the store's position on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_inside_a_record_batch_loses_no_event() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,tandem_consumer=debug")
        .with_test_writer()
        .try_init();
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let group = unique("group");
    // Five events sent at once travel in one record batch.
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    let events: Vec<ChangeEvent> = (1..=5)
        .map(|i| contact("acme", i, i, "a@example.com"))
        .collect();
    publisher.publish(&events).await?;

    // The first two were applied before, per the store, and Kafka's committed offset is 2.
    let store = Store::open(&db.url).await?;
    let position = Position {
        group: group.clone(),
        topic: topic.clone(),
        partition: 0,
        next_offset: 2,
        watermark: 2,
    };
    let book = Bookkeeping {
        position: Some(position),
        ..Bookkeeping::default()
    };
    store.commit("acme", &book).await?;
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .create()?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(2))?;
    committer.commit(&offsets, CommitMode::Sync)?;
    drop(committer);

    let consumer = start(&brokers, &topic, &group, &db.url, &cloud.url).await?;
    consumer
        .until("the last three applied", |s| {
            s.applied.load(Ordering::Relaxed) == 3
        })
        .await?;
    consumer.stop().await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    let mut refs: Vec<String> = client
        .list("acme", "contacts")
        .await?
        .iter()
        .filter_map(|c| c["external_ref"].as_str().map(str::to_owned))
        .collect();
    refs.sort();
    ensure!(refs == ["3", "4", "5"], "{refs:?}");
    cloud.stop().await?;
    db.drop().await
}
