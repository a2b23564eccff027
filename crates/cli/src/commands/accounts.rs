//! `tandem accounts`: parked accounts and waiting references, and resuming accounts.

use tandem_consumer::Store;

use crate::args::{AccountsAction, AccountsArgs};

pub(super) async fn run_accounts(args: AccountsArgs) -> anyhow::Result<i32> {
    let store = Store::open_existing(&args.store.url).await?;
    match args.action {
        AccountsAction::Status => {
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
            store.set_target(&account, &target).await?;
            println!("{account}: applied to cloud account {target} from now on");
            Ok(0)
        }
        AccountsAction::Targets => {
            let targets = store.targets().await?;
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
            let accounts = store.request_resume_all().await?;
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
            let mut code = 0;
            for account in accounts {
                if store.request_resume(&account).await? {
                    println!(
                        "{account}: resume requested; the consumer applies its held events next"
                    );
                } else {
                    eprintln!("tandem: account {account} is not parked");
                    code = 1;
                }
            }
            Ok(code)
        }
    }
}
