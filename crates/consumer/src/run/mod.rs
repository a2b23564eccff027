//! The Kafka side of the consumer: a consumer group whose applied positions live in Tandem's
//! store, dead-lettering of messages that cannot be applied, and Kafka commits that follow the
//! store.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tandem_event::{ChangeEvent, Codec};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::apply::{Engine, Outcome};
use crate::client::Fence;
use crate::store::{Grant, LeaseId, Position};
use crate::{Error, Result};

mod watchdog;

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Where messages that cannot be applied go, with the reason in headers.
    pub dead_letter_topic: String,
    /// Librdkafka properties, applied last.
    pub kafka: Vec<(String, String)>,
    /// Accounts applied at the same time (each account's events strictly in order).
    pub concurrency: usize,
    /// Events read from Kafka and not yet applied, at most; at the bound, fetching pauses.
    pub max_in_flight: usize,
    /// How long an account's lease lasts without renewal: after a member dies, how long its
    /// accounts wait before another member applies them.
    pub lease_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            brokers: "127.0.0.1:9092".into(),
            topic: "tandem.changes".into(),
            group: "tandem-consumer".into(),
            dead_letter_topic: "tandem.changes.dlq".into(),
            kafka: Vec::new(),
            concurrency: 32,
            max_in_flight: 1024,
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Counters and latencies a caller can watch while the consumer runs.
#[derive(Debug, Default)]
pub struct Stats {
    pub applied: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Messages re-delivered by Kafka that the store says were applied already.
    pub already_applied: AtomicU64,
    /// Events kept for a parked account.
    pub held: AtomicU64,
    /// Partitions currently assigned to this member.
    pub assigned_partitions: AtomicU64,
    /// Per applied event: when it happened in the legacy database (epoch millis) and how long
    /// until it was visible in the cloud (millis).
    pub latencies_ms: Mutex<Vec<(i64, u64)>>,
}

/// How often a worker asks again for an account's lease another member holds.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// A worker run's hold on its account (see `consumer_account_leases`).
struct AccountLease {
    id: LeaseId,
    held: Option<Held>,
    /// Per partition, the account's next offset as the store said once the lease was taken:
    /// events queued before then may have been applied meanwhile by the lease's last holder.
    next: HashMap<(String, i32), i64>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    renew_at: Instant,
    /// No cloud call is sent from here on without a renewal.
    until: Instant,
    /// A call still unanswered now is given up; the lease lasts a little longer still.
    answers_by: Instant,
}

impl Held {
    /// The lease asked for at `asked`, lasting `ttl`. It is renewed a third of the way in;
    /// calls stop at three quarters and are given up at seven eighths, well before the lease
    /// can have expired whatever the clocks of other members say.
    fn asked_at(asked: Instant, ttl: Duration) -> Held {
        Held {
            renew_at: asked + ttl / 3,
            until: asked + ttl * 3 / 4,
            answers_by: asked + ttl * 7 / 8,
        }
    }

    fn fence(&self, cancelled: &CancellationToken) -> Fence {
        Fence {
            cancelled: cancelled.clone(),
            until: Some(self.until),
            answers_by: Some(self.answers_by),
        }
    }
}

/// What this member knows of one assigned partition.
#[derive(Debug)]
struct Partition {
    /// Offsets received and not yet durable.
    pending: BTreeSet<i64>,
    /// One past the highest offset received.
    next: i64,
    /// The store's position at assignment: every lower offset was applied before.
    stored: i64,
    /// Per account: the next offset to apply, as the store said on first sight.
    accounts: HashMap<String, i64>,
    /// Whether a message at or below `stored` came in since the assignment (see
    /// [`Inner::rewind`]).
    started: bool,
    /// Where the last rewind sought to.
    rewound_to: Option<i64>,
}

/// How far back the first rewind of a partition seeks; each further one seeks twice as far.
const FIRST_REWIND: i64 = 64;

