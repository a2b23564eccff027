//! Plain accounts, whose cycle is only a version scan, cycled together. Each one's rows above
//! its marks are read, then all go out at once: one store transaction before they are sent,
//! one wait for the broker, and one transaction for every checkpoint. Under a steady trickle
//! of changes over many accounts this is most of the work, and the waits no longer add up
//! account by account.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use tracing::{info, warn};

use super::scan::AboveMark;
use super::Known;
use crate::publish::TableBatch;
use crate::{now_millis, Producer, Result};

/// What reading one plain account came to.
enum Read {
    /// Its batches, one per table with rows above the mark.
    Batches(Vec<TableBatch>),
    /// It needs its own cycle: more rows than one batch, or a version gone backwards.
    OwnCycle,
    /// Another instance holds its lease.
    NotOurs,
}

impl Producer {
    /// Cycles plain accounts together (see [`super::Round::plain`]); those of `due` are then
    /// checked for deletes together. Returns the events published, and the accounts that
    /// turned out to need their own cycle.
    pub(crate) async fn cycle_together(
        &self,
        accounts: Vec<(String, Known)>,
        due: &HashSet<String>,
    ) -> Result<(u64, Vec<String>)> {
        if self.is_stopping() {
            return Ok((0, Vec::new()));
        }
        // The marks of the accounts due a check, raised below by what goes out.
        let mut marks: HashMap<String, HashMap<String, i64>> = accounts
            .iter()
            .filter(|(account, _)| due.contains(account))
            .map(|(account, known)| (account.clone(), known.high_water.clone()))
            .collect();
        let reads: Vec<(String, Result<Read>)> = futures::stream::iter(accounts)
            .map(|(account, known)| async move {
                let read = self.read_plain(&account, &known).await;
                (account, read)
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        let mut own = Vec::new();
        let mut batches = Vec::new();
        for (account, read) in reads {
            match read? {
                Read::Batches(read) => batches.extend(read),
                Read::OwnCycle => own.push(account),
                // Another instance's account: its checks are that instance's too.
                Read::NotOurs => {
                    marks.remove(&account);
                }
            }
        }
        for account in &own {
            marks.remove(account);
        }
        let lease = (self.owner.as_str(), self.options.lease_ttl);
        let lost: HashSet<String> = if batches.is_empty() {
            HashSet::new()
        } else {
            self.outbox
                .send_together(&batches, lease)
                .await?
                .into_iter()
                .collect()
        };
        for account in &lost {
            warn!(
                account,
                "lost the account's lease; its checkpoint did not move"
            );
            self.held_leases().remove(account);
        }
        let sent = batches.iter().filter(|b| !lost.contains(&b.account));
        let accounts: HashSet<&str> = sent.clone().map(|b| b.account.as_str()).collect();
        let published: u64 = sent.map(|b| b.events.len() as u64).sum();
        if !accounts.is_empty() {
            self.stats
                .together
                .fetch_add(accounts.len() as u64, std::sync::atomic::Ordering::Relaxed);
            info!(
                accounts = accounts.len(),
                events = published,
                "published the changes of accounts together"
            );
        }
        // The due checks, together: an account that is not found unchanged (a row went, or
        // more was written meanwhile) gets its own cycle, whose check finds what is gone.
        for batch in &batches {
            if let Some(marks) = marks.get_mut(&batch.account) {
                marks.insert(batch.table.clone(), batch.high_water);
            }
        }
        let due: Vec<(String, HashMap<String, i64>)> = marks
            .into_iter()
            .filter(|(account, _)| !lost.contains(account))
            .collect();
        let checked: HashSet<String> = self.nothing_deleted(&due).await?.into_iter().collect();
        own.extend(
            due.into_iter()
                .map(|(account, _)| account)
                .filter(|account| !checked.contains(account)),
        );
        Ok((published, own))
    }

    /// One plain account's rows above its marks, as the version scan would publish them.
    async fn read_plain(&self, account: &str, known: &Known) -> Result<Read> {
        if !self.hold_lease(account).await? {
            return Ok(Read::NotOurs);
        }
        let upto = known.upto();
        let detected_at = now_millis();
        let mut batches = Vec::new();
        for (i, table) in self.legacy.tables().iter().enumerate() {
            let high_water = known.high_water(&table.name);
            if known.maxima.get(i).copied().unwrap_or(0) <= high_water {
                continue;
            }
            let rows = self
                .legacy
                .changes(
                    account,
                    &table.name,
                    (high_water, upto),
                    self.options.batch_size,
                )
                .await?;
            if rows.len() >= self.options.batch_size {
                return Ok(Read::OwnCycle);
            }
            let Some(last) = rows.last().map(|r| r.version) else {
                continue;
            };
            let (events, upserts) = match self
                .read_above_mark(account, &table.name, &rows, known.epoch, detected_at)
                .await?
            {
                AboveMark::Changes(events, upserts) => (events, upserts),
                // A restore: the account's own cycle finds it and reconciles.
                AboveMark::WentBackwards(_) => return Ok(Read::OwnCycle),
            };
            batches.push(TableBatch {
                account: account.to_owned(),
                table: table.name.clone(),
                events,
                upserts,
                high_water: high_water.max(last),
            });
        }
        Ok(Read::Batches(batches))
    }
}
