//! Kafka clients: the producer, consumer and admin settings (brokers, the user's
//! pass-through properties, what unicus re-asserts), and the output topics' creation.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use tracing::{info, warn};

use crate::model::output::Topic;
use crate::settings::Settings;

/// Which client a pass-through property is meant for.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Consumer,
    Producer,
    Admin,
}

/// Properties librdkafka accepts on one kind of client only (it warns on the other).
fn belongs_to(name: &str, role: Role) -> bool {
    const CONSUMER_ONLY: [&str; 12] = [
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "partition.assignment.strategy",
        "isolation.level",
        "enable.partition.eof",
        "group.instance.id",
        "group.protocol",
        "check.crcs",
        "fetch.",
        "queued.",
    ];
    const PRODUCER_ONLY: [&str; 12] = [
        "linger.ms",
        "acks",
        "request.required.acks",
        "compression.",
        "batch.",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "queue.buffering.",
        "enable.idempotence",
        "retries",
        "message.send.max.retries",
        "transactional.id",
    ];
    let is = |list: &[&str]| {
        list.iter().any(|p| {
            if p.ends_with('.') {
                name.starts_with(p)
            } else {
                name == *p
            }
        })
    };
    match role {
        Role::Consumer => !is(&PRODUCER_ONLY),
        Role::Producer => !is(&CONSUMER_ONLY),
        Role::Admin => !is(&PRODUCER_ONLY) && !is(&CONSUMER_ONLY),
    }
}

/// Common client settings: brokers, then the user's pass-through properties.
fn base_config(settings: &Settings, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.brokers);
    for (k, v) in &settings.kafka.properties {
        if belongs_to(k, role) {
            c.set(k, v);
        }
    }
    c
}

