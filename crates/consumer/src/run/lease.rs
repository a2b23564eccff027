//! Account leases as a worker holds them: taken before an account's first event, renewed a
//! third of the way in, and the fences that keep a worker's cloud calls and bookkeeping inside
//! the lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Inner;
use crate::client::Fence;
use crate::store::{Grant, LeaseId};
use crate::Result;

/// How often a worker asks again for an account's lease another member holds.
pub(super) const LEASE_POLL: Duration = Duration::from_millis(100);

/// A worker run's hold on its account (see `consumer_account_leases`).
pub(super) struct AccountLease {
    pub(super) id: LeaseId,
    pub(super) held: Option<Held>,
    /// Per partition, the account's next offset as the store said once the lease was taken:
    /// events queued before then may have been applied meanwhile by the lease's last holder.
    pub(super) next: HashMap<(String, i32), i64>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) renew_at: Instant,
    /// No cloud call is sent from here on without a renewal.
    pub(super) until: Instant,
    /// A call still unanswered now is given up; the lease lasts a little longer still.
    pub(super) answers_by: Instant,
}

impl Held {
    /// The lease asked for at `asked`, lasting `ttl`. It is renewed a third of the way in;
    /// calls stop at three quarters and are given up at seven eighths, well before the lease
    /// can have expired whatever the clocks of other members say.
    pub(super) fn asked_at(asked: Instant, ttl: Duration) -> Held {
        Held {
            renew_at: asked + ttl / 3,
            until: asked + ttl * 3 / 4,
            answers_by: asked + ttl * 7 / 8,
        }
    }

    pub(super) fn fence(&self, cancelled: &CancellationToken) -> Fence {
        Fence {
            cancelled: cancelled.clone(),
            until: Some(self.until),
            answers_by: Some(self.answers_by),
        }
    }
}

impl Inner {
    /// The lease, renewed when due. None if the work was abandoned while waiting for it.
    pub(super) async fn fresh_lease(
        &self,
        account: &str,
        lease: &mut AccountLease,
        abandoned: &CancellationToken,
    ) -> Result<Option<Held>> {
        if let Some(held) = lease.held.filter(|held| Instant::now() < held.renew_at) {
            return Ok(Some(held));
        }
        if !self.lease(account, lease, abandoned).await? {
            return Ok(None);
        }
        Ok(lease.held)
    }

    /// Whether the account's event at `offset` was applied already, per the store as it was
    /// when this worker took the lease (the lease's last holder may have applied it after this
    /// member queued it).
    pub(super) async fn applied_before(
        &self,
        key: &(String, i32),
        account: &str,
        offset: i64,
        lease: &mut AccountLease,
    ) -> Result<bool> {
        let next = match lease.next.get(key) {
            Some(&next) => next,
            None => {
                let next = self
                    .engine
                    .store()
                    .account_position(&self.options.group, &key.0, key.1, account)
                    .await?
                    .unwrap_or(0);
                lease.next.insert(key.clone(), next);
                next
            }
        };
        Ok(offset < next)
    }

    /// Takes or renews the account's lease; while another member holds it (a rebalance just
    /// moved the account, or a member died and its lease has not expired), waits. False if
    /// the work was abandoned meanwhile.
    pub(super) async fn lease(
        &self,
        account: &str,
        lease: &mut AccountLease,
        abandoned: &CancellationToken,
    ) -> Result<bool> {
        let ttl = self.options.lease_ttl;
        let store = self.engine.store();
        let mut waited = false;
        loop {
            let asked = Instant::now();
            let grant = store.try_lease(&lease.id, account, ttl).await?;
            if grant != Grant::Elsewhere {
                if grant == Grant::Taken {
                    // Others may have applied the account's events since: read where it is.
                    tracing::debug!(account, owner = %lease.id.owner, "took the account's lease");
                    crate::metrics::lease_taken();
                    lease.next.clear();
                }
                if waited {
                    info!(account, "took over the account's lease");
                }
                lease.held = Some(Held::asked_at(asked, ttl));
                return Ok(true);
            }
            if !waited {
                waited = true;
                info!(account, "waiting for another member to give the account up");
            }
            lease.held = None;
            lease.next.clear();
            tokio::select! {
                _ = tokio::time::sleep(LEASE_POLL) => {}
                _ = abandoned.cancelled() => return Ok(false),
            }
        }
    }
}
