//! `tandem status --migration`: every account's state, the counts per state, and the exit
//! once every enrolled account is done.

use std::collections::BTreeMap;

use serde::Serialize;
use tandem_migration::{Account, State};

use crate::args::StatusArgs;

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
