//! Parking: an account whose event fails permanently is parked with its later events held,
//! other accounts flow on, and a resumed account's held events are applied — in a task of its
//! own, which a shutdown stops even while the cloud API keeps it waiting.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::ensure;
use tandem_consumer::{CloudClient, Store};
use tandem_event::Codec;
use tandem_producer::Publisher;
use tandem_testkit::{
    brokers, contact, topic, unique, Cloud, ConsumerSetup, PgDatabase, TestConsumer,
};

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
    let running = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url)
            .group(&unique("group"))
            .without_kafka_commits(),
    )
    .await?;
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
    tandem_consumer::http_client()
        .build()?
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

/// A resumed account whose cloud calls hang: resuming runs beside the reading of the topic, so
/// messages keep being taken in (a bad one is dead-lettered meanwhile), and a shutdown ends it
/// at once instead of waiting for the cloud. (It used to run inside the read loop, where a
/// slow cloud API stopped the reading and held up the shutdown.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_resume_neither_blocks_reading_nor_shutdown() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(tandem_cloudsim::Faults {
        reject_accounts: vec!["bad".into()],
        ..Default::default()
    })
    .await?;
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    publisher
        .publish(&[contact("bad", 1, 1, "b@example.com")])
        .await?;
    let mut setup = ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url);
    setup.options.group = unique("group");
    let running = TestConsumer::start(setup).await?;
    running
        .until("bad parked", |s| {
            s.dead_lettered.load(Ordering::Relaxed) == 1
        })
        .await?;
    // The cloud now takes ten minutes to answer; the operator resumes the account.
    cloud
        .set_faults(tandem_cloudsim::Faults {
            latency_ms: 600_000,
            ..Default::default()
        })
        .await;
    ensure!(Store::open(&store.url).await?.request_resume("bad").await?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The topic is still read: a bad message is dead-lettered while the resume hangs.
    let raw: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    raw.send(
        rdkafka::producer::FutureRecord::to(&topic)
            .key("other")
            .payload("not an event".as_bytes()),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)?;
    running
        .until("the bad message dead-lettered", |s| {
            s.dead_lettered.load(Ordering::Relaxed) == 2
        })
        .await?;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), running.stop())
        .await
        .map_err(|_| anyhow::anyhow!("the consumer did not stop within 15 s of its shutdown"))??;
    eprintln!(
        "stopped {} ms after the shutdown, a resume's call hanging",
        stopping.elapsed().as_millis()
    );
    // The account is still parked, its held event kept for the next run.
    let parked = Store::open(&store.url).await?.parked_accounts().await?;
    ensure!(parked.len() == 1 && parked[0].0 == "bad", "{parked:?}");
    cloud.stop().await?;
    store.drop().await
}
