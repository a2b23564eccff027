//! What the producer reports to a metrics recorder: `tandem produce --http-listen` installs a
//! Prometheus one and serves it on `/metrics`. Without a recorder every call here does
//! nothing. Labels are bounded: event kinds only.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use tandem_event::Kind;

pub const PUBLISHED: &str = "tandem_producer_events_published_total";
pub const CYCLES: &str = "tandem_producer_cycles_total";
pub const CYCLE_SECONDS: &str = "tandem_producer_cycle_seconds";
pub const CHANGES_PER_CYCLE: &str = "tandem_producer_changes_per_cycle";
pub const DELETE_CHECK_SECONDS: &str = "tandem_producer_delete_check_seconds";
pub const ACKNOWLEDGE_SECONDS: &str = "tandem_producer_acknowledge_seconds";
pub const LAST_CYCLE: &str = "tandem_producer_last_cycle_timestamp_seconds";
pub const LEASE_TAKES: &str = "tandem_producer_lease_takes_total";
pub const LEASE_LOSSES: &str = "tandem_producer_lease_losses_total";
pub const READY: &str = "tandem_producer_ready";

/// Gives every metric its help text; call once, after installing the recorder.
pub fn describe() {
    describe_counter!(
        PUBLISHED,
        "Events published and acknowledged by the broker, by kind."
    );
    describe_counter!(CYCLES, "Detector rounds over the accounts.");
    describe_histogram!(
        CYCLE_SECONDS,
        metrics::Unit::Seconds,
        "One detector round's duration."
    );
    describe_histogram!(CHANGES_PER_CYCLE, "Events published per detector round.");
    describe_histogram!(
        DELETE_CHECK_SECONDS,
        metrics::Unit::Seconds,
        "One differencing check of an account's table for deleted rows."
    );
    describe_histogram!(
        ACKNOWLEDGE_SECONDS,
        metrics::Unit::Seconds,
        "Found by the detector to acknowledged by the broker, per event: the published stage."
    );
    describe_gauge!(LAST_CYCLE, "Unix time of the last finished detector round.");
    describe_counter!(
        LEASE_TAKES,
        "Account leases taken (an account this instance did not hold)."
    );
    describe_counter!(
        LEASE_LOSSES,
        "Account leases found held by another instance."
    );
    describe_gauge!(
        READY,
        "1 when the broker and the stores answer and the last round did not fail."
    );
}

pub(crate) fn published(kind: Kind, events: u64) {
    counter!(PUBLISHED, "kind" => kind.symbol()).increment(events);
}

/// An event found at `detected_ms` was acknowledged at `acknowledged_ms` (epoch millis).
pub(crate) fn acknowledged(detected_ms: i64, acknowledged_ms: i64) {
    histogram!(ACKNOWLEDGE_SECONDS).record((acknowledged_ms - detected_ms).max(0) as f64 / 1000.0);
}

/// One round: how long it took and how many events it published (none when it failed).
pub(crate) fn cycle(took: Duration, published: Option<u64>) {
    counter!(CYCLES).increment(1);
    histogram!(CYCLE_SECONDS).record(took.as_secs_f64());
    if let Some(published) = published {
        histogram!(CHANGES_PER_CYCLE).record(published as f64);
    }
}

pub(crate) fn delete_check(took: Duration) {
    histogram!(DELETE_CHECK_SECONDS).record(took.as_secs_f64());
}

pub(crate) fn lease(taken: bool) {
    if taken {
        counter!(LEASE_TAKES).increment(1);
    } else {
        counter!(LEASE_LOSSES).increment(1);
    }
}

/// The gauges of the producer's state: when its last round ended (epoch millis, none before
/// the first) and whether it is ready. Set after every round and again at every scrape, so that
/// a producer stuck in a round keeps them (the exporter forgets a gauge not set for a minute).
pub fn gauges(last_round_ms: Option<i64>, ready: bool) {
    if let Some(ms) = last_round_ms {
        gauge!(LAST_CYCLE).set(ms as f64 / 1000.0);
    }
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
}
