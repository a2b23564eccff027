//! Verification across accounts: legacy rows read through the sources file, rendered through the
//! mapping, compared with the cloud; and the report `tandem verify` prints.

use std::collections::HashMap;

use serde::Serialize;
use tandem_consumer::mapping::Mapping;
use tandem_consumer::verify::{verify_account, AccountDrift, Drift, LegacyRows, Totals};
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

/// Verifies each account in turn against the cloud account of the same id.
pub async fn verify_accounts(
    legacy: &Legacy,
    mapping: &Mapping,
    cloud: &CloudClient,
    accounts: &[String],
) -> anyhow::Result<Vec<AccountDrift>> {
    let pairs: Vec<(String, String)> = accounts.iter().map(|a| (a.clone(), a.clone())).collect();
    verify_targets(legacy, mapping, cloud, &pairs).await
}

/// Verifies each (legacy account, cloud account it is applied to) in turn.
pub async fn verify_targets(
    legacy: &Legacy,
    mapping: &Mapping,
    cloud: &CloudClient,
    pairs: &[(String, String)],
) -> anyhow::Result<Vec<AccountDrift>> {
    let mut out = Vec::with_capacity(pairs.len());
    let progress = crate::progress::Progress::new("verify: accounts");
    for (done, (account, target)) in pairs.iter().enumerate() {
        progress.update(done as u64, pairs.len() as u64, account);
        let rows = legacy_rows(legacy, account).await?;
        out.push(verify_account(mapping, (account, target), &rows, cloud).await?);
    }
    progress.done();
    Ok(out)
}

/// What `tandem verify` reports: totals shaped as in the demo's report, then the accounts that
/// are out of step or parked, with counts (and with `keys`, the documents concerned).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Accounts verified.
    pub accounts: usize,
    #[serde(flatten)]
    pub totals: Totals,
    /// Verified accounts that are parked (only known when the consumer's store was given).
    pub parked: usize,
    /// No drift, no duplicates, nothing parked.
    pub clean: bool,
    /// The accounts with drift, duplicates or parked; clean accounts are left out.
    pub by_account: Vec<AccountReport>,
}

#[derive(Debug, Serialize)]
pub struct AccountReport {
    pub account: String,
    pub drift: Drift,
    pub duplicates: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
    /// The documents out of step, by `resource/key`; with `--keys` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<AccountDrift>,
    /// With `--repair`: what was repaired (with `--dry-run`: what would be).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repairs: Vec<tandem_consumer::repair::RepairAction>,
}

/// Why an account is parked: its later events are held in the consumer's store.
#[derive(Debug, Serialize)]
pub struct Parked {
    pub reason: String,
    pub held: i64,
    /// An operator asked to resume it; the consumer is applying its held events.
    pub resuming: bool,
}

impl Report {
    /// `parked`: the consumer store's parked accounts, (account, reason, held, resuming).
    pub fn new(
        drift: Vec<AccountDrift>,
        parked: &[(String, String, i64, bool)],
        keys: bool,
    ) -> Self {
        let totals = Totals::of(&drift);
        let parked: HashMap<&str, Parked> = parked
            .iter()
            .map(|(account, reason, held, resuming)| {
                let why = Parked {
                    reason: reason.clone(),
                    held: *held,
                    resuming: *resuming,
                };
                (account.as_str(), why)
            })
            .collect();
        let accounts = drift.len();
        let mut parked_here = 0;
        let mut parked = parked;
        let by_account: Vec<AccountReport> = drift
            .into_iter()
            .filter_map(|a| {
                // Held events are kept under the target an account is applied to.
                let why = parked.remove(a.target.as_deref().unwrap_or(&a.account));
                parked_here += usize::from(why.is_some());
                (!a.is_clean() || why.is_some()).then(|| AccountReport {
                    account: a.account.clone(),
                    drift: a.counts(),
                    duplicates: a.duplicates.len(),
                    parked: why,
                    keys: keys.then_some(a),
                    repairs: Vec::new(),
                })
            })
            .collect();
        Report {
            accounts,
            totals,
            parked: parked_here,
            clean: by_account.is_empty(),
            by_account,
        }
    }

    /// Puts each account's repairs beside its verdict; an account repaired clean is listed
    /// with what was done.
    pub fn add_repairs(
        &mut self,
        mut repairs: HashMap<String, Vec<tandem_consumer::repair::RepairAction>>,
    ) {
        for entry in &mut self.by_account {
            entry.repairs = repairs.remove(&entry.account).unwrap_or_default();
        }
        for (account, done) in repairs {
            if !done.is_empty() {
                self.by_account.push(AccountReport {
                    account,
                    drift: Drift::default(),
                    duplicates: 0,
                    parked: None,
                    keys: None,
                    repairs: done,
                });
            }
        }
        self.by_account.sort_by(|a, b| a.account.cmp(&b.account));
    }

    /// The report as a table for a terminal; `store_given` says whether parked accounts
    /// could be looked up.
    pub fn table(&self, store_given: bool) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        let row = |name: &str, d: &Drift, dup: usize| {
            format!(
                "{name:<24} {:>8} {:>8} {:>10} {:>11}",
                d.missing, d.extra, d.different, dup
            )
        };
        line(format!(
            "{:<24} {:>8} {:>8} {:>10} {:>11}",
            "account", "missing", "extra", "different", "duplicates"
        ));
        for a in &self.by_account {
            line(row(&a.account, &a.drift, a.duplicates));
            for repair in &a.repairs {
                let id = repair.cloud_id.as_deref().unwrap_or("-");
                line(format!("    {}: {} ({id})", repair.action, repair.document));
            }
            if let Some(keys) = &a.keys {
                for (what, list) in [
                    ("missing", &keys.missing),
                    ("extra", &keys.extra),
                    ("different", &keys.different),
                    ("duplicate", &keys.duplicates),
                ] {
                    for key in list {
                        line(format!("    {what}: {key}"));
                    }
                }
            }
        }
        line(row(
            &format!("total ({} accounts)", self.accounts),
            &self.totals.drift,
            self.totals.duplicates,
        ));
        let out_of_step = self
            .by_account
            .iter()
            .filter(|a| a.drift != Drift::default() || a.duplicates > 0 || a.parked.is_some())
            .count();
        let clean = self.accounts - out_of_step;
        line(format!("{clean} of {} accounts in step", self.accounts));
        if self.parked > 0 {
            line(format!(
                "{} parked accounts: their later events wait in the consumer's store until the \
                 cause is fixed and `tandem accounts resume` is run",
                self.parked
            ));
            for a in &self.by_account {
                if let Some(p) = &a.parked {
                    let state = if p.resuming { "resuming" } else { "parked" };
                    line(format!(
                        "  {}: {state}, {} events held; {}",
                        a.account, p.held, p.reason
                    ));
                }
            }
        } else if !store_given && !self.clean {
            line(
                "parked accounts not checked: give --store (the consumer's store) to see them"
                    .into(),
            );
        }
        out
    }
}
