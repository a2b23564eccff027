//! The router's answer: where each account's users go, from memory.
//!
//! A front-end router asks `GET /v1/route/{account}` on every login. The answer comes from a
//! table of every account's state that is read again from the store every `refresh` (half a
//! second by default), so it costs a hash lookup; a cutover or rollback reaches the answer
//! within one refresh. An account the migration does not know gets the new-account policy's
//! answer: the cloud under `new_accounts = "cloud"`, legacy otherwise.
//!
//! `?enroll=true` on the route, or `POST /v1/accounts/{account}/migrate-now`, enrols a pending
//! account at the head of the queue (migrate on first use) and says when it should be live.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Error, NewAccounts, Result, Route, State, Store};

/// The router's view of the migration, kept in memory.
#[derive(Debug, Clone)]
pub struct Router {
    store: Store,
    table: Arc<RwLock<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    accounts: HashMap<String, (State, i64)>,
    new_accounts: NewAccounts,
}

/// `GET /v1/route/{account}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteAnswer {
    pub account: String,
    pub target: Route,
    /// The account's state; none for an account the migration does not know.
    pub state: Option<State>,
    /// Since when (epoch millis) it has been in that state.
    pub since: Option<i64>,
}

/// `POST /v1/accounts/{account}/migrate-now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateNowAnswer {
    pub account: String,
    pub state: State,
    pub target: Route,
    /// Accounts put ahead by migrate-now before this one, still syncing.
    pub ahead: usize,
    /// When it should be live (epoch millis), from how long accounts took to sync so far;
    /// none before any account went live, or once it is live.
    pub expected_live_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RouteQuery {
    #[serde(default)]
    enroll: bool,
}

impl Router {
    /// Reads every account's state once; [`Router::serve`] keeps the table fresh.
    pub async fn new(store: Store) -> Result<Self> {
        let router = Router {
            store,
            table: Arc::default(),
        };
        router.refresh().await?;
        Ok(router)
    }

    /// Reads the accounts and the policy from the store again.
    pub async fn refresh(&self) -> Result<()> {
        let accounts = self.store.accounts().await?;
        let settings = self.store.settings().await?;
        let fresh = Table {
            accounts: accounts
                .into_iter()
                .map(|a| (a.account, (a.state, a.since)))
                .collect(),
            new_accounts: settings.new_accounts,
        };
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Where the account's users go, from memory.
    pub fn route(&self, account: &str) -> RouteAnswer {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        match table.accounts.get(account) {
            Some(&(state, since)) => RouteAnswer {
                account: account.to_owned(),
                target: state.route(),
                state: Some(state),
                since: Some(since),
            },
            None => RouteAnswer {
                account: account.to_owned(),
                target: match table.new_accounts {
                    NewAccounts::Cloud => Route::Cloud,
                    NewAccounts::Enroll | NewAccounts::Ignore => Route::Legacy,
                },
                state: None,
                since: None,
            },
        }
    }

    /// Enrols the account ahead of the backfills under way, and says when it should be live.
    pub async fn migrate_now(&self, account: &str) -> Result<MigrateNowAnswer> {
        let migrated = self
            .store
            .migrate_now(account, "router: migrate-now")
            .await?;
        let urgent = self.store.urgent().await?;
        let ahead = urgent.iter().take_while(|a| *a != account).count();
        let expected_live_at = match (migrated.state, migrated.urgent_at) {
            (State::Syncing, Some(queued)) => {
                let mut durations = self.store.sync_durations(20).await?;
                durations.sort_unstable();
                durations
                    .get(durations.len() / 2)
                    .map(|median| queued + median * (ahead as i64 + 1))
            }
            _ => None,
        };
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .accounts
            .insert(account.to_owned(), (migrated.state, migrated.since));
        Ok(MigrateNowAnswer {
            account: account.to_owned(),
            state: migrated.state,
            target: migrated.state.route(),
            ahead,
            expected_live_at,
        })
    }

    /// The HTTP routes, for [`Router::serve`] or a test's own server.
    pub fn app(&self) -> axum::Router {
        axum::Router::new()
            .route("/v1/route/{account}", get(route))
            .route("/v1/accounts/{account}/migrate-now", post(migrate_now))
            .route("/health", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    /// Serves the router on `addr` until `shutdown`, reading the store every `refresh`. A
    /// store that cannot be read keeps the last table, with a warning.
    pub async fn serve(
        self,
        addr: SocketAddr,
        refresh: Duration,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let refresher = {
            let router = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(refresh) => {}
                    }
                    if let Err(e) = router.refresh().await {
                        warn!(error = %e, "cannot read the migration store; answering from the last table");
                    }
                }
            })
        };
        let served = axum::serve(listener, self.app())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .map_err(|source| Error::Listen {
                addr: addr.to_string(),
                source,
            });
        shutdown.cancel();
        let _ = refresher.await;
        served
    }
}

async fn route(
    AxumState(router): AxumState<Router>,
    Path(account): Path<String>,
    Query(query): Query<RouteQuery>,
) -> Response {
    let answer = router.route(&account);
    let pending = matches!(answer.state, None | Some(State::Pending));
    if query.enroll && pending && answer.target == Route::Legacy {
        if let Err(e) = router.migrate_now(&account).await {
            return failure(e);
        }
        return Json(router.route(&account)).into_response();
    }
    Json(answer).into_response()
}

async fn migrate_now(
    AxumState(router): AxumState<Router>,
    Path(account): Path<String>,
) -> Response {
    match router.migrate_now(&account).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => failure(e),
    }
}

fn failure(e: Error) -> Response {
    let status = match e {
        Error::NotAllowed { .. } | Error::UnknownAccount(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::store;
    use crate::{Enroll, Policy};

    #[tokio::test]
    async fn every_state_has_its_route_and_unknown_accounts_follow_the_policy() -> Result<()> {
        let (_dir, store) = store().await;
        let census: Vec<(String, State)> = State::ALL
            .iter()
            .map(|s| (s.as_str().to_owned(), *s))
            .collect();
        store.census(&census, "test").await?;
        let router = Router::new(store.clone()).await?;
        for state in State::ALL {
            let answer = router.route(state.as_str());
            assert_eq!(answer.state, Some(state));
            assert_eq!(answer.target, state.route(), "{state}");
            assert!(answer.since.is_some());
        }
        assert_eq!(router.route("stranger").target, Route::Legacy);
        store
            .configure(&Policy {
                enroll: Enroll::Slices,
                new_accounts: NewAccounts::Cloud,
                ..Policy::default()
            })
            .await?;
        router.refresh().await?;
        let stranger = router.route("stranger");
        assert_eq!((stranger.target, stranger.state), (Route::Cloud, None));
        // A cutover reaches the answer with the next refresh.
        store
            .transition("live", &[State::Live], State::CutOver, "test", "go")
            .await?;
        assert_eq!(router.route("live").target, Route::Legacy);
        router.refresh().await?;
        assert_eq!(router.route("live").target, Route::Cloud);
        Ok(())
    }

    #[tokio::test]
    async fn migrate_now_enrols_a_pending_account() -> Result<()> {
        let (_dir, store) = store().await;
        store
            .census(&[("p".to_owned(), State::Pending)], "test")
            .await?;
        let router = Router::new(store.clone()).await?;
        let answer = router.migrate_now("p").await?;
        assert_eq!((answer.state, answer.ahead), (State::Syncing, 0));
        // Nothing went live yet: no estimate.
        assert_eq!(answer.expected_live_at, None);
        assert_eq!(router.route("p").state, Some(State::Syncing));
        Ok(())
    }
}
