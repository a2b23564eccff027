//! `tandem consume`: the consumer, until stopped.

use std::sync::Arc;

use tandem_consumer::mapping::Mapping;
use tandem_consumer::{Consumer, Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;

use crate::args::ConsumeArgs;
use crate::shutdown_on_signal;

pub(super) async fn run_consume(args: ConsumeArgs) -> anyhow::Result<i32> {
    let mapping = Mapping::load(&args.mapping)?;
    if let Some(path) = &args.sources {
        let legacy = Legacy::connect(&Sources::load(path)?, path).await?;
        mapping.check_columns(&legacy.columns())?;
    }
    crate::kafka::check(&args.kafka, super::produce::STARTUP_CHECK).await?;
    let (metrics, token) = match args.http.listen {
        Some(_) => (
            Some(crate::observe::recorder()?),
            crate::observe::access::ApiToken::from_env()?,
        ),
        None => (None, Default::default()),
    };
    let store = Store::open(&args.store.url).await?;
    let page_store = store.clone();
    let client = args
        .cloud
        .client(args.cloud_timeout, args.cloud_attempts.max(1))
        .await?;
    let engine = Engine::new(Arc::new(mapping), store, client).with_create_mode(args.create_mode);
    let dead_letter_topic = args
        .dead_letter_topic
        .unwrap_or_else(|| format!("{}.dlq", args.kafka.topic));
    let kafka = args.kafka.properties()?;
    let (group, topic) = (args.group.clone(), args.kafka.topic.clone());
    let consumer = Consumer::new(
        engine,
        tandem_consumer::Options {
            brokers: args.kafka.brokers,
            topic: args.kafka.topic,
            group: args.group,
            dead_letter_topic,
            kafka,
            concurrency: args.concurrency,
            max_in_flight: args.max_in_flight,
            lease_ttl: args.lease_ttl,
            schemas: args.registry.schemas(args.schema_ids.as_deref())?,
        },
    )?;
    if args.migration.url.is_some() {
        consumer.follow_migration(args.migration.open().await?);
    }
    let shutdown = shutdown_on_signal();
    if let (Some(listen), Some(metrics)) = (args.http.listen, metrics) {
        let stats = consumer.stats();
        let ready = stats.clone();
        consumer.report_status();
        let app = crate::observe::routes(
            metrics,
            Arc::new(move || ready.ready.load(std::sync::atomic::Ordering::Relaxed)),
            None,
        )
        .merge(crate::observe::page::routes(
            crate::observe::page::Page {
                store: page_store,
                stats,
                group: group.clone(),
                topic: topic.clone(),
            },
            token,
        ));
        let what = (
            "--http-listen",
            "/metrics, /healthz, /readyz and the status page",
        );
        crate::observe::serve(listen, app, shutdown.child_token(), what).await?;
    }
    let run = consumer.run(shutdown.clone());
    tokio::pin!(run);
    let grace = args.grace;
    tokio::select! {
        result = &mut run => result?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            eprintln!(
                "tandem: the event in flight did not finish within {}; exiting without recording it",
                humantime::format_duration(grace)
            );
            return Ok(1);
        }
    }
    Ok(0)
}
