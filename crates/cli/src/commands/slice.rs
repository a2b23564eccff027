//! `tandem slice`: accounts chosen together by a query or a list, enrolled and watched
//! together.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tandem_migration::{Drift, Slice, State};
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;

use crate::args::{SliceAction, SliceArgs};
use crate::migrate::Lifecycle;

const ACTOR: &str = "tandem slice";

pub(super) async fn run_slice(args: SliceArgs) -> anyhow::Result<i32> {
    match args.action {
        SliceAction::Create {
            ref name,
            ref query,
            ref accounts,
        } => {
            let members = match query {
                Some(sql) => legacy(&args).await?.select_accounts(sql).await?,
                None => accounts.clone(),
            };
            if members.is_empty() {
                anyhow::bail!("slice {name} would have no accounts; nothing created");
            }
            let migration = args.migration.open().await?;
            let slice = migration
                .create_slice(name, query.as_deref(), &members, ACTOR)
                .await?;
            println!(
                "slice {}: {} accounts{}",
                slice.name,
                slice.members.len(),
                query
                    .as_ref()
                    .map(|q| format!(", chosen by: {q}"))
                    .unwrap_or_default()
            );
            println!("  {}", slice.members.join(", "));
            println!("next: tandem slice enroll {}", slice.name);
            Ok(0)
        }
        SliceAction::List => {
            let migration = args.migration.open_existing().await?;
            let slices = migration.slices().await?;
            println!("{} slices", slices.len());
            for slice in slices {
                let how = slice.query.as_deref().unwrap_or("a list");
                println!("  {}: {} accounts ({how})", slice.name, slice.members.len());
            }
            Ok(0)
        }
        SliceAction::Enroll { ref name } => {
            let migration = args.migration.open_existing().await?;
            let slice = migration.slice(name).await?;
            let mut enrolled = 0;
            for account in &slice.members {
                let state = migration.account(account).await?.map(|a| a.state);
                if matches!(state, None | Some(State::Pending)) {
                    migration
                        .enroll(account, ACTOR, &format!("slice {name} enrolled"))
                        .await?;
                    enrolled += 1;
                }
            }
            println!(
                "slice {name}: {enrolled} accounts enrolled ({} were enrolled already); the \
                 producer publishes their snapshots next",
                slice.members.len() - enrolled
            );
            println!("next: tandem slice status {name} --watch");
            Ok(0)
        }
        SliceAction::Status {
            ref name,
            json,
            watch,
        } => {
            let migration = args.migration.open_existing().await?;
            let slice = migration.slice(name).await?;
            let legacy = legacy(&args).await.ok();
            // Without the consumer's store the status has no row counts, and says why.
            let consumer = match tandem_consumer::Store::open_existing(&args.consumer_store).await {
                Ok(store) => Some(store),
                Err(e) => {
                    eprintln!("tandem: rows backfilled not shown: {e}");
                    None
                }
            };
            let status =
                SliceStatus::read(&migration, &slice, legacy.as_ref(), consumer.as_ref()).await?;
            if watch && status.states.get(&State::Syncing).copied().unwrap_or(0) > 0 {
                watch_sync(
                    &migration,
                    &slice,
                    legacy.as_ref(),
                    consumer.as_ref(),
                    status,
                )
                .await?;
                let status =
                    SliceStatus::read(&migration, &slice, legacy.as_ref(), consumer.as_ref())
                        .await?;
                status.print(json)?;
            } else {
                status.print(json)?;
            }
            Ok(0)
        }
        SliceAction::Cutover { ref name, json } => {
            let lifecycle = Lifecycle::open(
                &args.sources,
                &args.consumer_store,
                &args.migration,
                &args.lifecycle,
                ACTOR,
            )
            .await?;
            let slice = lifecycle.migration().slice(name).await?;
            let mut reports = Vec::new();
            for account in &slice.members {
                let state = lifecycle
                    .migration()
                    .account(account)
                    .await?
                    .map(|a| a.state);
                if matches!(state, Some(State::Live | State::RolledBack)) {
                    let report = lifecycle.cutover(account).await?;
                    if !json {
                        super::accounts::print_cutover(&report, false, false)?;
                    }
                    reports.push(report);
                }
            }
            let cut = reports.iter().filter(|r| r.cut_over).count();
            let refused = reports.len() - cut;
            let mut next_steps = Vec::new();
            if refused > 0 {
                next_steps.push(format!(
                    "fix the refused accounts, then: tandem slice cutover {name}"
                ));
            }
            if cut > 0 {
                next_steps.push(
                    "back to legacy, listing what the cloud changed since: \
                     tandem accounts rollback ACCOUNT"
                        .to_owned(),
                );
                next_steps.push(
                    "once settled in the cloud: tandem accounts complete ACCOUNT …".to_owned(),
                );
            }
            if json {
                let out = serde_json::json!({
                    "slice": name,
                    "cut_over": cut,
                    "refused": refused,
                    "accounts": reports,
                    "next_steps": next_steps,
                });
                println!("{out}");
            } else {
                println!("slice {name}: {cut} accounts cut over, {refused} refused");
                for step in &next_steps {
                    println!("next: {step}");
                }
            }
            Ok(if refused == 0 { 0 } else { 1 })
        }
        SliceAction::Reevaluate { ref name, apply } => {
            let migration = args.migration.open_existing().await?;
            let slice = migration.slice(name).await?;
            let Some(query) = &slice.query else {
                anyhow::bail!("slice {name} is a list; it has no query to run again");
            };
            let found = legacy(&args).await?.select_accounts(query).await?;
            let new: Vec<String> = found
                .into_iter()
                .filter(|a| !slice.members.contains(a))
                .collect();
            if apply {
                let added = migration.add_members(name, &new, ACTOR).await?;
                println!("slice {name}: {} accounts added", added.len());
                for account in added {
                    println!("  {account}");
                }
            } else {
                println!(
                    "slice {name}: the query now finds {} accounts that are not members{}",
                    new.len(),
                    if new.is_empty() {
                        ""
                    } else {
                        "; --apply adds them:"
                    }
                );
                for account in new {
                    println!("  {account}");
                }
            }
            Ok(0)
        }
    }
}

