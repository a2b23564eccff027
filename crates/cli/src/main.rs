//! The `tandem` binary: parse arguments, set up logging, run, map errors to exit codes.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    let cli = tandem_cli::args::Cli::parse();
    let default_level = match cli.command {
        tandem_cli::args::Command::Demo(_) | tandem_cli::args::Command::Verify(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| {
            // PostgreSQL's notices ("relation … already exists, skipping" at every start's
            // migration check) say nothing an operator needs.
            EnvFilter::new(format!("{default_level},sqlx::postgres::notice=warn"))
        }))
        .with_writer(std::io::stderr)
        .init();
    let code = match tandem_cli::commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            tandem_cli::exit::code_of(&e)
        }
    };
    std::process::exit(code);
}
