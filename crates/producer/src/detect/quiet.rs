//! Quiet accounts: those whose cycle would find nothing, told apart for every account at once
//! with a few statements, so that an idle cycle costs little however many accounts there are.
//!
//! An account is quiet when every one of these holds:
//! - its enrolment snapshot is published, and no snapshot is asked for;
//! - no key is unsettled and no PostgreSQL transaction was in flight at an earlier read;
//! - its differencing check is not due;
//! - in every table, the highest legacy version equals the high-water mark: nothing new was
//!   written, and no newest row went missing (which would make the cycle suspect a restore);
//! - the database's identity marker is the one last seen, and its version counter is not below
//!   the high-water mark (when those queries are configured);
//! - on PostgreSQL, no transaction is running that could still commit a version below the
//!   high-water mark.
//!
//! Anything else, or any doubt, and the account gets its full cycle.

use std::collections::{HashMap, HashSet};

use crate::{now_millis, Producer, Result};

/// What a round found out about the accounts it looked at.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Accounts whose cycle would find nothing.
    pub quiet: HashSet<String>,
    /// For accounts that are not quiet and whose lease this instance held all along: what the
    /// round read, so their cycle need not read it again.
    pub known: HashMap<String, Known>,
}

/// An account's highest legacy versions and high-water marks, read at the start of a round.
/// Only this instance writes the marks while it holds the lease, so they stay true for the
/// round; the versions may have moved on since, and the cycle reads up to them as its bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// Per table, in [`crate::legacy::Legacy::tables`]' order.
    pub maxima: Vec<i64>,
    /// Table → high-water mark (0 when absent).
    pub high_water: HashMap<String, i64>,
}

impl Known {
    pub fn high_water(&self, table: &str) -> i64 {
        self.high_water.get(table).copied().unwrap_or(0)
    }

    /// The highest version in any table: the cycle's bound.
    pub fn upto(&self) -> i64 {
        self.maxima.iter().copied().max().unwrap_or(0)
    }
}

/// What one legacy database says once per cycle, for all the accounts it holds.
struct DatabaseFacts {
    open_transactions: bool,
    identity: Option<String>,
    version_counter: Option<i64>,
}

impl Producer {
    /// Those of `accounts` whose cycle would find nothing (see the module's documentation),
    /// and what was read of the others.
    pub(crate) async fn round(&self, accounts: &[String]) -> Result<Round> {
        // Leases held now, with time left: until they run out nobody else writes the marks.
        let held: HashSet<String> = {
            let now = std::time::Instant::now();
            self.held_leases()
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(account, _)| account.clone())
                .collect()
        };
        let views = self.store.account_views().await?;
        let candidates: Vec<String> = accounts
            .iter()
            .filter(|a| views.get(*a).is_some_and(|v| v.enrolled && !v.pending))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Ok(Round::default());
        }
        let maxima = self.legacy.max_versions(&candidates).await?;
        let mut round = Round::default();
        let due_after = self.options.delete_check_interval.as_millis() as i64;
        let now = now_millis();
        let mut facts: HashMap<String, DatabaseFacts> = HashMap::new();
        for account in candidates {
            let (Some(view), Some(maxima)) = (views.get(&account), maxima.get(&account)) else {
                continue;
            };
            if held.contains(&account) {
                let known = Known {
                    maxima: maxima.clone(),
                    high_water: view.high_water.clone(),
                };
                round.known.insert(account.clone(), known);
            }
            if now - view.deletes_checked_at >= due_after {
                continue;
            }
            let tables = self.legacy.tables();
            let unchanged = tables.len() == maxima.len()
                && tables.iter().zip(maxima).all(|(table, max)| {
                    view.high_water.get(&table.name).copied().unwrap_or(0) == *max
                });
            if !unchanged {
                continue;
            }
            let database = self.legacy.database_key(&account).to_owned();
            let facts = match facts.entry(database) {
                std::collections::hash_map::Entry::Occupied(found) => found.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let bounds = self.legacy.snapshot_bounds(&account).await?;
                    slot.insert(DatabaseFacts {
                        open_transactions: bounds.is_some_and(|(xmin, xmax)| xmin < xmax),
                        identity: self.legacy.identity(&account).await?,
                        version_counter: self.legacy.version_counter(&account).await?,
                    })
                }
            };
            let high_water = maxima.iter().copied().max().unwrap_or(0);
            let same_identity = match (&facts.identity, &view.identity) {
                (None, _) => true,
                (Some(now), Some(seen)) => now == seen,
                (Some(_), None) => false,
            };
            let counter_ok = facts.version_counter.is_none_or(|c| c >= high_water);
            if !facts.open_transactions && same_identity && counter_ok {
                round.known.remove(&account);
                round.quiet.insert(account);
            }
        }
        Ok(round)
    }
}