pub fn producer_config(settings: &Settings) -> ClientConfig {
    let mut c = base_config(settings, Role::Producer);
    if !settings.kafka.properties.contains_key("linger.ms") {
        c.set("linger.ms", "5");
    }
    if !settings.kafka.properties.contains_key("message.timeout.ms") {
        c.set("message.timeout.ms", "30000");
    }
    // Re-asserted: no duplicates or reordering from producer retries.
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

/// A consumer of the group's settings that is assigned partitions, never subscribed: no
/// group membership, no commit (the changelog's and the reference topics' readers).
/// `role` names its group id (`<group>-<role>`) and what failed if it cannot be made.
pub(super) fn assigned_consumer(
    settings: &Settings,
    role: &str,
    action: &'static str,
) -> Result<BaseConsumer, super::RuntimeError> {
    let mut config = consumer_config(settings);
    config
        .set("group.id", format!("{}-{role}", settings.kafka.group_id))
        .remove("group.instance.id")
        .remove("statistics.interval.ms");
    config.create().map_err(super::kafka(action))
}

pub fn consumer_config(settings: &Settings) -> ClientConfig {
    let mut c = base_config(settings, Role::Consumer);
    if !settings.kafka.properties.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    // A fetch answers within 10 ms when there is nothing to read: librdkafka's 500 held
    // a quiet stream's records that long on the in-process cluster (README, "Benchmarks").
    if !settings.kafka.properties.contains_key("fetch.wait.max.ms") {
        c.set("fetch.wait.max.ms", "10");
    }
    // Re-asserted: offsets are committed by unicus only, after the effects are durable;
    // eager assignment so that a rebalance resets every partition to its commit.
    c.set("group.id", &settings.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "range,roundrobin");
    // Static membership: a restart takes the partitions back without a rebalance.
    if let Some(id) = &settings.kafka.group_instance_id {
        c.set("group.instance.id", id);
    }
    if settings.metrics.enabled && settings.metrics.lag_interval_ms > 0 {
        c.set(
            "statistics.interval.ms",
            settings.metrics.lag_interval_ms.to_string(),
        );
    }
    c
}

/// Creates the output topics and the changelog where the broker allows it; says which
/// topics are missing, inputs and outputs apart. Returns the missing ones.
pub async fn ensure_topics(settings: &Settings) -> Vec<String> {
    let mut created: Vec<NewTopicSpec> = Topic::outputs(&settings.engine)
        .iter()
        .map(|t| NewTopicSpec {
            name: settings.kafka.topic(*t),
            partitions: settings.kafka.partitions,
            compact: *t == Topic::ProfilesMerged,
        })
        .collect();
    if settings.kafka.changelog {
        // One partition: a batch's records stay in order with its end.
        created.push(NewTopicSpec {
            name: settings.kafka.changelog_topic(),
            partitions: 1,
            compact: true,
        });
    }
    if settings.kafka.create_topics {
        create_topics(settings, &created).await;
    }
    let outputs: Vec<String> = created.into_iter().map(|t| t.name).collect();
    let mut inputs = settings.kafka.input_topics();
    inputs.push(settings.kafka.requests_topic());
    inputs.push(settings.kafka.commands_topic());
    let all: Vec<String> = outputs.iter().chain(&inputs).cloned().collect();
    let missing = missing_topics(settings, &all);
    let missing_outputs: Vec<&String> = missing.iter().filter(|t| outputs.contains(t)).collect();
    let missing_inputs: Vec<&String> = missing.iter().filter(|t| inputs.contains(t)).collect();
    if !missing_outputs.is_empty() {
        warn!(
            missing = ?missing_outputs,
            "output topics missing: create them (profiles.merged and the changelog with cleanup.policy=compact, the changelog with one partition) or allow auto-creation; outputs to them are retried until they exist"
        );
    }
    if !missing_inputs.is_empty() {
        warn!(
            missing = ?missing_inputs,
            "input topics missing: nothing is read from them until they exist"
        );
    }
    missing
}

/// A topic unicus creates.
struct NewTopicSpec {
    name: String,
    partitions: i32,
    compact: bool,
}

/// Asks the broker to create topics; a refusal is logged, never an error.
async fn create_topics(settings: &Settings, specs: &[NewTopicSpec]) {
    let admin =
        match base_config(settings, Role::Admin).create::<AdminClient<DefaultClientContext>>() {
            Ok(admin) => admin,
            Err(e) => {
                warn!(error = %e, "cannot create an admin client");
                return;
            }
        };
    let topics: Vec<NewTopic> = specs
        .iter()
        .map(|t| {
            let nt = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(settings.kafka.replication_factor),
            );
            if t.compact {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    match tokio::time::timeout(Duration::from_secs(15), admin.create_topics(&topics, &opts)).await {
        Ok(Ok(results)) => {
            for r in results {
                match r {
                    Ok(t) => info!(topic = %t, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => {
                        warn!(topic = %t, error = %code, "cannot create topic")
                    }
                }
            }
        }
        Ok(Err(e)) => warn!(error = %e, "cannot create output topics"),
        Err(_) => {
            warn!("creating output topics timed out (the broker may have no admin api)")
        }
    }
}

/// The topics of `names` that do not exist now, as seen by a metadata request.
fn missing_topics(settings: &Settings, names: &[String]) -> Vec<String> {
    let Ok(client) = base_config(settings, Role::Admin).create::<BaseConsumer>() else {
        return Vec::new();
    };
    let metadata =
        tokio::task::block_in_place(|| client.fetch_metadata(None, Duration::from_secs(10)));
    match metadata {
        Ok(m) => {
            let present: HashSet<&str> = m
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| t.name())
                .collect();
            names
                .iter()
                .filter(|n| !present.contains(n.as_str()))
                .cloned()
                .collect()
        }
        Err(e) => {
            warn!(error = %e, "cannot read topic metadata");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_membership_is_set_and_the_guarantees_win_over_pass_through_properties() {
        let mut settings = Settings::default();
        for (k, v) in [
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("session.timeout.ms", "6000"),
        ] {
            settings.kafka.properties.insert(k.into(), v.into());
        }
        let consumer = consumer_config(&settings);
        assert_eq!(
            consumer.get("group.instance.id"),
            None,
            "dynamic by default"
        );
        assert_eq!(
            consumer.get("partition.assignment.strategy"),
            Some("range,roundrobin")
        );
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        let producer = producer_config(&settings);
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
        assert_eq!(producer.get("acks"), Some("all"));

        settings.kafka.group_instance_id = Some("unicus-0".into());
        let consumer = consumer_config(&settings);
        assert_eq!(consumer.get("group.instance.id"), Some("unicus-0"));
        assert_eq!(consumer.get("enable.auto.commit"), Some("false"));
        assert_eq!(producer_config(&settings).get("group.instance.id"), None);
    }
}