async fn legacy(args: &SliceArgs) -> anyhow::Result<Legacy> {
    let sources = Sources::load(&args.sources)?;
    Ok(Legacy::connect(&sources, &args.sources).await?)
}

/// What `tandem slice status` shows.
#[derive(Debug, Serialize)]
struct SliceStatus {
    slice: String,
    query: Option<String>,
    accounts: usize,
    states: BTreeMap<State, usize>,
    /// Legacy rows of the slice's accounts applied so far, and in all (when the legacy data
    /// and the consumer's store were reachable).
    rows: Option<Rows>,
    /// The accounts verified so far, and the drift their last verify found in all.
    verified: usize,
    drift: Drift,
    members: Vec<Member>,
    next_steps: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Rows {
    backfilled: u64,
    total: u64,
}

#[derive(Debug, Serialize)]
struct Member {
    account: String,
    state: Option<State>,
    since: Option<i64>,
    drift: Option<Drift>,
}

impl SliceStatus {
    async fn read(
        migration: &tandem_migration::Store,
        slice: &Slice,
        legacy: Option<&Legacy>,
        consumer: Option<&tandem_consumer::Store>,
    ) -> anyhow::Result<Self> {
        let verifies = migration.verifies().await?;
        // One read of every account, not one per member: `--watch` reads it every second.
        let known: std::collections::HashMap<String, tandem_migration::Account> = migration
            .accounts()
            .await?
            .into_iter()
            .map(|a| (a.account.clone(), a))
            .collect();
        let mut states = BTreeMap::new();
        let mut members = Vec::with_capacity(slice.members.len());
        let mut drift = Drift::default();
        let mut verified = 0;
        for account in &slice.members {
            let known = known.get(account);
            if let Some(known) = known {
                *states.entry(known.state).or_insert(0) += 1;
            }
            let last = verifies.get(account).map(|(_, d)| *d);
            if let Some(d) = last {
                verified += 1;
                drift.missing += d.missing;
                drift.extra += d.extra;
                drift.different += d.different;
            }
            members.push(Member {
                account: account.clone(),
                state: known.map(|k| k.state),
                since: known.map(|k| k.since),
                drift: last,
            });
        }
        let rows = match (legacy, consumer) {
            (Some(legacy), Some(consumer)) => Some(rows(&slice.members, legacy, consumer).await?),
            _ => None,
        };
        let count = |state| states.get(&state).copied().unwrap_or(0);
        let name = &slice.name;
        let mut next_steps = Vec::new();
        if count(State::Pending) > 0 {
            next_steps.push(format!("tandem slice enroll {name}"));
        }
        if count(State::Syncing) > 0 {
            next_steps.push(format!("tandem slice status {name} --watch"));
        }
        if count(State::Live) > 0 {
            next_steps.push(format!(
                "tandem verify --account … then cut the slice over: tandem slice cutover {name}"
            ));
        }
        Ok(SliceStatus {
            slice: slice.name.clone(),
            query: slice.query.clone(),
            accounts: slice.members.len(),
            states,
            rows,
            verified,
            drift,
            members,
            next_steps,
        })
    }

    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!("slice {}: {} accounts", self.slice, self.accounts);
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect();
        println!("  states: {}", states.join(", "));
        if let Some(rows) = self.rows {
            let share = if rows.total == 0 {
                100.0
            } else {
                rows.backfilled as f64 * 100.0 / rows.total as f64
            };
            println!(
                "  rows backfilled: {} of {} ({share:.0}%)",
                rows.backfilled, rows.total
            );
        }
        println!(
            "  last verify: {} of {} accounts verified; missing {}, extra {}, different {}",
            self.verified,
            self.accounts,
            self.drift.missing,
            self.drift.extra,
            self.drift.different
        );
        for member in &self.members {
            let state = member.state.map_or("unknown".to_owned(), |s| s.to_string());
            let since = member
                .since
                .map(|at| format!(" since {}", super::accounts::time(at)))
                .unwrap_or_default();
            println!("  {}: {state}{since}", member.account);
        }
        for step in &self.next_steps {
            println!("next: {step}");
        }
        Ok(())
    }
}

