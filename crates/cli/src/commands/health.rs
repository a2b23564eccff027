//! `tandem health`: do the broker and the store of a producer or a consumer answer?

use std::time::Duration;

use anyhow::Context as _;

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
    let broker = crate::kafka::check(&args.kafka, args.timeout);
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
