//! Each account's state and its history (a cutover's own bookkeeping is in
//! [`super::cutover`]). A change of state and its history entry are written
//! in one transaction, and only from the state the caller saw: two operators (or an operator
//! and the consumer) cannot both move an account from the same state.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{Any, Transaction};
use tandem_event::now_millis;

use super::{Settings, Store};
use crate::{Error, NewAccounts, Result, State};

/// An account as the migration knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub account: String,
    pub state: State,
    /// When it came to its state (epoch millis).
    pub since: i64,
    /// When its enrolment snapshot was applied.
    pub live_at: Option<i64>,
    /// When migrate-now put it ahead of the backfills.
    pub urgent_at: Option<i64>,
    /// Whether a cutover froze it in legacy.
    pub frozen: bool,
}

/// One change of an account's state (or, from a state to itself, something that happened to
/// it, such as a refused cutover).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub at: i64,
    pub from: Option<State>,
    pub to: State,
    pub actor: String,
    pub reason: String,
}

type AccountRow = (String, String, i64, Option<i64>, Option<i64>, i64);

const ACCOUNT_COLUMNS: &str = "account, state, since, live_at, urgent_at, frozen";

fn account_of((account, state, since, live_at, urgent_at, frozen): AccountRow) -> Result<Account> {
    let state = state
        .parse()
        .map_err(|e| Error::Corrupt(format!("account {account}: {e}")))?;
    Ok(Account {
        account,
        state,
        since,
        live_at,
        urgent_at,
        frozen: frozen != 0,
    })
}

/// Records an account not known yet; false when it is known.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Any>,
    account: &str,
    state: State,
    actor: &str,
    reason: &str,
) -> Result<bool> {
    let now = now_millis();
    let inserted = sqlx::query(
        "INSERT INTO migration_accounts (account, state, since) VALUES ($1, $2, $3) \
         ON CONFLICT (account) DO NOTHING",
    )
    .bind(account)
    .bind(state.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        append_history(tx, account, None, state, actor, reason).await?;
    }
    Ok(inserted == 1)
}

async fn append_history(
    tx: &mut Transaction<'_, Any>,
    account: &str,
    from: Option<State>,
    to: State,
    actor: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO migration_history (account, seq, at, from_state, to_state, actor, reason) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 \
         FROM migration_history WHERE account = $1",
    )
    .bind(account)
    .bind(now_millis())
    .bind(from.map(State::as_str))
    .bind(to.as_str())
    .bind(actor)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn state_in(tx: &mut Transaction<'_, Any>, account: &str) -> Result<Option<State>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT state FROM migration_accounts WHERE account = $1")
            .bind(account)
            .fetch_optional(&mut **tx)
            .await?;
    row.map(|(state,)| {
        state
            .parse()
            .map_err(|e| Error::Corrupt(format!("account {account}: {e}")))
    })
    .transpose()
}

fn list(states: &[State]) -> String {
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    names.join(" or ")
}

