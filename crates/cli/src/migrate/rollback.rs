//! Rollback: an account cut over goes back to legacy. What the cloud changed since the cutover
//! is lost by going back, so it is listed first and the step waits for `--yes`.

use serde::Serialize;
use tandem_consumer::repair::repair_account;
use tandem_consumer::verify::verify_account_with;
use tandem_consumer::Engine;
use tandem_migration::{Route, State};

use super::Lifecycle;

/// The cloud's changes since the cutover, and whether the account went back.
#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub account: String,
    pub rolled_back: bool,
    pub state: State,
    pub route: Route,
    /// Documents in the cloud Tandem did not write (`resource/key`, or `collection/id` for
    /// one without Tandem's reference).
    pub created: Vec<String>,
    /// Documents that differ from what Tandem last wrote.
    pub changed: Vec<String>,
    /// Documents Tandem wrote that the cloud no longer has.
    pub deleted: Vec<String>,
    /// Cloud documents put back to the legacy data after going back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<usize>,
    pub next_steps: Vec<String>,
}

impl Lifecycle {
    /// Lists what changed in the cloud since the cutover — the cloud against the documents
    /// Tandem last wrote (its mirror through the mapping, with the ids of its ID map). With `yes`, routes the account to
    /// legacy again, unfreezes it, puts the cloud back to the legacy data and the producer
    /// follows it again.
    pub async fn rollback(&self, account: &str, yes: bool) -> anyhow::Result<RollbackReport> {
        let known = self
            .migration
            .account(account)
            .await?
            .ok_or_else(|| tandem_migration::Error::UnknownAccount(account.to_owned()))?;
        if known.state != State::CutOver {
            anyhow::bail!(
                "account {account} is {}; only an account cut over can be rolled back",
                known.state
            );
        }
        let target = self.consumer.target_of(account).await?;
        let written = self.consumer.mirror_rows(&target).await?;
        let ids = self.consumer.id_map(&target).await?;
        let verdict = verify_account_with(
            &self.mapping,
            (account, &target),
            &written,
            &self.cloud,
            Some(&ids),
        )
        .await?;
        let mut report = RollbackReport {
            account: account.to_owned(),
            rolled_back: false,
            state: known.state,
            route: known.state.route(),
            created: verdict
                .extra
                .iter()
                .chain(&verdict.foreign)
                .cloned()
                .collect(),
            changed: verdict.different.clone(),
            deleted: verdict.missing.clone(),
            repaired: None,
            next_steps: Vec::new(),
        };
        let lost = report.created.len() + report.changed.len() + report.deleted.len();
        if !yes {
            report.next_steps = vec![format!(
                "tandem accounts rollback {account} --yes   # the {lost} cloud changes listed are lost"
            )];
            return Ok(report);
        }
        self.migration
            .transition(
                account,
                &[State::CutOver],
                State::RolledBack,
                self.actor,
                &format!(
                    "rollback: {} created, {} changed, {} deleted in the cloud since the cutover, lost",
                    report.created.len(),
                    report.changed.len(),
                    report.deleted.len()
                ),
            )
            .await?;
        self.unfreeze(account).await?;
        // The cloud follows legacy again from the legacy data as it is.
        let rows = crate::verify::legacy_rows(&self.legacy, account).await?;
        let engine = Engine::new(
            self.mapping.clone(),
            self.consumer.clone(),
            self.cloud.clone(),
        );
        let repairs = repair_account(&engine, &target, &rows, false).await?;
        report.repaired = Some(repairs.len());
        report.rolled_back = true;
        report.state = State::RolledBack;
        report.route = Route::Legacy;
        report.next_steps = vec![format!(
            "tandem accounts cutover {account}   # when it is ready to go again"
        )];
        Ok(report)
    }
}
