//! Snapshots: `SNAPSHOT_BEGIN`, every row, `SNAPSHOT_END`, on enrolment or on request.

use std::collections::HashSet;

use tandem_event::{ChangeEvent, Kind};
use tracing::info;

use super::Checkpoint;
use crate::store::{AccountState, Advance, SnapshotProgress};
use crate::{now_millis, Error, Producer, Result};

/// What became of a snapshot asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    /// Published by this instance: this many events.
    Published(u64),
    /// Asked of the instance holding the account's lease.
    Requested,
}

impl Producer {
    /// Publishes a snapshot of the account: `SNAPSHOT_BEGIN`, every row, the deletes the
    /// manifest had not seen yet, `SNAPSHOT_END` — all carrying `snapshot_id`.
    ///
    /// When another instance holds the account's lease (a running `tandem produce`), the
    /// snapshot is asked of it instead, through the store: it publishes the snapshot in its
    /// next cycle. [`Snapshot::Requested`] says so; [`crate::Store::snapshot_pending`] tells when it
    /// is done.
    pub async fn snapshot(&self, account: &str, snapshot_id: &str) -> Result<Snapshot> {
        let ttl = self.options.lease_ttl;
        if !self.store.try_lease(account, &self.owner, ttl).await? {
            self.store.request_snapshot(account, snapshot_id).await?;
            return Ok(Snapshot::Requested);
        }
        let mut state = self.store.account(account).await?;
        let bounds = self.legacy.snapshot_bounds(account).await?;
        let upto = self.max_version(account).await?;
        let published = self
            .snapshot_leased(account, &mut state, snapshot_id, upto, bounds)
            .await?;
        state.enrolled = true;
        self.store.set_account(account, &state).await?;
        // An earlier request for the same snapshot, if any, is answered too.
        self.store.snapshot_done(account, snapshot_id).await?;
        Ok(Snapshot::Published(published))
    }

