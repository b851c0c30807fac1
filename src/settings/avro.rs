//! The `[schema_registry]` and `[output]` sections of the configuration file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::output::Topic;

/// How an output topic's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON text, as in the contract.
    #[default]
    Json,
    /// Avro in the Confluent wire format, schema registered under `<topic>-value`.
    Avro,
}

/// How the keys (customer ids) of Avro output topics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    /// The UTF-8 bytes of the id (what a `StringSerializer` reads).
    #[default]
    String,
    /// An Avro `string` in the Confluent wire format, schema registered under `<topic>-key`.
    Avro,
}

/// The Schema Registry unicus reads writer schemas from and registers its own in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistrySettings {
    /// Base URL (`http://registry:8081`); several, comma-separated, are tried in order.
    /// Empty: no registry (Avro input goes to the dead-letter topic, Avro output is refused).
    pub url: String,
    /// Register unicus's output schemas at start, after checking them against the
    /// subject's latest version; false: they must be registered already.
    pub register: bool,
    /// Keys of Avro output topics: `string` or `avro`.
    pub key_format: KeyFormat,
    /// Timeout of one registry call.
    pub timeout_ms: u64,
    /// Client properties, Confluent names: `basic.auth.user.info` (`user:password`, the API
    /// key and secret on Confluent Cloud), `bearer.auth.token`. Masked by `check-config`.
    pub properties: BTreeMap<String, String>,
}

impl Default for SchemaRegistrySettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            register: true,
            key_format: KeyFormat::String,
            timeout_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

/// Properties `[schema_registry.properties]` accepts.
pub const REGISTRY_PROPERTIES: [&str; 2] = ["basic.auth.user.info", "bearer.auth.token"];

/// How each output topic is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OutputSettings {
    /// Format of every output topic (the dead-letter topic keeps the original bytes).
    pub format: Format,
    /// Per-topic formats, by topic name without prefix (`"profiles.merged" = "avro"`).
    pub formats: BTreeMap<String, Format>,
}

impl OutputSettings {
    /// The format of an output topic. Dead letters are always the original bytes.
    pub fn format(&self, topic: Topic) -> Format {
        if topic == Topic::Dlq {
            return Format::Json;
        }
        self.formats
            .get(topic.name())
            .copied()
            .unwrap_or(self.format)
    }

    /// True if some of the output topics `topics` is written in Avro.
    pub fn any_avro(&self, topics: &[Topic]) -> bool {
        topics.iter().any(|t| self.format(*t) == Format::Avro)
    }

    /// Checks the per-topic names (those of `topics`, the deployment's output topics,
    /// journeys' included) and that Avro has a registry.
    pub fn validate(
        &self,
        registry: &SchemaRegistrySettings,
        topics: &[Topic],
    ) -> Result<(), String> {
        if let Some(name) = self
            .formats
            .keys()
            .find(|n| !topics.iter().any(|t| t.name() == n.as_str()) || *n == Topic::Dlq.name())
        {
            return Err(format!(
                "`output.formats`: `{name}` is not an output topic with a schema"
            ));
        }
        if self.any_avro(topics) && registry.url.trim().is_empty() {
            return Err("`output.format`: avro output needs `schema_registry.url`".into());
        }
        if let Some(p) = registry
            .properties
            .keys()
            .find(|p| !REGISTRY_PROPERTIES.contains(&p.as_str()))
        {
            return Err(format!(
                "`schema_registry.properties`: unknown property `{p}` (known: {})",
                REGISTRY_PROPERTIES.join(", ")
            ));
        }
        if registry.timeout_ms == 0 {
            return Err("`schema_registry.timeout_ms` must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_topic_with_a_schema_takes_a_per_topic_format() {
        let registry = SchemaRegistrySettings {
            url: "http://registry:8081".into(),
            ..SchemaRegistrySettings::default()
        };
        for topic in Topic::ALL {
            let output = OutputSettings {
                format: Format::Json,
                formats: [(topic.name().to_string(), Format::Avro)].into(),
            };
            if topic == Topic::Dlq {
                assert!(output.validate(&registry, &Topic::ALL).is_err());
                assert_eq!(
                    output.format(topic),
                    Format::Json,
                    "dead letters keep their bytes"
                );
            } else {
                assert_eq!(
                    output.validate(&registry, &Topic::ALL),
                    Ok(()),
                    "{}",
                    topic.name()
                );
                assert_eq!(output.format(topic), Format::Avro);
                assert!(output.any_avro(&Topic::ALL));
            }
        }
        let output = OutputSettings {
            format: Format::Json,
            formats: [("audiences.changes".to_string(), Format::Avro)].into(),
        };
        assert_eq!(output.format(Topic::AudiencesChanges), Format::Avro);
        assert_eq!(output.format(Topic::ProfilesMerged), Format::Json);
        assert!(output
            .validate(&SchemaRegistrySettings::default(), &Topic::ALL)
            .unwrap_err()
            .contains("schema_registry.url"));
        // A journey's topic takes a format only when the journey is configured.
        let journey = Topic::journey("browse_no_cart");
        let output = OutputSettings {
            format: Format::Json,
            formats: [("triggers.browse_no_cart".to_string(), Format::Avro)].into(),
        };
        assert!(output.validate(&registry, &Topic::ALL).is_err());
        assert_eq!(output.validate(&registry, &[journey]), Ok(()));
        assert_eq!(output.format(journey), Format::Avro);
    }
}
