//! Resuming parked accounts: the held events of an account an operator resumed are applied
//! again, oldest first, under the account's lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_event::ChangeEvent;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::lease::Held;
use super::Inner;
use crate::store::{Grant, LeaseId};
use crate::{Disposition, Result};

impl Inner {
    /// Every second until `stop`, applies the held events of the accounts resumed meanwhile.
    /// A task of its own, tracked with the workers: a slow cloud API delays only the resumed
    /// accounts, never the reading of the topic, and `stop` ends it mid-call.
    pub(super) async fn resume_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A stop drops a resume half-way, as a crash would: what it had not recorded is
            // held still, and the next run resumes it again.
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = self.resume_parked(&stop) => result,
            };
            if let Err(e) = result {
                self.fail(e);
                return;
            }
        }
    }

    /// Applies the held events of accounts an operator resumed, oldest first; an account whose
    /// event fails again is parked again, one whose held events all applied is unparked. Each
    /// account is worked on under its lease, so no worker of any member applies or holds its
    /// events meanwhile; an account whose lease is held elsewhere waits for the next round.
    async fn resume_parked(&self, stop: &CancellationToken) -> Result<()> {
        let store = self.engine.store();
        let ttl = self.options.lease_ttl;
        let lease = LeaseId {
            group: self.options.group.clone(),
            owner: format!("{}/resume", self.member),
        };
        for account in store.resume_requested().await? {
            if stop.is_cancelled() {
                return Ok(());
            }
            let mut stuck = false;
            for (seq, bytes) in store.held(&account).await? {
                let asked = Instant::now();
                if store.try_lease(&lease, &account, ttl).await? == Grant::Elsewhere {
                    stuck = true;
                    break;
                }
                let (legacy, event) = match self.decoder.decode(&bytes).await {
                    // Held under its target: it applies there, as it would have.
                    Ok(event) => (
                        event.account_id.clone(),
                        ChangeEvent {
                            account_id: account.clone(),
                            ..event
                        },
                    ),
                    Err(e) => {
                        warn!(account, seq, error = %e, "held message no longer decodes; dropped");
                        store.release(&account, seq).await?;
                        continue;
                    }
                };
                let fence = Held::asked_at(asked, ttl).fence(stop);
                let read_ms = tandem_event::now_millis();
                let started = std::time::Instant::now();
                match self.engine.apply_until(&event, None, &fence, &lease).await {
                    Ok(outcome) => {
                        self.record(&event, outcome, read_ms, started.elapsed());
                        store.release(&account, seq).await?;
                        if let (tandem_event::Kind::SnapshotEnd, Some(id)) =
                            (event.kind, &event.snapshot_id)
                        {
                            self.snapshot_applied(&legacy, id).await;
                        }
                    }
                    Err(e) => match e.disposition() {
                        // Tried again next round (or by the next member, after a stop).
                        Disposition::Retry | Disposition::Fenced => {
                            stuck = true;
                            break;
                        }
                        Disposition::Fatal => return Err(e),
                        Disposition::Park => {
                            error!(account, event_id = %event.event_id, error = %e, "resumed account fails again; parked");
                            store.repark(&account, &e.to_string()).await?;
                            stuck = true;
                            break;
                        }
                    },
                }
            }
            if !stuck && store.unpark(&account).await? {
                info!(account, "account resumed");
            }
            store.release_lease(&lease, &account).await?;
        }
        Ok(())
    }
}
