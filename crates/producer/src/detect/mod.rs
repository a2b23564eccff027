//! Change detection for one account, one file per step of its cycle:
//!
//! - this file: the cycle itself, and the events it builds;
//! - [`publish`]: the one way events leave the detector;
//! - [`scan`]: the version scan for new and changed rows;
//! - [`deletes`]: deletes, from a tombstone table or the differencing check, and settling keys
//!   left over by a lost checkpoint;
//! - [`differences`]: the differencing check itself;
//! - [`restore`]: restore signals and the reconcile that follows;
//! - [`snapshot`]: snapshots, on enrolment and on request;
//! - [`quiet`]: accounts whose cycle would find nothing, told apart all at once;
//! - [`together`]: accounts whose cycle is only a version scan, cycled together.

use tandem_event::{ChangeEvent, Kind};
use tracing::info;

use crate::legacy::LegacyRow;
use crate::store::Advance;
use crate::{now_millis, Producer, Result};

mod deletes;
mod differences;
mod quiet;
mod restore;
mod scan;
mod snapshot;
mod together;

pub use differences::Differences;
pub(crate) use quiet::{Known, QuietSince, Round};
pub use restore::RestoreSignal;
pub use snapshot::Snapshot;

use crate::publish::Checkpoint;

/// What a step of an account's cycle came to.
#[derive(Debug)]
enum Step {
    /// It published this many events.
    Published(u64),
    /// It found the database restored; the cycle turns to the reconcile.
    Restored(RestoreSignal),
}

impl Producer {
    /// Sends one account's batch through the outbox, checkpointing under this instance's
    /// lease on the account.
    async fn publish(
        &self,
        account: &str,
        events: &[ChangeEvent],
        checkpoint: Checkpoint<'_>,
    ) -> Result<()> {
        self.outbox
            .send(account, events, checkpoint, self.lease())
            .await
    }

    /// One cycle of one account, if this instance gets (or holds) the account's lease.
    pub async fn cycle_account(&self, account: &str) -> Result<u64> {
        self.cycle_account_knowing(account, None).await
    }

    /// One cycle of one account, with what its round read of it already (see
    /// [`Known`]): the highest versions and the high-water marks are not read again.
    #[tracing::instrument(name = "account_cycle", skip_all, fields(account))]
    pub(crate) async fn cycle_account_knowing(
        &self,
        account: &str,
        known: Option<Known>,
    ) -> Result<u64> {
        // Stopping: accounts not started yet wait for the next run.
        if self.is_stopping() {
            return Ok(0);
        }
        // What the round read stays true only while this instance held the lease throughout:
        // a lease that ran out meanwhile may have let another instance move the marks.
        let still_held = self
            .held_leases()
            .get(account)
            .is_some_and(|until| *until > std::time::Instant::now());
        let known = known.filter(|_| still_held);
        if !self.hold_lease(account).await? {
            return Ok(0);
        }
        let mut state = self.store.account(account).await?;
        let bounds = self.legacy.snapshot_bounds(account).await?;
        let upto = match &known {
            Some(known) => known.upto(),
            None => self.max_version(account).await?,
        };
        let identity = self.legacy.identity(account).await?;
        let (signal, suspect) = self
            .restore_signal(account, &state, upto, &identity, known.as_ref())
            .await?;
        if let Some(signal) = signal {
            return self.restore(account, state, signal).await;
        }
        if state.identity.is_none() && identity.is_some() {
            state.identity = identity;
            self.store.set_account(account, &state).await?;
        }
        if !state.enrolled {
            // An enrolment cut short goes on under its own id (see `snapshot_leased`).
            let id = match self.store.snapshot_progress(account).await? {
                Some(p) if p.epoch == state.epoch && p.snapshot_id.starts_with("enrol-") => {
                    p.snapshot_id
                }
                _ => format!("enrol-{account}-{}-{upto}", state.epoch),
            };
            let published = self
                .snapshot_leased(account, &mut state, &id, upto, bounds)
                .await?;
            state.enrolled = true;
            self.store.set_account(account, &state).await?;
            return Ok(published);
        }
        if let Some(id) = state.snapshot_requested.clone() {
            let published = self
                .snapshot_leased(account, &mut state, &id, upto, bounds)
                .await?;
            self.store.snapshot_done(account, &id).await?;
            info!(
                account,
                snapshot_id = id,
                "published the snapshot asked for"
            );
            return Ok(published);
        }
        let mut published = 0;
        if state.unsettled {
            published += self.settle(account, &state, upto).await?;
        }
        for (i, table) in self.legacy.tables().iter().enumerate() {
            let high_water = known.as_ref().map(|k| k.high_water(&table.name));
            let unchanged = known.as_ref().is_some_and(|k| {
                k.maxima.get(i).copied().unwrap_or(0) <= k.high_water(&table.name)
            });
            if unchanged && bounds.is_none() {
                // Nothing above the mark in this table (and no transaction to watch for).
                continue;
            }
            match self
                .scan(account, &state, table, upto, bounds, high_water)
                .await?
            {
                Step::Published(n) => published += n,
                Step::Restored(signal) => {
                    return Ok(published + self.restore(account, state, signal).await?)
                }
            }
        }
        let due = (suspect
            || now_millis() - state.deletes_checked_at >= self.check_interval_ms(account))
            && !self.is_stopping();
        if due {
            for table in self.legacy.tables() {
                match self.check_deletes(account, &state, table, upto).await? {
                    Step::Published(n) => published += n,
                    Step::Restored(signal) => {
                        return Ok(published + self.restore(account, state, signal).await?)
                    }
                }
                if suspect {
                    // No row went back, so the newest rows were deleted — or the database was
                    // restored to before rows that were only ever created. Either way the
                    // deletes are published; lowering the high-water mark makes sure writes
                    // that reuse versions after such a restore are read.
                    let max = self.legacy.max_version(account, &table.name).await?;
                    let high_water = self.store.high_water(account, &table.name).await?;
                    if max < high_water {
                        let advance = Advance {
                            high_water: Some(max),
                            ..Advance::default()
                        };
                        self.publish(account, &[], Checkpoint::Table(&table.name, advance))
                            .await?;
                    }
                }
            }
            state.deletes_checked_at = now_millis();
            self.store.set_account(account, &state).await?;
        }
        Ok(published)
    }