impl Store {
    pub async fn account(&self, account: &str) -> Result<Option<Account>> {
        let row: Option<AccountRow> = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM migration_accounts WHERE account = $1"
        ))
        .bind(account)
        .fetch_optional(&self.pool)
        .await?;
        row.map(account_of).transpose()
    }

    /// Every account the migration knows, by name.
    pub async fn accounts(&self) -> Result<Vec<Account>> {
        let rows: Vec<AccountRow> = sqlx::query_as(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM migration_accounts ORDER BY account"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(account_of).collect()
    }

    /// Every account's state: what the producer reads once a cycle.
    pub async fn states(&self) -> Result<HashMap<String, State>> {
        Ok(self
            .accounts()
            .await?
            .into_iter()
            .map(|a| (a.account, a.state))
            .collect())
    }

    /// Moves an account from one of `from` to `to`, recording who did it and why. Returns the
    /// state it left. Refused, naming the account's state, when it is in none of `from` or
    /// when its state cannot become `to`.
    pub async fn transition(
        &self,
        account: &str,
        from: &[State],
        to: State,
        actor: &str,
        reason: &str,
    ) -> Result<State> {
        let mut tx = self.pool.begin().await?;
        let current = state_in(&mut tx, account)
            .await?
            .ok_or_else(|| Error::UnknownAccount(account.to_owned()))?;
        let allowed: Vec<State> = from.iter().copied().filter(|s| s.can_become(to)).collect();
        if !allowed.contains(&current) {
            return Err(Error::NotAllowed {
                account: account.to_owned(),
                state: current,
                wanted: to.as_str(),
                allowed: list(&allowed),
            });
        }
        let now = now_millis();
        let changed = sqlx::query(
            "UPDATE migration_accounts SET state = $1, since = $2, \
             live_at = CASE WHEN $1 = 'live' THEN $2 ELSE live_at END \
             WHERE account = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(account)
        .bind(current.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed != 1 {
            // Moved by someone else since it was read.
            let state = self.account(account).await?.map_or(current, |a| a.state);
            return Err(Error::NotAllowed {
                account: account.to_owned(),
                state,
                wanted: to.as_str(),
                allowed: list(&allowed),
            });
        }
        append_history(&mut tx, account, Some(current), to, actor, reason).await?;
        tx.commit().await?;
        Ok(current)
    }

    /// Enrols an account: pending (or not known yet) becomes syncing, and the producer
    /// snapshots it. Returns the account's state before.
    pub async fn enroll(&self, account: &str, actor: &str, reason: &str) -> Result<Option<State>> {
        let mut tx = self.pool.begin().await?;
        if insert(&mut tx, account, State::Syncing, actor, reason).await? {
            tx.commit().await?;
            return Ok(None);
        }
        tx.commit().await?;
        self.transition(account, &[State::Pending], State::Syncing, actor, reason)
            .await
            .map(Some)
    }

    /// An account found in legacy after the census: recorded as the new-account policy says.
    /// Returns its state, or `None` when it was known already.
    pub async fn discover(
        &self,
        account: &str,
        settings: &Settings,
        actor: &str,
    ) -> Result<Option<State>> {
        let (state, reason) = match settings.new_accounts {
            NewAccounts::Cloud => (
                State::Done,
                "new account: the policy routes it to the cloud from the start",
            ),
            NewAccounts::Enroll => (State::Syncing, "new account: the policy enrols it"),
            NewAccounts::Ignore => (State::Pending, "new account: the policy leaves it pending"),
        };
        let mut tx = self.pool.begin().await?;
        if !insert(&mut tx, account, state, actor, reason).await? {
            return Ok(None);
        }
        if let (NewAccounts::Enroll, Some(slice)) =
            (settings.new_accounts, &settings.new_accounts_slice)
        {
            super::slices::ensure_slice(&mut tx, slice).await?;
            super::slices::add_member(&mut tx, slice, account).await?;
        }
        tx.commit().await?;
        Ok(Some(state))
    }

    /// Records something that happened to an account without changing its state.
    pub async fn note(&self, account: &str, actor: &str, reason: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let state = state_in(&mut tx, account)
            .await?
            .ok_or_else(|| Error::UnknownAccount(account.to_owned()))?;
        append_history(&mut tx, account, Some(state), state, actor, reason).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An account's history, oldest first.
    pub async fn history(&self, account: &str) -> Result<Vec<HistoryEntry>> {
        let rows: Vec<(i64, Option<String>, String, String, String)> = sqlx::query_as(
            "SELECT at, from_state, to_state, actor, reason FROM migration_history \
             WHERE account = $1 ORDER BY seq",
        )
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        let parse = |s: &str| -> Result<State> {
            s.parse()
                .map_err(|e| Error::Corrupt(format!("history of {account}: {e}")))
        };
        rows.into_iter()
            .map(|(at, from, to, actor, reason)| {
                Ok(HistoryEntry {
                    at,
                    from: from.as_deref().map(parse).transpose()?,
                    to: parse(&to)?,
                    actor,
                    reason,
                })
            })
            .collect()
    }

    /// The consumer applied a snapshot of the account in full: recorded (a cutover may wait
    /// for it), and a syncing account becomes live. Returns whether it became live.
    pub async fn snapshot_applied(&self, account: &str, snapshot_id: &str) -> Result<bool> {
        sqlx::query("UPDATE migration_accounts SET applied_snapshot = $1 WHERE account = $2")
            .bind(snapshot_id)
            .bind(account)
            .execute(&self.pool)
            .await?;
        match self
            .transition(
                account,
                &[State::Syncing],
                State::Live,
                "consumer",
                &format!("snapshot {snapshot_id} applied"),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::NotAllowed { .. } | Error::UnknownAccount(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Migrate-now: the account is enrolled if it is not yet, and its snapshot goes before the
    /// backfills under way.
    pub async fn migrate_now(&self, account: &str, actor: &str) -> Result<Account> {
        let state = self.account(account).await?.map(|a| a.state);
        if matches!(state, None | Some(State::Pending)) {
            match self
                .enroll(account, actor, "migrate-now: touched by a user")
                .await
            {
                Ok(_) | Err(Error::NotAllowed { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        sqlx::query(
            "UPDATE migration_accounts SET urgent_at = $1 \
             WHERE account = $2 AND state = 'syncing' AND urgent_at IS NULL",
        )
        .bind(now_millis())
        .bind(account)
        .execute(&self.pool)
        .await?;
        self.account(account)
            .await?
            .ok_or_else(|| Error::UnknownAccount(account.to_owned()))
    }

    /// Syncing accounts put ahead by migrate-now, first asked first.
    pub async fn urgent(&self) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT account FROM migration_accounts \
             WHERE state = 'syncing' AND urgent_at IS NOT NULL ORDER BY urgent_at, account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    /// How long accounts took from enrolment to live, in milliseconds, newest first: from
    /// the history, for an estimate of when an account will be live.
    pub async fn sync_durations(&self, limit: i64) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT l.at - MAX(s.at) FROM migration_history l JOIN migration_history s \
             ON s.account = l.account AND s.to_state = 'syncing' AND s.at <= l.at \
             WHERE l.to_state = 'live' AND l.from_state = 'syncing' \
             GROUP BY l.account, l.seq, l.at ORDER BY l.at DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(d,)| d).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{pending, store};
    use super::*;
    use crate::Enroll;

    #[tokio::test]
    async fn a_change_of_state_is_checked_and_recorded() -> Result<()> {
        let (_dir, store) = store().await;
        store.census(&pending(&["acme"]), "producer").await?;
        let refused = store
            .transition("acme", &[State::Live], State::CutOver, "ops", "go")
            .await;
        assert!(
            matches!(
                refused,
                Err(Error::NotAllowed {
                    state: State::Pending,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            store.enroll("acme", "ops", "slice s").await?,
            Some(State::Pending)
        );
        assert!(store.snapshot_applied("acme", "enrol-acme-0-1").await?);
        assert!(!store.snapshot_applied("acme", "s2").await?, "live once");
        let account = store.account("acme").await?.expect("known");
        assert_eq!(account.state, State::Live);
        assert!(account.live_at.is_some());
        store
            .note("acme", "ops", "cutover refused: 1 missing")
            .await?;
        let history = store.history("acme").await?;
        let steps: Vec<(Option<State>, State, &str)> = history
            .iter()
            .map(|h| (h.from, h.to, h.actor.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (None, State::Pending, "producer"),
                (Some(State::Pending), State::Syncing, "ops"),
                (Some(State::Syncing), State::Live, "consumer"),
                (Some(State::Live), State::Live, "ops"),
            ]
        );
        assert_eq!(store.sync_durations(10).await?.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn new_accounts_follow_the_policy() -> Result<()> {
        let (_dir, store) = store().await;
        let mut settings = Settings {
            enroll: Enroll::Slices,
            new_accounts: NewAccounts::Cloud,
            new_accounts_slice: None,
            started_at: Some(1),
        };
        assert_eq!(
            store.discover("n1", &settings, "producer").await?,
            Some(State::Done)
        );
        assert_eq!(store.discover("n1", &settings, "producer").await?, None);
        settings.new_accounts = NewAccounts::Ignore;
        assert_eq!(
            store.discover("n2", &settings, "p").await?,
            Some(State::Pending)
        );
        settings.new_accounts = NewAccounts::Enroll;
        settings.new_accounts_slice = Some("late".into());
        assert_eq!(
            store.discover("n3", &settings, "p").await?,
            Some(State::Syncing)
        );
        assert_eq!(store.slice("late").await?.members, ["n3"]);
        Ok(())
    }

    #[tokio::test]
    async fn migrate_now_enrols_and_goes_first() -> Result<()> {
        let (_dir, store) = store().await;
        store.census(&pending(&["a", "b"]), "p").await?;
        store.enroll("a", "ops", "slice").await?;
        assert!(store.urgent().await?.is_empty());
        let b = store.migrate_now("b", "router").await?;
        assert_eq!(b.state, State::Syncing);
        assert!(b.urgent_at.is_some());
        assert_eq!(store.urgent().await?, ["b"]);
        Ok(())
    }
}
