//! The one way events leave the producer. The detector's every step — the version scan,
//! deletes, settling, snapshots, restores — and handed-in detections hand their batch to an
//! [`Outbox`], so none can forget a step of the sequence that makes a stop at any point safe.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_event::{ChangeEvent, Kind};

use super::Publisher;
use crate::store::{Advance, Store};
use crate::{Result, Stats};

/// What moves once the broker acknowledged a batch.
#[derive(Debug)]
pub enum Checkpoint<'a> {
    /// Nothing: the snapshot markers, handed-in detections, and a restore's events (its
    /// reconcile records every table at its end, so an interrupted one is repeated).
    Nothing,
    /// A table's manifest and marks; keys the batch published as created are settled in the
    /// same transaction.
    Table(&'a str, Advance<'a>),
    /// Keys published as created before a lost checkpoint, settled now.
    Settle(&'a str, &'a [String]),
}

/// The store a batch is checkpointed in, the producer it is sent with, and what this instance
/// knows of each account's published mark.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Store,
    publisher: Arc<Publisher>,
    /// Per account, the published mark (epoch, version) this instance last raised it to; a
    /// batch at or below it needs no raise.
    marks: Arc<Mutex<HashMap<String, (i64, i64)>>>,
    stats: Arc<Stats>,
}

impl Outbox {
    pub fn new(store: Store, publisher: Publisher) -> Outbox {
        Outbox {
            store,
            publisher: Arc::new(publisher),
            marks: Arc::default(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Publishes one account's batch: keys published as created are recorded as unsettled and
    /// the account's published mark raised where the batch goes above it — both before the
    /// events go out, so they survive a stop that loses the checkpoint — then the events are
    /// sent with the idempotent producer, and only once the broker acknowledged all of them
    /// the checkpoint moves, under `lease` (owner, TTL) when given.
    pub async fn send(
        &self,
        account: &str,
        events: &[ChangeEvent],
        checkpoint: Checkpoint<'_>,
        lease: Option<(&str, Duration)>,
    ) -> Result<()> {
        let created = created_keys(events);
        if !events.is_empty() {
            let unsettled: Vec<(&str, &str, i64)> = events
                .iter()
                .filter(|e| e.kind == Kind::Created)
                .map(|e| (e.entity_type.as_str(), e.entity_id.as_str(), e.version))
                .collect();
            if !unsettled.is_empty() {
                self.store.unsettle(account, &unsettled).await?;
            }
            self.raise_mark(account, events).await?;
            self.publish(events).await?;
        }
        match checkpoint {
            Checkpoint::Nothing => Ok(()),
            Checkpoint::Table(table, advance) => {
                let advance = Advance {
                    created: &created,
                    ..advance
                };
                self.store.advance(account, table, advance, lease).await
            }
            Checkpoint::Settle(table, keys) => self.store.settle(account, table, keys).await,
        }
    }

    /// Publishes detections handed in by another process. They are not the detector's: no key
    /// becomes unsettled (the detector could not settle it, and would take a key it never read
    /// for one it lost), and nothing is checkpointed. The published mark is raised, so the
    /// detector's deletes still order after them — unless the batch starts a new epoch, whose
    /// account state moves only after the send: the next batch raises it then.
    pub async fn send_handed_in(&self, account: &str, events: &[ChangeEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if events.iter().all(|e| e.kind != Kind::DatabaseRestored) {
            self.raise_mark(account, events).await?;
        }
        self.publish(events).await
    }

    async fn publish(&self, events: &[ChangeEvent]) -> Result<()> {
        self.publisher.publish(events).await?;
        let acknowledged = tandem_event::now_millis();
        for event in events {
            self.stats
                .acknowledge
                .record(event.occurred_at, event.detected_at, acknowledged);
        }
        self.stats
            .published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Raises the account's published mark to the batch's newest version (a batch is of one
    /// epoch), unless this instance raised it that far already.
    async fn raise_mark(&self, account: &str, events: &[ChangeEvent]) -> Result<()> {
        let epoch = events.iter().map(|e| e.epoch).max().unwrap_or(0);
        let version = events
            .iter()
            .filter(|e| e.epoch == epoch)
            .map(|e| e.version)
            .max()
            .unwrap_or(0);
        let raised = self
            .marks
            .lock()
            .ok()
            .and_then(|marks| marks.get(account).copied());
        if raised.is_none_or(|(e, v)| e != epoch || v < version) {
            self.store.raise_published(account, epoch, version).await?;
            if let Ok(mut marks) = self.marks.lock() {
                marks.insert(account.to_owned(), (epoch, version));
            }
        }
        Ok(())
    }
}

/// The keys of the events published as created.
fn created_keys(events: &[ChangeEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == Kind::Created)
        .map(|e| e.entity_id.clone())
        .collect()
}
