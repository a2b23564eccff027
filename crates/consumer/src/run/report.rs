//! What the consumer reports while it runs, every [`REPORT_EVERY`]: whether it is ready, each
//! partition's lag, the accounts furthest behind, and the parked accounts — to the metrics
//! recorder and to [`Stats`](crate::Stats) for the status page.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use tandem_event::now_millis;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::tracker::lock;
use super::Inner;
use crate::stats::{AccountLag, PartitionLag};
use crate::Result;

/// How often the consumer looks at its lag and readiness.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How many of the accounts furthest behind the status page lists.
pub const WORST_LISTED: usize = 20;

impl Inner {
    pub(super) async fn report(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(REPORT_EVERY);
        // The (rank, account) series set last time: one not set again is set to 0 once, and
        // the exporter forgets it when it is not set for a minute.
        let mut listed: Vec<(usize, String, u64, f64)> = Vec::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let store_ok = self.report_parked().await.is_ok();
            let broker_ok = match self.report_partitions().await {
                Ok(()) => true,
                Err(e) => {
                    debug!(error = %e, "cannot read the partitions' high watermarks");
                    false
                }
            };
            let worst = self.worst_accounts();
            let series: Vec<_> = worst
                .iter()
                .take(crate::metrics::WORST_ACCOUNTS)
                .enumerate()
                .map(|(i, a)| (i + 1, a.account.clone(), a.events, a.seconds))
                .collect();
            let gone: Vec<_> = listed
                .iter()
                .filter(|(rank, account, ..)| {
                    !series.iter().any(|(r, a, ..)| r == rank && a == account)
                })
                .map(|(rank, account, ..)| (*rank, account.clone(), 0, 0.0))
                .collect();
            crate::metrics::worst_accounts(&gone);
            crate::metrics::worst_accounts(&series);
            listed = series;
            let working = !lock(&self.tracker).queues.is_empty();
            let partitions = self.stats.assigned_partitions.load(Ordering::Relaxed);
            // Set again every report: the exporter forgets a gauge not set for a minute.
            crate::metrics::assigned(partitions);
            let assigned = partitions > 0;
            let ready = store_ok && broker_ok && (assigned || working);
            self.stats.ready.store(ready, Ordering::Relaxed);
            crate::metrics::ready(ready);
            if let Ok(mut w) = self.stats.worst.lock() {
                *w = worst;
            }
        }
    }

    /// Parked accounts and their held events, from the store; also tells whether it answers.
    async fn report_parked(&self) -> Result<()> {
        let parked = self.engine.store().parked_accounts().await?;
        let held: i64 = parked.iter().map(|(_, _, held, _)| held).sum();
        crate::metrics::parked(parked.len(), u64::try_from(held).unwrap_or(0));
        if let Ok(mut p) = self.stats.parked.lock() {
            *p = parked
                .into_iter()
                .map(|(account, _, held, _)| (account, u64::try_from(held).unwrap_or(0)))
                .collect();
        }
        Ok(())
    }

    /// Each partition's store position against its high watermark.
    async fn report_partitions(&self) -> Result<()> {
        let positions = self
            .engine
            .store()
            .positions(&self.options.group, &self.options.topic)
            .await?;
        let ends = self.partition_ends("lag report", None).await?;
        let lags: Vec<PartitionLag> = ends
            .into_iter()
            .map(|(partition, low, high)| {
                let position = positions.get(&partition).copied().unwrap_or(0).max(low);
                PartitionLag {
                    partition,
                    position,
                    high_watermark: high,
                    lag: (high - position).max(0),
                }
            })
            .collect();
        for p in &lags {
            crate::metrics::partition_lag(p.partition, p.lag);
        }
        if let Ok(mut l) = self.stats.partitions.lock() {
            *l = lags;
        }
        Ok(())
    }

    /// Each partition's (number, low watermark, high watermark), for the `partitions` of the
    /// topic or, when not given, as many as its metadata says. The client's lookups block:
    /// they run off the async threads.
    pub(super) async fn partition_ends(
        &self,
        what: &'static str,
        partitions: Option<usize>,
    ) -> Result<Vec<(i32, i64, i64)>> {
        let consumer = self.lookups.clone();
        let topic = self.options.topic.clone();
        tokio::task::spawn_blocking(move || {
            let partitions = match partitions {
                Some(n) => n,
                None => consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))?
                    .topics()
                    .first()
                    .map_or(0, |t| t.partitions().len()),
            };
            (0..i32::try_from(partitions).unwrap_or(i32::MAX))
                .map(|p| {
                    consumer
                        .fetch_watermarks(&topic, p, Duration::from_secs(5))
                        .map(|(low, high)| (p, low, high))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| crate::Error::Task {
            what,
            message: e.to_string(),
        })?
        .map_err(|source| crate::Error::Broker {
            brokers: self.options.brokers.clone(),
            source,
        })
    }

    /// The accounts furthest behind, worst first: the events read and waiting in their queue
    /// and those held while they are parked, and the age of the oldest one read.
    fn worst_accounts(&self) -> Vec<AccountLag> {
        let now = now_millis();
        let mut lags: HashMap<String, AccountLag> = HashMap::new();
        {
            let tracker = lock(&self.tracker);
            for (account, queue) in &tracker.queues {
                if queue.is_empty() {
                    continue;
                }
                let oldest = queue
                    .iter()
                    .map(|w| w.event.occurred_at)
                    .min()
                    .unwrap_or(now);
                lags.insert(
                    account.clone(),
                    AccountLag {
                        account: account.clone(),
                        events: queue.len() as u64,
                        seconds: (now - oldest).max(0) as f64 / 1000.0,
                    },
                );
            }
        }
        if let Ok(parked) = self.stats.parked.lock() {
            for (account, held) in parked.iter() {
                let lag = lags.entry(account.clone()).or_insert_with(|| AccountLag {
                    account: account.clone(),
                    events: 0,
                    seconds: 0.0,
                });
                lag.events += held;
            }
        }
        let mut worst: Vec<AccountLag> = lags.into_values().collect();
        worst.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then(b.seconds.total_cmp(&a.seconds))
                .then(a.account.cmp(&b.account))
        });
        worst.truncate(WORST_LISTED);
        worst
    }
}
