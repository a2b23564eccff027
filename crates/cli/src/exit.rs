//! What `tandem` exits with:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; nothing out of step |
//! | 1 | drift found, or input rejected (bad lines, a refused cutover, a rollback not confirmed) |
//! | 2 | usage or configuration error: a flag, a variable or a config file to fix |
//! | 3 | runtime failure: something it needs failed (a broker, a store, the cloud) |

/// Done; nothing out of step.
pub const OK: i32 = 0;
/// Drift found, or input rejected.
pub const REJECTED: i32 = 1;
/// A flag, a variable or a configuration file to fix.
pub const USAGE: i32 = 2;
/// Something the command needs failed.
pub const FAILURE: i32 = 3;

/// The codes, for `--help`.
pub const HELP: &str = "Exit codes: 0 done; 1 drift found or input rejected; 2 usage or \
                        configuration error; 3 runtime failure (a broker, a store, the cloud).";

/// A mistake in how the command was called, found by the command itself rather than by the
/// argument parser.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The code for a command that failed with `error`.
pub fn code_of(error: &anyhow::Error) -> i32 {
    let usage = error.chain().any(|cause| {
        cause.is::<Usage>()
            || matches!(
                cause.downcast_ref::<tandem_producer::Error>(),
                Some(tandem_producer::Error::Config { .. })
            )
            || matches!(
                cause.downcast_ref::<tandem_consumer::Error>(),
                Some(tandem_consumer::Error::Config { .. } | tandem_consumer::Error::Option { .. })
            )
            || matches!(
                cause.downcast_ref::<tandem_migration::Error>(),
                Some(
                    tandem_migration::Error::StoreMissing { .. }
                        | tandem_migration::Error::UnknownSlice(_)
                        | tandem_migration::Error::SliceExists(_)
                        | tandem_migration::Error::UnknownAccount(_)
                        | tandem_migration::Error::NotAllowed { .. }
                )
            )
            || matches!(
                cause.downcast_ref::<tandem_consumer::Error>(),
                Some(tandem_consumer::Error::StoreMissing { .. })
            )
    });
    if usage {
        USAGE
    } else {
        FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_mistakes_are_usage_errors_and_the_rest_failures() {
        let config = anyhow::Error::from(tandem_producer::Error::Config {
            file: "sources.toml".into(),
            key: "legacy.url".into(),
            message: "missing".into(),
        });
        assert_eq!(code_of(&config), USAGE);
        let wrapped = anyhow::Error::from(Usage("give --store".into())).context("cannot start");
        assert_eq!(code_of(&wrapped), USAGE);
        let broker = anyhow::anyhow!("cannot reach broker 127.0.0.1:1");
        assert_eq!(code_of(&broker), FAILURE);
    }
}
