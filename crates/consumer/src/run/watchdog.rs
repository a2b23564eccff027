//! The group watchdog: notices when the broker's coordinator has stranded this member — it
//! holds no partitions, or fewer than its share, while events wait — and has it leave and
//! join the group again.
//!
//! A coordinator can keep a dead member as the group's leader, or hand a live member an empty
//! assignment and never rebalance again (seen with Tansu 0.6 after members were killed; on
//! Kafka a long pause or a network split can strand a member too). The coordinator's own view
//! is what is wrong, so the watchdog counts members in Tandem's store instead: every member
//! records, every few seconds, how many partitions it holds. A member's share is the topic's
//! partitions divided by the members seen within twice the session timeout. A member below
//! its share while the store's positions lag behind the partitions' ends, for longer than
//! twice the session timeout, warns and rejoins; further rejoins back off, up to five minutes
//! apart, until it holds its share again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Inner;
use crate::{Error, Result};

/// The longest wait between two rejoins.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What the watchdog saw of the group at one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Health {
    /// Partitions this member holds.
    pub assigned: usize,
    /// Partitions of the topic.
    pub partitions: usize,
    /// Members seen lately, this one included.
    pub members: usize,
    /// Partitions whose end lies beyond the store's position: (partition, events waiting).
    /// Only looked up when this member holds fewer than its share.
    pub lagging: Vec<(i32, i64)>,
}

impl Health {
    /// The fewest partitions a member of an evenly assigned group holds.
    pub fn share(&self) -> usize {
        self.partitions / self.members.max(1)
    }

    fn short(&self) -> bool {
        self.assigned < self.share()
    }
}

/// What to do after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// This member holds its share, or nothing waits.
    Fine,
    /// Short of its share while events wait, not for long enough yet (or too soon after the
    /// last rejoin).
    Watching,
    /// Leave the group and join it again.
    Rejoin,
}

/// The watchdog's memory between checks.
#[derive(Debug)]
pub(super) struct Watch {
    session: Duration,
    /// Since when this member has been short of its share while events waited.
    short_since: Option<Instant>,
    /// How long after a rejoin the next one may follow: twice the patience at first, doubled
    /// at each rejoin.
    backoff: Duration,
    not_before: Option<Instant>,
    rejoined: bool,
}

impl Watch {
    pub fn new(session: Duration) -> Watch {
        Watch {
            session,
            short_since: None,
            backoff: session * 4,
            not_before: None,
            rejoined: false,
        }
    }

    /// How long being short of the share is tolerated: a rebalance settles well within it.
    fn patience(&self) -> Duration {
        self.session * 2
    }

    pub fn observe(&mut self, health: &Health, now: Instant) -> Verdict {
        if !health.short() || health.lagging.is_empty() {
            self.short_since = None;
            if !health.short() {
                if self.rejoined {
                    info!(
                        assigned = health.assigned,
                        share = health.share(),
                        "this member holds its share of the partitions again"
                    );
                }
                self.rejoined = false;
                self.backoff = self.patience() * 2;
                self.not_before = None;
            }
            return Verdict::Fine;
        }
        let since = *self.short_since.get_or_insert(now);
        if now.duration_since(since) < self.patience() || self.not_before.is_some_and(|t| now < t) {
            return Verdict::Watching;
        }
        self.short_since = None;
        self.not_before = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.rejoined = true;
        Verdict::Rejoin
    }
}

