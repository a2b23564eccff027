//! Quiet accounts: those whose cycle would find nothing, told apart for every account at once
//! with a few statements, so that an idle cycle costs little however many accounts there are.
//!
//! An account is quiet when every one of these holds:
//! - its enrolment snapshot is published, and no snapshot is asked for;
//! - no key is unsettled and no PostgreSQL transaction was in flight at an earlier read;
//! - its differencing check is not due, or, checked for all such accounts at once, no row
//!   went missing (see [`Producer::nothing_deleted`]);
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
    /// Accounts of `known` whose cycle is only a version scan: rows were written above the
    /// marks, and nothing else is to be done (see [`Producer::cycle_together`]).
    pub plain: HashSet<String>,
    /// Plain accounts whose differencing check is due: checked together once their rows went
    /// out (see [`Producer::nothing_deleted`]).
    pub plain_due: HashSet<String>,
    /// When the first differencing check of the quiet accounts falls due (epoch millis).
    pub check_due: i64,
}

/// An account's highest legacy versions and high-water marks, read at the start of a round.
/// Only this instance writes the marks while it holds the lease, so they stay true for the
/// round; the versions may have moved on since, and the cycle reads up to them as its bound.
#[derive(Debug, Clone, Default)]
pub(crate) struct Known {
    /// The account's epoch.
    pub epoch: i64,
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

/// The accounts a full round found quiet, with the legacy databases' and the store's change
/// tokens read before it: while neither token moves, nothing was committed anywhere, so those
/// accounts are still quiet and the next round reads nothing.
#[derive(Debug)]
pub(crate) struct QuietSince {
    tokens: (Vec<i64>, Vec<i64>),
    quiet: HashSet<String>,
    /// When the first of their differencing checks falls due (epoch millis).
    check_due: i64,
    at: std::time::Instant,
}

/// A full round at least this often, whatever the change tokens say: a token that failed to
/// move (two commits within the file system's clock tick, leaving the log at its old size)
/// costs at most this much delay.
const FULL_ROUND_AT_LEAST_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// What one legacy database says once per cycle, for all the accounts it holds.
struct DatabaseFacts {
    open_transactions: bool,
    identity: Option<String>,
    version_counter: Option<i64>,
}

impl Producer {
    /// How long after its last differencing check an account's next one falls due, in
    /// milliseconds: between a quarter of `--delete-check-interval` and half of it, fixed per
    /// account, so that the checks of accounts enrolled together spread out instead of all
    /// falling due in one round. The other half is the slack idle rounds may wait before they
    /// check the accounts due (see [`Producer::round`]), so no check waits longer than the
    /// interval.
    pub(crate) fn check_interval_ms(&self, account: &str) -> i64 {
        use std::hash::{Hash, Hasher};
        let full = self.options.delete_check_interval.as_millis() as i64;
        let mut hasher = std::hash::DefaultHasher::new();
        account.hash(&mut hasher);
        let share = (hasher.finish() % 1024) as i64;
        full / 4 + full / 4 * share / 1024
    }

    /// How late an idle round may leave a due check: the quiet accounts' checks then run
    /// together in the full rounds an idle producer runs anyway (at least every 15 s), rather
    /// than in a round of their own as each falls due.
    fn check_slack_ms(&self) -> i64 {
        self.options.delete_check_interval.as_millis() as i64 / 2
    }

    /// Those of `accounts` whose cycle would find nothing (see the module's documentation),
    /// and what was read of the others.
    ///
    /// With `reuse`, a round right after one that found every account quiet reads nothing
    /// when no commit reached the legacy databases or the store since (see [`QuietSince`]).
    pub(crate) async fn round(&self, accounts: &[String], reuse: bool) -> Result<Round> {
        let tokens = match (
            self.legacy.change_token().await?,
            self.store.change_token().await?,
        ) {
            (Some(legacy), Some(store)) => Some((legacy, store)),
            _ => None,
        };
        if let Some(tokens) = &tokens {
            let last = self
                .last_round
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(last) = last.as_ref().filter(|last| {
                reuse
                    && last.tokens == *tokens
                    && now_millis() < last.check_due.saturating_add(self.check_slack_ms())
                    && last.at.elapsed() < FULL_ROUND_AT_LEAST_EVERY
                    && accounts.iter().all(|a| last.quiet.contains(a))
            }) {
                self.stats
                    .idle_rounds
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(Round {
                    quiet: accounts
                        .iter()
                        .filter(|a| last.quiet.contains(*a))
                        .cloned()
                        .collect(),
                    known: HashMap::new(),
                    plain: HashSet::new(),
                    plain_due: HashSet::new(),
                    check_due: last.check_due,
                });
            }
        }
        let round = self.full_round(accounts).await?;
        let check_due = round.check_due;
        *self
            .last_round
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = tokens.map(|tokens| QuietSince {
            tokens,
            quiet: round.quiet.clone(),
            check_due,
            at: std::time::Instant::now(),
        });
        Ok(round)
    }

