//! The version scan: rows above the high-water mark, in version order, in batches.

use tandem_event::{ChangeEvent, Kind};

use crate::legacy::LegacyRow;
use tracing::info;

use super::{Checkpoint, RestoreSignal, Step};
use crate::config::Table;
use crate::store::{AccountState, Advance};
use crate::{now_millis, Producer, Result};

/// Rows read above a table's mark, against what the manifest holds of them.
pub(super) enum AboveMark {
    /// The events to publish (rows the manifest holds at their version are left out) and the
    /// manifest's new entries.
    Changes(Vec<ChangeEvent>, Vec<(String, i64)>),
    /// This key's version is below the one published for it: a restore.
    WentBackwards(String),
}

impl Producer {
    /// What `rows` of `table`, read above its mark, come to (see [`AboveMark`]).
    pub(super) async fn read_above_mark(
        &self,
        account: &str,
        table: &str,
        rows: &[LegacyRow],
        epoch: i64,
        detected_at: i64,
    ) -> Result<AboveMark> {
        let keys: Vec<&str> = rows.iter().map(|r| r.entity_id.as_str()).collect();
        let known = self.store.manifest_versions(account, table, &keys).await?;
        let mut events = Vec::new();
        let mut upserts = Vec::new();
        for row in rows {
            let kind = match known.get(&row.entity_id) {
                None => Kind::Created,
                Some(v) if *v == row.version => continue,
                Some(v) if *v > row.version => {
                    return Ok(AboveMark::WentBackwards(row.entity_id.clone()))
                }
                Some(_) => Kind::Updated,
            };
            events.push(self.row_event(account, kind, table, row, epoch, detected_at));
            upserts.push((row.entity_id.clone(), row.version));
        }
        Ok(AboveMark::Changes(events, upserts))
    }

    /// The version scan of one table: rows above the high-water mark (and, on PostgreSQL,
    /// above the low-water mark of transactions still open at an earlier read) up to `upto`.
    /// `known_high_water` is the table's mark when the round read it already.
    pub(super) async fn scan(
        &self,
        account: &str,
        state: &AccountState,
        table: &Table,
        upto: i64,
        bounds: Option<(i64, i64)>,
        known_high_water: Option<i64>,
    ) -> Result<Step> {
        let high_water = match known_high_water {
            Some(high_water) => high_water,
            None => self.store.high_water(account, &table.name).await?,
        };
        let mut after = high_water;
        if bounds.is_some() {
            for (_, low_water) in self.store.inflight(account, &table.name).await? {
                after = after.min(low_water);
            }
        }
        let mut published = 0;
        let mut new_high_water = high_water;
        loop {
            // Every batch so far is checkpointed: a stop leaves the rest for next time. The
            // in-flight markers stay as they are, since their window was not read again.
            if self.is_stopping() {
                return Ok(Step::Published(published));
            }
            let rows = self
                .legacy
                .changes(account, &table.name, (after, upto), self.options.batch_size)
                .await?;
            let Some(last) = rows.last().map(|r| r.version) else {
                break;
            };
            let detected_at = now_millis();
            let (events, upserts) = match self
                .read_above_mark(account, &table.name, &rows, state.epoch, detected_at)
                .await?
            {
                AboveMark::Changes(events, upserts) => (events, upserts),
                AboveMark::WentBackwards(key) => {
                    return Ok(Step::Restored(RestoreSignal::VersionWentBackwards {
                        table: table.name.clone(),
                        key,
                    }))
                }
            };
            new_high_water = new_high_water.max(last);
            let advance = Advance {
                upserts: &upserts,
                high_water: Some(new_high_water),
                ..Advance::default()
            };
            self.publish(account, &events, Checkpoint::Table(&table.name, advance))
                .await?;
            published += events.len() as u64;
            if !events.is_empty() {
                info!(account, table = %table.name, events = events.len(), "published changes");
            }
            after = last;
            if rows.len() < self.options.batch_size {
                break;
            }
        }
        if let Some((xmin, xmax)) = bounds {
            // Transactions running at this read may still commit versions up to `upto`.
            let open = (xmin < xmax).then_some((xmax, high_water));
            self.store
                .update_inflight(account, &table.name, xmin, open)
                .await?;
        }
        Ok(Step::Published(published))
    }
}
