//! The version scan: rows above the high-water mark, in version order, in batches.

use tandem_event::Kind;
use tracing::info;

use super::{Checkpoint, RestoreSignal, Step};
use crate::config::Table;
use crate::store::{AccountState, Advance};
use crate::{now_millis, Producer, Result};

impl Producer {
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
            let keys: Vec<&str> = rows.iter().map(|r| r.entity_id.as_str()).collect();
            let known = self
                .store
                .manifest_versions(account, &table.name, &keys)
                .await?;
            let detected_at = now_millis();
            let mut events = Vec::new();
            let mut upserts = Vec::new();
            for row in &rows {
                let kind = match known.get(&row.entity_id) {
                    None => Kind::Created,
                    Some(v) if *v == row.version => continue,
                    Some(v) if *v > row.version => {
                        return Ok(Step::Restored(RestoreSignal::VersionWentBackwards {
                            table: table.name.clone(),
                            key: row.entity_id.clone(),
                        }))
                    }
                    Some(_) => Kind::Updated,
                };
                events.push(self.row_event(
                    account,
                    kind,
                    &table.name,
                    row,
                    state.epoch,
                    detected_at,
                ));
                upserts.push((row.entity_id.clone(), row.version));
            }
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
