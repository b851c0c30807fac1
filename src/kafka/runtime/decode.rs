//! Decoding: which topics carry which inputs, the writer schemas of a batch's Avro
//! records (looked up before the engine runs), and each record's bytes as the engine
//! takes them (JSON text as is, an Avro record as a decoded document, a null value as
//! no bytes).

use rdkafka::message::{Message, OwnedMessage};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::{registry_backoff, RuntimeError, RuntimeStats};
use crate::engine::input::touchpoint::Rejection;
use crate::engine::{Engine, Input, InputKind};
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

    /// The input a record carries, parsed and validated by `engine`: an Avro record is
    /// decoded first; anything else is JSON text. A null value (a tombstone) is read as
    /// no bytes, which the parser refuses as `empty_value`; a UTF-8 byte-order mark before
    /// the JSON is not the Avro magic byte, and the parser skips it.
    pub(super) fn input(&self, engine: &Engine, m: &OwnedMessage) -> Result<Input, Rejection> {
        let kind = self.kind(m.topic());
        let bytes = payload(m);
        match self.document(m.topic(), bytes) {
            Some(doc) => engine.parse_document(kind, doc),
            None => engine.parse(kind, bytes),
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
        let unknown_ids = self
            .formats
            .unknown_ids(batch.iter().map(|m| (m.topic(), payload(m))));
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

/// The value of a record; a null value (a tombstone) is no bytes.
pub(super) fn payload(m: &OwnedMessage) -> &[u8] {
    m.payload().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Timestamp;

    use super::*;
    use crate::engine::config::EngineConfig;
    use crate::store::Store;

    fn message(topic: &str, value: Option<&[u8]>) -> OwnedMessage {
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            None,
            topic.into(),
            Timestamp::NotAvailable,
            0,
            7,
            None,
        )
    }

    fn reason(inputs: &Inputs, engine: &Engine, m: &OwnedMessage) -> Option<&'static str> {
        inputs.input(engine, m).err().map(|r| r.reason())
    }

    #[test]
    fn null_and_empty_values_are_empty_and_a_byte_order_mark_is_skipped() {
        let inputs = Inputs::new(&Settings::default()).unwrap();
        let engine = Engine::new(EngineConfig::default(), Store::temporary().unwrap()).unwrap();
        for topic in ["touchpoints.web", "gdpr.requests", "identity.commands"] {
            assert_eq!(
                reason(&inputs, &engine, &message(topic, None)),
                Some("empty_value")
            );
            let empty = message(topic, Some(b""));
            assert_eq!(reason(&inputs, &engine, &empty), Some("empty_value"));
        }
        let event = br#"{"event_id":"e1","channel":"web","type":"login","occurred_at":"2026-01-01T00:00:00Z"}"#;
        let with_bom = [b"\xEF\xBB\xBF".as_slice(), event].concat();
        let m = message("touchpoints.web", Some(&with_bom));
        assert!(
            inputs.document(m.topic(), payload(&m)).is_none(),
            "not avro"
        );
        assert!(matches!(
            inputs.input(&engine, &m),
            Ok(Input::Touchpoint(t)) if t.event_id == "e1"
        ));
        let request = [
            b"\xEF\xBB\xBF".as_slice(),
            br#"{"request_id":"r","kind":"erase","customer_id":"c"}"#,
        ]
        .concat();
        let m = message("gdpr.requests", Some(&request));
        assert!(matches!(inputs.input(&engine, &m), Ok(Input::Request(_))));
    }
}
