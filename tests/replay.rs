//! Replay: an account rebuilt from the topic into a new target, through Tansu, PostgreSQL and
//! cloudsim over HTTP — after creates, updates, deletes, moves and a database restore — ends
//! equal to the legacy data with no duplicate create, and leaves the live target untouched.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use tandem_cli::verify::verify_targets;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::replay::{Replay, ReplayFrom, ReplayOptions};
use tandem_consumer::verify::Totals;
use tandem_consumer::{CloudClient, Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::{
    brokers, drained, seeded_legacy, topic, Cloud, ConsumerSetup, PgDatabase, Seeded, TestConsumer,
};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_replayed_into_a_new_target_equals_the_legacy_data() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 2).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "replay", 4).await?;
    let origin = Path::new("sources.toml");
    let producer = Producer::connect(
        &Sources::load(&sources)?,
        origin,
        tandem_producer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            store_url: stores.url.clone(),
            delete_check_interval: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await?;
    let live = TestConsumer::start(ConsumerSetup::new(
        &brokers,
        &topic,
        &stores.url,
        &cloud.url,
    ))
    .await?;
    // Enrolment, then changes of every kind, and the account restored from a backup taken
    // half-way: its history in the topic holds two epochs.
    let account = accounts[0].clone();
    let mut rng = tandem_workload::rng(21);
    drained(&producer, &live.stats()).await?;
    for round in 0..60 {
        for a in &accounts {
            legacy.random_change(a, &mut rng).await?;
        }
        if round == 20 {
            legacy.backup(&account).await?;
        }
        if round % 10 == 0 {
            producer.cycle().await?;
        }
    }
    legacy.restore(&account).await?;
    for _ in 0..10 {
        legacy.random_change(&account, &mut rng).await?;
    }
    drained(&producer, &live.stats()).await?;
    let mapping = Arc::new(Mapping::parse(
        tandem_workload::MAPPING,
        Path::new("mapping.toml"),
    )?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let live_pair = [(account.clone(), account.clone())];
    let before = verify_targets(producer.legacy(), &mapping, &client, &live_pair).await?;
    ensure!(Totals::of(&before) == Totals::default(), "{before:#?}");
    let live_audit = client.audit(&account).await?.context("audit")?.len();

    // The rebuild, into an empty cloud account, while the live consumer keeps running.
    let into = format!("{account}-rebuilt");
    let replay = Replay::new(
        Engine::new(
            mapping.clone(),
            Store::open(&stores.url).await?,
            client.clone(),
        ),
        ReplayOptions {
            kafka: tandem_consumer::Options {
                brokers: brokers.clone(),
                topic: topic.clone(),
                ..Default::default()
            },
            account: account.clone(),
            into: into.clone(),
            from: ReplayFrom::Earliest,
            restart: false,
            partition: None,
            in_place: None,
        },
    )?;
    let report = replay.run(&CancellationToken::new(), |_| {}).await?;
    ensure!(report.progress.events > 50, "{report:?}");
    let rebuilt = [(account.clone(), into.clone())];
    let drift = verify_targets(producer.legacy(), &mapping, &client, &rebuilt).await?;
    ensure!(
        Totals::of(&drift) == Totals::default(),
        "{report:?}\n{drift:#?}"
    );
    ensure!(
        client.audit(&account).await?.context("audit")?.len() == live_audit,
        "the replay touched the live target"
    );
    // Run again: everything is applied already, nothing reaches the cloud.
    let rebuilt_audit = client.audit(&into).await?.context("audit")?.len();
    let again = replay.run(&CancellationToken::new(), |_| {}).await?;
    ensure!(again.progress.applied == 0, "{again:?}");
    ensure!(client.audit(&into).await?.context("audit")?.len() == rebuilt_audit);
    // Started over, the rebuild finds the documents it made by their idempotency keys:
    // still no drift, and not one created twice.
    let restarted = Replay::new(
        Engine::new(
            mapping.clone(),
            Store::open(&stores.url).await?,
            client.clone(),
        ),
        ReplayOptions {
            kafka: tandem_consumer::Options {
                brokers: brokers.clone(),
                topic: topic.clone(),
                ..Default::default()
            },
            account: account.clone(),
            into: into.clone(),
            from: ReplayFrom::Earliest,
            restart: true,
            partition: None,
            in_place: None,
        },
    )?;
    let over = restarted.run(&CancellationToken::new(), |_| {}).await?;
    ensure!(over.progress.applied > 0, "{over:?}");
    let drift = verify_targets(producer.legacy(), &mapping, &client, &rebuilt).await?;
    ensure!(Totals::of(&drift) == Totals::default(), "{drift:#?}");
    live.stop().await?;
    cloud.stop().await?;
    stores.drop().await
}

/// On a topic that lost its early events (librdkafka's in-process mock broker keeps 5 MB a
/// partition), an account is rebuilt from its latest snapshot still complete in the log; an
/// account with none left, or asked from the earliest event, is refused with the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_a_snapshot_needs_no_earlier_event() -> anyhow::Result<()> {
    use tandem_event::{ChangeEvent, Codec, Kind, Value};
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    let brokers = mock.bootstrap_servers();
    let topic = "tandem-trimmed".to_owned();
    mock.create_topic(&topic, 1, 1)?;
    mock.create_topic(&format!("{topic}.dlq"), 1, 1)?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;
    let store = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
    let Seeded {
        legacy,
        accounts,
        sources,
    } = seeded_legacy(dir.path(), "trim", 2).await?;
    let producer = Producer::connect(
        &Sources::load(&sources)?,
        Path::new("sources.toml"),
        tandem_producer::Options {
            brokers: brokers.clone(),
            topic: topic.clone(),
            store_url: store("producer.db"),
            delete_check_interval: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await?;
    let live = TestConsumer::start(ConsumerSetup::new(
        &brokers,
        &topic,
        &store("consumer.db"),
        &cloud.url,
    ))
    .await?;
    drained(&producer, &live.stats()).await?;
    let (kept, lost) = (accounts[0].clone(), accounts[1].clone());

    // Six megabytes of another account's events push both enrolment snapshots out of the log.
    let publisher =
        tandem_producer::Publisher::connect(&brokers, &topic, Codec::default(), &[]).await?;
    for chunk in (1..=120).collect::<Vec<i64>>().chunks(20) {
        let events: Vec<ChangeEvent> = chunk
            .iter()
            .map(|&i| {
                let mut e =
                    ChangeEvent::new("filler", Kind::Created, "blobs", &i.to_string(), 0, i);
                e.data = Some([("blob".to_owned(), Value::String("x".repeat(50_000)))].into());
                e
            })
            .collect();
        publisher.publish(&events).await?;
    }
    // A new snapshot of one account, and changes after it.
    let snapshot = producer.snapshot(&kept, "after-trim").await?;
    ensure!(
        matches!(snapshot, tandem_producer::Snapshot::Published(_)),
        "{snapshot:?}"
    );
    let mut rng = tandem_workload::rng(5);
    for _ in 0..15 {
        legacy.random_change(&kept, &mut rng).await?;
    }
    drained(&producer, &live.stats()).await?;
    live.until("the filler applied", |s| {
        s.applied.load(std::sync::atomic::Ordering::Relaxed) > 100
    })
    .await?;

    let mapping = Arc::new(Mapping::parse(
        tandem_workload::MAPPING,
        Path::new("mapping.toml"),
    )?);
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let replay = |account: &str, from: ReplayFrom| -> anyhow::Result<Replay> {
        Ok(Replay::new(
            Engine::new(mapping.clone(), live.store.clone(), client.clone()),
            ReplayOptions {
                kafka: tandem_consumer::Options {
                    brokers: brokers.clone(),
                    topic: topic.clone(),
                    ..Default::default()
                },
                account: account.to_owned(),
                into: format!("{account}-rebuilt"),
                from,
                restart: false,
                partition: None,
                in_place: None,
            },
        )?)
    };
    let stop = CancellationToken::new();
    let report = replay(&kept, ReplayFrom::Snapshot)?
        .run(&stop, |_| {})
        .await?;
    let rebuilt = [(kept.clone(), format!("{kept}-rebuilt"))];
    let drift = verify_targets(producer.legacy(), &mapping, &client, &rebuilt).await?;
    ensure!(
        Totals::of(&drift) == Totals::default() && report.progress.events > 0,
        "{report:?}\n{drift:#?}"
    );
    for from in [ReplayFrom::Snapshot, ReplayFrom::Earliest] {
        let refused = replay(&lost, from)?.run(&stop, |_| {}).await;
        let message = refused
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        ensure!(
            message.contains(&format!("tandem snapshot --account {lost}")),
            "{from:?}: {refused:?}"
        );
    }
    live.stop().await?;
    cloud.stop().await
}