/// Rows applied and in all, over the accounts.
async fn rows(
    accounts: &[String],
    legacy: &Legacy,
    consumer: &tandem_consumer::Store,
) -> anyhow::Result<Rows> {
    let mut rows = Rows {
        backfilled: 0,
        total: 0,
    };
    for account in accounts {
        let total = legacy.count_rows(account).await?;
        let target = consumer.target_of(account).await?;
        rows.total += total;
        rows.backfilled += consumer.mirror_count(&target).await?.min(total);
    }
    Ok(rows)
}

/// A progress bar over the slice's rows (or accounts, without the consumer's store) until no
/// account is syncing; a line every few seconds when not on a terminal.
async fn watch_sync(
    migration: &tandem_migration::Store,
    slice: &Slice,
    legacy: Option<&Legacy>,
    consumer: Option<&tandem_consumer::Store>,
    mut status: SliceStatus,
) -> anyhow::Result<()> {
    let progress = |s: &SliceStatus| match s.rows {
        Some(rows) => (rows.backfilled, rows.total),
        None => {
            let syncing = s.states.get(&State::Syncing).copied().unwrap_or(0);
            ((s.accounts - syncing) as u64, s.accounts as u64)
        }
    };
    let bar = crate::progress::Progress::new("slice: rows backfilled");
    loop {
        let (done, total) = progress(&status);
        let syncing = status.states.get(&State::Syncing).copied().unwrap_or(0);
        bar.update(done, total, &format!("{syncing} accounts syncing"));
        if syncing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        status = SliceStatus::read(migration, slice, legacy, consumer).await?;
    }
    bar.done();
    Ok(())
}
