//! `tandem cloudsim`: the stand-in cloud platform.

use crate::args::CloudsimArgs;
use crate::shutdown_on_signal;

pub(super) async fn run_cloudsim(args: CloudsimArgs) -> anyhow::Result<i32> {
    let options = tandem_cloudsim::Options {
        database_url: args.database,
        faults: tandem_cloudsim::Faults {
            error_rate: args.error_rate,
            rate_limit_rate: args.rate_limit_rate,
            retry_after_secs: args.retry_after_secs,
            latency_ms: args.latency_ms,
            latency_jitter_ms: args.latency_jitter_ms,
            drop_after_apply_rate: args.drop_after_apply_rate,
            reject_accounts: args.reject_account,
        },
    };
    let server = tandem_cloudsim::CloudSim::bind(args.listen, options).await?;
    eprintln!("cloudsim listening on {}", server.base_url());
    server.serve(shutdown_on_signal()).await?;
    Ok(0)
}
