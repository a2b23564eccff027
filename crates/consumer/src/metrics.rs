//! What the consumer reports to a metrics recorder: `tandem consume --http-listen` installs a
//! Prometheus one and serves it on `/metrics`. Without a recorder every call here does
//! nothing. Labels are bounded: event kinds, HTTP methods and statuses, partitions, and the ten
//! accounts furthest behind — never a label per account for every account.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tandem_event::Kind;

pub const APPLIED: &str = "tandem_consumer_events_applied_total";
pub const SKIPPED: &str = "tandem_consumer_events_skipped_total";
pub const DEAD_LETTERS: &str = "tandem_consumer_dead_letters_total";
pub const HELD: &str = "tandem_consumer_events_held_total";
pub const PARKED_ACCOUNTS: &str = "tandem_consumer_parked_accounts";
pub const HELD_EVENTS: &str = "tandem_consumer_held_events";
pub const APPLY_SECONDS: &str = "tandem_consumer_apply_seconds";
pub const LATENCY_SECONDS: &str = "tandem_consumer_latency_seconds";
pub const CLOUD_REQUESTS: &str = "tandem_cloud_requests_total";
pub const CLOUD_REQUEST_SECONDS: &str = "tandem_cloud_request_seconds";
pub const CLOUD_RETRIES: &str = "tandem_cloud_retries_total";
pub const PARTITION_LAG: &str = "tandem_consumer_partition_lag";
pub const ACCOUNT_LAG_EVENTS: &str = "tandem_consumer_account_lag_events";
pub const ACCOUNT_LAG_SECONDS: &str = "tandem_consumer_account_lag_seconds";
pub const LEASE_TAKES: &str = "tandem_consumer_lease_takes_total";
pub const LEASE_LOSSES: &str = "tandem_consumer_lease_losses_total";
pub const REBALANCES: &str = "tandem_consumer_rebalances_total";
pub const ASSIGNED_PARTITIONS: &str = "tandem_consumer_assigned_partitions";
pub const READY: &str = "tandem_consumer_ready";

/// How many of the accounts furthest behind get a series of their own.
pub const WORST_ACCOUNTS: usize = 10;

/// Gives every metric its help text; call once, after installing the recorder.
pub fn describe() {
    describe_counter!(APPLIED, "Events applied to the cloud, by kind.");
    describe_counter!(
        SKIPPED,
        "Events skipped: applied before, or nothing for the mapping to do."
    );
    describe_counter!(
        DEAD_LETTERS,
        "Messages sent to the dead-letter topic with their original bytes."
    );
    describe_counter!(HELD, "Events held for a parked account.");
    describe_gauge!(
        PARKED_ACCOUNTS,
        "Accounts parked after a permanent failure."
    );
    describe_gauge!(HELD_EVENTS, "Events held, in all, for parked accounts.");
    describe_histogram!(
        APPLY_SECONDS,
        metrics::Unit::Seconds,
        "One event's apply: the store and the cloud calls."
    );
    describe_histogram!(
        LATENCY_SECONDS,
        metrics::Unit::Seconds,
        "An applied event's way by stage: detected (legacy commit to found), delivered (found \
         to read from Kafka), applied (read to visible in the cloud), end_to_end."
    );
    describe_counter!(CLOUD_REQUESTS, "Cloud API requests by method and status.");
    describe_histogram!(
        CLOUD_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Cloud API request durations by method."
    );
    describe_counter!(
        CLOUD_RETRIES,
        "Cloud API requests retried after a transient failure."
    );
    describe_gauge!(
        PARTITION_LAG,
        "Events between the store's position and the partition's high watermark."
    );
    describe_gauge!(
        ACCOUNT_LAG_EVENTS,
        "Events read or held and not yet applied, for the ten accounts furthest behind."
    );
    describe_gauge!(
        ACCOUNT_LAG_SECONDS,
        "Age of the oldest event not yet applied, for the ten accounts furthest behind."
    );
    describe_counter!(LEASE_TAKES, "Account leases taken.");
    describe_counter!(
        LEASE_LOSSES,
        "Account leases lost while applying (another member took the account)."
    );
    describe_counter!(REBALANCES, "Consumer group rebalances seen, by kind.");
    describe_gauge!(ASSIGNED_PARTITIONS, "Partitions assigned to this member.");
    describe_gauge!(
        READY,
        "1 when connected to the broker and the store and assigned or leasing."
    );
}

pub(crate) fn applied(kind: Kind, took: Duration) {
    counter!(APPLIED, "kind" => kind.symbol()).increment(1);
    histogram!(APPLY_SECONDS).record(took.as_secs_f64());
}

pub(crate) fn skipped() {
    counter!(SKIPPED).increment(1);
}

pub(crate) fn dead_lettered() {
    counter!(DEAD_LETTERS).increment(1);
}

pub(crate) fn held() {
    counter!(HELD).increment(1);
}

/// An applied event's stages, in milliseconds as [`crate::Stages`] reckons them.
pub(crate) fn stages(detect_ms: i64, deliver_ms: i64, apply_ms: i64, end_to_end_ms: i64) {
    for (stage, ms) in [
        ("detected", detect_ms),
        ("delivered", deliver_ms),
        ("applied", apply_ms),
        ("end_to_end", end_to_end_ms),
    ] {
        histogram!(LATENCY_SECONDS, "stage" => stage).record(ms.max(0) as f64 / 1000.0);
    }
}

/// One cloud request's answer: its HTTP status, or none when no answer came.
pub(crate) fn cloud_request(method: &reqwest::Method, status: Option<u16>, took: Duration) {
    let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
    counter!(CLOUD_REQUESTS, "method" => method.as_str().to_owned(), "status" => status)
        .increment(1);
    histogram!(CLOUD_REQUEST_SECONDS, "method" => method.as_str().to_owned())
        .record(took.as_secs_f64());
}

pub(crate) fn cloud_retry() {
    counter!(CLOUD_RETRIES).increment(1);
}

pub(crate) fn lease_taken() {
    counter!(LEASE_TAKES).increment(1);
}

pub(crate) fn lease_lost() {
    counter!(LEASE_LOSSES).increment(1);
}

pub(crate) fn rebalanced(kind: &'static str, assigned: usize) {
    counter!(REBALANCES, "kind" => kind).increment(1);
    gauge!(ASSIGNED_PARTITIONS).set(assigned as f64);
}

pub(crate) fn assigned(partitions: u64) {
    gauge!(ASSIGNED_PARTITIONS).set(partitions as f64);
}

pub(crate) fn partition_lag(partition: i32, lag: i64) {
    gauge!(PARTITION_LAG, "partition" => partition.to_string()).set(lag.max(0) as f64);
}

/// Series of the accounts furthest behind: (rank from 1, account, events, seconds).
pub(crate) fn worst_accounts(worst: &[(usize, String, u64, f64)]) {
    for (rank, account, events, seconds) in worst {
        let labels = [("rank", rank.to_string()), ("account", account.clone())];
        gauge!(ACCOUNT_LAG_EVENTS, &labels).set(*events as f64);
        gauge!(ACCOUNT_LAG_SECONDS, &labels).set(*seconds);
    }
}

/// The parked accounts and their held events, as the store counts them.
pub fn parked(accounts: usize, held: u64) {
    gauge!(PARKED_ACCOUNTS).set(accounts as f64);
    gauge!(HELD_EVENTS).set(held as f64);
}

pub(crate) fn ready(ready: bool) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}
