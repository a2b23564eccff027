//! `tandem status`: every account's state and lag, the partitions, the producer's view (see
//! [`crate::observe::status`]); with `--migration`, the migration's accounts and states and the
//! exit once every enrolled account is done.

use std::collections::BTreeMap;

use serde::Serialize;
use tandem_migration::{Account, State};

use crate::args::StatusArgs;
use crate::observe::status::{gather, Sources, Status};

#[derive(Debug, Serialize)]
struct MigrationStatus {
    accounts: usize,
    states: BTreeMap<State, usize>,
    /// Every enrolled account is done: the migration is over.
    complete: bool,
    /// Accounts never enrolled: they stay in legacy.
    never_enrolled: Vec<String>,
    members: Vec<Account>,
    next_steps: Vec<String>,
}

pub(super) async fn run_status(args: StatusArgs) -> anyhow::Result<i32> {
    if args.migration_view {
        return migration_status(args).await;
    }
    // As `produce` and `consume` are given them, when not named here.
    let consumer_url = args
        .consumer_store
        .clone()
        .or_else(|| std::env::var("TANDEM_CONSUMER_STORE").ok());
    let producer_url = args
        .producer_store
        .clone()
        .or_else(|| std::env::var("TANDEM_PRODUCER_STORE").ok());
    let named = consumer_url.is_some() || producer_url.is_some() || args.migration.url.is_some();
    if !named {
        return Err(crate::exit::Usage(
            "tandem status reads the stores: name at least one of --consumer-store, \
             --producer-store and --migration-store (or TANDEM_CONSUMER_STORE, \
             TANDEM_PRODUCER_STORE, TANDEM_MIGRATION_STORE)"
                .into(),
        )
        .into());
    }
    let consumer = match &consumer_url {
        Some(url) => Some(tandem_consumer::Store::open_existing(url).await?),
        None => None,
    };
    let producer = match &producer_url {
        Some(url) => Some(tandem_producer::Store::open_existing(url).await?),
        None => None,
    };
    let migration = match &args.migration.url {
        Some(_) => Some(args.migration.open_existing().await?),
        None => None,
    };
    let brokers = if args.offline || consumer.is_none() {
        None
    } else {
        match crate::kafka::offsets(&args.kafka, &args.group, args.broker_timeout).await {
            Ok(offsets) => Some(offsets),
            Err(e) => {
                eprintln!(
                    "tandem: the brokers at {} did not answer ({e:#}); partitions are shown \
                     without their high watermarks",
                    args.kafka.brokers
                );
                None
            }
        }
    };
    let sources = Sources {
        consumer: consumer.as_ref(),
        producer: producer.as_ref(),
        migration: migration.as_ref(),
        group: &args.group,
        topic: &args.kafka.topic,
        brokers,
    };
    let status = gather(&sources).await?;
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print_status(&status, args.limit);
    }
    Ok(0)
}

fn print_status(status: &Status, limit: usize) {
    let states: Vec<String> = status
        .by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    println!("accounts: {} ({})", status.accounts, states.join(", "));
    if let Some(p) = &status.producer {
        println!(
            "producer: {} accounts, {} enrolled, {} held by a running producer, {} unsettled keys",
            p.accounts, p.enrolled, p.leased, p.unsettled_keys
        );
    }
    if !status.partitions.is_empty() {
        println!("partitions:");
        let shown = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for p in &status.partitions {
            println!(
                "  {:>3}: position {}, committed {}, high watermark {}, lag {}",
                p.partition,
                shown(p.position),
                shown(p.committed),
                shown(p.high_watermark),
                shown(p.lag)
            );
        }
    }
    let listed = status.account_list.len().min(limit);
    if listed == 0 {
        return;
    }
    println!(
        "accounts, furthest behind first ({listed} of {}):",
        status.accounts
    );
    println!(
        "  {:<20} {:<9} {:<11} {:>5} {:>8} {:>8} {:<9} {:>5} {:>4}  reason",
        "account", "state", "lifecycle", "epoch", "behind", "seconds", "applied", "held", "dlq"
    );
    for a in status.account_list.iter().take(limit) {
        let text = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        println!(
            "  {:<20} {:<9} {:<11} {:>5} {:>8} {:>8} {:<9} {:>5} {:>4}  {}",
            a.account,
            a.state,
            text(a.lifecycle.map(|l| l.to_string())),
            text(a.epoch.map(|e| e.to_string())),
            text(a.lag_events.map(|n| n.to_string())),
            text(a.lag_seconds.map(|s| format!("{s:.1}"))),
            text(a.last_applied_at.map(clock)),
            a.held,
            a.dead_letters,
            a.parked_reason.as_deref().unwrap_or("")
        );
    }
}

/// HH:MM:SS (UTC) of an epoch-millis time.
fn clock(ms: i64) -> String {
    let full = super::accounts::time(ms);
    full.get(11..19).map_or(full.clone(), str::to_owned)
}

async fn migration_status(args: StatusArgs) -> anyhow::Result<i32> {
    let migration = args.migration.open_existing().await?;
    let accounts = migration.accounts().await?;
    let mut states = BTreeMap::new();
    for account in &accounts {
        *states.entry(account.state).or_insert(0) += 1;
    }
    let count = |state| states.get(&state).copied().unwrap_or(0);
    let never_enrolled: Vec<String> = accounts
        .iter()
        .filter(|a| a.state == State::Pending)
        .map(|a| a.account.clone())
        .collect();
    let enrolled = accounts.len() - never_enrolled.len();
    let complete = enrolled > 0 && count(State::Done) == enrolled;
    let mut next_steps = Vec::new();
    if complete {
        next_steps.push(
            "the migration is complete: the producer (tandem produce), the change topic and \
             its dead-letter topic, and the router (tandem router) can be removed; the \
             migration store keeps every account's history"
                .to_owned(),
        );
        if !never_enrolled.is_empty() {
            next_steps.push(format!(
                "{} accounts were never enrolled and stay in legacy: enrol them first if they \
                 should move (tandem accounts enroll …)",
                never_enrolled.len()
            ));
        }
    } else {
        if count(State::Pending) > 0 {
            next_steps.push(
                "enrol pending accounts: tandem slice create … then tandem slice enroll …".into(),
            );
        }
        if count(State::Syncing) > 0 {
            next_steps.push("wait for syncing accounts: tandem slice status NAME --watch".into());
        }
        if count(State::Live) + count(State::RolledBack) > 0 {
            next_steps.push("cut live accounts over: tandem slice cutover NAME".into());
        }
        if count(State::CutOver) > 0 {
            next_steps.push(
                "once cut-over accounts are settled: tandem accounts complete ACCOUNT".into(),
            );
        }
        if count(State::Paused) > 0 {
            next_steps.push("paused accounts wait: tandem accounts resume ACCOUNT".into());
        }
    }
    let status = MigrationStatus {
        accounts: accounts.len(),
        states,
        complete,
        never_enrolled,
        members: accounts,
        next_steps,
    };
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(0);
    }
    println!("migration: {} accounts", status.accounts);
    for (state, n) in &status.states {
        println!("  {state:<12} {n}");
    }
    for account in &status.members {
        println!(
            "  {}: {} since {}",
            account.account,
            account.state,
            super::accounts::time(account.since)
        );
    }
    for step in &status.next_steps {
        println!("next: {step}");
    }
    Ok(0)
}