    pub(super) async fn snapshot_leased(
        &self,
        account: &str,
        state: &mut AccountState,
        snapshot_id: &str,
        upto: i64,
        bounds: Option<(i64, i64)>,
    ) -> Result<u64> {
        let detected_at = now_millis();
        // A snapshot of this id cut short (a stop, a kill) goes on where it got to, with what
        // it began with; the consumer's sweep at its end still sees the rows sent before,
        // since they carry the same snapshot id.
        let resumed = self
            .store
            .snapshot_progress(account)
            .await?
            .filter(|p| p.snapshot_id == snapshot_id && p.epoch == state.epoch);
        let mut progress = resumed.clone().unwrap_or(SnapshotProgress {
            snapshot_id: snapshot_id.to_owned(),
            epoch: state.epoch,
            upto,
            bounds,
            table: 0,
            after: 0,
        });
        let (upto, bounds) = (progress.upto, progress.bounds);
        let marker = |kind| {
            let mut event = self.event(
                account,
                kind,
                ("", snapshot_id),
                (state.epoch, upto),
                detected_at,
            );
            event.snapshot_id = Some(snapshot_id.to_owned());
            event
        };
        let mut published = 1;
        match &resumed {
            None => {
                self.publish(account, &[marker(Kind::SnapshotBegin)], Checkpoint::Nothing)
                    .await?;
                self.store.set_snapshot_progress(account, &progress).await?;
                published += 1;
            }
            Some(p) => info!(
                account,
                snapshot_id,
                table = p.table,
                after_version = p.after,
                "resuming the snapshot where it was cut short"
            ),
        }
        for (index, table) in self.legacy.tables().iter().enumerate() {
            if index < progress.table {
                continue;
            }
            let high_water = self.store.high_water(account, &table.name).await?;
            // Read to the end, changes made meanwhile included: the consumer removes whatever
            // a snapshot did not send, so it must send every row that exists when it ends.
            let mut after = if index == progress.table {
                progress.after
            } else {
                0
            };
            // The rows sent before the snapshot was cut short, as far as they still exist.
            let mut seen: HashSet<String> = if after > 0 {
                self.legacy
                    .key_versions(account, &table.name)
                    .await?
                    .into_iter()
                    .filter(|(_, version)| *version <= after)
                    .map(|(key, _)| key)
                    .collect()
            } else {
                HashSet::new()
            };
            loop {
                // A stop leaves the snapshot unfinished: without its end, the account is not
                // enrolled (or the requested snapshot not done), and it starts again.
                if self.is_stopping() {
                    return Err(Error::Stopped {
                        account: account.to_owned(),
                        step: "snapshot",
                    });
                }
                let rows = self
                    .legacy
                    .changes(
                        account,
                        &table.name,
                        (after, i64::MAX),
                        self.options.batch_size,
                    )
                    .await?;
                let Some(last) = rows.last().map(|r| r.version) else {
                    break;
                };
                let keys: Vec<&str> = rows.iter().map(|r| r.entity_id.as_str()).collect();
                let known = self
                    .store
                    .manifest_versions(account, &table.name, &keys)
                    .await?;
                let events: Vec<ChangeEvent> = rows
                    .iter()
                    .map(|row| {
                        let kind = if known.contains_key(&row.entity_id) {
                            Kind::Updated
                        } else {
                            Kind::Created
                        };
                        let mut event = self.row_event(
                            account,
                            kind,
                            &table.name,
                            row,
                            state.epoch,
                            detected_at,
                        );
                        event.snapshot_id = Some(snapshot_id.to_owned());
                        event
                    })
                    .collect();
                let upserts: Vec<(String, i64)> = rows
                    .iter()
                    .map(|r| (r.entity_id.clone(), r.version))
                    .collect();
                seen.extend(upserts.iter().map(|(k, _)| k.clone()));
                let advance = Advance {
                    upserts: &upserts,
                    high_water: Some(high_water.max(last)),
                    ..Advance::default()
                };
                self.publish(account, &events, Checkpoint::Table(&table.name, advance))
                    .await?;
                published += events.len() as u64;
                after = last;
                progress.table = index;
                progress.after = after;
                self.store.set_snapshot_progress(account, &progress).await?;
                if rows.len() < self.options.batch_size {
                    break;
                }
            }
            // What the manifest holds but the snapshot did not see is gone.
            let gone: Vec<(String, i64)> = self
                .store
                .manifest_all(account, &table.name)
                .await?
                .into_iter()
                .filter(|(k, v)| !seen.contains(k) && *v <= upto)
                .collect();
            if !gone.is_empty() {
                let floor = self.store.account(account).await?.published_in(state.epoch);
                let events: Vec<ChangeEvent> = gone
                    .iter()
                    .map(|(key, version)| {
                        let mut event = self.event(
                            account,
                            Kind::Deleted,
                            (&table.name, key),
                            (state.epoch, upto.max(*version).max(floor)),
                            detected_at,
                        );
                        event.snapshot_id = Some(snapshot_id.to_owned());
                        event
                    })
                    .collect();
                let deletes: Vec<String> = gone.into_iter().map(|(k, _)| k).collect();
                let advance = Advance {
                    deletes: &deletes,
                    ..Advance::default()
                };
                self.publish(account, &events, Checkpoint::Table(&table.name, advance))
                    .await?;
                published += events.len() as u64;
            }
            if let Some((xmin, xmax)) = bounds {
                let open = (xmin < xmax).then_some((xmax, high_water));
                self.store
                    .update_inflight(account, &table.name, xmin, open)
                    .await?;
            }
            progress.table = index + 1;
            progress.after = 0;
            self.store.set_snapshot_progress(account, &progress).await?;
        }
        self.publish(account, &[marker(Kind::SnapshotEnd)], Checkpoint::Nothing)
            .await?;
        self.store.clear_snapshot_progress(account).await?;
        info!(
            account,
            snapshot_id,
            events = published,
            "published snapshot"
        );
        Ok(published)
    }
}
