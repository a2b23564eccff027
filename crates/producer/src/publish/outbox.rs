//! The one way events leave the producer. The detector's every step — the version scan,
//! deletes, settling, snapshots, restores — and handed-in detections hand their batch to an
//! [`Outbox`], so none can forget a step of the sequence that makes a stop at any point safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_event::{ChangeEvent, Kind};

use super::Publisher;
use crate::store::{Advance, BeforeSending, Published, Store};
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
            let published = self.publish(events).await?;
            self.note_published(&published).await;
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
        let published = self.publish(events).await?;
        self.note_published(&published).await;
        Ok(())
    }

    /// Publishes the batches of many accounts as [`Outbox::send`] publishes one, with one
    /// transaction before they go out, one wait for the broker, and one transaction for all
    /// their checkpoints, each account's under its lease. The accounts whose lease was lost are
    /// returned: their events went out, their checkpoints did not move.
    pub async fn send_together(
        &self,
        batches: &[TableBatch],
        lease: (&str, Duration),
    ) -> Result<Vec<String>> {
        let mut accounts: BTreeMap<&str, Vec<&ChangeEvent>> = BTreeMap::new();
        for batch in batches {
            accounts
                .entry(batch.account.as_str())
                .or_default()
                .extend(&batch.events);
        }
        let before: Vec<BeforeSending<'_>> = accounts
            .iter()
            .map(|(account, events)| {
                let created = events
                    .iter()
                    .filter(|e| e.kind == Kind::Created)
                    .map(|e| (e.entity_type.as_str(), e.entity_id.as_str(), e.version))
                    .collect();
                let mark = if events.is_empty() {
                    None
                } else {
                    self.mark_to_raise(account, events.iter().copied())
                };
                BeforeSending {
                    account,
                    created,
                    mark,
                }
            })
            .collect();
        self.store.before_sending(&before).await?;
        for before in &before {
            if let Some(mark) = before.mark {
                self.remember_mark(before.account, mark);
            }
        }
        // The batches' first polls hand their events to the producer in the batches' order
        // (an account's tables in their configured order), as one batch's events are.
        let published: Vec<(&str, Published)> =
            futures::future::try_join_all(batches.iter().map(|b| self.publish(&b.events)))
                .await?
                .into_iter()
                .flatten()
                .collect();
        self.note_published(&published).await;
        let created: Vec<Vec<String>> = batches.iter().map(|b| created_keys(&b.events)).collect();
        let advances: Vec<(&str, &str, Advance<'_>)> = batches
            .iter()
            .zip(&created)
            .map(|(b, created)| {
                let advance = Advance {
                    upserts: &b.upserts,
                    high_water: Some(b.high_water),
                    created,
                    ..Advance::default()
                };
                (b.account.as_str(), b.table.as_str(), advance)
            })
            .collect();
        self.store.advance_together(&advances, lease).await
    }

    /// Publishes `events` and says where each landed, per event with its account.
    async fn publish<'e>(&self, events: &'e [ChangeEvent]) -> Result<Vec<(&'e str, Published)>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let delivered = self.publisher.publish(events).await?;
        let acknowledged = tandem_event::now_millis();
        let places = events
            .iter()
            .zip(&delivered)
            .map(|(event, &(partition, offset))| {
                let place = Published {
                    partition,
                    offset,
                    occurred_at: event.occurred_at,
                    published_at: acknowledged,
                };
                (event.account_id.as_str(), place)
            })
            .collect();
        for event in events {
            self.stats
                .acknowledge
                .record(event.occurred_at, event.detected_at, acknowledged);
            crate::metrics::acknowledged(event.detected_at, acknowledged);
        }
        self.stats
            .published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        for kind in Kind::ALL {
            let n = events.iter().filter(|e| e.kind == kind).count() as u64;
            if n > 0 {
                crate::metrics::published(kind, n);
            }
        }
        Ok(places)
    }

    /// Records where accounts' newest events landed, for `tandem status`. Only a view: a
    /// failure is logged and the next publish writes it again.
    async fn note_published(&self, published: &[(&str, Published)]) {
        if published.is_empty() {
            return;
        }
        // One row per account (a statement may not touch a row twice): its newest place.
        let mut newest: BTreeMap<&str, Published> = BTreeMap::new();
        for (account, p) in published {
            let slot = newest.entry(*account).or_insert(*p);
            if p.offset > slot.offset {
                *slot = *p;
            }
        }
        let rows: Vec<(&str, Published)> = newest.into_iter().collect();
        if let Err(e) = self.store.note_published(&rows).await {
            tracing::warn!(error = %e, "cannot record where the published events landed; tandem status shows it after the next publish");
        }
    }

    /// Raises the account's published mark to the batch's newest version (a batch is of one
    /// epoch), unless this instance raised it that far already.
    async fn raise_mark(&self, account: &str, events: &[ChangeEvent]) -> Result<()> {
        if let Some((epoch, version)) = self.mark_to_raise(account, events) {
            self.store.raise_published(account, epoch, version).await?;
            self.remember_mark(account, (epoch, version));
        }
        Ok(())
    }

    /// The published mark (epoch, version) the events need, unless this instance raised the
    /// account's that far already.
    fn mark_to_raise<'e>(
        &self,
        account: &str,
        events: impl IntoIterator<Item = &'e ChangeEvent> + Clone,
    ) -> Option<(i64, i64)> {
        let epoch = events
            .clone()
            .into_iter()
            .map(|e| e.epoch)
            .max()
            .unwrap_or(0);
        let version = events
            .into_iter()
            .filter(|e| e.epoch == epoch)
            .map(|e| e.version)
            .max()
            .unwrap_or(0);
        let raised = self
            .marks
            .lock()
            .ok()
            .and_then(|marks| marks.get(account).copied());
        raised
            .is_none_or(|(e, v)| e != epoch || v < version)
            .then_some((epoch, version))
    }

    fn remember_mark(&self, account: &str, mark: (i64, i64)) {
        if let Ok(mut marks) = self.marks.lock() {
            marks.insert(account.to_owned(), mark);
        }
    }
}

/// One account's batch of one table's changes, sent with others' by
/// [`Outbox::send_together`]: its events, and the checkpoint they move.
#[derive(Debug)]
pub struct TableBatch {
    pub account: String,
    pub table: String,
    pub events: Vec<ChangeEvent>,
    /// Keys published as created or updated, with their versions.
    pub upserts: Vec<(String, i64)>,
    /// The table's new high-water mark.
    pub high_water: i64,
}

/// The keys of the events published as created.
fn created_keys(events: &[ChangeEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == Kind::Created)
        .map(|e| e.entity_id.clone())
        .collect()
}