/// The session timeout the member runs with: librdkafka's `session.timeout.ms` as given, else
/// the consumer's default.
pub(super) fn session_timeout(kafka: &[(String, String)]) -> Duration {
    kafka
        .iter()
        .rev()
        .find(|(key, _)| key == "session.timeout.ms")
        .and_then(|(_, value)| value.parse::<u64>().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

impl Inner {
    /// Checks the group every third of the session timeout until `stop`; asks the read loop
    /// to rejoin when this member is stranded.
    pub(super) async fn watch_group(self: Arc<Self>, stop: CancellationToken) {
        let session = session_timeout(&self.options.kafka);
        let every = (session / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let mut watch = Watch::new(session);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let health = match self.health(session).await {
                Ok(health) => health,
                Err(e) => {
                    warn!(error = %e, "cannot check the consumer group's health");
                    continue;
                }
            };
            if watch.observe(&health, Instant::now()) == Verdict::Rejoin {
                let waiting: i64 = health.lagging.iter().map(|(_, n)| n).sum();
                let lagging: Vec<i32> = health.lagging.iter().map(|(p, _)| *p).collect();
                warn!(
                    assigned = health.assigned,
                    share = health.share(),
                    members = health.members,
                    partitions = health.partitions,
                    ?lagging,
                    waiting,
                    "this member holds fewer partitions than its share while events wait; \
                     the broker's group coordinator seems to have stranded it: leaving and \
                     rejoining the group"
                );
                self.rejoin.notify_one();
            }
        }
    }

    /// Records this member's assignment in the store and looks at the group.
    async fn health(&self, session: Duration) -> Result<Health> {
        let assigned = self.stats.assigned_partitions.load(Ordering::Relaxed) as usize;
        let store = self.engine.store();
        let members = store
            .heartbeat(&self.options.group, &self.member, assigned, session * 2)
            .await?;
        let consumer = self.lookups.clone();
        let topic = self.options.topic.clone();
        let broker_error = |source| Error::Broker {
            brokers: self.options.brokers.clone(),
            source,
        };
        // The client's metadata and offset lookups block: they run off the async threads.
        let partitions = {
            let (consumer, topic) = (consumer.clone(), topic.clone());
            tokio::task::spawn_blocking(move || {
                consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
            })
            .await
            .map_err(|e| Error::Task {
                what: "group watchdog",
                message: e.to_string(),
            })?
            .map_err(broker_error)?
        };
        let mut health = Health {
            assigned,
            partitions,
            members,
            lagging: Vec::new(),
        };
        if !health.short() {
            return Ok(health);
        }
        let positions = store.positions(&self.options.group, &topic).await?;
        let ends = self
            .partition_ends("group watchdog", Some(partitions))
            .await?;
        health.lagging = ends
            .into_iter()
            .filter_map(|(p, low, high)| {
                let position = positions.get(&p).copied().unwrap_or(0).max(low);
                (high > position).then_some((p, high - position))
            })
            .collect();
        Ok(health)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(6);

    fn health(assigned: usize, partitions: usize, members: usize, waiting: i64) -> Health {
        Health {
            assigned,
            partitions,
            members,
            lagging: if waiting > 0 {
                vec![(0, waiting)]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn a_member_short_of_its_share_while_events_wait_rejoins_after_twice_the_session() {
        let mut watch = Watch::new(SESSION);
        let t0 = Instant::now();
        let stranded = health(0, 4, 1, 500);
        assert_eq!(watch.observe(&stranded, t0), Verdict::Watching);
        assert_eq!(
            watch.observe(&stranded, t0 + Duration::from_secs(11)),
            Verdict::Watching
        );
        assert_eq!(
            watch.observe(&stranded, t0 + Duration::from_secs(12)),
            Verdict::Rejoin
        );
    }

    #[test]
    fn rejoins_back_off_until_the_member_holds_its_share() {
        let mut watch = Watch::new(SESSION);
        let t0 = Instant::now();
        let stranded = health(1, 4, 1, 500);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(watch.observe(&stranded, at(0)), Verdict::Watching);
        assert_eq!(watch.observe(&stranded, at(12)), Verdict::Rejoin);
        // Still short: the next rejoin waits for the backoff (24 s) and for the patience.
        assert_eq!(watch.observe(&stranded, at(13)), Verdict::Watching);
        assert_eq!(watch.observe(&stranded, at(30)), Verdict::Watching);
        assert_eq!(watch.observe(&stranded, at(36)), Verdict::Rejoin);
        assert_eq!(watch.observe(&stranded, at(37)), Verdict::Watching);
        assert_eq!(watch.observe(&stranded, at(80)), Verdict::Watching);
        assert_eq!(watch.observe(&stranded, at(84)), Verdict::Rejoin);
        // Holding its share resets the backoff.
        assert_eq!(watch.observe(&health(4, 4, 1, 500), at(85)), Verdict::Fine);
        assert_eq!(watch.observe(&stranded, at(86)), Verdict::Watching);
        assert_eq!(watch.observe(&stranded, at(98)), Verdict::Rejoin);
    }

    #[test]
    fn a_member_that_holds_its_share_or_has_nothing_waiting_stays() {
        let mut watch = Watch::new(SESSION);
        let t0 = Instant::now();
        for s in [0, 20, 40] {
            let at = t0 + Duration::from_secs(s);
            // Two members of four partitions, two each, behind a stalled cloud API.
            assert_eq!(watch.observe(&health(2, 4, 2, 900), at), Verdict::Fine);
            // More members than partitions: holding none is its share.
            assert_eq!(watch.observe(&health(0, 2, 3, 900), at), Verdict::Fine);
            // Short, but nothing waits: nobody misses the partitions.
            assert_eq!(watch.observe(&health(0, 4, 1, 0), at), Verdict::Fine);
        }
    }

    #[test]
    fn the_session_timeout_comes_from_the_last_kafka_setting() {
        let kafka = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(session_timeout(&[]), Duration::from_secs(10));
        assert_eq!(
            session_timeout(&kafka(&[
                ("session.timeout.ms", "6000"),
                ("session.timeout.ms", "7000")
            ])),
            Duration::from_secs(7)
        );
    }
}
