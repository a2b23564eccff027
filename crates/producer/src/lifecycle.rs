//! The producer's part in the migration, when it runs with a migration store: which accounts
//! it follows, in which order, and the full cycle a cutover waits for.
//!
//! - The first cycle takes the census: every account found is recorded, pending (enrolment by
//!   slice) or syncing (every account enrolled); one the producer had enrolled before is live.
//! - An account found later is a new account: enrolled with `enroll = "all"`, else recorded as
//!   the new-account policy says.
//! - Only syncing, live, paused and rolled-back accounts are followed. Accounts put ahead by
//!   migrate-now go first, also when they are enrolled while a cycle is under way.
//! - A cutover asks for a snapshot of the account taken after its freeze: the producer asks
//!   itself for it, as `tandem snapshot` would, and its cycle publishes it.

use std::collections::{HashMap, HashSet, VecDeque};

use tandem_migration::{Enroll, State};
use tracing::info;

use crate::{Producer, Result};

const ACTOR: &str = "producer";

/// What one cycle does, decided at its start.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The accounts to cycle, migrate-now first.
    pub accounts: VecDeque<String>,
    /// Whether enrolment snapshots are under way, so that a migrate-now may arrive that
    /// should go before them.
    pub backfilling: bool,
}

impl Producer {
    /// The accounts this cycle follows, out of those found in legacy.
    pub(crate) async fn plan(&self, found: Vec<String>) -> Result<Plan> {
        let Some(migration) = &self.migration else {
            return Ok(Plan {
                accounts: found.into(),
                ..Plan::default()
            });
        };
        let enroll = self.policy.enroll;
        let settings = migration.settings().await?;
        if settings.started_at.is_none() {
            let mut census = Vec::with_capacity(found.len());
            for account in &found {
                let state = if self.store.account(account).await?.enrolled {
                    State::Live
                } else if enroll == Enroll::All {
                    State::Syncing
                } else {
                    State::Pending
                };
                census.push((account.clone(), state));
            }
            let recorded = migration.census(&census, ACTOR).await?;
            if !recorded.is_empty() {
                info!(
                    accounts = recorded.len(),
                    enroll = enroll.as_str(),
                    "the migration's census: every account found is recorded"
                );
            }
        }
        let mut states: HashMap<String, State> = migration.states().await?;
        for account in &found {
            if states.contains_key(account) {
                continue;
            }
            let recorded = match enroll {
                Enroll::All => migration
                    .enroll(account, ACTOR, "found; every account is enrolled")
                    .await
                    .map(|_| Some(State::Syncing))?,
                Enroll::Slices => migration.discover(account, &settings, ACTOR).await?,
            };
            let state = match recorded {
                Some(state) => {
                    info!(account, %state, "a new account");
                    state
                }
                // Recorded meanwhile by someone else.
                None => match migration.account(account).await? {
                    Some(known) => known.state,
                    None => continue,
                },
            };
            states.insert(account.clone(), state);
        }
        for (account, snapshot_id) in migration.drain_requests().await? {
            self.store.request_snapshot(&account, &snapshot_id).await?;
            migration.drain_filed(&account, &snapshot_id).await?;
            info!(account, snapshot_id, "a cutover asks for a snapshot");
        }
        let urgent = migration.urgent().await?;
        let mut accounts: Vec<String> = found
            .into_iter()
            .filter(|a| states.get(a).is_some_and(|s| s.is_followed()))
            .collect();
        accounts.sort_by_key(|a| urgent.iter().position(|u| u == a).unwrap_or(usize::MAX));
        Ok(Plan {
            backfilling: states.values().any(|s| *s == State::Syncing),
            accounts: accounts.into(),
        })
    }

    /// The next account of the cycle: one enrolled by migrate-now since the cycle started (or
    /// still waiting in it) goes first.
    pub(crate) async fn next_account(
        &self,
        plan: &mut Plan,
        found: &HashSet<String>,
        started: &mut HashSet<String>,
    ) -> Result<Option<String>> {
        if let (Some(migration), true) = (&self.migration, plan.backfilling) {
            for account in migration.urgent().await?.into_iter().rev() {
                if found.contains(&account) && !started.contains(&account) {
                    plan.accounts.retain(|a| *a != account);
                    plan.accounts.push_front(account);
                }
            }
        }
        let next = plan.accounts.pop_front();
        if let Some(account) = &next {
            started.insert(account.clone());
        }
        Ok(next)
    }
}
