//! Waking the detector early: a PostgreSQL `NOTIFY` on the configured channel. A notification
//! whose payload names an account wakes only that account's cycle; an empty payload wakes all.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The accounts notifications asked for since the detector last looked.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: tokio::sync::Notify,
    /// `None`: every account.
    asked: Mutex<Option<BTreeSet<String>>>,
    any: Mutex<bool>,
}

impl Wake {
    /// A notification with `payload`: an account's name, or empty for every account.
    pub(crate) fn ask(&self, payload: &str) {
        if let (Ok(mut asked), Ok(mut any)) = (self.asked.lock(), self.any.lock()) {
            let payload = payload.trim();
            match (asked.as_mut(), payload.is_empty(), *any) {
                // Every account was asked for already, or is now.
                (_, true, _) | (None, _, true) => *asked = None,
                (Some(accounts), false, _) => {
                    accounts.insert(payload.to_owned());
                }
                (None, false, false) => *asked = Some(BTreeSet::from([payload.to_owned()])),
            }
            *any = true;
        }
        self.notify.notify_one();
    }

    /// Waits for the next notification; then the accounts asked for (`None`: all of them).
    pub(crate) async fn woken(&self) -> Option<BTreeSet<String>> {
        self.notify.notified().await;
        match (self.asked.lock(), self.any.lock()) {
            (Ok(mut asked), Ok(mut any)) => {
                *any = false;
                asked.take()
            }
            _ => None,
        }
    }
}

/// Listens on `channel` until `stop`, reconnecting after errors with a backoff (from a second,
/// doubling, at most a minute apart, for as long as it takes: an early wake-up is an
/// optimisation, and the interval goes on meanwhile).
pub(crate) async fn listen(url: String, channel: String, wake: Arc<Wake>, stop: CancellationToken) {
    let mut reconnects = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build();
    while !stop.is_cancelled() {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(&channel).await?;
            info!(channel, "listening for change notifications");
            loop {
                let notification = listener.recv().await?;
                wake.ask(notification.payload());
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        let wait = tokio::select! {
            _ = stop.cancelled() => return,
            result = listener => {
                let wait = reconnects.next().unwrap_or(Duration::from_secs(60));
                if let Err(e) = result {
                    warn!(channel, error = %e, ?wait, "change notifications interrupted; reconnecting");
                }
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_payload_wakes_its_account_and_an_empty_one_wakes_all() {
        let wake = Wake::default();
        wake.ask("acme");
        wake.ask("globex");
        assert_eq!(
            wake.woken().await,
            Some(BTreeSet::from(["acme".to_owned(), "globex".to_owned()]))
        );
        wake.ask("acme");
        wake.ask("");
        wake.ask("globex");
        assert_eq!(wake.woken().await, None, "an empty payload asks for all");
        wake.ask("  initech ");
        assert_eq!(
            wake.woken().await,
            Some(BTreeSet::from(["initech".to_owned()]))
        );
    }
}
