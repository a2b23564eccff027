//! The `tandem` binary: parse arguments, set up logging, run, map errors to exit codes.

use clap::Parser;
use tandem_cli::args::LogFormat;
use tandem_cli::secret;
use tracing_subscriber::EnvFilter;

fn main() {
    let cli = tandem_cli::args::Cli::parse();
    // Before any thread starts: this may set PGPASSWORD from PGPASSWORD_FILE.
    if let Err(e) = secret::export_database_password() {
        eprintln!("tandem: {}", secret::scrub(&format!("{e:#}")));
        std::process::exit(tandem_cli::exit::code_of(&e));
    }
    let default_level = match cli.command {
        tandem_cli::args::Command::Demo(_) | tandem_cli::args::Command::Verify(_) => "warn",
        _ => "info",
    };
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| {
        // PostgreSQL's notices ("relation … already exists, skipping" at every start's
        // migration check) say nothing an operator needs.
        EnvFilter::new(format!("{default_level},sqlx::postgres::notice=warn"))
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(secret::ScrubbedStderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // One object per line, with the spans the event happened in (cycle, apply, cloud
        // call) and their fields, so one event's way can be followed.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tandem: cannot start the async runtime: {e}");
            std::process::exit(tandem_cli::exit::FAILURE);
        }
    };
    let code = match runtime.block_on(tandem_cli::commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: {}", secret::scrub(&format!("{e:#}")));
            tandem_cli::exit::code_of(&e)
        }
    };
    drop(runtime);
    std::process::exit(code);
}
