//! Verification across accounts: legacy rows read through the sources file, rendered through the
//! mapping, compared with the cloud.

use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::{verify_account, AccountDrift, LegacyRows};
use tandem_consumer::CloudClient;
use tandem_producer::legacy::Legacy;

/// Every row of every configured table for one account.
pub async fn legacy_rows(legacy: &Legacy, account: &str) -> anyhow::Result<LegacyRows> {
    let mut rows = LegacyRows::new();
    for table in legacy.tables() {
        let found = legacy.all_rows(account, &table.name).await?;
        rows.insert(
            table.name.clone(),
            found.into_iter().map(|r| (r.entity_id, r.data)).collect(),
        );
    }
    Ok(rows)
}

/// Verifies each account in turn.
pub async fn verify_accounts(
    legacy: &Legacy,
    mapping: &Mapping,
    cloud: &CloudClient,
    accounts: &[String],
) -> anyhow::Result<Vec<AccountDrift>> {
    let mut out = Vec::with_capacity(accounts.len());
    for account in accounts {
        let rows = legacy_rows(legacy, account).await?;
        out.push(verify_account(mapping, account, &rows, cloud).await?);
    }
    Ok(out)
}