    /// The highest version in any table of the account.
    pub(super) async fn max_version(&self, account: &str) -> Result<i64> {
        let mut upto = 0;
        for table in self.legacy.tables() {
            upto = upto.max(self.legacy.max_version(account, &table.name).await?);
        }
        Ok(upto)
    }

    pub(super) fn event(
        &self,
        account: &str,
        kind: Kind,
        (table, key): (&str, &str),
        (epoch, version): (i64, i64),
        detected_at: i64,
    ) -> ChangeEvent {
        let mut event = ChangeEvent::new(account, kind, table, key, epoch, version);
        event.occurred_at = detected_at;
        event.detected_at = detected_at;
        event
    }

    pub(super) fn row_event(
        &self,
        account: &str,
        kind: Kind,
        table: &str,
        row: &LegacyRow,
        epoch: i64,
        detected_at: i64,
    ) -> ChangeEvent {
        let mut event = self.event(
            account,
            kind,
            (table, &row.entity_id),
            (epoch, row.version),
            detected_at,
        );
        event.data = Some(row.data.clone());
        event.occurred_at = row.occurred_at.unwrap_or(detected_at);
        event
    }

    /// Takes the account's lease, or renews it once a third of its time is gone; a lease with
    /// more left is held without a write to the store. The time left is reckoned from before
    /// the store was asked, so it never outlasts what the store recorded.
    pub(super) async fn hold_lease(&self, account: &str) -> Result<bool> {
        let ttl = self.options.lease_ttl;
        let now = std::time::Instant::now();
        if self
            .held_leases()
            .get(account)
            .is_some_and(|until| *until > now + ttl * 2 / 3)
        {
            return Ok(true);
        }
        let taken = self.store.try_lease(account, &self.owner, ttl).await?;
        let mut held = self.held_leases();
        let had = held.get(account).is_some_and(|until| *until > now);
        if taken != had {
            crate::metrics::lease(taken);
        }
        if taken {
            held.insert(account.to_owned(), now + ttl);
        } else {
            held.remove(account);
        }
        Ok(taken)
    }

    pub(super) fn held_leases(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn lease(&self) -> Option<(&str, std::time::Duration)> {
        Some((self.owner.as_str(), self.options.lease_ttl))
    }
}
