//! Inputs of the engine, parsed and validated once: touchpoints (contract §1), rights
//! requests and identity commands; a record that fails goes to the dead-letter topic.
pub mod command;
pub mod event_time;
#[cfg(test)]
mod hostile_tests;
mod json;
pub mod request;
mod special;
pub mod touchpoint;

use serde_json::{Map, Value};

use crate::engine::config::EngineConfig;
use command::Command;
use event_time::{TimeBounds, TimeWindow};
use request::Request;
use touchpoint::{json_object, Rejection, Touchpoint};

/// One record as it was read, wherever it comes from (a topic, a replay file, a test).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub bytes: &'a [u8],
    /// Topic (or file) the record was read from, for dead letters.
    pub source_topic: &'a str,
    /// Offset (or line index) of the record, for dead letters.
    pub source_offset: i64,
    pub key: Option<&'a [u8]>,
    /// When the record was written (ms), if known: the time of a rights request. The
    /// broker's, or the producer's: it may be anything.
    pub timestamp: Option<i64>,
    /// When the caller read the record (ms): its wall clock (the runtime), or a time it
    /// was given (`replay --now`). The engine reads no clock; this bounds the times an
    /// input may state ([`event_time`]).
    pub received_at: i64,
}

impl<'a> Record<'a> {
    /// A record without key or timestamp (a replay line, a test input): `bytes` at
    /// `source_offset` of `source_topic`, read at `received_at` (ms).
    pub fn new(
        bytes: &'a [u8],
        source_topic: &'a str,
        source_offset: i64,
        received_at: i64,
    ) -> Self {
        Record {
            bytes,
            source_topic,
            source_offset,
            key: None,
            timestamp: None,
            received_at,
        }
    }

    /// The same record, written at `timestamp` (ms).
    pub fn written_at(self, timestamp: i64) -> Self {
        Record {
            timestamp: Some(timestamp),
            ..self
        }
    }
}

/// What a record is: the runtime knows it from the topic, a replay line from its fields
/// ([`InputKind::of_document`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Touchpoint,
    Request,
    Command,
    /// A record of reference data (`engine::reference`).
    Reference,
}

impl InputKind {
    /// The kind of a replay line (contract §3), where no topic says it: a rights request
    /// carries a `request_id`, an operator command a `command_id`, and neither an
    /// `event_id`; everything else is read as a touchpoint. A `null` counts as absent.
    pub fn of_document(doc: &Map<String, Value>) -> InputKind {
        let has = |field: &str| doc.get(field).is_some_and(|v| !v.is_null());
        if has("event_id") {
            InputKind::Touchpoint
        } else if has("request_id") {
            InputKind::Request
        } else if has("command_id") {
            InputKind::Command
        } else if has("reference") {
            InputKind::Reference
        } else {
            InputKind::Touchpoint
        }
    }
}

impl InputKind {
    /// The kind of a replay line that is a JSON object, by [`InputKind::of_document`].
    pub fn of_line(bytes: &[u8]) -> Option<InputKind> {
        serde_json::from_slice::<Map<String, Value>>(bytes)
            .ok()
            .map(|doc| InputKind::of_document(&doc))
    }
}

/// One input, parsed and validated.
#[derive(Debug)]
pub enum Input {
    Touchpoint(Box<Touchpoint>),
    Request(Request),
    Command(Command),
    Reference(crate::engine::reference::ReferenceUpdate),
}

/// The parsers of every kind of input, with what they prepare once (the deny-list of
/// special categories).
pub struct InputParser {
    touchpoints: touchpoint::Parser,
    times: TimeBounds,
    config: EngineConfig,
}

impl InputParser {
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            touchpoints: touchpoint::Parser::new(config),
            times: TimeBounds::new(&config.limits),
            config: config.clone(),
        }
    }

    /// The times `record` may state.
    pub fn time_window(&self, record: &Record) -> TimeWindow {
        self.times.window(record)
    }

    /// Refuses an input whose time lies outside the window of its record: one record
    /// must not move the engine's clocks beyond what its reader vouches for.
    pub fn check_time(&self, record: &Record, input: &Input) -> Result<(), Rejection> {
        match event_time::stated_time(input) {
            Some((field, at)) => self.time_window(record).check(field, at),
            None => Ok(()),
        }
    }

    /// Parses and validates a JSON record of a known kind.
    pub fn parse(&self, kind: InputKind, bytes: &[u8]) -> Result<Input, Rejection> {
        Ok(match kind {
            InputKind::Touchpoint => Input::Touchpoint(Box::new(self.touchpoints.parse(bytes)?)),
            InputKind::Request => Input::Request(request::parse_request(bytes, &self.config)?),
            InputKind::Command => Input::Command(command::parse_command(bytes, &self.config)?),
            InputKind::Reference => {
                Input::Reference(crate::engine::reference::parse_line_document(
                    &touchpoint::json_object(bytes, &self.config)?,
                    &self.config,
                )?)
            }
        })
    }

    /// Validates a record of a known kind already decoded into a document (Avro), with
    /// the same rules as [`InputParser::parse`] after the JSON text is read.
    pub fn parse_document(
        &self,
        kind: InputKind,
        doc: Map<String, Value>,
    ) -> Result<Input, Rejection> {
        Ok(match kind {
            InputKind::Touchpoint => {
                Input::Touchpoint(Box::new(self.touchpoints.parse_document(doc)?))
            }
            InputKind::Request => {
                Input::Request(request::parse_request_document(&doc, &self.config)?)
            }
            InputKind::Reference => Input::Reference(
                crate::engine::reference::parse_line_document(&doc, &self.config)?,
            ),
            InputKind::Command => {
                Input::Command(command::parse_command_document(&doc, &self.config)?)
            }
        })
    }

    /// Parses a line of a replay file: the JSON is read once, its kind told by its
    /// fields, then validated as that kind.
    pub fn parse_line(&self, bytes: &[u8]) -> Result<Input, Rejection> {
        let doc = json_object(bytes, &self.config)?;
        self.parse_document(InputKind::of_document(&doc), doc)
    }
}
