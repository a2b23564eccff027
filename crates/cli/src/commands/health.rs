//! `tandem health`: do the broker and the store of a producer or a consumer answer?

use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::ClientConfig;

use crate::args::{HealthArgs, Role};

pub(super) async fn run_health(args: HealthArgs) -> anyhow::Result<i32> {
    let (variable, default) = match args.role {
        Role::Producer => ("TANDEM_PRODUCER_STORE", "sqlite://tandem-producer.db"),
        Role::Consumer => ("TANDEM_CONSUMER_STORE", "sqlite://tandem-consumer.db"),
    };
    let store = args
        .store
        .clone()
        .or_else(|| std::env::var(variable).ok())
        .unwrap_or_else(|| default.to_owned());
    let broker = broker(&args, args.timeout);
    let store = check_store(&store, args.timeout);
    let (broker, store) = tokio::join!(broker, store);
    let mut healthy = true;
    for (part, result) in [("broker", broker), ("store", store)] {
        match result {
            Ok(()) => println!("{part}: ok"),
            Err(e) => {
                println!("{part}: {e:#}");
                healthy = false;
            }
        }
    }
    Ok(if healthy {
        crate::exit::OK
    } else {
        crate::exit::FAILURE
    })
}

/// The brokers answer a metadata request.
async fn broker(args: &HealthArgs, timeout: Duration) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.kafka.brokers);
    for (key, value) in args.kafka.properties()? {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().context("cannot make a Kafka client")?;
    let brokers = args.kafka.brokers.clone();
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, timeout)
            .map(drop)
            .with_context(|| format!("no answer from {brokers}"))
    })
    .await?
}

/// The store opens and answers a query; it is never created.
async fn check_store(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let check = async {
        let pool = tandem_sql::open_existing(url).await?;
        sqlx::query("SELECT 1").execute(&pool).await?;
        pool.close().await;
        anyhow::Ok(())
    };
    tokio::time::timeout(timeout, check)
        .await
        .context("no answer in time")?
}