impl Partition {
    /// Where to seek back to when `offset`, the first message since the assignment, lies
    /// beyond the store's position; None once the partition started at or below it.
    fn rewind(&mut self, offset: i64) -> Option<i64> {
        if self.started {
            return None;
        }
        // From offset 0 on there is nothing earlier to read: the log starts later.
        if offset <= self.stored || self.rewound_to == Some(0) {
            self.started = true;
            return None;
        }
        let back = self
            .rewound_to
            .map_or(FIRST_REWIND, |to| (self.stored - to).max(FIRST_REWIND) * 2);
        let target = (self.stored - back).max(0);
        self.rewound_to = Some(target);
        Some(target)
    }

    /// The partition's position once `done` (if given) is durable: the lowest offset still
    /// pending, else one past the highest received.
    fn watermark(&self, done: Option<i64>) -> i64 {
        self.pending
            .iter()
            .copied()
            .find(|&o| Some(o) != done)
            .unwrap_or(self.next)
    }
}

/// One event handed to its account's queue.
struct Work {
    generation: u64,
    /// Cancelled when this member gives up its partitions: no cloud call is sent after that.
    fence: CancellationToken,
    partition: (String, i32),
    message: OwnedMessage,
    event: ChangeEvent,
    /// A place among the events in flight; returned when the work is done or abandoned.
    _slot: OwnedSemaphorePermit,
}

/// Work in flight. The generation moves on at every rebalance and at shutdown: queued work of
/// an older generation is abandoned unrecorded (Kafka delivers it again from the position), and
/// its fence is cancelled, so work being applied sends no further cloud call.
#[derive(Default)]
struct Tracker {
    generation: u64,
    fence: CancellationToken,
    partitions: HashMap<(String, i32), Partition>,
    /// Assigned partitions whose first message at or below the store's position has not come
    /// yet: when they were assigned or last sought back, and how many times they were.
    unstarted: HashMap<(String, i32), (Instant, u32)>,
    /// Accounts with a worker running, and what waits in their queue.
    queues: HashMap<String, VecDeque<Work>>,
    /// The current group membership: moves on when the consumer leaves the group and joins it
    /// again, so the old client's late rebalance callbacks are ignored.
    member: u64,
}

impl Tracker {
    fn abandon(&mut self) {
        self.generation += 1;
        self.fence.cancel();
        self.fence = CancellationToken::new();
        self.partitions.clear();
        self.unstarted.clear();
    }
}

/// How long an assigned partition may deliver nothing, while the broker holds events beyond
/// the store's position, before it is sought back; doubled after each seek, up to a minute.
const FIRST_PROBE: Duration = Duration::from_secs(2);

type Shared = Arc<Mutex<Tracker>>;

struct Context {
    tracker: Shared,
    stats: Arc<Stats>,
    /// Which of this consumer's group memberships the client is (see [`Tracker::member`]).
    member: u64,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut tracker = lock(&self.tracker);
        if tracker.member != self.member {
            // A membership given up by a rejoin, closing: its partitions were abandoned then,
            // and the current membership's must not be.
            tracing::debug!("rebalance of a retired group membership; ignored");
            return;
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = %partition_list(tpl), "partitions assigned");
                self.stats
                    .assigned_partitions
                    .store(tpl.count() as u64, Ordering::Relaxed);
            }
            Rebalance::Revoke(tpl) => {
                info!(partitions = %partition_list(tpl), "partitions revoked");
                self.stats.assigned_partitions.store(0, Ordering::Relaxed);
            }
            Rebalance::Error(e) => warn!(error = %e, "rebalance error"),
        }
        // Positions are read afresh from the store: another member may have moved them on.
        tracker.abandon();
        if let Rebalance::Assign(tpl) = rebalance {
            let now = Instant::now();
            for e in tpl.elements() {
                let key = (e.topic().to_owned(), e.partition());
                tracker.unstarted.insert(key, (now, 0));
            }
        }
    }
}

/// `[0, 2, 3]`: the partition numbers of an assignment, for the log.
fn partition_list(tpl: &TopicPartitionList) -> String {
    let numbers: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| e.partition().to_string())
        .collect();
    format!("[{}]", numbers.join(", "))
}

fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

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
    codec: Codec,
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

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Consumer {
    pub fn new(engine: Engine, options: Options) -> Result<Self> {
        let broker_error = |source| Error::Broker {
            brokers: options.brokers.clone(),
            source,
        };
        if options.concurrency == 0 || options.max_in_flight == 0 {
            return Err(Error::Internal(
                "concurrency and max in-flight events must be at least 1".into(),
            ));
        }
        if options.lease_ttl < Duration::from_secs(1) {
            return Err(Error::Internal(
                "the account lease must last at least 1 s".into(),
            ));
        }
        let tracker = Shared::default();
        let stats = Arc::<Stats>::default();
        let consumer = member(&options, &tracker, &stats, 0)?;
        let mut lookups = ClientConfig::new();
        lookups.set("bootstrap.servers", &options.brokers);
        for (key, value) in &options.kafka {
            lookups.set(key, value);
        }
        let lookups: BaseConsumer = lookups.create().map_err(broker_error)?;
        consumer
            .subscribe(&[&options.topic])
            .map_err(broker_error)?;
        let mut producer_config = ClientConfig::new();
        producer_config
            .set("bootstrap.servers", &options.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all");
        let dead_letters: FutureProducer = producer_config.create().map_err(broker_error)?;
        Ok(Consumer {
            inner: Arc::new(Inner {
                engine,
                consumer: std::sync::RwLock::new(Arc::new(consumer)),
                rejoin: tokio::sync::Notify::new(),
                lookups: Arc::new(lookups),
                dead_letters,
                codec: Codec::default(),
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
            }),
        })
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.inner.stats.clone()
    }

    /// Consumes until `shutdown` is cancelled. Then fetching stops, queued work is abandoned
    /// unrecorded, and the events being applied are finished, so a restart resumes exactly
    /// where the store says.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let inner = &self.inner;
        let mut resumes = tokio::time::interval(Duration::from_secs(1));
        // The watchdog stops with the read loop, however it ends.
        let watching = shutdown.child_token();
        let _stop_watching = watching.clone().drop_guard();
        tokio::spawn(inner.clone().watch_group(watching));
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
                _ = resumes.tick() => {
                    inner.probe().await?;
                    inner.resume_parked().await?;
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

/// A new consumer group member, not subscribed yet; `id` is its place in [`Tracker::member`].
fn member(
    options: &Options,
    tracker: &Shared,
    stats: &Arc<Stats>,
    id: u64,
) -> Result<StreamConsumer<Context>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", &options.group)
        .set("enable.auto.commit", "true")
        // Kafka-side commits follow the store: an offset is stored only once durable.
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // Changes should be visible in well under a second; don't let fetches idle long.
        .set("fetch.wait.max.ms", "100")
        // What librdkafka prefetches stays small; the in-flight bound does the rest.
        .set("queued.max.messages.kbytes", "16384");
    for (key, value) in &options.kafka {
        config.set(key, value);
    }
    config
        .create_with_context(Context {
            tracker: tracker.clone(),
            stats: stats.clone(),
            member: id,
        })
        .map_err(|source| Error::Broker {
            brokers: options.brokers.clone(),
            source,
        })
}

fn closed(_: tokio::sync::AcquireError) -> Error {
    Error::Internal("the consumer's in-flight bound was closed".into())
}

impl Inner {
    /// The current group membership.
    fn kafka(&self) -> Arc<StreamConsumer<Context>> {
        self.consumer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Leaves the consumer group and joins it again as a new member: work in flight is
    /// abandoned unrecorded (as at a rebalance), so workers give their accounts' leases up,
    /// and the new member reads its partitions from the store's positions.
    async fn rejoin_group(&self) -> Result<()> {
        let id = {
            let mut tracker = lock(&self.tracker);
            tracker.member += 1;
            tracker.abandon();
            tracker.member
        };
        self.stats.assigned_partitions.store(0, Ordering::Relaxed);
        let fresh = Arc::new(member(&self.options, &self.tracker, &self.stats, id)?);
        let old = std::mem::replace(
            &mut *self
                .consumer
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            fresh.clone(),
        );
        // Closing the old membership sends the broker its leave and blocks until that is
        // done, so it runs off the async threads, once no worker still holds the old client
        // (storing an offset takes it for a moment).
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if tokio::task::spawn_blocking(move || drop(old))
            .await
            .is_err()
        {
            warn!("closing the old group membership failed");
        }
        fresh
            .subscribe(&[&self.options.topic])
            .map_err(|source| Error::Broker {
                brokers: self.options.brokers.clone(),
                source,
            })?;
        info!("joined the consumer group again as a new member");
        Ok(())
    }

    /// The store's position of a partition, loaded on first sight after an assignment.
    async fn partition_next(&self, key: &(String, i32)) -> Result<(u64, i64)> {
        {
            let tracker = lock(&self.tracker);
            if let Some(p) = tracker.partitions.get(key) {
                return Ok((tracker.generation, p.stored));
            }
        }
        let stored = self
            .engine
            .store()
            .position(&self.options.group, &key.0, key.1)
            .await?
            .unwrap_or(0);
        let mut tracker = lock(&self.tracker);
        let generation = tracker.generation;
        let p = tracker
            .partitions
            .entry(key.clone())
            .or_insert_with(|| Partition {
                pending: BTreeSet::new(),
                next: stored,
                stored,
                accounts: HashMap::new(),
                started: false,
                rewound_to: None,
            });
        Ok((generation, p.stored))
    }

    /// Whether `offset`, just received, must be dropped because the partition is read again
    /// from earlier. A partition must be delivered from at or below the store's position, or
    /// the events in between are missed: the committed Kafka offset can lie inside a record
    /// batch, and some brokers (Tansu 0.6) then fetch from the next batch on, skipping the
    /// rest of that one. When the first message since the assignment lies beyond the store's
    /// position, the partition is sought back (further each time) until one does not.
    fn rewind(&self, key: &(String, i32), offset: i64, generation: u64) -> bool {
        let Some((target, stored)) = self.rewind_target(key, Some(offset), generation) else {
            return false;
        };
        warn!(
            partition = key.1,
            offset,
            position = stored,
            target,
            "the broker delivered the partition from beyond the store's position; reading it again from earlier"
        );
        self.seek_back(key, target);
        true
    }

    /// Where to seek a partition back to, and the store's position, given its first message
    /// since the assignment (`None`: nothing came); None once it started where it must.
    fn rewind_target(
        &self,
        key: &(String, i32),
        offset: Option<i64>,
        generation: u64,
    ) -> Option<(i64, i64)> {
        let mut tracker = lock(&self.tracker);
        if tracker.generation != generation {
            return None;
        }
        let p = tracker.partitions.get_mut(key)?;
        let stored = p.stored;
        match p.rewind(offset.unwrap_or(stored + 1)) {
            Some(target) => Some((target, stored)),
            None => {
                tracker.unstarted.remove(key);
                None
            }
        }
    }

    /// Seeks a partition back to `target` and restarts its probe clock.
    fn seek_back(&self, key: &(String, i32), target: i64) {
        let sought = self.kafka().seek(
            &key.0,
            key.1,
            Offset::Offset(target),
            Duration::from_secs(10),
        );
        let mut tracker = lock(&self.tracker);
        if let Err(e) = sought {
            // The partition's next message, or its next probe, tries again.
            warn!(partition = key.1, error = %e, "cannot seek the partition back");
            if let Some(p) = tracker.partitions.get_mut(key) {
                p.rewound_to = None;
            }
        }
        if let Some((since, seeks)) = tracker.unstarted.get_mut(key) {
            *since = Instant::now();
            *seeks += 1;
        }
    }

    /// Seeks back the assigned partitions that delivered nothing for a while: the record
    /// batch the store's position lies in may be the partition's last, and then no later
    /// message shows the gap (see [`Inner::rewind`]). The broker's end offset cannot tell
    /// (Tansu 0.6 reports the start of the last batch), so a quiet partition is read again
    /// from a little earlier: what is below the position is skipped, and the first message at
    /// or below it shows the partition is read from where it must be.
    async fn probe(&self) -> Result<()> {
        let due: Vec<((String, i32), u64)> = {
            let tracker = lock(&self.tracker);
            tracker
                .unstarted
                .iter()
                .filter(|(_, (since, seeks))| {
                    since.elapsed() >= FIRST_PROBE * 2u32.saturating_pow((*seeks).min(5))
                })
                .map(|(key, _)| (key.clone(), tracker.generation))
                .collect()
        };
        for (key, generation) in due {
            self.partition_next(&key).await?;
            let Some((target, stored)) = self.rewind_target(&key, None, generation) else {
                continue;
            };
            tracing::debug!(
                partition = key.1,
                position = stored,
                target,
                "nothing of the partition came; reading it again from a little earlier"
            );
            self.seek_back(&key, target);
        }
        Ok(())
    }

    /// Where `account` continues in a partition, per the store (read once per assignment).
    async fn account_next(&self, key: &(String, i32), account: &str) -> Result<i64> {
        if let Some(next) = lock(&self.tracker)
            .partitions
            .get(key)
            .and_then(|p| p.accounts.get(account).copied())
        {
            return Ok(next);
        }
        let next = self
            .engine
            .store()
            .account_position(&self.options.group, &key.0, key.1, account)
            .await?
            .unwrap_or(0);
        if let Some(p) = lock(&self.tracker).partitions.get_mut(key) {
            p.accounts.insert(account.to_owned(), next);
        }
        Ok(next)
    }

    /// Takes in one message: skips it if the store says it was applied, dead-letters it if it
    /// does not decode, else queues it behind its account's earlier events.
    async fn dispatch(
        self: &Arc<Self>,
        message: OwnedMessage,
        slot: OwnedSemaphorePermit,
    ) -> Result<()> {
        let key = (message.topic().to_owned(), message.partition());
        let offset = message.offset();
        let (generation, stored) = self.partition_next(&key).await?;
        if self.rewind(&key, offset, generation) {
            return Ok(());
        }
        let below = |tracker: &mut Tracker| {
            if let Some(p) = tracker.partitions.get_mut(&key) {
                p.next = p.next.max(offset + 1);
            }
        };
        if offset < stored {
            // Applied before, per the store: a re-delivery after a crash or a rebalance.
            tracing::debug!(partition = key.1, offset, "already applied per the store");
            self.stats.already_applied.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let event = match self.codec.decode(message.payload().unwrap_or_default()) {
            Ok(event) => event,
            Err(e) => {
                self.begin(&key, offset, generation);
                self.dead_letter(&message, &e.to_string()).await?;
                let watermark = self.watermark(&key, offset, generation);
                self.engine
                    .skip_position(self.position(&key, offset, watermark))
                    .await?;
                self.finish(&key, offset, generation);
                return Ok(());
            }
        };
        if offset < self.account_next(&key, &event.account_id).await? {
            tracing::debug!(partition = key.1, offset, account = %event.account_id, "already applied per the store");
            self.stats.already_applied.fetch_add(1, Ordering::Relaxed);
            below(&mut lock(&self.tracker));
            return Ok(());
        }
        let account = event.account_id.clone();
        let mut tracker = lock(&self.tracker);
        if tracker.generation != generation {
            return Ok(());
        }
        let work = Work {
            generation,
            fence: tracker.fence.clone(),
            partition: key.clone(),
            message,
            event,
            _slot: slot,
        };
        if let Some(p) = tracker.partitions.get_mut(&key) {
            p.pending.insert(offset);
            p.next = p.next.max(offset + 1);
        }
        match tracker.queues.get_mut(&account) {
            Some(queue) => queue.push_back(work),
            None => {
                tracker
                    .queues
                    .insert(account.clone(), VecDeque::from([work]));
                self.workers.spawn(self.clone().worker(account));
            }
        }
        Ok(())
    }

    /// Applies one account's queued events in order, then exits when its queue is empty. The
    /// account's lease is taken before its first event and given up at the end.
    async fn worker(self: Arc<Self>, account: String) {
        let run = self.worker_runs.fetch_add(1, Ordering::Relaxed);
        let mut lease = AccountLease {
            id: LeaseId {
                group: self.options.group.clone(),
                owner: format!("{}/{run}", self.member),
            },
            held: None,
            next: HashMap::new(),
        };
        loop {
            let work = {
                let mut tracker = lock(&self.tracker);
                let next = tracker
                    .queues
                    .get_mut(&account)
                    .and_then(VecDeque::pop_front);
                match next {
                    Some(work) if work.generation == tracker.generation => work,
                    // Abandoned by a rebalance or shutdown: Kafka delivers it again.
                    Some(_) => continue,
                    None => {
                        tracker.queues.remove(&account);
                        break;
                    }
                }
            };
            if let Err(e) = self.process(&work, &mut lease).await {
                error!(account, error = %e, "the consumer cannot go on");
                if let Ok(mut fatal) = self.fatal.lock() {
                    fatal.get_or_insert(e);
                }
                self.failed.cancel();
            }
        }
        if lease.held.is_some() {
            let store = self.engine.store();
            if let Err(e) = store.release_lease(&lease.id, &account).await {
                // It expires on its own; another member waits until then.
                warn!(account, error = %e, "cannot give up the account's lease");
            }
        }
    }

    /// The lease, renewed when due. None if the work was abandoned while waiting for it.
    async fn fresh_lease(
        &self,
        account: &str,
        lease: &mut AccountLease,
        abandoned: &CancellationToken,
    ) -> Result<Option<Held>> {
        if let Some(held) = lease.held.filter(|held| Instant::now() < held.renew_at) {
            return Ok(Some(held));
        }
        if !self.lease(account, lease, abandoned).await? {
            return Ok(None);
        }
        Ok(lease.held)
    }

    /// Whether the account's event at `offset` was applied already, per the store as it was
    /// when this worker took the lease (the lease's last holder may have applied it after this
    /// member queued it).
    async fn applied_before(
        &self,
        key: &(String, i32),
        account: &str,
        offset: i64,
        lease: &mut AccountLease,
    ) -> Result<bool> {
        let next = match lease.next.get(key) {
            Some(&next) => next,
            None => {
                let next = self
                    .engine
                    .store()
                    .account_position(&self.options.group, &key.0, key.1, account)
                    .await?
                    .unwrap_or(0);
                lease.next.insert(key.clone(), next);
                next
            }
        };
        Ok(offset < next)
    }

    /// Takes or renews the account's lease; while another member holds it (a rebalance just
    /// moved the account, or a member died and its lease has not expired), waits. False if
    /// the work was abandoned meanwhile.
    async fn lease(
        &self,
        account: &str,
        lease: &mut AccountLease,
        abandoned: &CancellationToken,
    ) -> Result<bool> {
        let ttl = self.options.lease_ttl;
        let store = self.engine.store();
        let mut waited = false;
        loop {
            let asked = Instant::now();
            let grant = store.try_lease(&lease.id, account, ttl).await?;
            if grant != Grant::Elsewhere {
                if grant == Grant::Taken {
                    // Others may have applied the account's events since: read where it is.
                    tracing::debug!(account, owner = %lease.id.owner, "took the account's lease");
                    lease.next.clear();
                }
                if waited {
                    info!(account, "took over the account's lease");
                }
                lease.held = Some(Held::asked_at(asked, ttl));
                return Ok(true);
            }
            if !waited {
                waited = true;
                info!(account, "waiting for another member to give the account up");
            }
            lease.held = None;
            lease.next.clear();
            tokio::select! {
                _ = tokio::time::sleep(LEASE_POLL) => {}
                _ = abandoned.cancelled() => return Ok(false),
            }
        }
    }

    fn begin(&self, key: &(String, i32), offset: i64, generation: u64) {
        let mut tracker = lock(&self.tracker);
        if tracker.generation == generation {
            if let Some(p) = tracker.partitions.get_mut(key) {
                p.pending.insert(offset);
                p.next = p.next.max(offset + 1);
            }
        }
    }

    /// The partition's position once `offset` is durable; 0 (record nothing for the
    /// partition) when this member no longer owns it.
    fn watermark(&self, key: &(String, i32), offset: i64, generation: u64) -> i64 {
        let tracker = lock(&self.tracker);
        match tracker.partitions.get(key) {
            Some(p) if tracker.generation == generation => p.watermark(Some(offset)),
            _ => 0,
        }
    }

    fn position(&self, key: &(String, i32), offset: i64, watermark: i64) -> Position {
        Position {
            group: self.options.group.clone(),
            topic: key.0.clone(),
            partition: key.1,
            next_offset: offset + 1,
            watermark,
        }
    }

    /// `offset` is durable: it leaves the pending set and Kafka's stored offset follows the
    /// partition's new position.
    fn finish(&self, key: &(String, i32), offset: i64, generation: u64) {
        let watermark = {
            let mut tracker = lock(&self.tracker);
            if tracker.generation != generation {
                return;
            }
            let Some(p) = tracker.partitions.get_mut(key) else {
                return;
            };
            p.pending.remove(&offset);
            p.watermark(None)
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&key.0, key.1, Offset::Offset(watermark))
            .is_ok()
        {
            if let Err(e) = self.kafka().store_offsets(&tpl) {
                warn!(error = %e, topic = key.0, partition = key.1, "cannot store the Kafka offset");
            }
        }
    }

    /// Applies one event; a parked account's event is kept, a transient failure retried in
    /// place (the account waits, others flow), a permanent one dead-letters the message and
    /// parks the account.
    async fn process(&self, work: &Work, lease: &mut AccountLease) -> Result<()> {
        let Work {
            generation,
            partition: key,
            message,
            event,
            ..
        } = work;
        let (generation, offset) = (*generation, message.offset());
        // Waiting for the lease (another member may hold it) takes no applier.
        if self
            .fresh_lease(&event.account_id, lease, &work.fence)
            .await?
            .is_none()
        {
            return Ok(());
        }
        let Ok(_applier) = self.appliers.acquire().await else {
            return Ok(());
        };
        if work.fence.is_cancelled() {
            // Abandoned while it waited for an applier.
            return Ok(());
        }
        let store = self.engine.store();
        let payload = message.payload().unwrap_or_default();
        loop {
            let Some(held) = self
                .fresh_lease(&event.account_id, lease, &work.fence)
                .await?
            else {
                return Ok(());
            };
            if self
                .applied_before(key, &event.account_id, offset, lease)
                .await?
            {
                tracing::debug!(partition = key.1, offset, account = %event.account_id, "already applied per the store");
                self.stats.already_applied.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let position = self.position(key, offset, self.watermark(key, offset, generation));
            if store.parked_reason(&event.account_id).await?.is_some() {
                // The account waits for an operator; its events are kept in order meanwhile.
                match store
                    .hold(&event.account_id, payload, None, position, Some(&lease.id))
                    .await
                {
                    Ok(()) => {
                        self.stats.held.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(e) if e.is_fenced() => {
                        lease.held = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            tracing::debug!(partition = key.1, offset, account = %event.account_id, kind = %event.kind, entity = %event.entity_type, key = %event.entity_id, "applying");
            match self
                .engine
                .apply_until(
                    event,
                    Some(position.clone()),
                    &held.fence(&work.fence),
                    &lease.id,
                )
                .await
            {
                Ok(outcome) => {
                    self.record(event, outcome);
                    break;
                }
                Err(e) if e.is_transient() => {
                    if work.fence.is_cancelled() {
                        // Revoked or stopping: left unrecorded, delivered again.
                        return Ok(());
                    }
                    if e.is_fenced() {
                        // The lease is due for renewal before the next call, or was lost:
                        // renew or take it again, and see where the account is.
                        lease.held = None;
                        continue;
                    }
                    warn!(account = %event.account_id, event_id = %event.event_id, error = %e, "transient failure; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = work.fence.cancelled() => return Ok(()),
                    }
                }
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    // The account is parked: this event and its later ones are kept until an
                    // operator fixed the cause and resumed it (`tandem accounts resume`).
                    error!(account = %event.account_id, event_id = %event.event_id, error = %e, "event cannot be applied; dead-lettered and the account parked");
                    let reason = e.to_string();
                    self.dead_letter(message, &reason).await?;
                    match store
                        .hold(
                            &event.account_id,
                            payload,
                            Some(&reason),
                            position,
                            Some(&lease.id),
                        )
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if e.is_fenced() => {
                            // The next holder applies the event again (and dead-letters it
                            // again if it still fails).
                            lease.held = None;
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.finish(key, offset, generation);
        Ok(())
    }

    /// Applies the held events of accounts an operator resumed, oldest first; an account whose
    /// event fails again is parked again, one whose held events all applied is unparked. Each
    /// account is worked on under its lease, so no worker of any member applies or holds its
    /// events meanwhile; an account whose lease is held elsewhere waits for the next round.
    async fn resume_parked(&self) -> Result<()> {
        let store = self.engine.store();
        let ttl = self.options.lease_ttl;
        let lease = LeaseId {
            group: self.options.group.clone(),
            owner: format!("{}/resume", self.member),
        };
        let never = CancellationToken::new();
        for account in store.resume_requested().await? {
            let mut stuck = false;
            for (seq, bytes) in store.held(&account).await? {
                let asked = Instant::now();
                if store.try_lease(&lease, &account, ttl).await? == Grant::Elsewhere {
                    stuck = true;
                    break;
                }
                let event = match self.codec.decode(&bytes) {
                    Ok(event) => event,
                    Err(e) => {
                        warn!(account, seq, error = %e, "held message no longer decodes; dropped");
                        store.release(&account, seq).await?;
                        continue;
                    }
                };
                let fence = Held::asked_at(asked, ttl).fence(&never);
                match self.engine.apply_until(&event, None, &fence, &lease).await {
                    Ok(outcome) => {
                        self.record(&event, outcome);
                        store.release(&account, seq).await?;
                    }
                    Err(e) if e.is_transient() => {
                        stuck = true;
                        break;
                    }
                    Err(e) if e.is_fatal() => return Err(e),
                    Err(e) => {
                        error!(account, event_id = %event.event_id, error = %e, "resumed account fails again; parked");
                        store.repark(&account, &e.to_string()).await?;
                        stuck = true;
                        break;
                    }
                }
            }
            if !stuck && store.unpark(&account).await? {
                info!(account, "account resumed");
            }
            store.release_lease(&lease, &account).await?;
        }
        Ok(())
    }

    fn record(&self, event: &ChangeEvent, outcome: Outcome) {
        match outcome {
            Outcome::Applied => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                let latency = (now_millis() - event.occurred_at).max(0) as u64;
                if let Ok(mut latencies) = self.stats.latencies_ms.lock() {
                    latencies.push((event.occurred_at, latency));
                }
            }
            Outcome::Skipped => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sends the original bytes to the dead-letter topic with the reason and origin in headers.
    async fn dead_letter(&self, message: &impl Message, reason: &str) -> Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tandem.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "tandem.source.topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "tandem.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "tandem.source.offset",
                value: Some(&offset),
            });
        let mut record = FutureRecord::to(&self.options.dead_letter_topic)
            .payload(message.payload().unwrap_or_default())
            .headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        self.dead_letters
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(source, _)| Error::Broker {
                brokers: self.options.brokers.clone(),
                source,
            })?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            reason,
            "dead-lettered"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(stored: i64) -> Partition {
        Partition {
            pending: BTreeSet::new(),
            next: stored,
            stored,
            accounts: HashMap::new(),
            started: false,
            rewound_to: None,
        }
    }

    #[test]
    fn a_partition_delivered_from_beyond_its_position_is_sought_back_further_each_time() {
        let mut p = partition(1000);
        assert_eq!(p.rewind(1005), Some(936));
        assert_eq!(p.rewind(1005), Some(872));
        assert_eq!(p.rewind(1005), Some(744));
        // A message at or below the position: the partition has started, and later messages
        // are taken as they come.
        assert_eq!(p.rewind(990), None);
        assert_eq!(p.rewind(2000), None);
    }

    #[test]
    fn a_partition_delivered_from_its_position_or_before_is_taken_as_it_comes() {
        let mut p = partition(1000);
        assert_eq!(p.rewind(1000), None);
        let mut q = partition(1000);
        assert_eq!(q.rewind(12), None);
    }

    #[test]
    fn a_log_that_starts_beyond_the_position_is_read_from_its_start() {
        let mut p = partition(10);
        assert_eq!(p.rewind(50), Some(0));
        // Offset 0 was asked for and 50 came: nothing earlier exists.
        assert_eq!(p.rewind(50), None);
    }
}
