//! The consumer's status page: `/` serves one static page (no build step: HTML, CSS and
//! script in one file), which asks `/v1/status` every two seconds and resumes a parked account
//! through `POST /v1/accounts/{account}/resume`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tandem_consumer::{DeadLetter, PartitionLag, Stats, Store};
use tandem_event::Percentiles;

use super::access::{self, ApiToken};

const PAGE: &str = include_str!("page.html");

/// Actions carry nothing in their bodies; anything larger than this is refused (413).
const ACTION_BODY_LIMIT: usize = 4096;

/// Dead letters the page lists, newest first.
const RECENT_DEAD_LETTERS: i64 = 20;

/// What the page reads from.
#[derive(Debug, Clone)]
pub struct Page {
    pub store: Store,
    pub stats: Arc<Stats>,
    pub group: String,
    pub topic: String,
}

/// The page and its reads, open to whoever reaches the port; the actions behind `token`.
pub fn routes(page: Page, token: ApiToken) -> Router {
    let page = Arc::new(page);
    let actions = Router::new()
        .route("/v1/accounts/{account}/resume", post(resume))
        .with_state(page.clone());
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/v1/status", get(status))
        .with_state(page)
        .merge(access::guard(actions, token, ACTION_BODY_LIMIT))
}

#[derive(Debug, Serialize)]
struct PageStatus {
    generated_at: i64,
    accounts: usize,
    by_state: BTreeMap<&'static str, usize>,
    worst: Vec<WorstAccount>,
    parked: Vec<Parked>,
    dead_letters: Vec<DeadLetter>,
    partitions: Vec<PartitionLag>,
    live: Live,
}

#[derive(Debug, Serialize)]
struct WorstAccount {
    account: String,
    state: &'static str,
    lag_events: u64,
    lag_seconds: f64,
    last_applied_at: Option<i64>,
    held: u64,
    dead_letters: u64,
}

#[derive(Debug, Serialize)]
struct Parked {
    account: String,
    reason: String,
    held: i64,
    resuming: bool,
}

#[derive(Debug, Serialize)]
struct Live {
    applied: u64,
    skipped: u64,
    dead_lettered: u64,
    held: u64,
    ready: bool,
    end_to_end_ms: Percentiles,
    apply_ms: Percentiles,
}

async fn status(State(page): State<Arc<Page>>) -> Response {
    match read(&page).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("cannot read the consumer's store: {e:#}") })),
        )
            .into_response(),
    }
}

async fn read(page: &Page) -> anyhow::Result<PageStatus> {
    let store = &page.store;
    let progress = store.account_progress(&page.group, &page.topic).await?;
    let mut last_applied: BTreeMap<String, i64> = BTreeMap::new();
    for p in progress {
        let at = last_applied.entry(p.account).or_default();
        *at = (*at).max(p.applied_at);
    }
    let parked: Vec<Parked> = store
        .parked_accounts()
        .await?
        .into_iter()
        .map(|(account, reason, held, resuming)| Parked {
            account,
            reason,
            held,
            resuming,
        })
        .collect();
    let dead_letter_counts = store.dead_letter_counts().await?;
    let worst_live = page
        .stats
        .worst
        .lock()
        .map(|w| w.clone())
        .unwrap_or_default();
    let state_of = |account: &str, events: u64| match parked.iter().find(|p| p.account == account) {
        Some(p) if p.resuming => "resuming",
        Some(_) => "parked",
        None if events > 0 => "behind",
        None => "current",
    };
    let worst: Vec<WorstAccount> = worst_live
        .iter()
        .map(|lag| WorstAccount {
            account: lag.account.clone(),
            state: state_of(&lag.account, lag.events),
            lag_events: lag.events,
            lag_seconds: lag.seconds,
            last_applied_at: last_applied.get(&lag.account).copied().filter(|t| *t > 0),
            held: parked
                .iter()
                .find(|p| p.account == lag.account)
                .map_or(0, |p| u64::try_from(p.held).unwrap_or(0)),
            dead_letters: dead_letter_counts.get(&lag.account).copied().unwrap_or(0),
        })
        .collect();
    let mut accounts: std::collections::BTreeSet<&str> =
        last_applied.keys().map(String::as_str).collect();
    accounts.extend(parked.iter().map(|p| p.account.as_str()));
    accounts.extend(worst.iter().map(|w| w.account.as_str()));
    let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
    for account in &accounts {
        let events = worst
            .iter()
            .find(|w| w.account == *account)
            .map_or(0, |w| w.lag_events);
        *by_state.entry(state_of(account, events)).or_default() += 1;
    }
    let stats = &page.stats;
    let percentiles = stats.stages.percentiles();
    Ok(PageStatus {
        generated_at: tandem_event::now_millis(),
        accounts: accounts.len(),
        by_state,
        worst,
        dead_letters: store.recent_dead_letters(RECENT_DEAD_LETTERS).await?,
        parked,
        partitions: stats
            .partitions
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default(),
        live: Live {
            applied: stats.applied.load(Ordering::Relaxed),
            skipped: stats.skipped.load(Ordering::Relaxed),
            dead_lettered: stats.dead_lettered.load(Ordering::Relaxed),
            held: stats.held.load(Ordering::Relaxed),
            ready: stats.ready.load(Ordering::Relaxed),
            end_to_end_ms: percentiles.end_to_end_ms,
            apply_ms: percentiles.apply_ms,
        },
    })
}

/// Asks the consumer to apply a parked account's held events again, as `tandem accounts
/// resume` does.
/// The body is read (and so capped) but carries nothing.
async fn resume(
    State(page): State<Arc<Page>>,
    Path(account): Path<String>,
    _body: Bytes,
) -> Response {
    if let Err(problem) = tandem_event::check_account(&account) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("account: {problem}") })),
        )
            .into_response();
    }
    let asked = async {
        let target = page.store.target_of(&account).await?;
        page.store.request_resume(&target).await
    };
    match asked.await {
        Ok(true) => Json(json!({
            "account": account,
            "resumed": true,
            "message": "resume requested; the consumer applies its held events next",
        }))
        .into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("account {account} is not parked") })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": format!("cannot ask for the resume: {e}") })),
        )
            .into_response(),
    }
}
