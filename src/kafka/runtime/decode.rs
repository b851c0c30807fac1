//! Decoding: which topics carry which inputs, the writer schemas of a batch's Avro
//! records (looked up before the engine runs), and each record's bytes as the engine
//! takes them (JSON text as is, an Avro record as a decoded document).

use rdkafka::message::{Message, OwnedMessage};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{registry_backoff, RuntimeError, RuntimeStats};
use crate::engine::input::touchpoint::Rejection;
use crate::engine::InputKind;
use crate::kafka::avro::registry::InputFormats;
use crate::settings::Settings;

/// The input topics, and the format of the records of each.
pub(super) struct Inputs {
    requests_topic: String,
    commands_topic: String,
    /// Every topic consumed: the channels', then requests and commands.
    pub(super) topics: Vec<String>,
    pub(super) formats: InputFormats,
}

impl Inputs {
    pub(super) fn new(settings: &Settings) -> Result<Self, RuntimeError> {
        let mut topics = settings.kafka.input_topics();
        let requests_topic = settings.kafka.requests_topic();
        let commands_topic = settings.kafka.commands_topic();
        let formats = InputFormats::new(
            &settings.schema_registry,
            &settings.kafka.topic_prefix,
            &settings.kafka.channels,
            &requests_topic,
            &commands_topic,
        )?;
        topics.push(requests_topic.clone());
        topics.push(commands_topic.clone());
        Ok(Self {
            requests_topic,
            commands_topic,
            topics,
            formats,
        })
    }

    /// Each input topic has its parser.
    pub(super) fn kind(&self, topic: &str) -> InputKind {
        if topic == self.requests_topic {
            InputKind::Request
        } else if topic == self.commands_topic {
            InputKind::Command
        } else {
            InputKind::Touchpoint
        }
    }

    /// The document of an Avro record, decoded before the engine parses it; `None` for
    /// JSON, which the engine parses from its bytes.
    pub(super) fn document(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> Option<Result<Map<String, Value>, Rejection>> {
        crate::kafka::avro::is_framed(bytes).then(|| self.formats.document(topic, bytes))
    }

    /// Fetches the writer schemas of the batch's Avro records, before the (blocking)
    /// engine step. During a registry outage the batch waits; false: shutdown was
    /// requested meanwhile, and the batch is left unconsumed.
    pub(super) async fn prepare(
        &self,
        batch: &[OwnedMessage],
        stats: &RuntimeStats,
        backoff: std::time::Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, RuntimeError> {
        let unknown_ids = self.formats.unknown_ids(
            batch
                .iter()
                .map(|m| (m.topic(), m.payload().unwrap_or_default())),
        );
        while !unknown_ids.is_empty() {
            match self.formats.prepare(&unknown_ids).await {
                Ok(_) => break,
                Err(e) if e.is_retriable() => {
                    if !registry_backoff(&e, stats, backoff, shutdown).await {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}
