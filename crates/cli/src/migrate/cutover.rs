//! Cutover, gated: an account is routed to the cloud only once the cloud is proven equal to
//! its frozen legacy data.

use std::time::{Duration, Instant};

use serde::Serialize;
use tandem_consumer::verify::verify_account;
use tandem_migration::{Drift, Route, State};

use super::Lifecycle;

/// What a cutover of one account came to.
#[derive(Debug, Serialize)]
pub struct CutoverReport {
    pub account: String,
    pub cut_over: bool,
    pub state: State,
    pub route: Route,
    /// Whether the freeze statement ran (and, on a refusal, the unfreeze after it).
    pub frozen: bool,
    pub drift: Drift,
    /// The documents out of step (`resource/key`), on a refusal for drift.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub different: Vec<String>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub seconds: f64,
    pub next_steps: Vec<String>,
}

impl Lifecycle {
    /// Freezes the account in legacy, waits until a snapshot taken after the freeze has been
    /// applied, verifies, and with zero drift routes the account to the cloud; the producer
    /// stops following it. Otherwise refuses, says why, and unfreezes.
    pub async fn cutover(&self, account: &str) -> anyhow::Result<CutoverReport> {
        let started = Instant::now();
        let known = self
            .migration
            .account(account)
            .await?
            .ok_or_else(|| tandem_migration::Error::UnknownAccount(account.to_owned()))?;
        let mut report = CutoverReport {
            account: account.to_owned(),
            cut_over: false,
            state: known.state,
            route: known.state.route(),
            frozen: false,
            drift: Drift::default(),
            missing: Vec::new(),
            extra: Vec::new(),
            different: Vec::new(),
            refused: None,
            seconds: 0.0,
            next_steps: Vec::new(),
        };
        if !matches!(known.state, State::Live | State::RolledBack) {
            report.refused = Some(format!(
                "the account is {}; a cutover needs it live (its snapshot applied)",
                known.state
            ));
            report.next_steps = match known.state {
                State::Pending => vec![format!("tandem accounts enroll {account}")],
                State::Syncing => {
                    vec!["wait until it is live: tandem slice status NAME --watch".into()]
                }
                State::Paused => vec![format!("tandem accounts resume {account}")],
                State::CutOver => vec![format!("tandem accounts complete {account}")],
                _ => Vec::new(),
            };
            return Ok(finish(report, started));
        }
        let target = self.consumer.target_of(account).await?;
        if let Some(reason) = self.consumer.parked_reason(&target).await? {
            report.refused = Some(format!("the account is parked in the consumer: {reason}"));
            report.next_steps = vec![format!("tandem accounts resume {account}")];
            return self.refuse(report, started).await;
        }
        if let Some(statement) = &self.policy.freeze {
            self.legacy.execute_for(statement, account).await?;
            self.migration.set_frozen(account, true).await?;
            self.migration
                .note(account, self.actor, "cutover: frozen in legacy")
                .await?;
            report.frozen = true;
        }
        // Everything up to the freeze: a snapshot taken after it, applied in full.
        let snapshot = self.migration.request_drain(account).await?;
        let deadline = Instant::now() + self.wait;
        while !self.migration.drained(account, &snapshot).await? {
            if Instant::now() >= deadline {
                report.refused = Some(format!(
                    "the snapshot taken after the freeze ({snapshot}) was not applied within {}: \
                     are `tandem produce` and `tandem consume` running with this migration store?",
                    humantime::format_duration(self.wait)
                ));
                report.next_steps = vec![format!(
                    "start the producer and the consumer with --migration-store, then: tandem accounts cutover {account}"
                )];
                return self.refuse(report, started).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let rows = crate::verify::legacy_rows(&self.legacy, account).await?;
        let verdict = verify_account(&self.mapping, (account, &target), &rows, &self.cloud).await?;
        let counts = verdict.counts();
        report.drift = Drift {
            missing: counts.missing as i64,
            extra: counts.extra as i64,
            different: counts.different as i64,
        };
        self.migration.record_verify(account, report.drift).await?;
        if !report.drift.is_zero() {
            report.refused = Some(format!(
                "the cloud differs from the frozen legacy data: {} missing, {} extra, {} different",
                counts.missing, counts.extra, counts.different
            ));
            report.missing = verdict.missing;
            report.extra = verdict.extra;
            report.different = verdict.different;
            report.next_steps = vec![
                format!("tandem verify --account {account} --keys   # what differs"),
                format!(
                    "tandem verify --account {account} --store … --repair   # fix it from legacy"
                ),
                format!("tandem accounts cutover {account}"),
            ];
            return self.refuse(report, started).await;
        }
        self.migration
            .transition(
                account,
                &[State::Live, State::RolledBack],
                State::CutOver,
                self.actor,
                "cutover: verified with zero drift",
            )
            .await?;
        report.cut_over = true;
        report.state = State::CutOver;
        report.route = Route::Cloud;
        report.next_steps = vec![
            format!("tandem accounts rollback {account}   # back to legacy, listing what the cloud changed since"),
            format!("tandem accounts complete {account}   # once it is settled in the cloud"),
        ];
        Ok(finish(report, started))
    }

    /// Records the refusal in the account's history and undoes the freeze.
    async fn refuse(
        &self,
        mut report: CutoverReport,
        started: Instant,
    ) -> anyhow::Result<CutoverReport> {
        let reason = report.refused.clone().unwrap_or_default();
        self.migration
            .note(
                &report.account,
                self.actor,
                &format!("cutover refused: {reason}"),
            )
            .await?;
        if report.frozen && self.unfreeze(&report.account).await? {
            report.frozen = false;
        }
        Ok(finish(report, started))
    }
}

fn finish(mut report: CutoverReport, started: Instant) -> CutoverReport {
    report.seconds = (started.elapsed().as_secs_f64() * 100.0).round() / 100.0;
    report
}
