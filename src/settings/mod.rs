//! The whole configuration file (`unicus.toml`): Kafka, runtime and engine.
//!
//! Sources, later ones winning: defaults, the TOML file, environment variables
//! `UNICUS_<SECTION>__<KEY>` (e.g. `UNICUS_KAFKA__BROKERS=host:9092`,
//! `UNICUS_RUNTIME__BATCH_MAX_EVENTS=2000`; the value is read as TOML when it parses,
//! as a string otherwise), then command-line flags. `deploy/unicus.toml` documents every
//! key.

pub mod api;
pub mod avro;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::config::{ConfigError, EngineConfig};
use crate::model::output::Topic;
use api::ApiSettings;
use avro::{OutputSettings, SchemaRegistrySettings};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("environment variable `{name}`: {problem}")]
    Env { name: String, problem: String },
    #[error(transparent)]
    Engine(#[from] ConfigError),
    #[error("`{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// Kafka connection and topics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group of the runtime.
    pub group_id: String,
    /// Static group membership (`group.instance.id`, KIP-345): a stable name of this
    /// instance (e.g. the pod name of a StatefulSet). A restarted instance takes its
    /// partitions back at once instead of waiting for its old session to expire; an
    /// instance that stops holds them until `session.timeout.ms` passes. `None`: dynamic
    /// membership.
    pub group_instance_id: Option<String>,
    /// Prefix of every topic name, input and output (`prod.` gives `prod.touchpoints.web`).
    pub topic_prefix: String,
    /// Channels consumed, one topic `touchpoints.<channel>` each; also the only values an
    /// event's `channel` may take (another is a dead letter, `unknown_channel`), on every
    /// topic and in `replay` alike.
    pub channels: Vec<String>,
    /// Create missing output topics (and the changelog) at start (where the broker
    /// allows it).
    pub create_topics: bool,
    /// Write every change of the store to the compacted topic
    /// `<topic_prefix><group_id>-store-changelog` (one partition), from which an
    /// instance that starts on an empty store (a lost disk, a new machine) restores it
    /// before consuming. On, several instances of one `group_id` elect one writer and
    /// the others stand by following the changelog. Off: the store on disk is the only
    /// copy of the state, and one instance runs per group.
    pub changelog: bool,
    /// Partitions and replication of topics unicus creates.
    pub partitions: i32,
    pub replication_factor: i32,
    /// librdkafka properties passed through to both clients (security, SASL, SSL,
    /// timeouts...). Properties unicus's guarantees depend on are re-asserted after.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "unicus".into(),
            group_instance_id: None,
            topic_prefix: String::new(),
            channels: crate::model::SOURCE_CHANNELS
                .into_iter()
                .map(String::from)
                .collect(),
            create_topics: true,
            changelog: true,
            partitions: 6,
            replication_factor: 1,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSettings {
    pub fn input_topics(&self) -> Vec<String> {
        self.channels
            .iter()
            .map(|c| format!("{}touchpoints.{c}", self.topic_prefix))
            .collect()
    }

    /// The topic of rights requests (`gdpr.requests`), consumed with the touchpoints.
    pub fn requests_topic(&self) -> String {
        format!("{}gdpr.requests", self.topic_prefix)
    }

    /// The topic of operator commands on the identity graph (`identity.commands`:
    /// split, merge), consumed with the touchpoints.
    pub fn commands_topic(&self) -> String {
        format!("{}identity.commands", self.topic_prefix)
    }

    pub fn topic(&self, topic: Topic) -> String {
        format!("{}{}", self.topic_prefix, topic.name())
    }

    /// The store's changelog, internal to the group (`kafka.changelog`).
    pub fn changelog_topic(&self) -> String {
        format!("{}{}-store-changelog", self.topic_prefix, self.group_id)
    }

    /// The consumer group that elects the deployment's writer (the member assigned the
    /// changelog's partition).
    pub fn writer_group(&self) -> String {
        format!("{}-writer", self.group_id)
    }
}

/// How the runtime batches, bounds and stops.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// Directory of the embedded store (created if missing).
    pub store_dir: PathBuf,
    /// A batch ends at this many records...
    pub batch_max_events: usize,
    /// ...or this long after its first record...
    pub batch_max_wait_ms: u64,
    /// ...or when no record came this long after the last one (0: only the two bounds
    /// above): a quiet stream's batch ends with its last record, a busy one's fills.
    pub batch_idle_ms: u64,
    /// Pause between attempts when the broker does not acknowledge outputs.
    pub retry_backoff_ms: u64,
    /// Deadline to drain the batch in progress on SIGINT/SIGTERM.
    pub shutdown_timeout_ms: u64,
    /// `/healthz` and `/readyz` fail once outputs have waited this long without any
    /// acknowledgement (a broker that does not answer, a producer that cannot recover).
    pub stall_timeout_ms: u64,
    /// Bytes of recently used store values kept in memory.
    pub store_cache_bytes: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            store_dir: PathBuf::from("unicus-store"),
            batch_max_events: 5_000,
            batch_max_wait_ms: 20,
            batch_idle_ms: 2,
            retry_backoff_ms: 1_000,
            shutdown_timeout_ms: 10_000,
            stall_timeout_ms: 30_000,
            store_cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}

