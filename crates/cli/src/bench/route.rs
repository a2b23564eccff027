//! `tandem bench route`: how fast the router answers `GET /v1/route/{account}` on loopback,
//! with the migration store holding --accounts accounts in every state.

use std::time::Instant;

use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tandem_migration::router::{RouteAnswer, Router};
use tandem_migration::State;

#[derive(Debug, Serialize)]
struct Figures {
    accounts: usize,
    requests: usize,
    requests_per_s: f64,
    latency_us: Latency,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

pub async fn run(accounts: usize, requests: usize, json: bool) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("migration.db").display());
    let store = tandem_migration::Store::open(&url).await?;
    let names: Vec<String> = (0..accounts).map(|i| format!("account-{i:05}")).collect();
    // Every state, in turn.
    let census: Vec<(String, State)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.clone(), State::ALL[i % State::ALL.len()]))
        .collect();
    store.census(&census, "bench").await?;
    let router = Router::new(store).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router.app()).await });
    let client = tandem_consumer::http_client().build()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // Warm the connection and the server up.
    for name in names.iter().take(100) {
        client
            .get(format!("http://{addr}/v1/route/{name}"))
            .send()
            .await?
            .error_for_status()?;
    }
    let started = Instant::now();
    for _ in 0..requests {
        let name = &names[rng.random_range(0..names.len())];
        let asked = Instant::now();
        let answer: RouteAnswer = client
            .get(format!("http://{addr}/v1/route/{name}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        histogram.record(asked.elapsed().as_micros().max(1) as u64)?;
        anyhow::ensure!(
            answer.account == *name && answer.state.is_some(),
            "wrong answer for {name}: {answer:?}"
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    server.abort();
    let figures = Figures {
        accounts,
        requests,
        requests_per_s: (requests as f64 / seconds).round(),
        latency_us: Latency {
            p50: histogram.value_at_quantile(0.5),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        },
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        println!(
            "route: {} accounts, {} requests one after another on one connection: {} requests/s; \
             latency p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            figures.accounts,
            figures.requests,
            figures.requests_per_s,
            figures.latency_us.p50,
            figures.latency_us.p99,
            figures.latency_us.p999,
            figures.latency_us.max
        );
    }
    Ok(0)
}
