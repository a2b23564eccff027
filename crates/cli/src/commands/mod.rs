//! What each command does, one module per command; `run` picks it.

mod accounts;
mod cloudsim;
mod consume;
mod demo;
mod health;
mod produce;
mod replay;
mod router;
mod slice;
mod status;
mod verify;
mod workload;

use crate::args::{Cli, Command};

/// Runs a parsed command. Returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Demo(args) => demo::run_demo(args).await,
        Command::Produce(args) => produce::run_produce(args).await,
        Command::Consume(args) => consume::run_consume(args).await,
        Command::Cloudsim(args) => cloudsim::run_cloudsim(args).await,
        Command::Verify(args) => verify::run_verify(args).await,
        Command::Replay(args) => replay::run_replay(args).await,
        Command::Workload(args) => workload::run_workload(args).await,
        Command::Snapshot(args) => produce::run_snapshot(args).await,
        Command::Publish(args) => produce::run_publish(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Accounts(args) => accounts::run_accounts(args).await,
        Command::Slice(args) => slice::run_slice(args).await,
        Command::Router(args) => router::run_router(args).await,
        Command::Status(args) => status::run_status(args).await,
        Command::Health(args) => health::run_health(args).await,
    }
}