/// The operations endpoint: Prometheus metrics, liveness and readiness.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics`, `/healthz` and `/readyz`.
    pub enabled: bool,
    /// Address and port of the endpoint (`127.0.0.1:0`: any free port, as tests do).
    pub listen: String,
    /// `/healthz` fails when the main loop has not moved for this long (outputs waiting
    /// for the broker have their own limit: `runtime.stall_timeout_ms`).
    pub stall_timeout_ms: u64,
    /// How often librdkafka reports consumer lag (`statistics.interval.ms` of the
    /// consumer; 0 disables the lag metric).
    pub lag_interval_ms: u64,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "0.0.0.0:9464".into(),
            stall_timeout_ms: 60_000,
            lag_interval_ms: 5_000,
        }
    }
}

/// Log output of the process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Level or filter, in `tracing` filter syntax (`info`, `warn,unicus=debug`).
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub runtime: RuntimeSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub engine: EngineConfig,
    pub schema_registry: SchemaRegistrySettings,
    pub output: OutputSettings,
    pub api: ApiSettings,
}

/// Property names whose values are secrets (masked by `check-config`).
fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "key.pem",
        "credentials",
    ]
    .iter()
    .any(|s| n.contains(s))
}

impl Settings {
    /// Reads the file (if any) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, SettingsError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| SettingsError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, std::env::vars())
    }

    /// Parses TOML text, then applies `UNICUS_<SECTION>__<KEY>` variables.
    pub fn from_toml_and_env(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut table: toml::Table = toml::from_str(text)?;
        for (name, value) in env {
            let Some(path) = name.strip_prefix("UNICUS_") else {
                continue;
            };
            if !path.contains("__") {
                continue; // UNICUS_LOG and friends are not settings
            }
            let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if parts.iter().any(String::is_empty) {
                return Err(SettingsError::Env {
                    name,
                    problem: "empty path segment".into(),
                });
            }
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.clone()));
            let mut node = &mut table;
            for part in &parts[..parts.len() - 1] {
                let entry = node
                    .entry(part.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                node = match entry {
                    toml::Value::Table(t) => t,
                    _ => {
                        return Err(SettingsError::Env {
                            name,
                            problem: format!("`{part}` is not a table"),
                        })
                    }
                };
            }
            node.insert(parts[parts.len() - 1].clone(), parsed);
        }
        let mut settings: Settings = toml::Value::Table(table).try_into()?;
        // One list names the topics consumed and the channels an event may name.
        settings.engine.channels = settings.kafka.channels.clone();
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.engine.validate()?;
        self.api.validate()?;
        let k = &self.kafka;
        let invalid = |field, problem: &str| {
            Err(SettingsError::Invalid {
                field,
                problem: problem.into(),
            })
        };
        if k.brokers.trim().is_empty() {
            return invalid("kafka.brokers", "must not be empty");
        }
        if k.group_id.trim().is_empty() {
            return invalid("kafka.group_id", "must not be empty");
        }
        // What the broker accepts as a group.instance.id (the rules of topic names).
        if let Some(id) = &k.group_instance_id {
            if id.is_empty()
                || id.len() > 249
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return invalid(
                    "kafka.group_instance_id",
                    "1 to 249 characters among a-z, A-Z, 0-9, '.', '_' and '-'",
                );
            }
        }
        if k.channels.is_empty() {
            return invalid("kafka.channels", "at least one channel is needed");
        }
        if let Some(c) = k.channels.iter().find(|c| {
            c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        }) {
            return Err(SettingsError::Invalid {
                field: "kafka.channels",
                problem: format!("`{c}` is not a valid channel name"),
            });
        }
        if k.partitions < 1 || k.replication_factor < 1 {
            return invalid(
                "kafka.partitions",
                "partitions and replication_factor must be at least 1",
            );
        }
        self.output
            .validate(
                &self.schema_registry,
                &crate::model::output::Topic::outputs(&self.engine),
            )
            .map_err(|problem| SettingsError::Invalid {
                field: "output",
                problem,
            })?;
        let r = &self.runtime;
        if r.batch_max_events == 0 || r.batch_max_wait_ms == 0 {
            return invalid("runtime.batch_max_events", "batch bounds must be positive");
        }
        if r.batch_idle_ms > r.batch_max_wait_ms {
            return invalid(
                "runtime.batch_idle_ms",
                "must be at most runtime.batch_max_wait_ms (0 turns it off)",
            );
        }
        if r.stall_timeout_ms < 1_000 {
            return invalid("runtime.stall_timeout_ms", "must be at least 1000");
        }
        // A batch must fit well inside the poll interval, or the group evicts us.
        if let Some(v) = k.properties.get("max.poll.interval.ms") {
            if v.parse::<u64>()
                .map_or(true, |ms| ms < 10 * r.batch_max_wait_ms + 10_000)
            {
                return invalid(
                    "kafka.properties.max.poll.interval.ms",
                    "must be a number of ms well above runtime.batch_max_wait_ms (>= 10x + 10 s)",
                );
            }
        }
        let m = &self.metrics;
        if m.enabled && m.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "metrics.listen",
                "must be an address and port, e.g. 0.0.0.0:9464",
            );
        }
        if m.stall_timeout_ms < 1_000 {
            return invalid("metrics.stall_timeout_ms", "must be at least 1000");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(SettingsError::Invalid {
                field: "log.level",
                problem: e.to_string(),
            });
        }
        if k.properties.contains_key("statistics.interval.ms") {
            return invalid(
                "kafka.properties",
                "`statistics.interval.ms` is set by unicus (use metrics.lag_interval_ms)",
            );
        }
        for forbidden in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "group.id",
            "group.instance.id",
            "bootstrap.servers",
        ] {
            if k.properties.contains_key(forbidden) {
                return Err(SettingsError::Invalid {
                    field: "kafka.properties",
                    problem: format!(
                        "`{forbidden}` is set by unicus (use kafka.brokers / kafka.group_id / kafka.group_instance_id; offsets are committed by unicus only)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        for (name, value) in shown.kafka.properties.iter_mut() {
            if is_secret(name) {
                *value = "********".into();
            }
        }
        for value in shown.schema_registry.properties.values_mut() {
            *value = "********".into();
        }
        if !shown.engine.gdpr.hash_key.is_empty() {
            shown.engine.gdpr.hash_key = "********".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let s = Settings::from_toml_and_env("", []).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.kafka.input_topics().len(), 8);
        assert_eq!(s.kafka.topic(Topic::ProfilesMerged), "profiles.merged");
    }

    #[test]
    fn environment_overrides_the_file_and_values_parse_as_toml() {
        let s = Settings::from_toml_and_env(
            "[kafka]\nbrokers = \"a:1\"\ntopic_prefix = \"prod.\"\n",
            [
                ("UNICUS_KAFKA__BROKERS".to_string(), "b:2".to_string()),
                (
                    "UNICUS_RUNTIME__BATCH_MAX_EVENTS".to_string(),
                    "42".to_string(),
                ),
                (
                    "UNICUS_ENGINE__GUARDRAILS__GENERIC_AFTER_PEOPLE".to_string(),
                    "3".to_string(),
                ),
                ("UNICUS_LOG".to_string(), "debug".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
            ],
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "b:2");
        assert_eq!(s.runtime.batch_max_events, 42);
        assert_eq!(s.engine.guardrails.generic_after_people, 3);
        assert_eq!(s.kafka.input_topics()[0], "prod.touchpoints.web");
    }

    #[test]
    fn typos_and_unsafe_properties_are_refused() {
        assert!(Settings::from_toml_and_env("[kafka]\nbroker = \"x\"\n", []).is_err());
        let e = Settings::from_toml_and_env(
            "[kafka.properties]\n\"enable.auto.commit\" = \"true\"\n",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("enable.auto.commit"), "{e}");
        assert!(Settings::from_toml_and_env("[kafka]\nchannels = [\"Web Shop\"]\n", []).is_err());
    }

    #[test]
    fn stall_timeout_and_group_instance_id_are_validated() {
        let e = Settings::from_toml_and_env("[runtime]\nstall_timeout_ms = 10\n", []).unwrap_err();
        assert!(e.to_string().contains("runtime.stall_timeout_ms"), "{e}");
        let s =
            Settings::from_toml_and_env("[kafka]\ngroup_instance_id = \"unicus-0\"\n", []).unwrap();
        assert_eq!(s.kafka.group_instance_id.as_deref(), Some("unicus-0"));
        for bad in ["", "unicus 0", "a/b"] {
            let text = format!("[kafka]\ngroup_instance_id = \"{bad}\"\n");
            let e = Settings::from_toml_and_env(&text, []).unwrap_err();
            assert!(
                e.to_string().contains("kafka.group_instance_id"),
                "{bad}: {e}"
            );
        }
        let e =
            Settings::from_toml_and_env("[kafka.properties]\n\"group.instance.id\" = \"x\"\n", [])
                .unwrap_err();
        assert!(e.to_string().contains("kafka.group_instance_id"), "{e}");
    }

    #[test]
    fn a_batch_idle_gap_longer_than_the_batch_wait_is_refused() {
        let e = Settings::from_toml_and_env(
            "[runtime]\nbatch_max_wait_ms = 20\nbatch_idle_ms = 21\n",
            [],
        )
        .unwrap_err();
        assert!(e.to_string().contains("runtime.batch_idle_ms"), "{e}");
        let s = Settings::from_toml_and_env("[runtime]\nbatch_idle_ms = 0\n", []).unwrap();
        assert_eq!(s.runtime.batch_idle_ms, 0);
    }

    #[test]
    fn the_commented_example_in_deploy_is_exactly_the_defaults() {
        let text = include_str!("../../deploy/unicus.toml");
        let s = Settings::from_toml_and_env(text, []).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn secrets_are_masked() {
        let s = Settings::from_toml_and_env(
            "[kafka.properties]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"bob\"\n",
            [],
        )
        .unwrap();
        let shown = s.to_masked_toml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("bob"));
        assert!(shown.contains("********"));
    }
}