    async fn full_round(&self, accounts: &[String]) -> Result<Round> {
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
        let now = now_millis();
        let mut facts: HashMap<String, DatabaseFacts> = HashMap::new();
        // Otherwise quiet, but due a differencing check.
        let mut due = Vec::new();
        for account in candidates {
            let (Some(view), Some(maxima)) = (views.get(&account), maxima.get(&account)) else {
                continue;
            };
            if held.contains(&account) {
                let known = Known {
                    epoch: view.epoch,
                    maxima: maxima.clone(),
                    high_water: view.high_water.clone(),
                };
                round.known.insert(account.clone(), known);
            }
            let due_after = self.check_interval_ms(&account);
            let check_due = now - view.deletes_checked_at >= due_after;
            let tables = self.legacy.tables();
            let unchanged = tables.len() == maxima.len()
                && tables.iter().zip(maxima).all(|(table, max)| {
                    view.high_water.get(&table.name).copied().unwrap_or(0) == *max
                });
            // A changed account may still be plain: only rows above its marks to read. A due
            // check is done together afterwards, unless it is overdue (twice the interval since
            // the last: its account changed at every try): then the account's own cycle does it.
            let overdue = now - view.deletes_checked_at
                >= 2 * self.options.delete_check_interval.as_millis() as i64;
            let plain = !unchanged
                && held.contains(&account)
                && view.enrolled
                && !view.pending
                && !overdue
                && tables.len() == maxima.len()
                && tables.iter().zip(maxima).all(|(table, max)| {
                    view.high_water.get(&table.name).copied().unwrap_or(0) <= *max
                });
            if !unchanged && !plain {
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
            let high_water = tables
                .iter()
                .map(|table| view.high_water.get(&table.name).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
            let same_identity = match (&facts.identity, &view.identity) {
                (None, _) => true,
                (Some(now), Some(seen)) => now == seen,
                (Some(_), None) => false,
            };
            let counter_ok = facts.version_counter.is_none_or(|c| c >= high_water);
            if facts.open_transactions || !same_identity || !counter_ok {
                continue;
            }
            if plain {
                if check_due {
                    round.plain_due.insert(account.clone());
                }
                round.plain.insert(account);
            } else if check_due {
                due.push((account, view.high_water.clone()));
            } else {
                round.known.remove(&account);
                round.quiet.insert(account);
            }
        }
        round.check_due = round
            .quiet
            .iter()
            .filter_map(|a| {
                views
                    .get(a)
                    .map(|v| v.deletes_checked_at + self.check_interval_ms(a))
            })
            .min()
            .unwrap_or(i64::MAX);
        for account in self.nothing_deleted(&due).await? {
            round.check_due = round.check_due.min(now + self.check_interval_ms(&account));
            round.known.remove(&account);
            round.quiet.insert(account);
        }
        Ok(round)
    }

    /// The differencing check of many accounts at once, each given with its high-water marks
    /// (table → mark): those in which no row went missing, recorded as checked. When a table's
    /// highest version is at or below its mark, every row it holds was published and is in the
    /// manifest; if its sum of (version + 1) then equals the manifest's, no key the manifest
    /// holds is missing (every term is positive). Both are read in one statement. Any other
    /// account gets its own cycle, whose differencing check finds what is gone.
    pub(super) async fn nothing_deleted(
        &self,
        accounts: &[(String, HashMap<String, i64>)],
    ) -> Result<Vec<String>> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = accounts.iter().map(|(a, _)| a.clone()).collect();
        let sums = self.legacy.version_sums(&names).await?;
        let manifest = self.store.manifest_sums().await?;
        let tables = self.legacy.tables();
        let unchanged: Vec<String> = accounts
            .iter()
            .filter(|(account, marks)| {
                sums.get(account).is_some_and(|sums| {
                    sums.len() == tables.len()
                        && tables.iter().zip(sums).all(|(table, (sum, max))| {
                            let key = (account.clone(), table.name.clone());
                            *max <= marks.get(&table.name).copied().unwrap_or(0)
                                && manifest.get(&key).copied().unwrap_or(0) == *sum
                        })
                })
            })
            .map(|(account, _)| account.clone())
            .collect();
        self.store.deletes_checked(&unchanged, now_millis()).await?;
        Ok(unchanged)
    }
}
