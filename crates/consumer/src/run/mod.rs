//! The Kafka side of the consumer: a consumer group whose applied positions live in Tandem's
//! store, dead-lettering of messages that cannot be applied, and Kafka commits that follow the
//! store.
//!
//! - [`group`]: the group membership, its rebalance callbacks, and rejoining;
//! - [`partitions`]: positions per partition and account, and reading a partition again from
//!   earlier when the broker delivers it from beyond the store's position;
//! - [`worker`]: messages to each account's queue, and the worker applying it in order;
//! - [`lease`]: account leases and the fences they put on a worker;
//! - [`resume`]: applying a resumed account's held events;
//! - [`dead_letter`]: the dead-letter topic;
//! - [`watchdog`]: noticing that the coordinator stranded this member;
//! - [`report`]: readiness, lag and parked accounts, for metrics and the status page;
//! - [`tracker`]: what this member knows of its partitions and work in flight.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::schemas::Decoder;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::apply::Engine;
use crate::{Error, Options, Result, Stats};
use group::{member, Context};
pub use report::WORST_LISTED;
use tracker::{lock, Shared};

mod dead_letter;
mod group;
mod lease;
mod partitions;
mod report;
mod resume;
mod tracker;
mod watchdog;
mod worker;

/// The consumer: reads the topic, applies each account's events in order on a worker of its
/// own, many accounts at a time, and records positions only for durable work.
#[derive(Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// The group membership; replaced by a new one when the watchdog finds this member
    /// stranded (see [`watchdog`]).
    consumer: std::sync::RwLock<Arc<StreamConsumer<Context>>>,
    /// Asks the read loop to leave the group and join it again as a new member.
    rejoin: tokio::sync::Notify,
    /// A client outside the group, for the watchdog's metadata and end-offset lookups.
    lookups: Arc<BaseConsumer>,
    dead_letters: FutureProducer,
    decoder: Decoder,
    options: Options,
    stats: Arc<Stats>,
    tracker: Shared,
    /// Events read and not yet done; fetching waits while none is free.
    slots: Arc<Semaphore>,
    /// Accounts applying at once.
    appliers: Semaphore,
    /// Every account's worker, so shutdown can wait until they gave their leases up.
    workers: TaskTracker,
    /// This member's name in account leases (each worker run adds a number).
    member: String,
    worker_runs: AtomicU64,
    /// The migration store: an account whose snapshot is applied goes live there.
    migration: std::sync::OnceLock<tandem_migration::Store>,
    /// Readiness, lag and parked accounts are looked at every 2 s (see [`report`]): only when
    /// something shows them (the HTTP port), since each look reads the store and the broker.
    reporting: std::sync::atomic::AtomicBool,
    /// The first fatal error a worker met; stops the consumer.
    fatal: Mutex<Option<Error>>,
    failed: CancellationToken,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("options", &self.inner.options)
            .finish()
    }
}

