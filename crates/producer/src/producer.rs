//! The producer: connects to the legacy database(s), its store and the broker, and runs
//! cycles over the accounts until it is stopped.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use tandem_event::{now_millis, Codec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{self, Sources};
use crate::legacy::Legacy;
use crate::publish::{Outbox, Publisher};
use crate::store::Store;
use crate::wake::{listen, Wake};
use crate::{Error, Options, Result, Stats};

#[derive(Debug)]
pub struct Producer {
    pub(crate) legacy: Legacy,
    pub(crate) store: Store,
    pub(crate) outbox: Outbox,
    pub(crate) options: Options,
    pub(crate) stats: Arc<Stats>,
    /// This instance's name in account leases.
    pub(crate) owner: String,
    notify_channel: Option<(String, String)>,
    /// The migration store, when accounts are followed by their migration state.
    pub(crate) migration: Option<tandem_migration::Store>,
    pub(crate) policy: tandem_migration::Policy,
    /// Set while `run` is stopping: a long step (a snapshot) stops between two batches instead
    /// of running to its end, and accounts not started yet are left for next time. Cleared
    /// when `run` returns, so cycles called afterwards run in full.
    stopping: AtomicBool,
    /// The last round finished without an error: the legacy databases, the store and (when
    /// it published) the broker answered. False until the first round is over.
    ready: AtomicBool,
    /// When the last round ended (epoch millis; 0 before the first).
    last_round_ms: std::sync::atomic::AtomicI64,
    /// Leases this instance holds, with when each runs out by its own clock: a lease with more
    /// than two thirds of its time left is not renewed, so an idle cycle writes nothing.
    pub(crate) held: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The accounts found last, and when (see [`Options::discover_interval`]).
    discovered: std::sync::Mutex<Option<(std::time::Instant, Vec<String>)>>,
    /// What the last full round found quiet, and the databases' state then (see
    /// [`crate::detect::Round`]).
    pub(crate) last_round: std::sync::Mutex<Option<crate::detect::QuietSince>>,
}

impl Producer {
    /// Connects to the legacy database(s), the store and the broker, checking each.
    pub async fn connect(sources: &Sources, origin: &Path, options: Options) -> Result<Self> {
        let legacy = Legacy::connect(sources, origin).await?;
        let store = Store::open(&options.store_url).await?;
        let codec = Codec::new(options.framing)?;
        let publisher =
            Publisher::connect(&options.brokers, &options.topic, codec, &options.kafka).await?;
        let notify_channel = match (&sources.legacy.notify_channel, sources.layout(origin)?) {
            (Some(channel), config::Layout::Shared { url, .. }) if url.starts_with("postgres") => {
                Some((url, channel.clone()))
            }
            (Some(_), _) => {
                return Err(Error::Config {
                    file: origin.to_path_buf(),
                    key: "legacy.notify_channel".into(),
                    message: "needs one shared PostgreSQL database".into(),
                })
            }
            (None, _) => None,
        };
        let owner = format!(
            "{}-{}-{:x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "producer".into()),
            std::process::id(),
            now_millis()
        );
        let policy = sources.migration.clone();
        let migration = match &options.migration_url {
            Some(url) => {
                let migration = tandem_migration::Store::open(url).await?;
                migration.configure(&policy).await?;
                Some(migration)
            }
            None if policy.enroll == tandem_migration::Enroll::Slices => {
                return Err(Error::Config {
                    file: origin.to_path_buf(),
                    key: "migration.enroll".into(),
                    message: "enrolling by slice needs the migration store (--migration-store)"
                        .into(),
                })
            }
            None => None,
        };
        let outbox = Outbox::new(store.clone(), publisher);
        Ok(Producer {
            migration,
            policy,
            legacy,
            store,
            stats: outbox.stats(),
            outbox,
            options,
            owner,
            notify_channel,
            stopping: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            last_round_ms: std::sync::atomic::AtomicI64::new(0),
            held: Default::default(),
            last_round: Default::default(),
            discovered: Default::default(),
        })
    }

