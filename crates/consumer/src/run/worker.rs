//! From a message to an applied event: each message is handed to its account's queue, and one
//! worker per account applies the queue in order under the account's lease — holding the
//! events of a parked account, retrying transient failures in place, and dead-lettering and
//! parking on a permanent one.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};

use rdkafka::message::{Message, OwnedMessage};
use tandem_event::{now_millis, ChangeEvent, Kind};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{error, warn};

use super::lease::AccountLease;
use super::tracker::{lock, Tracker, Work};
use super::Inner;
use crate::apply::Outcome;
use crate::store::LeaseId;
use crate::{Disposition, Result};

/// The longest wait between two tries of an event that keeps failing transiently.
const MAX_EVENT_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Waits between tries of one event: from half a second, doubling, with jitter, at most
/// [`MAX_EVENT_RETRY_DELAY`], without end (an event is never skipped).
fn event_retries() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(MAX_EVENT_RETRY_DELAY)
        .with_jitter()
        .without_max_times()
        .build()
}
/// How long a target read from the store is used before it is read again.
const TARGET_TTL: Duration = Duration::from_secs(5);

impl Inner {
    /// The event as it applies to its legacy account's target: the target takes the place
    /// of the account in the store's keys, the leases and the cloud calls.
    async fn retarget(&self, mut event: ChangeEvent) -> Result<ChangeEvent> {
        let cached = lock(&self.tracker)
            .targets
            .get(&event.account_id)
            .filter(|(_, at)| at.elapsed() < TARGET_TTL)
            .map(|(target, _)| target.clone());
        let target = match cached {
            Some(target) => target,
            None => {
                let target = self.engine.store().target_of(&event.account_id).await?;
                lock(&self.tracker).targets.insert(
                    event.account_id.clone(),
                    (target.clone(), std::time::Instant::now()),
                );
                target
            }
        };
        event.account_id = target;
        Ok(event)
    }

    /// Takes in one message: skips it if the store says it was applied, dead-letters it if it
    /// does not decode, else queues it behind its account's earlier events.
    pub(super) async fn dispatch(
        self: &Arc<Self>,
        message: OwnedMessage,
        slot: OwnedSemaphorePermit,
    ) -> Result<()> {
        let read_ms = now_millis();
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
        let event = match self
            .decoder
            .decode(message.payload().unwrap_or_default())
            .await
        {
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
        if let (Kind::SnapshotBegin | Kind::SnapshotEnd, Some(id)) =
            (event.kind, event.snapshot_id.as_deref())
        {
            // Where the account's snapshots are in the log, for a replay to seek to.
            let end = event.kind == Kind::SnapshotEnd;
            self.engine
                .store()
                .mark_snapshot((&event.account_id, id), (&key.0, key.1, offset), end)
                .await?;
        }
        // From here on the event is the target's: store keys, leases and the cloud account.
        let event = self.retarget(event).await?;
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
            read_ms,
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
    pub(super) async fn worker(self: Arc<Self>, account: String) {
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
                error!(account, "the worker met an error it cannot go on from");
                self.fail(e);
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

    /// Applies one event; a parked account's event is kept, a transient failure retried in
    /// place (the account waits, others flow), a permanent one dead-letters the message and
    /// parks the account.
    #[tracing::instrument(name = "apply", skip_all, fields(
        account = %work.event.account_id,
        event_id = %work.event.event_id,
        kind = %work.event.kind,
        partition = work.partition.1,
        offset = work.message.offset(),
    ))]
    pub(super) async fn process(&self, work: &Work, lease: &mut AccountLease) -> Result<()> {
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
        let mut retries = event_retries();
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
            tracing::debug!(partition = key.1, offset, account = %event.account_id, kind = %event.kind, entity = %event.entity_type, key = %event.entity_id, "applying");
            let started = std::time::Instant::now();
            let applied = self
                .engine
                .apply_unless_parked(
                    event,
                    Some(position.clone()),
                    &held.fence(&work.fence),
                    &lease.id,
                )
                .await;
            if let Ok(Outcome::Parked) = applied {
                // The account waits for an operator; its events are kept in order meanwhile.
                match store
                    .hold(&event.account_id, payload, None, position, Some(&lease.id))
                    .await
                {
                    Ok(()) => {
                        self.stats.held.fetch_add(1, Ordering::Relaxed);
                        crate::metrics::held();
                        break;
                    }
                    Err(e) if e.is_fenced() => {
                        lease.held = None;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            match applied {
                Ok(outcome) => {
                    self.record(event, outcome, work.read_ms, started.elapsed());
                    if let (Kind::SnapshotEnd, Some(id)) = (event.kind, &event.snapshot_id) {
                        let legacy = message.key().map(String::from_utf8_lossy);
                        let legacy = legacy.as_deref().unwrap_or(&event.account_id);
                        self.snapshot_applied(legacy, id).await;
                    }
                    break;
                }
                Err(e) => match e.disposition() {
                    Disposition::Fatal => return Err(e),
                    // Revoked or stopping: left unrecorded, delivered again.
                    Disposition::Fenced | Disposition::Retry if work.fence.is_cancelled() => {
                        return Ok(())
                    }
                    Disposition::Fenced => {
                        // The lease is due for renewal before the next call, or was lost:
                        // renew or take it again, and see where the account is.
                        crate::metrics::lease_lost();
                        lease.held = None;
                        continue;
                    }
                    Disposition::Retry => {
                        // The client's own retries are spent: the event is tried again, for
                        // as long as it takes, further apart each time. Only this account
                        // waits; no event is skipped.
                        let wait = retries.next().unwrap_or(MAX_EVENT_RETRY_DELAY);
                        warn!(account = %event.account_id, event_id = %event.event_id, error = %e, ?wait, "transient failure; retrying the event");
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = work.fence.cancelled() => return Ok(()),
                        }
                    }
                    Disposition::Park => {
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
                },
            }
        }
        self.finish(key, offset, generation);
        Ok(())
    }

    /// A snapshot of the legacy account was applied in full: a syncing account is live from
    /// now on. The event is applied whatever the migration store says; if it cannot be told,
    /// the account stays syncing until its next snapshot applies.
    pub(super) async fn snapshot_applied(&self, legacy_account: &str, snapshot_id: &str) {
        let Some(migration) = self.migration.get() else {
            return;
        };
        let mut waits = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_times(4)
            .build();
        loop {
            match migration
                .snapshot_applied(legacy_account, snapshot_id)
                .await
            {
                Ok(true) => {
                    tracing::info!(
                        account = legacy_account,
                        "snapshot applied: the account is live"
                    );
                    return;
                }
                Ok(false) => return,
                Err(e) => match waits.next() {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {
                        warn!(account = legacy_account, error = %e, "cannot record in the migration store that the account is live; it stays syncing until its next snapshot is applied (tandem snapshot --account)");
                        return;
                    }
                },
            }
        }
    }

    /// Counts an event the consumer is done with; an applied one's stages are recorded from
    /// `read_ms`, when it was read from Kafka (or from the parked account's held events).
    /// `took` is the apply's own time, the store and the cloud calls.
    pub(super) fn record(
        &self,
        event: &ChangeEvent,
        outcome: Outcome,
        read_ms: i64,
        took: std::time::Duration,
    ) {
        match outcome {
            Outcome::Applied => {
                self.stats.applied.fetch_add(1, Ordering::Relaxed);
                self.stats.stages.record(event, read_ms, now_millis());
                crate::metrics::applied(event.kind, took);
            }
            Outcome::Skipped => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::skipped();
            }
            // Held, not done: counted when it is held.
            Outcome::Parked => {}
        }
    }
}
