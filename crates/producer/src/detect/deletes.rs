//! Deletes: from a tombstone table or the differencing check, and the deletes of rows published
//! as created before a lost checkpoint.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use tandem_event::{ChangeEvent, Kind};
use tracing::info;

use super::{Checkpoint, RestoreSignal, Step};
use crate::config::Table;
use crate::store::{tombstone_mark_key, AccountState, Advance};
use crate::{now_millis, Producer, Result};

impl Producer {
    /// Deals with keys published as created whose checkpoint did not land (the last holder of
    /// the lease was killed in between). Consumers may have those rows while the manifest
    /// lacks them, so the differencing check would never report them deleted: a row that is
    /// gone now is published as deleted here. A row still there has a version above the
    /// high-water mark (its checkpoint moved nothing), so a version scan publishes it again as
    /// created, and that checkpoint settles it; until then it stays unsettled, because the row
    /// may change past this cycle's bound and be deleted before the next cycle reads it.
    pub(super) async fn settle(
        &self,
        account: &str,
        state: &AccountState,
        upto: i64,
    ) -> Result<u64> {
        let floor = state.published_in(state.epoch);
        let mut published = 0;
        for table in self.legacy.tables() {
            let unsettled = self.store.unsettled(account, &table.name).await?;
            let Some(since) = unsettled.iter().map(|(_, v)| *v).min() else {
                continue;
            };
            // A row that still exists has a version at least the one published.
            let present: HashSet<String> = self
                .legacy
                .key_versions_in(account, &table.name, &[(since, i64::MAX)])
                .await?
                .into_iter()
                .map(|(key, _)| key)
                .collect();
            let keys: Vec<&str> = unsettled.iter().map(|(k, _)| k.as_str()).collect();
            let known = self
                .store
                .manifest_versions(account, &table.name, &keys)
                .await?;
            let detected_at = now_millis();
            let events: Vec<ChangeEvent> = unsettled
                .iter()
                .filter(|(key, _)| !present.contains(key) && !known.contains_key(key))
                .map(|(key, version)| {
                    self.event(
                        account,
                        Kind::Deleted,
                        (&table.name, key),
                        (state.epoch, upto.max(*version).max(floor)),
                        detected_at,
                    )
                })
                .collect();
            // Settled: the rows just published as deleted, and those the manifest has (a later
            // checkpoint recorded them, and the differencing check watches them).
            let keys: Vec<String> = unsettled
                .into_iter()
                .map(|(key, _)| key)
                .filter(|key| !present.contains(key) || known.contains_key(key))
                .collect();
            self.publish(account, &events, Checkpoint::Settle(&table.name, &keys))
                .await?;
            if !events.is_empty() {
                info!(account, table = %table.name, deleted = events.len(), "published deletes of rows created before a lost checkpoint");
            }
            published += events.len() as u64;
        }
        Ok(published)
    }

    /// Finds deleted rows (tombstone table, or the differencing check) and publishes them.
    pub(super) async fn check_deletes(
        &self,
        account: &str,
        state: &AccountState,
        table: &Table,
        upto: i64,
    ) -> Result<Step> {
        let detected_at = now_millis();
        let (deleted, late, tombstone_mark) = if table.tombstones.is_some() {
            let (deleted, mark) = self.tombstone_deletes(account, table).await?;
            (deleted, Vec::new(), mark)
        } else {
            let started = std::time::Instant::now();
            let found = self.differences(account, &table.name, upto).await?;
            crate::metrics::delete_check(started.elapsed());
            if let Some(key) = found.went_backwards {
                return Ok(Step::Restored(RestoreSignal::VersionWentBackwards {
                    table: table.name.clone(),
                    key,
                }));
            }
            (found.deleted, found.late, None)
        };
        if deleted.is_empty() && late.is_empty() && tombstone_mark.is_none() {
            return Ok(Step::Published(0));
        }
        let keys: Vec<&str> = late.iter().map(|r| r.entity_id.as_str()).collect();
        let known = self
            .store
            .manifest_versions(account, &table.name, &keys)
            .await?;
        let mut events: Vec<ChangeEvent> = late
            .iter()
            .map(|row| {
                let kind = if known.contains_key(&row.entity_id) {
                    Kind::Updated
                } else {
                    Kind::Created
                };
                self.row_event(account, kind, &table.name, row, state.epoch, detected_at)
            })
            .collect();
        // A delete happened after the last version published of its row, and before `upto`.
        let floor = state.published_in(state.epoch);
        events.extend(deleted.iter().map(|(key, version)| {
            self.event(
                account,
                Kind::Deleted,
                (&table.name, key),
                (state.epoch, upto.max(*version).max(floor)),
                detected_at,
            )
        }));
        let upserts: Vec<(String, i64)> = late
            .iter()
            .map(|r| (r.entity_id.clone(), r.version))
            .collect();
        let deletes: Vec<String> = deleted.iter().map(|(k, _)| k.clone()).collect();
        let advance = Advance {
            upserts: &upserts,
            deletes: &deletes,
            tombstone_mark,
            ..Advance::default()
        };
        self.publish(account, &events, Checkpoint::Table(&table.name, advance))
            .await?;
        self.stats
            .deletes
            .fetch_add(deletes.len() as u64, Ordering::Relaxed);
        info!(account, table = %table.name, deleted = deletes.len(), late = upserts.len(), "published deletes");
        Ok(Step::Published(events.len() as u64))
    }

    /// Keys the tombstone table lists since the last check, still in the manifest at an older
    /// version; and the tombstone mark they bring the table to, which moves in the checkpoint
    /// of their deletes (a stop before it reads them again).
    pub(super) async fn tombstone_deletes(
        &self,
        account: &str,
        table: &Table,
    ) -> Result<(Vec<(String, i64)>, Option<i64>)> {
        let after = self
            .store
            .high_water(account, &tombstone_mark_key(&table.name))
            .await?;
        let stones = self
            .legacy
            .tombstones(account, &table.name, (after, i64::MAX))
            .await?;
        let Some(last) = stones.iter().map(|(_, v)| *v).max() else {
            return Ok((Vec::new(), None));
        };
        let keys: Vec<&str> = stones.iter().map(|(k, _)| k.as_str()).collect();
        let known = self
            .store
            .manifest_versions(account, &table.name, &keys)
            .await?;
        let deleted = stones
            .into_iter()
            .filter(|(key, version)| known.get(key).is_some_and(|v| v < version))
            .collect();
        Ok((deleted, Some(last)))
    }
}