    /// Whether `run` is stopping (see [`Producer::run`]).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn legacy(&self) -> &Legacy {
        &self.legacy
    }

    /// The way this producer's events leave: handed-in detections go the same way.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Whether the last round finished without an error (false before the first).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// When the last round ended (epoch millis), if one did.
    pub fn last_round_ms(&self) -> Option<i64> {
        Some(self.last_round_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// Runs cycles on the interval until `shutdown` is cancelled, earlier when the legacy
    /// database notifies the configured channel (only the account a notification names, when
    /// it names one). A failed cycle is logged and retried at the next interval; nothing it
    /// read is checkpointed. On shutdown the cycle under way finishes the batch it is sending
    /// and stops — a snapshot is left unfinished, to start again next time — within the
    /// grace period; then the listener stops and the leases are given up.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<()> {
        let tasks = TaskTracker::new();
        let wake = Arc::new(Wake::default());
        if let Some((url, channel)) = &self.notify_channel {
            tasks.spawn(listen(
                url.clone(),
                channel.clone(),
                wake.clone(),
                shutdown.child_token(),
            ));
        }
        tasks.close();
        self.stopping.store(false, Ordering::Relaxed);
        let mut only: Option<BTreeSet<String>> = None;
        // Every account gets a cycle at least once an interval, however many notifications
        // name single accounts in between.
        let mut next_full = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_full {
                only = None;
            }
            if only.is_none() {
                next_full = tokio::time::Instant::now() + self.options.interval;
            }
            let cycle = self.cycle_some(only.take(), false);
            tokio::pin!(cycle);
            tokio::select! {
                result = &mut cycle => {
                    if let Err(e) = result {
                        warn!(error = %e, "producer cycle failed; retrying next interval");
                    }
                }
                _ = shutdown.cancelled() => {
                    self.stopping.store(true, Ordering::Relaxed);
                    let grace = self.options.grace;
                    if tokio::time::timeout(grace, cycle).await.is_err() {
                        warn!(
                            grace = %humantime::format_duration(grace),
                            "the cycle under way did not stop within the grace period; \
                             what it had not checkpointed is published again next time"
                        );
                    }
                    break;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next_full) => {}
                accounts = wake.woken() => only = accounts,
            }
        }
        tasks.wait().await;
        self.stopping.store(false, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        for account in self.accounts(false).await.unwrap_or_default() {
            if let Err(e) = self.store.release(&account, &self.owner).await {
                warn!(account, error = %e, "cannot release the lease");
            }
        }
        info!("producer stopped");
        Ok(())
    }

    /// One cycle over every account, `concurrency` accounts at a time. Returns the number of
    /// events published; an account that fails does not stop the others.
    pub async fn cycle(&self) -> Result<u64> {
        self.cycle_some(None, true).await
    }

    /// The accounts to watch: those found within the discovery interval, unless `fresh`
    /// asks to look again.
    async fn accounts(&self, fresh: bool) -> Result<Vec<String>> {
        let discovered = || {
            self.discovered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if !fresh {
            if let Some((at, accounts)) = &*discovered() {
                if at.elapsed() < self.options.discover_interval {
                    return Ok(accounts.clone());
                }
            }
        }
        let accounts = self.legacy.accounts().await?;
        *discovered() = Some((std::time::Instant::now(), accounts.clone()));
        Ok(accounts)
    }

    /// One cycle over `only` these accounts, or over every account; `fresh` looks for
    /// accounts again whatever the discovery interval says. Timed for the metrics.
    #[tracing::instrument(name = "cycle", skip_all, fields(only = only.as_ref().map(BTreeSet::len)))]
    async fn cycle_some(&self, only: Option<BTreeSet<String>>, fresh: bool) -> Result<u64> {
        let started = std::time::Instant::now();
        let result = self.round_over(only, fresh).await;
        crate::metrics::cycle(started.elapsed(), result.as_ref().ok().copied());
        let now = tandem_event::now_millis();
        self.ready.store(result.is_ok(), Ordering::Relaxed);
        self.last_round_ms.store(now, Ordering::Relaxed);
        crate::metrics::gauges(Some(now), result.is_ok());
        result
    }

    async fn round_over(&self, only: Option<BTreeSet<String>>, fresh: bool) -> Result<u64> {
        let mut accounts = self.accounts(fresh).await?;
        let unknown = |accounts: &[String], only: &BTreeSet<String>| {
            only.iter().any(|a| !accounts.contains(a))
        };
        if only.as_ref().is_some_and(|only| unknown(&accounts, only)) {
            // A notification named an account not found yet: look again.
            accounts = self.accounts(true).await?;
        }
        if let Some(only) = only {
            // A notification may name an account the sources do not watch.
            accounts.retain(|account| only.contains(account));
        }
        let found: HashSet<String> = accounts.iter().cloned().collect();
        // Accounts with nothing to find are told apart all at once, and skipped.
        let round = self.round(&accounts, !fresh).await.unwrap_or_else(|e| {
            warn!(error = %e, "cannot tell which accounts are quiet; every account gets its cycle");
            crate::detect::Round::default()
        });
        let (quiet, mut known) = (round.quiet, round.known);
        let (plain, plain_due) = (round.plain, round.plain_due);
        self.stats
            .quiet
            .fetch_add(quiet.len() as u64, Ordering::Relaxed);
        if self.migration.is_none() && accounts.iter().all(|a| quiet.contains(a)) {
            // Nothing to do for anyone: no plan to make, no cycle to start.
            self.stats.cycles.fetch_add(1, Ordering::Relaxed);
            return Ok(0);
        }
        let mut plan = self.plan(accounts).await?;
        let mut started = HashSet::new();
        let mut results: Vec<(String, Result<u64>)> = Vec::new();
        // Plain accounts first, all together; those that need more get their own cycle.
        let together: Vec<(String, crate::detect::Known)> = plan
            .accounts
            .iter()
            .filter(|account| plain.contains(*account))
            .filter_map(|account| known.remove(account).map(|k| (account.clone(), k)))
            .collect();
        if !together.is_empty() {
            let names: Vec<String> = together.iter().map(|(a, _)| a.clone()).collect();
            let taken: HashSet<&String> = names.iter().collect();
            plan.accounts.retain(|account| !taken.contains(account));
            started.extend(names.iter().cloned());
            let own = match self.cycle_together(together, &plain_due).await {
                Ok((published, own)) => {
                    results.push(("(accounts cycled together)".to_owned(), Ok(published)));
                    own
                }
                Err(e) => {
                    warn!(error = %e, "cannot cycle accounts together; each gets its own cycle");
                    names
                }
            };
            for account in own.into_iter().rev() {
                plan.accounts.push_front(account);
            }
        }
        // The next account is chosen when a slot frees up, so that one enrolled by
        // migrate-now meanwhile goes before the rest.
        let mut running = futures::stream::FuturesUnordered::new();
        loop {
            while running.len() < self.options.concurrency.max(1) {
                match self.next_account(&mut plan, &found, &mut started).await {
                    Ok(Some(account)) if quiet.contains(&account) => {
                        results.push((account, Ok(0)));
                    }
                    Ok(Some(account)) => {
                        let known = known.remove(&account);
                        running.push(async move {
                            let result = self.cycle_account_knowing(&account, known).await;
                            (account, result)
                        });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        results.push(("(the migration's plan)".to_owned(), Err(e)));
                        plan.accounts.clear();
                        break;
                    }
                }
            }
            match running.next().await {
                Some(done) => results.push(done),
                None => break,
            }
        }
        self.stats.cycles.fetch_add(1, Ordering::Relaxed);
        let mut published = 0;
        let mut first_error = None;
        for (account, result) in results {
            match result {
                Ok(n) => published += n,
                Err(e) => {
                    warn!(account, error = %e, "account cycle failed");
                    self.stats.failed_cycles.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if published == 0 => Err(e),
            _ => Ok(published),
        }
    }
}
