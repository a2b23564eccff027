//! `tandem cloudsim`: the stand-in cloud platform.

use crate::args::CloudsimArgs;
use crate::shutdown_on_signal;

pub(super) async fn run_cloudsim(args: CloudsimArgs) -> anyhow::Result<i32> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tandem_cloudsim::tls::TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ if args.tls => Some(tandem_cloudsim::tls::TlsSource::Generated {
            names: args.tls_names.clone(),
        }),
        _ => None,
    };
    let client_secret = crate::secret::read("TANDEM_CLOUDSIM_CLIENT_SECRET")?;
    let static_token = crate::secret::read("TANDEM_CLOUDSIM_TOKEN")?;
    let client = match (&args.client_id, client_secret) {
        (Some(id), Some(secret)) => Some((id.clone(), secret)),
        (None, None) => None,
        _ => {
            return Err(crate::exit::Usage(
                "--client-id and TANDEM_CLOUDSIM_CLIENT_SECRET(_FILE) go together".into(),
            )
            .into())
        }
    };
    let auth =
        (client.is_some() || static_token.is_some()).then_some(tandem_cloudsim::AuthOptions {
            client,
            token_ttl: args.token_ttl,
            static_token,
        });
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
        tls,
        auth,
    };
    let server = tandem_cloudsim::CloudSim::bind(args.listen, options).await?;
    if let Some(ca) = server.ca_pem() {
        std::fs::write(&args.tls_ca_out, ca)?;
        eprintln!(
            "cloudsim: clients trust {} (TANDEM_CLOUD_CA_FILE)",
            args.tls_ca_out.display()
        );
    }
    eprintln!("cloudsim listening on {}", server.base_url());
    server.serve(shutdown_on_signal()).await?;
    Ok(0)
}
