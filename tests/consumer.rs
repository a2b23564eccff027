//! The consumer against the real broker, PostgreSQL and cloudsim over HTTP: the store decides
//! where a restarted consumer resumes, and bad messages are dead-lettered with their original
//! bytes while valid events keep flowing.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::TopicPartitionList;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::{Bookkeeping, CloudClient, Engine, Fence, Grant, LeaseId, Position, Store};
use tandem_event::{ChangeEvent, Codec, Kind, Value};
use tandem_producer::Publisher;
use tandem_testkit::{
    brokers, contact, topic, unique, Cloud, ConsumerSetup, PgDatabase, TestConsumer,
};
use tandem_workload as domain;
use tokio_util::sync::CancellationToken;

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

    let first = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url)
            .group(&group)
            .without_kafka_commits(),
    )
    .await?;
    first
        .until("5 applied", |s| s.applied.load(Ordering::Relaxed) == 5)
        .await?;
    first.stop().await?;

    // Kafka has no committed offset for the group, so it re-delivers everything; the store
    // says all five are applied, and nothing reaches the cloud twice.
    let second = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url)
            .group(&group)
            .without_kafka_commits(),
    )
    .await?;
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
    let running = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url)
            .group(&unique("group"))
            .without_kafka_commits(),
    )
    .await?;
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
    let running = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url)
            .group(&unique("group"))
            .without_kafka_commits(),
    )
    .await?;
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
    // Long enough that a loaded machine does not let it lapse between the first calls.
    let short = Duration::from_secs(3);
    ensure!(store.try_lease(&first, "acme", short).await? == Grant::Taken);
    ensure!(store.try_lease(&first, "acme", short).await? == Grant::Renewed);
    ensure!(store.try_lease(&second, "acme", short).await? == Grant::Elsewhere);
    // The first worker stalls past its lease, and the second takes the account over.
    tokio::time::sleep(Duration::from_millis(3300)).await;
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
    store.commit("acme", book).await?;
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .create()?;
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(2))?;
    committer.commit(&offsets, CommitMode::Sync)?;
    drop(committer);

    let consumer = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &db.url, &cloud.url)
            .group(&group)
            .without_kafka_commits(),
    )
    .await?;
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

/// An account applied to another cloud account (its target): its documents, ID map and
/// positions are the target's, and the account of the same id is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_is_applied_to_its_target() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let db = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let store = Store::open(&db.url).await?;
    store.set_target("acme", "acme-eu").await?;
    let refused = store.set_target("globex", "acme-eu").await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("it is the target of acme")),
        "{refused:?}"
    );
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    publisher
        .publish(&[
            contact("acme", 1, 1, "a@example.com"),
            contact("acme", 2, 2, "b@example.com"),
            contact("acme", 1, 3, "a2@example.com"),
        ])
        .await?;
    let running =
        TestConsumer::start(ConsumerSetup::new(&brokers, &topic, &db.url, &cloud.url)).await?;
    running
        .until("three applied", |s| s.applied.load(Ordering::Relaxed) == 3)
        .await?;
    running.stop().await?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(5), 1);
    let moved = client.list("acme-eu", "contacts").await?;
    ensure!(moved.len() == 2, "{moved:?}");
    ensure!(
        moved.iter().any(|c| c["email"] == "a2@example.com"),
        "{moved:?}"
    );
    ensure!(client.list("acme", "contacts").await?.is_empty());
    ensure!(store.cloud_id("acme-eu", "contact", "1").await?.is_some());
    ensure!(store.cloud_id("acme", "contact", "1").await?.is_none());
    cloud.stop().await?;
    db.drop().await
}

/// Books committed at the same time share one transaction (group commit): each is written
/// whole under its own lease, a book whose lease was lost writes nothing and says so, two
/// writes of one mirror row keep the newer version, and the positions end at the highest
/// offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn books_committed_together_are_each_written_whole_under_their_lease() -> anyhow::Result<()> {
    let db = PgDatabase::create().await?;
    let store = Store::open(&db.url).await?;
    let group = unique("group");
    let lease = |owner: &str| LeaseId {
        group: group.clone(),
        owner: owner.to_owned(),
    };
    let accounts: Vec<String> = (0..30).map(|i| format!("acct-{i:02}")).collect();
    for account in &accounts {
        ensure!(
            store
                .try_lease(&lease("us"), account, Duration::from_secs(60))
                .await?
                != Grant::Elsewhere
        );
    }
    let position = |account_index: usize, offset: i64| Position {
        group: group.clone(),
        topic: "t".into(),
        partition: (account_index % 2) as i32,
        next_offset: offset + 1,
        watermark: offset + 1,
    };
    let book = |account_index: usize, version: i64, owner: &str| {
        let mut data = tandem_event::Row::new();
        data.insert("id".into(), Value::Long(1));
        data.insert("version".into(), Value::Long(version));
        Bookkeeping {
            mirror: vec![(
                "contacts".into(),
                "1".into(),
                tandem_consumer::MirrorRow {
                    epoch: 0,
                    version,
                    parent: None,
                    data: Some(data),
                    snapshot_id: None,
                },
            )],
            ids: vec![(
                ("contact".into(), "1".into()),
                Some((format!("cloud-{account_index}-{version}"), "hash".into())),
            )],
            position: Some(position(
                account_index,
                100 + account_index as i64 * 10 + version,
            )),
            lease: Some(lease(owner)),
            ..Bookkeeping::default()
        }
    };
    // Every account's book, a second (newer) write of acct-03's row, and a book under a lease
    // acct-07's holder does not have.
    let mut commits = Vec::new();
    for (i, account) in accounts.iter().enumerate() {
        commits.push((account.clone(), book(i, 1, "us")));
    }
    commits.push((accounts[3].clone(), book(3, 2, "us")));
    commits.push((accounts[7].clone(), book(7, 5, "someone else")));
    let outcomes = futures::future::join_all(commits.into_iter().map(|(account, book)| {
        let store = store.clone();
        async move { store.commit(&account, book).await }
    }))
    .await;
    let (lost, ok): (Vec<_>, Vec<_>) = outcomes.iter().partition(|o| o.is_err());
    ensure!(ok.len() == 31, "{} books committed", ok.len());
    ensure!(lost.len() == 1 && lost[0].as_ref().is_err_and(|e| e.is_fenced()));

    for (i, account) in accounts.iter().enumerate() {
        let row = store
            .mirror(account, "contacts", "1")
            .await?
            .context("no mirror row")?;
        let version = if i == 3 { 2 } else { 1 };
        ensure!(row.version == version, "{account}: version {}", row.version);
        let id = store
            .cloud_id(account, "contact", "1")
            .await?
            .context("no cloud id")?;
        ensure!(id.0 == format!("cloud-{i}-{version}"), "{account}: {id:?}");
        let next = store
            .account_position(&group, "t", (i % 2) as i32, account)
            .await?;
        ensure!(next == Some(101 + i as i64 * 10 + version));
    }
    // The lost lease's book left acct-07 as it was.
    ensure!(store
        .cloud_id(&accounts[7], "contact", "1")
        .await?
        .is_some_and(|id| id.0 == "cloud-7-1"));
    let positions = store.positions(&group, "t").await?;
    ensure!(
        positions.get(&0) == Some(&(100 + 28 * 10 + 2)),
        "{positions:?}"
    );
    ensure!(
        positions.get(&1) == Some(&(100 + 29 * 10 + 2)),
        "{positions:?}"
    );
    db.drop().await
}
