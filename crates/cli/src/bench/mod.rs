//! `tandem bench`: benchmarks that print figures and assert nothing about time.
//!
//! - [`detector`]: what change detection costs on one large account;
//! - [`rebuild`]: rebuilding an account from a topic that holds many others;
//! - [`route`]: the router's answer on loopback.

use clap::{Args, Subcommand};

mod detector;
mod rebuild;
mod route;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Bench,
}

#[derive(Debug, Subcommand)]
pub enum Bench {
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

pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    match args.which {
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
