//! `tandem accounts`: parked accounts and waiting references, resuming accounts, and moving
//! one account through its migration.

use tandem_consumer::Store;
use tandem_migration::State;

use crate::args::{AccountsAction, AccountsArgs};
use crate::migrate::{CutoverReport, Lifecycle};

/// Who changed an account's state, in its history.
const ACTOR: &str = "tandem accounts";

pub(super) async fn run_accounts(args: AccountsArgs) -> anyhow::Result<i32> {
    let consumer = || Store::open_existing(&args.store.url);
    match args.action {
        AccountsAction::Status => {
            let store = consumer().await?;
            let parked = store.parked_accounts().await?;
            println!("{} parked accounts", parked.len());
            for (account, reason, held, resuming) in parked {
                let state = if resuming { "resuming" } else { "parked" };
                println!("  {account}: {state}, {held} events held; {reason}");
            }
            let waiting = store.parked().await?;
            println!("{} resources waiting for a reference", waiting.len());
            for (account, resource, key, target) in waiting {
                println!("  {account}: {resource}/{key} waits for {target}");
            }
            Ok(0)
        }
        AccountsAction::Target { account, target } => {
            consumer().await?.set_target(&account, &target).await?;
            println!("{account}: applied to cloud account {target} from now on");
            Ok(0)
        }
        AccountsAction::Targets => {
            let targets = consumer().await?.targets().await?;
            println!(
                "{} accounts applied to another cloud account",
                targets.len()
            );
            for (account, target) in targets {
                println!("  {account} -> {target}");
            }
            Ok(0)
        }
        AccountsAction::Resume { all: true, .. } => {
            let accounts = consumer().await?.request_resume_all().await?;
            println!(
                "{} parked accounts: resume requested; the consumer applies their held events next",
                accounts.len()
            );
            for account in accounts {
                println!("  {account}");
            }
            Ok(0)
        }
        AccountsAction::Resume { accounts, .. } => {
            let store = consumer().await?;
            let migration = match &args.migration.url {
                Some(_) => Some(args.migration.open_existing().await?),
                None => None,
            };
            let mut code = 0;
            for account in accounts {
                let paused = match &migration {
                    Some(migration) => unpause(migration, &account).await?,
                    None => false,
                };
                let target = store.target_of(&account).await?;
                if store.request_resume(&target).await? {
                    println!(
                        "{account}: resume requested; the consumer applies its held events next"
                    );
                } else if paused {
                    println!("{account}: resumed; nothing was held for it");
                } else {
                    let what = if migration.is_some() {
                        "neither paused nor parked"
                    } else {
                        "not parked"
                    };
                    eprintln!("tandem: account {account} is {what}");
                    code = 1;
                }
            }
            Ok(code)
        }
        AccountsAction::Enroll { accounts } => {
            let migration = args.migration.open().await?;
            let mut code = 0;
            for account in accounts {
                match migration.enroll(&account, ACTOR, "enrolled by name").await {
                    Ok(_) => println!(
                        "{account}: syncing; the producer publishes its snapshot next, then \
                         every change"
                    ),
                    Err(e @ tandem_migration::Error::NotAllowed { .. }) => {
                        eprintln!("tandem: {e}");
                        code = 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(code)
        }
        AccountsAction::Pause { accounts } => {
            let migration = args.migration.open_existing().await?;
            let store = consumer().await?;
            let mut code = 0;
            for account in accounts {
                let from = [State::Syncing, State::Live, State::RolledBack];
                match migration
                    .transition(&account, &from, State::Paused, ACTOR, "paused")
                    .await
                {
                    Ok(_) => {
                        let target = store.target_of(&account).await?;
                        store
                            .pause(&target, "paused (tandem accounts pause); resume it with tandem accounts resume")
                            .await?;
                        println!(
                            "{account}: paused; its changes are published and held by the \
                             consumer until it is resumed"
                        );
                    }
                    Err(e @ tandem_migration::Error::NotAllowed { .. }) => {
                        eprintln!("tandem: {e}");
                        code = 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(code)
        }
        AccountsAction::Cutover { ref accounts, json } => {
            let lifecycle = lifecycle(&args).await?;
            let mut code = 0;
            for account in accounts {
                let report = lifecycle.cutover(account).await?;
                if !report.cut_over {
                    code = 1;
                }
                print_cutover(&report, json, true)?;
            }
            Ok(code)
        }
        AccountsAction::Rollback {
            ref account,
            yes,
            json,
        } => {
            let report = lifecycle(&args).await?.rollback(account, yes).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let lost = report.created.len() + report.changed.len() + report.deleted.len();
                println!(
                    "{account}: since the cutover the cloud has {} documents created, {} changed, {} deleted",
                    report.created.len(),
                    report.changed.len(),
                    report.deleted.len()
                );
                for (what, keys) in [
                    ("created", &report.created),
                    ("changed", &report.changed),
                    ("deleted", &report.deleted),
                ] {
                    for key in keys {
                        println!("  {what} {key}");
                    }
                }
                if report.rolled_back {
                    println!(
                        "{account}: rolled back; routed to legacy, unfrozen and followed again ({} cloud documents put back to the legacy data; {lost} changes lost)",
                        report.repaired.unwrap_or(0)
                    );
                } else {
                    println!(
                        "{account}: not rolled back; these changes are lost by going back; run again with --yes to go ahead"
                    );
                }
                for step in &report.next_steps {
                    println!("next: {step}");
                }
            }
            // Nothing done without --yes: a script sees it did not happen.
            Ok(if report.rolled_back {
                crate::exit::OK
            } else {
                crate::exit::REJECTED
            })
        }
        AccountsAction::Complete { ref accounts } => {
            let lifecycle = lifecycle(&args).await?;
            for account in accounts {
                lifecycle.complete(account).await?;
                println!(
                    "{account}: done; it lives in the cloud, and the consumer's bookkeeping for it is gone (its history is kept)"
                );
            }
            println!("next: tandem status --migration");
            Ok(0)
        }
        AccountsAction::History { account } => {
            let migration = args.migration.open_existing().await?;
            let Some(now) = migration.account(&account).await? else {
                anyhow::bail!("account {account} is not known to the migration");
            };
            println!("{account}: {} since {}", now.state, time(now.since));
            for entry in migration.history(&account).await? {
                let from = entry.from.map_or("-".to_owned(), |s| s.to_string());
                println!(
                    "  {}  {from} -> {}  by {}: {}",
                    time(entry.at),
                    entry.to,
                    entry.actor,
                    entry.reason
                );
            }
            Ok(0)
        }
    }
}

async fn lifecycle(args: &AccountsArgs) -> anyhow::Result<Lifecycle> {
    Lifecycle::open(
        &args.sources,
        &args.store.url,
        &args.migration,
        &args.lifecycle,
        ACTOR,
    )
    .await
}

/// One account's cutover, as a line of JSON or as text.
pub(crate) fn print_cutover(report: &CutoverReport, json: bool, next: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let account = &report.account;
    match &report.refused {
        None => println!(
            "{account}: cut over in {:.1} s; verified with zero drift, routed to the cloud",
            report.seconds
        ),
        Some(reason) => {
            println!("{account}: cutover refused: {reason}");
            for (what, keys) in [
                ("missing", &report.missing),
                ("extra", &report.extra),
                ("different", &report.different),
            ] {
                for key in keys {
                    println!("  {what} {key}");
                }
            }
            if !report.frozen {
                println!("  {account} stays routed to legacy, not frozen");
            }
        }
    }
    if next {
        for step in &report.next_steps {
            println!("next: {step}");
        }
    }
    Ok(())
}

/// A paused account goes back to where it was: live once its snapshot was applied, else
/// syncing. False when it was not paused.
async fn unpause(migration: &tandem_migration::Store, account: &str) -> anyhow::Result<bool> {
    let Some(known) = migration.account(account).await? else {
        return Ok(false);
    };
    if known.state != State::Paused {
        return Ok(false);
    }
    let back = if known.live_at.is_some() {
        State::Live
    } else {
        State::Syncing
    };
    migration
        .transition(account, &[State::Paused], back, ACTOR, "resumed")
        .await?;
    Ok(true)
}

/// Epoch milliseconds as an RFC 3339 time.
pub(crate) fn time(millis: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}
