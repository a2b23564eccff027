//! Dead letters: messages that cannot be applied go to the dead-letter topic with their
//! original bytes and the reason, while valid events keep flowing — and the dead-letter
//! producer connects the way every other client of the consumer does.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tandem_consumer::CloudClient;
use tandem_event::Codec;
use tandem_producer::Publisher;
use tandem_testkit::{
    brokers, contact, topic, unique, Cloud, ConsumerSetup, PgDatabase, TestConsumer,
};

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

    let running = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &store.url, &cloud.url)
            .group(&unique("group"))
            .without_kafka_commits(),
    )
    .await?;
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

/// Every client of the consumer takes the librdkafka properties given (`-X`): here the only
/// way to the broker is a `bootstrap.servers` given that way, the `--brokers` address leads
/// nowhere. The dead-letter producer used to be built from `--brokers` alone, so on a cluster
/// that needs `-X` (TLS, SASL) it could dead-letter nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_producer_takes_the_kafka_properties_given() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 1).await?;
    let store = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()?;
    raw.send(
        FutureRecord::to(&topic)
            .key("acme")
            .payload("not an event".as_bytes()),
        Duration::from_secs(10),
    )
    .await
    .map_err(|(e, _)| e)?;
    let publisher = Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    publisher
        .publish(&[contact("acme", 1, 1, "a@example.com")])
        .await?;
    // Port 9 (discard) on loopback: nothing answers there.
    let mut setup = ConsumerSetup::new("127.0.0.1:9", &topic, &store.url, &cloud.url)
        .kafka("bootstrap.servers", &brokers);
    setup.options.group = unique("group");
    let running = TestConsumer::start(setup).await?;
    running
        .until("the garbage dead-lettered and the contact applied", |s| {
            s.dead_lettered.load(Ordering::Relaxed) == 1 && s.applied.load(Ordering::Relaxed) == 1
        })
        .await?;
    running.stop().await?;
    let reader: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&[&format!("{topic}.dlq")])?;
    let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
        .await
        .context("nothing in the dead-letter topic")??;
    ensure!(message.payload() == Some("not an event".as_bytes()));
    cloud.stop().await?;
    store.drop().await
}
