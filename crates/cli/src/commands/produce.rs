//! `tandem produce`, `tandem snapshot` and `tandem publish`: the producer, a snapshot on
//! request, and detections handed in as JSON lines.

use std::time::Duration;

use anyhow::Context as _;
use tandem_producer::config::Sources;
use tandem_producer::{Outbox, Producer, Snapshot, TopicSettings};

use crate::args::{ProduceArgs, PublishArgs, SnapshotArgs};
use crate::shutdown_on_signal;

/// How long a command waits at start-up for the brokers to answer.
pub(super) const STARTUP_CHECK: Duration = Duration::from_secs(30);

pub(super) async fn run_produce(args: ProduceArgs) -> anyhow::Result<i32> {
    let sources = Sources::load(&args.sources)?;
    crate::kafka::check(&args.kafka, STARTUP_CHECK).await?;
    if let Some(partitions) = args.create_topic {
        let k = &args.kafka;
        let settings = TopicSettings {
            partitions,
            replication_factor: args.replication_factor,
            retention: args.retention.0,
            min_insync_replicas: args.min_insync_replicas,
        };
        let dlq = TopicSettings {
            partitions: 1,
            ..settings.clone()
        };
        for (topic, settings) in [
            (k.topic.clone(), settings),
            (format!("{}.dlq", k.topic), dlq),
        ] {
            let report =
                tandem_producer::ensure_topic(&k.brokers, &topic, &settings, &k.properties()?)
                    .await?;
            eprintln!("{report}");
            if let Some(warning) = report.replay_warning() {
                eprintln!("tandem: warning: {warning}; see docs/OPERATIONS.md, \"Retention\"");
            }
        }
    }
    // Detections change what the cloud holds: the port that takes them needs a token.
    let token = crate::observe::access::ApiToken::from_env()?;
    if args.http.is_some() && !token.is_set() {
        return Err(crate::exit::Usage(format!(
            "--http takes detections only from callers with the API token: set {0} or {0}_FILE",
            crate::observe::access::TOKEN_VARIABLE
        ))
        .into());
    }
    let metrics = match args.observe.listen {
        Some(_) => Some(crate::observe::recorder()?),
        None => None,
    };
    let producer = std::sync::Arc::new(
        Producer::connect(&sources, &args.sources, options(&args).await?).await?,
    );
    if args.once {
        let published = producer.cycle().await?;
        eprintln!("published {published} events");
        return Ok(0);
    }
    let shutdown = shutdown_on_signal();
    if let (Some(listen), Some(metrics)) = (args.observe.listen, metrics) {
        let (ready, state) = (producer.clone(), producer.clone());
        let app = crate::observe::routes(
            metrics,
            std::sync::Arc::new(move || ready.is_ready()),
            Some(std::sync::Arc::new(move || {
                tandem_producer::metrics::gauges(state.last_round_ms(), state.is_ready());
            })),
        );
        let what = ("--http-listen", "/metrics, /healthz and /readyz");
        crate::observe::serve(listen, app, shutdown.child_token(), what).await?;
    }
    if let Some(addr) = args.http {
        // Detections handed in leave through the detector's own outbox.
        let app = crate::observe::access::guard(
            tandem_producer::ingest::router(producer.outbox().clone()),
            token,
            tandem_producer::ingest::MAX_BODY_BYTES,
        );
        let what = ("--http", "POST /v1/accounts/{account}/detections");
        crate::observe::serve(addr, app, shutdown.child_token(), what).await?;
    }
    producer.run(shutdown).await?;
    Ok(0)
}