impl Consumer {
    pub fn new(engine: Engine, options: Options) -> Result<Self> {
        let broker_error = |source| Error::Broker {
            brokers: options.brokers.clone(),
            source,
        };
        for (option, value) in [
            ("concurrency", options.concurrency),
            ("max in-flight events", options.max_in_flight),
        ] {
            if value == 0 {
                return Err(Error::Option {
                    option,
                    message: "must be at least 1".into(),
                });
            }
        }
        if options.lease_ttl < Duration::from_secs(1) {
            return Err(Error::Option {
                option: "lease TTL",
                message: "the account lease must last at least 1 s".into(),
            });
        }
        let tracker = Shared::default();
        let stats = Arc::<Stats>::default();
        let consumer = member(&options, &tracker, &stats, 0)?;
        let lookups: BaseConsumer = options.kafka_config(&[]).create().map_err(broker_error)?;
        consumer
            .subscribe(&[&options.topic])
            .map_err(broker_error)?;
        let dead_letters: FutureProducer = options
            .kafka_config(&[("enable.idempotence", "true"), ("acks", "all")])
            .create()
            .map_err(broker_error)?;
        Ok(Consumer {
            inner: Arc::new(Inner {
                engine,
                consumer: std::sync::RwLock::new(Arc::new(consumer)),
                rejoin: tokio::sync::Notify::new(),
                lookups: Arc::new(lookups),
                dead_letters,
                decoder: Decoder::new(&options.schemas)?,
                slots: Arc::new(Semaphore::new(options.max_in_flight)),
                appliers: Semaphore::new(options.concurrency),
                options,
                stats,
                tracker,
                member: format!(
                    "{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or_default()
                ),
                worker_runs: AtomicU64::new(0),
                workers: TaskTracker::new(),
                fatal: Mutex::new(None),
                failed: CancellationToken::new(),
                migration: std::sync::OnceLock::new(),
                reporting: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Tells the migration store when an account's snapshot has been applied: a syncing
    /// account goes live then.
    pub fn follow_migration(&self, store: tandem_migration::Store) {
        let _ = self.inner.migration.set(store);
    }

    /// Looks at readiness, lag and parked accounts every 2 s while running, for the metrics
    /// and the status page ([`Stats::ready`], [`Stats::worst`], [`Stats::partitions`]); call
    /// before [`Consumer::run`].
    pub fn report_status(&self) {
        self.inner
            .reporting
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// Consumes until `shutdown` is cancelled. Then fetching stops, queued work is abandoned
    /// unrecorded, and the events being applied are finished, so a restart resumes exactly
    /// where the store says.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let inner = &self.inner;
        let mut probes = tokio::time::interval(Duration::from_secs(1));
        // The background tasks stop with the read loop, however it ends.
        let background = shutdown.child_token();
        let _stop_background = background.clone().drop_guard();
        tokio::spawn(inner.clone().watch_group(background.clone()));
        if inner.reporting.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::spawn(inner.clone().report(background.clone()));
        }
        inner
            .workers
            .spawn(inner.clone().resume_loop(background.clone()));
        loop {
            // Backpressure: with every slot taken, nothing more is fetched.
            let slot = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = inner.failed.cancelled() => break,
                slot = inner.slots.clone().acquire_owned() => slot.map_err(closed)?,
            };
            let consumer = inner.kafka();
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = inner.failed.cancelled() => break,
                _ = inner.rejoin.notified() => {
                    drop(consumer);
                    inner.rejoin_group().await?;
                    continue;
                }
                _ = probes.tick() => {
                    inner.probe().await?;
                    continue;
                }
                message = consumer.recv() => message,
            };
            match message {
                Ok(message) => inner.dispatch(message.detach(), slot).await?,
                Err(e) => warn!(error = %e, "kafka consumer error"),
            }
        }
        lock(&inner.tracker).abandon();
        background.cancel();
        if let Err(e) = inner
            .engine
            .store()
            .leave_group(&inner.options.group, &inner.member)
            .await
        {
            warn!(error = %e, "cannot remove this member from the store's list of members");
        }
        // Every slot back means nothing is being applied any more.
        let all = u32::try_from(inner.options.max_in_flight).unwrap_or(u32::MAX);
        drop(inner.slots.acquire_many(all).await.map_err(closed)?);
        // Then every worker has given its account's lease up, so another member (or this one,
        // restarted) need not wait for it to expire.
        inner.workers.close();
        inner.workers.wait().await;
        if let Some(e) = inner.fatal.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        info!("consumer stopped");
        Ok(())
    }
}

impl Inner {
    /// Stops the consumer with `e`, the first fatal error met.
    fn fail(&self, e: Error) {
        error!(error = %e, "the consumer cannot go on");
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(e);
        }
        self.failed.cancel();
    }
}

fn closed(e: tokio::sync::AcquireError) -> Error {
    Error::Task {
        what: "in-flight bound",
        message: e.to_string(),
    }
}
