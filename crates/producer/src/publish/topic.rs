//! Creating the change-event topic so that it can be replayed: events kept until deleted by
//! hand (`retention.ms = -1`), never compacted (the key is the account, so compaction would
//! keep one event per account), with the replication a team asks for.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;

use crate::{Error, Result};

/// How a topic is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSettings {
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long events are kept; `None` keeps them until deleted by hand, so any account can
    /// be replayed from its first event.
    pub retention: Option<Duration>,
    /// Replicas that must have a write before the broker acknowledges it (`acks=all`).
    pub min_insync_replicas: Option<i32>,
}

impl TopicSettings {
    /// `partitions` partitions, one replica, kept forever.
    pub fn new(partitions: i32) -> Self {
        TopicSettings {
            partitions,
            replication_factor: 1,
            retention: None,
            min_insync_replicas: None,
        }
    }

    /// The topic configuration these settings ask for.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        let retention = self
            .retention
            .map_or_else(|| "-1".to_owned(), |r| r.as_millis().to_string());
        let mut configs = vec![
            ("retention.ms", retention),
            ("cleanup.policy", "delete".to_owned()),
        ];
        if let Some(n) = self.min_insync_replicas {
            configs.push(("min.insync.replicas", n.to_string()));
        }
        configs
    }
}

/// What became of a topic: created with the settings, or found existing with its own
/// configuration (which may not allow replay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    pub topic: String,
    pub created: bool,
    /// The topic's configuration as the broker reports it, for the keys that matter to replay
    /// (empty when the broker does not say).
    pub configs: Vec<(String, String)>,
}

impl TopicReport {
    /// Why events could go missing for a replay, if they can: a finite retention or compaction.
    pub fn replay_warning(&self) -> Option<String> {
        let get = |key: &str| {
            self.configs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let mut reasons = Vec::new();
        if let Some(ms) = get("retention.ms").filter(|ms| *ms != "-1") {
            reasons.push(format!("retention.ms={ms}: older events are deleted"));
        }
        if get("cleanup.policy").is_some_and(|p| p.contains("compact")) {
            reasons.push(
                "cleanup.policy includes compact: only the last event of each account is kept"
                    .to_owned(),
            );
        }
        (!reasons.is_empty()).then(|| {
            format!(
                "topic {} cannot be replayed from its start: {}",
                self.topic,
                reasons.join("; ")
            )
        })
    }
}

impl std::fmt::Display for TopicReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.created {
            "created"
        } else {
            "exists already"
        };
        let configs: Vec<String> = self
            .configs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(f, "topic {}: {state}; {}", self.topic, configs.join(", "))
    }
}

/// Creates `topic` with `settings` unless it exists already, and reports its configuration.
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    settings: &TopicSettings,
    extra: &[(String, String)],
) -> Result<TopicReport> {
    let broker_error = |source| Error::Broker {
        brokers: brokers.to_owned(),
        source,
    };
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in extra {
        config.set(key, value);
    }
    let admin: AdminClient<DefaultClientContext> = config.create().map_err(broker_error)?;
    let configs = settings.configs();
    let mut new = NewTopic::new(
        topic,
        settings.partitions,
        TopicReplication::Fixed(settings.replication_factor),
    );
    for (key, value) in &configs {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let mut created = false;
    for result in admin
        .create_topics([&new], &options)
        .await
        .map_err(broker_error)?
    {
        match result {
            Ok(_) => created = true,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::CreateTopic {
                    topic: name,
                    reason: code.to_string(),
                })
            }
        }
    }
    let wanted = ["retention.ms", "cleanup.policy", "min.insync.replicas"];
    let mut found = Vec::new();
    // A broker that cannot describe configurations leaves the report without them.
    if let Ok(results) = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
    {
        for resource in results.into_iter().flatten() {
            for entry in resource.entries {
                if let (true, Some(value)) = (wanted.contains(&entry.name.as_str()), entry.value) {
                    found.push((entry.name, value));
                }
            }
        }
    }
    found.sort_by_key(|(k, _)| wanted.iter().position(|w| w == k));
    Ok(TopicReport {
        topic: topic.to_owned(),
        created,
        configs: found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_kept_forever_and_never_compacted_unless_asked() {
        let forever = TopicSettings::new(12).configs();
        assert!(forever.contains(&("retention.ms", "-1".to_owned())));
        assert!(forever.contains(&("cleanup.policy", "delete".to_owned())));
        let week = TopicSettings {
            retention: Some(Duration::from_secs(7 * 86_400)),
            min_insync_replicas: Some(2),
            ..TopicSettings::new(3)
        };
        assert!(week
            .configs()
            .contains(&("retention.ms", "604800000".to_owned())));
        assert!(week
            .configs()
            .contains(&("min.insync.replicas", "2".to_owned())));
    }

    #[test]
    fn a_topic_that_loses_events_is_named_with_why() {
        let report = |configs: &[(&str, &str)]| TopicReport {
            topic: "t".into(),
            created: false,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(report(&[("retention.ms", "-1")]).replay_warning(), None);
        let warning = report(&[("retention.ms", "604800000"), ("cleanup.policy", "compact")])
            .replay_warning()
            .unwrap_or_default();
        assert!(
            warning.contains("retention.ms=604800000") && warning.contains("compact"),
            "{warning}"
        );
    }
}
