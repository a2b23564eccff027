//! End to end through real parts: the demo domain's SQLite legacy database, the Kafka-protocol
//! broker the test command started, PostgreSQL stores, and cloudsim over HTTP. The oracle is
//! `verify`: the cloud equals what the legacy data says through the mapping, with no duplicate
//! creates in cloudsim's audit log.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use tandem_cli::demo::{self, DemoOptions};
use tandem_cli::verify::verify_accounts;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::Totals;
use tandem_consumer::CloudClient;
use tandem_producer::config::Sources;
use tandem_producer::Producer;
use tandem_testkit::{brokers, drained, topic, Cloud, ConsumerSetup, PgDatabase, TestConsumer};
use tandem_workload as domain;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_accounts_reach_zero_drift_through_tansu_postgres_and_http() -> anyhow::Result<()> {
    let brokers = brokers()?;
    let topic = topic(&brokers, 4).await?;
    let stores = PgDatabase::create().await?;
    let cloud = Cloud::start(Default::default()).await?;
    let dir = tempfile::tempdir()?;

    let legacy = domain::LegacyDb::create(&dir.path().join("legacy.db")).await?;
    let accounts: Vec<String> = (1..=24).map(|i| format!("e2e-{i:02}")).collect();
    let mut rng = domain::rng(11);
    for account in &accounts {
        legacy.seed(account, &mut rng).await?;
    }

    let origin = Path::new("deploy/demo/sources.toml");
    let sources = Sources::parse(&domain::sources_for(&legacy.url), origin)?;
    let producer = Producer::connect(
        &sources,
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
    let mapping = Arc::new(Mapping::parse(domain::MAPPING, Path::new("mapping.toml"))?);
    mapping.check_columns(&producer.legacy().columns())?;
    let client = CloudClient::new(&cloud.url, Duration::from_secs(10), 8);
    let consumer = TestConsumer::start(ConsumerSetup::new(
        &brokers,
        &topic,
        &stores.url,
        &cloud.url,
    ))
    .await?;

    // Creates first: every account's contacts with phones, properties, tenancies.
    drained(&producer, &consumer.stats()).await?;
    let first = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    ensure!(
        Totals::of(&first) == Totals::default(),
        "drift after creates: {first:#?}"
    );

    // Then a stream of updates (names, phones folded into contacts, property owners, rents)
    // and more creates, detected and applied while they happen.
    let mut changes = 0;
    for round in 0..10 {
        for account in &accounts {
            changes += legacy.random_change(account, &mut rng).await?.rows;
        }
        if round % 3 == 0 {
            producer.cycle().await?;
        }
    }
    drained(&producer, &consumer.stats()).await?;
    ensure!(changes > 100, "the workload made only {changes} changes");
    let second = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    ensure!(
        Totals::of(&second) == Totals::default(),
        "drift after updates: {second:#?}"
    );

    // The outcome a user sees: contacts carry their phones, references point at cloud ids,
    // amounts stay exact decimals.
    let (mut phones, mut charges, mut owned) = (0, 0, 0);
    for account in &accounts {
        let contacts = client.list(account, "contacts").await?;
        let properties = client.list(account, "properties").await?;
        let contact_ids: Vec<&str> = contacts.iter().filter_map(|c| c["id"].as_str()).collect();
        ensure!(properties.iter().all(|p| p["owner_id"]
            .as_str()
            .is_some_and(|id| contact_ids.contains(&id))));
        owned += properties.len();
        phones += contacts
            .iter()
            .filter_map(|c| c["phones"].as_array())
            .map(Vec::len)
            .sum::<usize>();
        let account_charges = client.list(account, "charges").await?;
        ensure!(account_charges.iter().all(|c| c["amount"].is_string()));
        charges += account_charges.len();
    }
    // Not vacuous: there were properties whose owners were checked.
    ensure!(
        phones > 0 && charges > 0 && owned > 0,
        "{phones} phones, {charges} charges, {owned} properties"
    );
    ensure!(consumer.stats().dead_lettered.load(Ordering::Relaxed) == 0);
    consumer.stop().await?;

    // The consumer moves to a new group on the same store: the new group has no positions,
    // so it reads the whole topic again — every account's enrolment snapshot included —
    // and must change nothing in the cloud: the mirror and the ID map are kept per account,
    // whichever group reads.
    let mutations = |audit: Vec<tandem_consumer::AuditEntry>| audit.len();
    let mut before = 0;
    for account in &accounts {
        before += mutations(client.audit(account).await?.context("audit")?);
    }
    let moved = TestConsumer::start(
        ConsumerSetup::new(&brokers, &topic, &stores.url, &cloud.url)
            .group(&format!("{topic}-moved")),
    )
    .await?;
    drained(&producer, &moved.stats()).await?;
    let mut after = 0;
    for account in &accounts {
        after += mutations(client.audit(account).await?.context("audit")?);
    }
    let third = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    ensure!(
        Totals::of(&third) == Totals::default() && after == before,
        "after the move to a new group, {} cloud mutations (was {before}); drift: {third:#?}",
        after
    );
    // And it follows new changes from there.
    for account in &accounts {
        legacy.random_change(account, &mut rng).await?;
    }
    drained(&producer, &moved.stats()).await?;
    let fourth = verify_accounts(producer.legacy(), &mapping, &client, &accounts).await?;
    ensure!(
        Totals::of(&fourth) == Totals::default(),
        "drift after the move: {fourth:#?}"
    );
    moved.stop().await?;
    cloud.stop().await?;
    stores.drop().await
}

/// `tandem demo` on a real broker with PostgreSQL stores ends clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_clean_on_tansu_with_postgres_stores() -> anyhow::Result<()> {
    let stores = PgDatabase::create().await?;
    let report = demo::run(DemoOptions {
        accounts: 20,
        duration: Duration::from_secs(8),
        rate: 60,
        brokers: Some(brokers()?),
        store_url: Some(stores.url.clone()),
        progress: false,
        ..Default::default()
    })
    .await
    .context("demo run")?;
    ensure!(report.is_clean(), "demo report: {report:?}");
    ensure!(report.events_applied > 400, "demo report: {report:?}");
    ensure!(report.restored_accounts == 2, "demo report: {report:?}");
    stores.drop().await
}

/// `tandem demo` on the embedded default (librdkafka's mock cluster, SQLite stores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_clean_on_the_embedded_default() -> anyhow::Result<()> {
    let report = demo::run(DemoOptions {
        accounts: 10,
        duration: Duration::from_secs(5),
        rate: 50,
        progress: false,
        ..Default::default()
    })
    .await?;
    ensure!(report.is_clean(), "demo report: {report:?}");
    ensure!(report.events_applied > 200, "demo report: {report:?}");
    // Deletes are measured end to end, from the legacy delete to the cloud's.
    let json = serde_json::to_value(&report)?;
    ensure!(
        json["delete_latency_ms"]["count"].as_u64() > Some(0)
            && json["delete_latency_ms"]["p50"].as_u64() > Some(0),
        "demo report: {json}"
    );
    Ok(())
}
