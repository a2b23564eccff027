//! `tandem bench`: benchmarks that print figures and assert nothing about time.
//!
//! - [`detector`]: what change detection costs on one large account;
//! - [`rebuild`]: rebuilding an account from a topic that holds many others;
//! - [`route`]: the router's answer on loopback;
//! - [`pipeline`]: events/s from the topic to the cloud, beside cloudsim's raw capacity;
//! - [`latency`]: legacy commit → cloud, stage by stage, at steady rates;
//! - [`idle`]: what an idle producer costs, in a small shared database and a large one;
//! - [`backfill`]: a migration's accounts enrolled in bulk, and a large snapshot cut short by a
//!   kill;
//! - [`status`]: `tandem status --json` over stores of many accounts;
//! - [`memory`]: the consumer's resident memory over a long run.
//!
//! The pipeline benches run against a real broker (Tansu, started by [`rig`]), the stores, and
//! cloudsim in its own process over HTTP.

use clap::{Args, Subcommand};

mod backfill;
mod detector;
mod idle;
mod latency;
mod memory;
mod pipeline;
mod rebuild;
mod rig;
mod route;
mod status;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Bench,
}

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// The consumer's resident memory over a long run: --events changes to --accounts ×
    /// --keys contacts (created once, then updated), published first, then applied by the
    /// consumer in this process (Tansu, the store, cloudsim over HTTP); VmRSS is read every
    /// second and shown at each tenth.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 1_000)]
        accounts: usize,
        #[arg(long, default_value_t = 10)]
        keys: usize,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[command(flatten)]
        rig: RigArgs,
    },
    /// How long `tandem status --json` takes over SQLite stores holding --accounts accounts,
    /// run as a new process each time.
    Status {
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Runs measured; the median and the slowest are printed.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Cost of change detection on one account of --rows rows (SQLite legacy database,
    /// in-process broker).
    Detector {
        /// Rows in the large table.
        #[arg(long, default_value_t = 1_000_000)]
        rows: i64,
        /// Idle cycles measured at each size, and runs of each way of finding deletes;
        /// medians are reported.
        #[arg(long, default_value_t = 5)]
        cycles: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Rebuilding an account from the topic: an account of --records legacy rows replayed
    /// into a new target out of a topic that also holds --events events of --accounts other
    /// accounts (in-process broker, SQLite store, cloudsim on a loopback port), then verified.
    Rebuild {
        /// Legacy rows of the account rebuilt.
        #[arg(long, default_value_t = 5_000)]
        records: usize,
        /// Other accounts with events in the topic.
        #[arg(long, default_value_t = 200)]
        accounts: usize,
        /// Their events, in all.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Events/s from the topic to the cloud: --events contact creates of --accounts accounts,
    /// published first, then applied by the consumer (Tansu, the store, cloudsim over HTTP);
    /// beside it, the same documents sent to a fresh cloudsim by a plain HTTP load at the
    /// consumer's concurrency. `ratio` is Tandem's rate over the raw one (goal: at least 0.8).
    Pipeline {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 200)]
        accounts: usize,
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        #[command(flatten)]
        rig: RigArgs,
    },
    /// Legacy commit → visible in the cloud, stage by stage (detect, deliver, apply, end to
    /// end; and the broker's acknowledgement), with steady changes spread over --accounts
    /// accounts at each of --rates changes/s for --seconds each, then verified. Goal: at
    /// 1,000 changes/s, p99 under 1 s and p50 under 150 ms.
    Latency {
        #[arg(long, default_value_t = 1_000)]
        accounts: usize,
        /// Changes per second, one phase each, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "200,1000")]
        rates: Vec<u32>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        /// Accounts the producer cycles at once (as `tandem produce --concurrency`).
        #[arg(long, default_value_t = tandem_producer::Options::default().concurrency)]
        producer_concurrency: usize,
        #[command(flatten)]
        rig: RigArgs,
    },
    /// What an idle producer costs: --accounts accounts of --rows-per-account rows watched in
    /// a shared SQLite legacy database, enrolled, then one round of cycles measured (time,
    /// statements, rows read); again once the database holds --total-rows rows (the rest of
    /// accounts not watched); then the producer's CPU share over --seconds with no changes.
    /// Goals: under 2 % of a core, and the same cost per account at both sizes.
    Idle {
        #[arg(long, default_value_t = 1_000)]
        accounts: usize,
        #[arg(long, default_value_t = 100)]
        rows_per_account: usize,
        #[arg(long, default_value_t = 10_000_000)]
        total_rows: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        #[command(flatten)]
        rig: RigArgs,
    },
    /// Accounts enrolled in bulk: --records records of about 500 bytes (a median of --median
    /// per account, the largest --largest) from the producer's start to the last one live in
    /// the cloud, then verified (goal: 80,000 in under 10 s); then one account of
    /// --large-records published by `tandem produce --once` whole, and again killed half-way
    /// and restarted, for the time the kill cost (`resume_overhead_s`).
    Backfill {
        #[arg(long, default_value_t = 80_000)]
        records: usize,
        #[arg(long, default_value_t = 100)]
        median: usize,
        #[arg(long, default_value_t = 5_000)]
        largest: usize,
        #[arg(long, default_value_t = 1_000_000)]
        large_records: usize,
        #[arg(long, default_value_t = 16)]
        partitions: i32,
        #[command(flatten)]
        rig: RigArgs,
    },
    /// The router's answer: --requests `GET /v1/route/{account}` one after another over one
    /// loopback connection, against a migration store of --accounts accounts in every state.
    Route {
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// What a pipeline bench runs against.
#[derive(Debug, Args)]
pub struct RigArgs {
    /// Brokers to use instead of a Tansu broker the bench starts (TANDEM_TANSU, or where the
    /// test command installs it, or `tansu` on PATH).
    #[arg(long)]
    brokers: Option<String>,
    /// The producer's and consumer's store (e.g. a PostgreSQL URL); SQLite files by default.
    #[arg(long)]
    store: Option<String>,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    match args.which {
        Bench::Pipeline {
            events,
            accounts,
            partitions,
            rig,
        } => {
            pipeline::run(
                pipeline::Setup {
                    events,
                    accounts: accounts.max(1),
                    partitions: partitions.max(1),
                },
                rig,
            )
            .await
        }
        Bench::Idle {
            accounts,
            rows_per_account,
            total_rows,
            seconds,
            rig,
        } => {
            idle::run(
                idle::Setup {
                    accounts: accounts.max(1),
                    rows_per_account: rows_per_account.max(1),
                    total_rows,
                    seconds: seconds.max(1),
                },
                rig,
            )
            .await
        }
        Bench::Latency {
            accounts,
            rates,
            seconds,
            partitions,
            producer_concurrency,
            rig,
        } => {
            latency::run(
                latency::Setup {
                    accounts: accounts.max(1),
                    rates,
                    seconds,
                    partitions: partitions.max(1),
                    producer_concurrency: producer_concurrency.max(1),
                },
                rig,
            )
            .await
        }
        Bench::Backfill {
            records,
            median,
            largest,
            large_records,
            partitions,
            rig,
        } => {
            backfill::run(
                backfill::Setup {
                    records: records.max(1),
                    median,
                    largest,
                    large: large_records.max(1),
                    partitions: partitions.max(1),
                },
                rig,
            )
            .await
        }
        Bench::Memory {
            events,
            accounts,
            keys,
            partitions,
            rig,
        } => {
            memory::run(
                memory::Setup {
                    events: events.max(1),
                    accounts: accounts.max(1),
                    keys: keys.max(1),
                    partitions: partitions.max(1),
                },
                rig,
            )
            .await
        }
        Bench::Status {
            accounts,
            runs,
            json,
        } => status::run(accounts.max(1), runs, json).await,
        Bench::Detector { rows, cycles, json } => detector::run(rows, cycles, json).await,
        Bench::Route {
            accounts,
            requests,
            json,
        } => route::run(accounts, requests, json).await,
        Bench::Rebuild {
            records,
            accounts,
            events,
            partitions,
            json,
        } => {
            rebuild::run(rebuild::Setup {
                records,
                accounts,
                events,
                partitions,
                json,
            })
            .await
        }
    }
}
