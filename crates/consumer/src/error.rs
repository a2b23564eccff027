//! The consumer's errors, and what each means for the event being applied.

use std::path::PathBuf;

use crate::client::ApiError;
use crate::mapping::RenderError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mapping or sources file that cannot be used.
    #[error("{}: {key}: {message}", file.display())]
    Config {
        file: PathBuf,
        key: String,
        message: String,
    },
    /// An option out of its range.
    #[error("{option}: {message}")]
    Option {
        option: &'static str,
        message: String,
    },
    #[error("cannot open {what} {url}: {source}")]
    Connect {
        what: &'static str,
        url: String,
        source: sqlx::Error,
    },
    #[error("no consumer store at {url}: {reason}")]
    StoreMissing { url: String, reason: String },
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// Something the store holds is not what Tandem wrote there.
    #[error("store: {what}")]
    CorruptStore { what: String },
    #[error("store migration failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("cannot reach broker {brokers}: {source}")]
    Broker {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("{resource} {root_key}: cloud API call failed: {source}")]
    Api {
        resource: String,
        root_key: String,
        source: ApiError,
    },
    #[error("{resource} {root_key}: refers to {target} {key:?}, which is not known yet")]
    Unresolved {
        resource: String,
        root_key: String,
        target: String,
        key: String,
    },
    #[error("{resource} {root_key}: {source}")]
    Render {
        resource: String,
        root_key: String,
        source: RenderError,
    },
    /// The worker's lease on the account ran out and another worker took it: what this one
    /// did was not recorded, and the account's next holder repeats it.
    #[error("account {account}: lease lost to another worker; nothing recorded")]
    LeaseLost { account: String },
    /// A target that cannot be given to an account.
    #[error("account {account} cannot be applied to {target}: {reason}")]
    Target {
        account: String,
        target: String,
        reason: String,
    },
    /// A replay that cannot be done as asked, with the way out.
    #[error("account {account} cannot be replayed: {message}")]
    Replay { account: String, message: String },
    /// One of the consumer's own tasks died (a panic), or its in-flight bound was closed.
    #[error("the consumer's {what} stopped unexpectedly: {message}")]
    Task { what: &'static str, message: String },
}

/// What happens to the event being applied when an error meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try the same event again later; only this account waits.
    Retry,
    /// This worker no longer holds the account (its partition was given up, or its lease ran
    /// out): leave the event unrecorded for the account's next holder.
    Fenced,
    /// The event cannot be applied as it is: dead-letter it and park the account.
    Park,
    /// The consumer cannot go on safely: stop it.
    Fatal,
}

impl Error {
    /// Decided here once, for every variant: a new variant does not compile until someone
    /// says what it means for the event.
    pub fn disposition(&self) -> Disposition {
        match self {
            Error::Api { source, .. } => match source {
                ApiError::Transient { .. } | ApiError::Unauthorized { .. } => Disposition::Retry,
                ApiError::Fenced => Disposition::Fenced,
                ApiError::Rejected { .. }
                | ApiError::NotFound
                | ApiError::Unexpected { .. }
                | ApiError::Url { .. } => Disposition::Park,
            },
            Error::LeaseLost { .. } => Disposition::Fenced,
            Error::Unresolved { .. } | Error::Render { .. } => Disposition::Park,
            Error::Config { .. }
            | Error::Option { .. }
            | Error::Connect { .. }
            | Error::StoreMissing { .. }
            | Error::Store(_)
            | Error::CorruptStore { .. }
            | Error::Migrate(_)
            | Error::Broker { .. }
            | Error::Target { .. }
            | Error::Replay { .. }
            | Error::Task { .. } => Disposition::Fatal,
        }
    }

    /// The worker no longer holds the account: a cloud call was not sent, or the bookkeeping
    /// not committed.
    pub fn is_fenced(&self) -> bool {
        self.disposition() == Disposition::Fenced
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn api(source: ApiError) -> Error {
        Error::Api {
            resource: "contact".into(),
            root_key: "7".into(),
            source,
        }
    }

    #[test]
    fn cloud_failures_are_retried_fenced_or_park_the_account() {
        let transient = ApiError::Transient {
            message: "503".into(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(api(transient).disposition(), Disposition::Retry);
        assert_eq!(api(ApiError::Fenced).disposition(), Disposition::Fenced);
        let rejected = ApiError::Rejected {
            status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            body: "bad".into(),
        };
        assert_eq!(api(rejected).disposition(), Disposition::Park);
        assert_eq!(
            Error::LeaseLost {
                account: "a".into()
            }
            .disposition(),
            Disposition::Fenced
        );
        assert_eq!(
            Error::Store(sqlx::Error::PoolClosed).disposition(),
            Disposition::Fatal
        );
    }
}