pub(super) async fn run_snapshot(args: SnapshotArgs) -> anyhow::Result<i32> {
    let sources = Sources::load(&args.produce.sources)?;
    let producer = Producer::connect(
        &sources,
        &args.produce.sources,
        options(&args.produce).await?,
    )
    .await?;
    let id = args
        .snapshot_id
        .unwrap_or_else(|| format!("{}-{}", args.account, tandem_producer::now_millis()));
    // The rows go out in batches: the bar counts the events published (how many rows the
    // account holds is not read beforehand, which would read them twice).
    let stats = producer.stats();
    let progress = crate::progress::Progress::new("snapshot: rows");
    let snapshot = producer.snapshot(&args.account, &id);
    tokio::pin!(snapshot);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let snapshot = loop {
        tokio::select! {
            result = &mut snapshot => break result?,
            _ = tick.tick() => {
                let published = stats.published.load(std::sync::atomic::Ordering::Relaxed);
                progress.update(published, 0, &args.account);
            }
        }
    };
    progress.done();
    match snapshot {
        Snapshot::Published(events) => {
            eprintln!("snapshot {id}: published {events} events");
            return Ok(0);
        }
        Snapshot::Requested => eprintln!(
            "snapshot {id}: another producer instance holds account {}; asked it to publish \
             the snapshot in its next cycle",
            args.account
        ),
    }
    // The running producer answers the request within a cycle; a long snapshot takes longer.
    let started = std::time::Instant::now();
    let mut said = started;
    while producer
        .store()
        .snapshot_pending(&args.account, &id)
        .await?
    {
        if started.elapsed() > args.wait {
            eprintln!(
                "tandem: snapshot {id} is still waiting after {}; the request stays, and the \
                 instance holding the account publishes it when it runs",
                humantime::format_duration(args.wait)
            );
            return Ok(1);
        }
        if said.elapsed() >= Duration::from_secs(5) {
            said = std::time::Instant::now();
            eprintln!(
                "snapshot {id}: waiting for the running producer ({} s)",
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("snapshot {id}: published by the running producer");
    Ok(0)
}

pub(super) async fn run_publish(args: PublishArgs) -> anyhow::Result<i32> {
    let text = match &args.file {
        Some(path) if path.as_os_str() != "-" => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        _ => std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?,
    };
    let accounts = match &args.account {
        Some(account) => tandem_producer::ingest::Accounts::Default(account),
        None => tandem_producer::ingest::Accounts::Named,
    };
    let (good, rejected) = tandem_producer::ingest::parse_lines(&text, accounts);
    for rejection in &rejected {
        eprintln!("rejected {rejection}");
    }
    let store = tandem_producer::Store::open(&args.store.url).await?;
    let publisher = tandem_producer::Publisher::connect(
        &args.kafka.brokers,
        &args.kafka.topic,
        tandem_event::Codec::default(),
        &args.kafka.properties()?,
    )
    .await?;
    let outbox = Outbox::new(store, publisher);
    let detections: Vec<_> = good.into_iter().map(|(_, d)| d).collect();
    let mut published = 0;
    let progress = crate::progress::Progress::new("publish: detections");
    for chunk in detections.chunks(500) {
        published += tandem_producer::ingest::publish_detections(&outbox, chunk)
            .await?
            .len();
        progress.update(published as u64, detections.len() as u64, "published");
    }
    progress.done();
    eprintln!(
        "published {published} detections, rejected {}",
        rejected.len()
    );
    Ok(if rejected.is_empty() { 0 } else { 1 })
}

/// The producer's options; with a schema registry, its schema registered under
/// `<topic>-value` and messages framed with the id the registry gives it.
async fn options(args: &ProduceArgs) -> anyhow::Result<tandem_producer::Options> {
    let mut options = args.options()?;
    if let Some(registry) = args.registry.registry()? {
        let subject = format!("{}-value", args.kafka.topic);
        // The schema file as released; SCHEMA_FILES is a non-empty constant.
        let (_, schema) = tandem_event::SCHEMA_FILES[tandem_event::SCHEMA_FILES.len() - 1];
        let schema_id = registry
            .register(&subject, schema)
            .await
            .with_context(|| format!("cannot register the change-event schema as {subject}"))?;
        tracing::info!(
            subject,
            schema_id,
            "schema registered; writing Confluent-framed messages"
        );
        options.framing = tandem_event::Framing::Confluent { schema_id };
    }
    Ok(options)
}
