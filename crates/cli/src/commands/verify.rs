//! `tandem verify`: the cloud compared with what the legacy data says through the mapping.

use std::time::Duration;

use anyhow::Context as _;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::repair::repair_account;
use tandem_consumer::{Engine, Store};
use tandem_producer::config::Sources;
use tandem_producer::legacy::Legacy;

use crate::args::VerifyArgs;

pub(super) async fn run_verify(args: VerifyArgs) -> anyhow::Result<i32> {
    let sources = Sources::load(&args.sources)?;
    let mapping = Mapping::load(&args.mapping)?;
    let legacy = Legacy::connect(&sources, &args.sources).await?;
    mapping.check_columns(&legacy.columns())?;
    let store = match &args.store {
        Some(url) => Some(Store::open_existing(url).await?),
        None => None,
    };
    let accounts = if args.account.is_empty() {
        legacy.accounts().await?
    } else {
        args.account
    };
    // Each account against the cloud account it is applied to: its target in the consumer's
    // store, or (without a store, or with --into) the account of the same id.
    let mut pairs = Vec::with_capacity(accounts.len());
    for account in accounts {
        let target = match (&args.into, &store) {
            (Some(into), _) => into.clone(),
            (None, Some(store)) => store.target_of(&account).await?,
            (None, None) => account.clone(),
        };
        pairs.push((account, target));
    }
    let client = args.cloud.client(Duration::from_secs(30), 4).await?;
    let mut drift = crate::verify::verify_targets(&legacy, &mapping, &client, &pairs)
        .await
        .with_context(|| format!("cannot verify against {}", args.cloud.url))?;
    let mut repairs = std::collections::HashMap::new();
    if let (true, Some(store)) = (args.repair, &store) {
        let mapping = std::sync::Arc::new(mapping.clone());
        let engine = Engine::new(mapping.clone(), store.clone(), client.clone());
        for ((account, target), verdict) in pairs.iter().zip(&drift) {
            if verdict.missing.is_empty()
                && verdict.extra.is_empty()
                && verdict.different.is_empty()
            {
                continue;
            }
            let rows = crate::verify::legacy_rows(&legacy, account).await?;
            let done = repair_account(&engine, target, &rows, args.dry_run)
                .await
                .with_context(|| format!("cannot repair {account}"))?;
            repairs.insert(account.clone(), done);
        }
        if !args.dry_run && !repairs.is_empty() {
            // The verdict after the repairs.
            drift = crate::verify::verify_targets(&legacy, &mapping, &client, &pairs)
                .await
                .with_context(|| format!("cannot verify against {}", args.cloud.url))?;
        }
    }
    if args.migration.url.is_some() && !args.dry_run {
        let migration = args.migration.open_existing().await?;
        for verdict in &drift {
            let counts = verdict.counts();
            let drift = tandem_migration::Drift {
                missing: counts.missing as i64,
                extra: counts.extra as i64,
                different: counts.different as i64,
            };
            // Accounts the migration does not know are left out.
            if migration.account(&verdict.account).await?.is_some() {
                migration.record_verify(&verdict.account, drift).await?;
            }
        }
    }
    let parked = match &store {
        Some(store) => store.parked_accounts().await?,
        None => Vec::new(),
    };
    let mut report = crate::verify::Report::new(drift, &parked, args.keys);
    report.add_repairs(repairs);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table(store.is_some()));
    }
    Ok(if report.clean { 0 } else { 1 })
}
