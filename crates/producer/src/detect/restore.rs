//! Restores: how one is detected, and the reconcile that publishes what differs in a new epoch.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use tandem_event::Kind;
use tracing::warn;

use super::Checkpoint;
use crate::legacy::LegacyRow;
use crate::store::AccountState;
use crate::{now_millis, Error, Producer, Result};

/// Why a restore was detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSignal {
    /// The database's version is below the high-water mark.
    VersionBelowHighWater { current: i64, high_water: i64 },
    /// A row's version is lower than the version already published for it.
    VersionWentBackwards { table: String, key: String },
    /// The configured database-identity marker changed.
    IdentityChanged { from: String, to: String },
}

impl Producer {
    /// A certain restore signal, or whether one is suspected: without a version counter to
    /// ask, the account's newest version dropping below the high-water mark means either a
    /// restore or deletes of the newest rows, and only the differencing check can tell.
    pub(super) async fn restore_signal(
        &self,
        account: &str,
        state: &AccountState,
        upto: i64,
        identity: &Option<String>,
        known: Option<&super::Known>,
    ) -> Result<(Option<RestoreSignal>, bool)> {
        if let (Some(from), Some(to)) = (&state.identity, identity) {
            if from != to {
                let signal = RestoreSignal::IdentityChanged {
                    from: from.clone(),
                    to: to.clone(),
                };
                return Ok((Some(signal), false));
            }
        }
        let mut high_water = 0;
        for table in self.legacy.tables() {
            let mark = match known {
                Some(known) => known.high_water(&table.name),
                None => self.store.high_water(account, &table.name).await?,
            };
            high_water = high_water.max(mark);
        }
        match self.legacy.version_counter(account).await? {
            Some(current) if current < high_water => Ok((
                Some(RestoreSignal::VersionBelowHighWater {
                    current,
                    high_water,
                }),
                false,
            )),
            Some(_) => Ok((None, false)),
            None => Ok((None, upto < high_water)),
        }
    }

    /// A restore was detected: the epoch moves on, `DATABASE_RESTORED` is published, then every
    /// difference between the manifest and the restored tables, in the new epoch. All
    /// checkpoints move in one transaction at the end, so an interrupted reconcile is repeated.
    pub(super) async fn restore(
        &self,
        account: &str,
        mut state: AccountState,
        signal: RestoreSignal,
    ) -> Result<u64> {
        warn!(account, ?signal, "database restore detected");
        state.epoch += 1;
        let upto = self.max_version(account).await?;
        let detected_at = now_millis();
        let marker = self.event(
            account,
            Kind::DatabaseRestored,
            ("", ""),
            (state.epoch, upto),
            detected_at,
        );
        self.publish(account, std::slice::from_ref(&marker), Checkpoint::Nothing)
            .await?;
        let mut published = 1;
        let mut checkpoints = Vec::new();
        for table in self.legacy.tables() {
            let rows = self.legacy.all_rows(account, &table.name).await?;
            // Keys published as created before a lost checkpoint count as published too.
            let mut manifest: HashMap<String, i64> = self
                .store
                .unsettled(account, &table.name)
                .await?
                .into_iter()
                .chain(self.store.manifest_all(account, &table.name).await?)
                .collect();
            let mut rows: Vec<&LegacyRow> = rows.iter().collect();
            rows.sort_by_key(|r| r.version);
            let mut events = Vec::new();
            for row in &rows {
                let kind = match manifest.remove(&row.entity_id) {
                    None => Kind::Created,
                    Some(v) if v == row.version => continue,
                    Some(_) => Kind::Updated,
                };
                let mut event =
                    self.row_event(account, kind, &table.name, row, state.epoch, detected_at);
                // The change is the restore, which the rows do not date: a restored row's own
                // timestamp is from before the backup.
                event.occurred_at = detected_at;
                events.push(event);
            }
            let mut gone: Vec<(String, i64)> = manifest.into_iter().collect();
            gone.sort();
            // An earlier try of this reconcile may have published in the new epoch already.
            let floor = state.published_in(state.epoch);
            events.extend(gone.iter().map(|(key, _)| {
                self.event(
                    account,
                    Kind::Deleted,
                    (&table.name, key),
                    (state.epoch, upto.max(floor)),
                    detected_at,
                )
            }));
            for chunk in events.chunks(self.options.batch_size.max(1)) {
                // Nothing of a reconcile is checkpointed before its end: stopped, it is
                // detected and repeated next time, with the same event ids.
                if self.is_stopping() {
                    return Err(Error::Stopped {
                        account: account.to_owned(),
                        step: "reconcile after a restore",
                    });
                }
                self.publish(account, chunk, Checkpoint::Nothing).await?;
            }
            published += events.len() as u64;
            let high_water = rows.last().map(|r| r.version).unwrap_or(0);
            let entries = rows
                .iter()
                .map(|r| (r.entity_id.clone(), r.version))
                .collect();
            checkpoints.push((table.name.clone(), entries, high_water));
        }
        state.identity = self.legacy.identity(account).await?;
        state.enrolled = true;
        self.store.reconcile(account, &state, &checkpoints).await?;
        self.stats.restores.fetch_add(1, Ordering::Relaxed);
        Ok(published)
    }

    /// Records the account's current rows as published, without publishing them: for an
    /// account whose cloud copy is known to match the legacy data (and for benchmarks that
    /// need a large manifest quickly).
    pub async fn adopt(&self, account: &str) -> Result<()> {
        let mut state = self.store.account(account).await?;
        let mut checkpoints = Vec::new();
        for table in self.legacy.tables() {
            let rows = self.legacy.all_rows(account, &table.name).await?;
            let high_water = rows.iter().map(|r| r.version).max().unwrap_or(0);
            let entries = rows.into_iter().map(|r| (r.entity_id, r.version)).collect();
            checkpoints.push((table.name.clone(), entries, high_water));
        }
        state.enrolled = true;
        state.identity = self.legacy.identity(account).await?;
        state.deletes_checked_at = now_millis();
        self.store.reconcile(account, &state, &checkpoints).await
    }
}
