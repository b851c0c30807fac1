//! The Schema Registry client side: writer schemas of Avro input by id, and unicus's
//! output schemas registered (or required) at start.
//!
//! Registry calls go through `schema_registry_converter` (its [`AvroDecoder`] fetches and
//! caches writer schemas by id); Avro bodies are read and written by `apache-avro`.
//! Registry lookups are async and happen before the engine step, for the unknown ids of
//! a batch only ([`InputDecoder::prepare`]); decoding itself ([`InputDecoder::decode`])
//! is synchronous and never calls the registry.
//!
//! Errors are classified where they happen: a schema id the registry does not know, a
//! writer schema that cannot be resolved to unicus's, or bytes that do not decode are
//! per record (a dead letter with a precise reason); anything else the registry answers
//! (no answer, 5xx, 401...) is an outage, retried with back-off by the caller, never a
//! dead letter.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::{
    get_schema_by_subject_and_version, is_compatible_schema, perform_sr_call, post_schema,
    SrSettings,
};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    RawError, SchemaType, SrCall, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::Value as Json;

use super::codec::{self, CodecError, Nulls};
use super::schemas::{catalogue, TopicSchema};
use crate::engine::input::touchpoint::Rejection;
use crate::engine::reference::RefTable;
use crate::model::output::{OutputRecord, Payload, Topic};
use crate::settings::avro::{Format, KeyFormat, OutputSettings, SchemaRegistrySettings};

/// What went wrong talking to the registry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No answer, or an answer that says nothing about the request: retry later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    #[error("invalid schema registry settings: {0}")]
    Settings(String),
    #[error("schema of `{topic}` is not registered under subject `{subject}` and schema_registry.register is false: register it first")]
    NotRegistered { topic: String, subject: String },
    #[error("schema of `{topic}` is not backward compatible with the latest version of subject `{subject}`: {detail}")]
    Incompatible {
        topic: String,
        subject: String,
        detail: String,
    },
    #[error("the registry refused the schema of `{topic}` (subject `{subject}`): {detail}")]
    Refused {
        topic: String,
        subject: String,
        detail: String,
    },
}

impl RegistryError {
    /// True if waiting and trying again may help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, RegistryError::Unavailable(_))
    }
}

/// The Confluent error code of a registry answer, if it was one.
fn error_code(e: &SRCError) -> Option<u32> {
    e.source()
        .and_then(|s| s.downcast_ref::<RawError>())
        .map(|r| r.error_code)
        .filter(|c| *c != 0)
}

/// True for an HTTP answer of the registry (as opposed to a schema it gave that is bad).
fn is_http_failure(e: &SRCError) -> bool {
    e.retriable
        || e.error
            .starts_with("HTTP request to schema registry failed")
        || e.error.starts_with("http call")
}

fn unavailable(e: &SRCError) -> RegistryError {
    RegistryError::Unavailable(match &e.cause {
        Some(c) => format!("{}: {c}", e.error),
        None => e.error.clone(),
    })
}

/// The converter's settings from unicus's.
pub fn sr_settings(cfg: &SchemaRegistrySettings) -> Result<SrSettings, RegistryError> {
    let mut urls = cfg
        .url
        .split(',')
        .map(|u| u.trim().trim_end_matches('/'))
        .filter(|u| !u.is_empty());
    let first = urls
        .next()
        .ok_or_else(|| RegistryError::Settings("schema_registry.url is empty".into()))?;
    let mut b = SrSettings::new_builder(first.to_string());
    for u in urls {
        b.add_url(u.to_string());
    }
    if let Some(info) = cfg.properties.get("basic.auth.user.info") {
        let (user, password) = info.split_once(':').unwrap_or((info.as_str(), ""));
        b.set_basic_authorization(user, Some(password));
    }
    if let Some(token) = cfg.properties.get("bearer.auth.token") {
        b.set_token_authorization(token);
    }
    b.set_timeout(Duration::from_millis(cfg.timeout_ms));
    b.build()
        .map_err(|e| RegistryError::Settings(e.to_string()))
}

// ----------------------------------------------------------------------------- input

/// Why one Avro record cannot be read: a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeFailure {
    /// The `unicus.error.reason` header: `avro_unknown_schema`, `avro_incompatible_schema`,
    /// `avro_undecodable` or `avro_no_registry`.
    pub reason: &'static str,
    pub detail: String,
}

impl From<DecodeFailure> for Rejection {
    fn from(f: DecodeFailure) -> Self {
        Rejection::Avro {
            reason: f.reason,
            detail: f.detail,
        }
    }
}

/// What unicus knows of one writer schema id, for one reader schema.
enum Writer {
    Ready {
        /// Reads the writer's bytes and resolves them to the reader's schema.
        reader: GenericDatumReader<'static>,
        /// The writer's schema is the reader's: the direct decoder reads it.
        same: bool,
    },
    Unusable(DecodeFailure),
}

/// Decodes Confluent-framed Avro input, resolving each writer schema to unicus's reader
/// schema of the topic.
pub struct InputDecoder {
    /// `None`: no registry configured.
    decoder: Option<AvroDecoder>,
    /// By (schema id, reader schema name). Writer schemas are parsed once per id and kept
    /// for the life of the process, like the converter's own cache: ids are few.
    writers: Mutex<HashMap<(u32, &'static str), Arc<Writer>>>,
}

impl InputDecoder {
    pub fn new(cfg: &SchemaRegistrySettings) -> Result<Self, RegistryError> {
        let decoder = if cfg.url.trim().is_empty() {
            None
        } else {
            Some(AvroDecoder::new(sr_settings(cfg)?))
        };
        Ok(Self {
            decoder,
            writers: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, id: u32, reader: &TopicSchema) -> Option<Arc<Writer>> {
        self.writers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(id, reader.file.name))
            .cloned()
    }

    /// True if records of this writer id are read without asking the registry.
    pub fn knows(&self, id: u32, reader: &TopicSchema) -> bool {
        self.cached(id, reader).is_some()
    }

    /// Fetches the writer schemas not seen yet. An outage is returned (nothing is cached
    /// for it): the caller waits and calls again.
    pub async fn prepare(
        &self,
        wanted: &[(u32, &'static TopicSchema)],
    ) -> Result<usize, RegistryError> {
        let mut fetched = 0;
        for &(id, reader) in wanted {
            if self.knows(id, reader) {
                continue;
            }
            let writer = match &self.decoder {
                None => Writer::Unusable(DecodeFailure {
                    reason: "avro_no_registry",
                    detail: format!(
                        "avro record (schema id {id}) but no schema_registry.url is configured"
                    ),
                }),
                Some(decoder) => match decoder.get_schema(id).await {
                    Ok(found) => resolve(id, &found.parsed, reader),
                    Err(e) if error_code(&e) == Some(40403) => Writer::Unusable(DecodeFailure {
                        reason: "avro_unknown_schema",
                        detail: format!("schema id {id} is not in the schema registry"),
                    }),
                    Err(e) if is_http_failure(&e) => {
                        // The converter caches some failed answers (a 500): forget them.
                        decoder.remove_errors_from_cache();
                        return Err(unavailable(&e));
                    }
                    Err(e) => Writer::Unusable(DecodeFailure {
                        reason: "avro_unknown_schema",
                        detail: format!("schema id {id} cannot be used: {e}"),
                    }),
                },
            };
            if let Writer::Unusable(f) = &writer {
                tracing::warn!(schema_id = id, reader = reader.file.name, reason = f.reason, detail = %f.detail, "avro writer schema unusable: its records are refused (input topics: to the dead-letter topic)");
            }
            self.writers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((id, reader.file.name), Arc::new(writer));
            fetched += 1;
        }
        Ok(fetched)
    }

    /// Decodes one Confluent-framed record into the JSON document of `reader`. Call
    /// [`InputDecoder::prepare`] for its schema id first. A number JSON cannot hold is
    /// the field's `bad_value`, as in JSON text; other failures are `avro_*`.
    pub fn decode(
        &self,
        bytes: &[u8],
        reader: &TopicSchema,
        nulls: Nulls,
    ) -> Result<Json, Rejection> {
        let Some((id, mut body)) = super::unframe(bytes) else {
            return Err(DecodeFailure {
                reason: "avro_undecodable",
                detail: format!(
                    "record starts with the avro magic byte but has {} bytes, fewer than the 5-byte header",
                    bytes.len()
                ),
            }
            .into());
        };
        let writer = self.cached(id, reader).ok_or_else(|| DecodeFailure {
            reason: "avro_unknown_schema",
            detail: format!("schema id {id} was not looked up"),
        })?;
        let reader_of_writer = match &*writer {
            Writer::Ready { reader: r, same } => {
                if *same {
                    if let Some(doc) = reader.decode_direct(body, nulls) {
                        return Ok(doc);
                    }
                }
                r
            }
            Writer::Unusable(f) => return Err(f.clone().into()),
        };
        let undecodable = |detail: String| DecodeFailure {
            reason: "avro_undecodable",
            detail: format!("schema id {id}: {detail}"),
        };
        let value = reader_of_writer
            .read_value(&mut body)
            .map_err(|e| undecodable(e.to_string()))?;
        if !body.is_empty() {
            return Err(undecodable(format!(
                "{} bytes left after the datum (not written with this schema)",
                body.len()
            ))
            .into());
        }
        codec::to_json(value, reader.schema, &reader.names, nulls).map_err(|e| match e {
            CodecError::OutOfRange { path } => Rejection::BadValue {
                field: path,
                detail: "number out of range".into(),
            },
            other => undecodable(other.to_string()).into(),
        })
    }
}

/// Prepares the reading of a writer schema into `reader`, or says why it cannot be.
fn resolve(id: u32, writer: &Schema, reader: &'static TopicSchema) -> Writer {
    let incompatible = |detail: String| {
        Writer::Unusable(DecodeFailure {
            reason: "avro_incompatible_schema",
            detail: format!(
                "writer schema id {id} cannot be read as {}: {detail}",
                reader.file.name
            ),
        })
    };
    let writer: &'static Schema = Box::leak(Box::new(writer.clone()));
    let same = writer.canonical_form() == reader.canonical;
    if !same {
        if let Err(e) = SchemaCompatibility::can_read(writer, reader.schema) {
            return incompatible(e.to_string());
        }
    }
    let built = if same {
        GenericDatumReader::builder(reader.schema)
            .resolved_writer_schemata(reader.resolved.clone())
            .build()
    } else {
        GenericDatumReader::builder(writer)
            .reader_schema(reader.schema)
            .resolved_reader_schemata(reader.resolved.clone())
            .build()
    };
    match built {
        Ok(r) => Writer::Ready { reader: r, same },
        Err(e) => incompatible(e.to_string()),
    }
}

// ----------------------------------------------------------------------------- output

/// The registered schema of one Avro output topic.
#[derive(Debug, Clone, Copy)]
struct AvroTopic {
    schema: &'static TopicSchema,
    value_id: u32,
    /// Set when keys are Avro strings.
    key_id: Option<u32>,
}

/// Why an output record cannot be written in its topic's schema: a bug (the outputs and
/// the schemas in `schemas/` disagree), caught by the tests.
#[derive(Debug, thiserror::Error)]
#[error("output record of `{topic}` does not fit its schema in schemas/output/: {source}")]
pub struct EncodeError {
    pub topic: &'static str,
    pub source: CodecError,
}

/// Writes output records in the format of their topic.
#[derive(Debug, Clone, Default)]
pub struct OutputEncoder {
    topics: HashMap<Topic, AvroTopic>,
}

impl OutputEncoder {
    /// Every topic in JSON.
    pub fn json() -> Self {
        Self::default()
    }

    /// An encoder with schema ids already known (tests, benchmarks).
    pub fn with_ids(ids: impl IntoIterator<Item = (Topic, u32, Option<u32>)>) -> Self {
        let c = catalogue();
        Self {
            topics: ids
                .into_iter()
                .filter_map(|(topic, value_id, key_id)| {
                    c.output(topic).map(|schema| {
                        (
                            topic,
                            AvroTopic {
                                schema,
                                value_id,
                                key_id,
                            },
                        )
                    })
                })
                .collect(),
        }
    }

    /// Registers (or finds) the schema of every Avro topic of `topics`, the output topics
    /// of the configuration ([`Topic::outputs`]: the journeys' are only known there): see
    /// the module doc. A topic left out is written in JSON.
    pub async fn connect(
        output: &OutputSettings,
        cfg: &SchemaRegistrySettings,
        topic_prefix: &str,
        topics: &[Topic],
    ) -> Result<Self, RegistryError> {
        if !topics.iter().any(|t| output.format(*t) == Format::Avro) {
            return Ok(Self::json());
        }
        let sr = sr_settings(cfg)?;
        let mut ids = Vec::new();
        for &topic in topics {
            if output.format(topic) != Format::Avro {
                continue;
            }
            let Some(schema) = catalogue().output(topic) else {
                continue;
            };
            let name = format!("{topic_prefix}{}", topic.name());
            let value_id = ensure_registered(
                &sr,
                cfg.register,
                &name,
                false,
                schema.text(),
                &schema.canonical,
            )
            .await?;
            let key_id = match cfg.key_format {
                KeyFormat::String => None,
                KeyFormat::Avro => Some(
                    ensure_registered(&sr, cfg.register, &name, true, r#""string""#, r#""string""#)
                        .await?,
                ),
            };
            tracing::info!(topic = %name, value_id, key_id, "avro output schema ready");
            ids.push((topic, value_id, key_id));
        }
        Ok(Self::with_ids(ids))
    }

    /// True if the topic is written in Avro.
    pub fn is_avro(&self, topic: Topic) -> bool {
        self.topics.contains_key(&topic)
    }

    /// The value bytes of a record (`None`: a tombstone).
    pub fn value(&self, record: &OutputRecord) -> Result<Option<Vec<u8>>, EncodeError> {
        Ok(match (&record.payload, self.topics.get(&record.topic)) {
            (Payload::Tombstone, _) => None,
            (Payload::Raw(b), _) => Some(b.clone()),
            (Payload::Deferred(_), _) => {
                return Err(EncodeError {
                    topic: record.topic.name(),
                    source: CodecError::Shape {
                        path: String::new(),
                        problem: "a golden record encoded before its batch ended".into(),
                    },
                })
            }
            (Payload::Json(v), None) => Some(serde_json::to_vec(v).map_err(|e| EncodeError {
                topic: record.topic.name(),
                source: CodecError::Avro(e.to_string()),
            })?),
            (Payload::Json(v), Some(t)) => {
                let body = t
                    .schema
                    .encode(&avro_shape(record.topic, v))
                    .map_err(|source| EncodeError {
                        topic: record.topic.name(),
                        source,
                    })?;
                Some(super::frame(t.value_id, &body))
            }
        })
    }

    /// The key bytes of a record.
    pub fn key(&self, record: &OutputRecord) -> Option<Vec<u8>> {
        let key = record.key.as_deref()?;
        match self.topics.get(&record.topic).and_then(|t| t.key_id) {
            None => Some(key.as_bytes().to_vec()),
            Some(id) => {
                let body = string_writer()
                    .write_value_to_vec(apache_avro::types::Value::String(key.to_string()))
                    .ok()?;
                Some(super::frame(id, &body))
            }
        }
    }
}

/// The writer of Avro `string` keys.
fn string_writer() -> &'static apache_avro::writer::datum::GenericDatumWriter<'static> {
    static STRING: Schema = Schema::String;
    static WRITER: std::sync::OnceLock<apache_avro::writer::datum::GenericDatumWriter<'static>> =
        std::sync::OnceLock::new();
    WRITER.get_or_init(|| {
        apache_avro::writer::datum::GenericDatumWriter::builder(&STRING)
            .build()
            .expect("the string schema resolves")
    })
}

/// Fields that are open documents in JSON and JSON text in Avro (see schemas/README.md).
pub fn avro_shape(topic: Topic, value: &Json) -> std::borrow::Cow<'_, Json> {
    use std::borrow::Cow;
    match (topic, value) {
        (Topic::Resolved, Json::Object(doc)) => {
            let mut out = serde_json::Map::new();
            for k in [
                "event_id",
                "channel",
                "type",
                "occurred_at",
                "customer_id",
                "resolution",
            ] {
                out.insert(k.into(), doc.get(k).cloned().unwrap_or(Json::Null));
            }
            let event = serde_json::to_string(&Without {
                doc,
                left_out: &["customer_id", "resolution"],
            })
            .unwrap_or_default();
            out.insert("event".into(), Json::String(event));
            Cow::Owned(Json::Object(out))
        }
        (Topic::GdprReceipts, Json::Object(doc))
            if doc.get("export").is_some_and(|e| !e.is_null()) =>
        {
            let mut out = doc.clone();
            let export = out.remove("export").unwrap_or(Json::Null);
            out.insert("export".into(), Json::String(export.to_string()));
            Cow::Owned(Json::Object(out))
        }
        _ => Cow::Borrowed(value),
    }
}

/// A JSON object serialised without some of its keys (no copy of the rest).
struct Without<'a> {
    doc: &'a serde_json::Map<String, Json>,
    left_out: &'a [&'a str],
}

impl serde::Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in self.doc {
            if !self.left_out.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// The JSON form of a record decoded from its Avro form: [`avro_shape`] undone.
pub fn json_shape(topic: Topic, value: Json) -> Json {
    match (topic, value) {
        (Topic::Resolved, Json::Object(mut o)) => {
            let event = o
                .remove("event")
                .and_then(|e| e.as_str().and_then(|t| serde_json::from_str(t).ok()));
            let Some(Json::Object(mut doc)) = event else {
                return Json::Object(o);
            };
            doc.insert(
                "customer_id".into(),
                o.remove("customer_id").unwrap_or(Json::Null),
            );
            doc.insert(
                "resolution".into(),
                o.remove("resolution").unwrap_or(Json::Null),
            );
            Json::Object(doc)
        }
        (Topic::GdprReceipts, Json::Object(mut o)) => {
            if let Some(Json::String(t)) = o.get("export") {
                if let Ok(doc) = serde_json::from_str::<Json>(t) {
                    o.insert("export".into(), doc);
                }
            }
            Json::Object(o)
        }
        (_, v) => v,
    }
}

/// The id of `schema` under the subject of `topic` (TopicNameStrategy), registering it
/// if allowed, after checking it against the subject's latest version.
async fn ensure_registered(
    sr: &SrSettings,
    register: bool,
    topic: &str,
    is_key: bool,
    schema: &str,
    canonical: &str,
) -> Result<u32, RegistryError> {
    let subject = SubjectNameStrategy::TopicNameStrategy(topic.to_string(), is_key)
        .get_subject()
        .map_err(|e| RegistryError::Settings(e.to_string()))?;
    let latest = match get_schema_by_subject_and_version(sr, &subject, None).await {
        Ok(latest) => Some(latest),
        Err(e) if matches!(error_code(&e), Some(40401..=40403)) => None,
        Err(e) if is_http_failure(&e) => return Err(unavailable(&e)),
        Err(e) => {
            return Err(RegistryError::Refused {
                topic: topic.into(),
                subject,
                detail: e.to_string(),
            })
        }
    };
    let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_string());
    if let Some(latest) = &latest {
        let parsed = Schema::parse_str(&latest.schema);
        if parsed
            .as_ref()
            .is_ok_and(|p| p.canonical_form() == canonical)
        {
            return Ok(latest.id);
        }
        if register {
            // Our check first (with the reason), then the registry's (its own level).
            let ours =
                Schema::parse_str(schema).map_err(|e| RegistryError::Settings(e.to_string()))?;
            if let Ok(old) = &parsed {
                if let Err(e) = SchemaCompatibility::can_read(old, &ours) {
                    return Err(RegistryError::Incompatible {
                        topic: topic.into(),
                        subject,
                        detail: e.to_string(),
                    });
                }
            }
            match is_compatible_schema(sr, subject.clone(), supplied.clone()).await {
                Ok(true) => {}
                Ok(false) => {
                    return Err(RegistryError::Incompatible {
                        topic: topic.into(),
                        subject,
                        detail: "the registry's compatibility check refuses it".into(),
                    })
                }
                Err(e) if is_http_failure(&e) && error_code(&e).is_none() => {
                    return Err(unavailable(&e))
                }
                Err(e) => {
                    return Err(RegistryError::Refused {
                        topic: topic.into(),
                        subject,
                        detail: e.to_string(),
                    })
                }
            }
        }
    }
    if !register {
        let body = serde_json::json!({ "schema": schema }).to_string();
        return match perform_sr_call(sr, SrCall::PostForVersion(&subject, &body)).await {
            Ok(found) => found.id.ok_or_else(|| RegistryError::Refused {
                topic: topic.into(),
                subject,
                detail: "lookup answer without an id".into(),
            }),
            Err(e) if matches!(error_code(&e), Some(40401 | 40403)) => {
                Err(RegistryError::NotRegistered {
                    topic: topic.into(),
                    subject,
                })
            }
            Err(e) if is_http_failure(&e) && error_code(&e).is_none() => Err(unavailable(&e)),
            Err(e) => Err(RegistryError::Refused {
                topic: topic.into(),
                subject,
                detail: e.to_string(),
            }),
        };
    }
    match post_schema(sr, subject.clone(), supplied).await {
        Ok(registered) => Ok(registered.id),
        Err(e) if error_code(&e) == Some(409) => Err(RegistryError::Incompatible {
            topic: topic.into(),
            subject,
            detail: e.to_string(),
        }),
        Err(e) if is_http_failure(&e) && error_code(&e).is_none_or(|c| c >= 50000) => {
            Err(unavailable(&e))
        }
        Err(e) => Err(RegistryError::Refused {
            topic: topic.into(),
            subject,
            detail: e.to_string(),
        }),
    }
}

/// The input decoder of a runtime: a reader schema per input topic, and the writer
/// schemas by id.
pub struct InputFormats {
    decoder: InputDecoder,
    /// Reader schema by input topic (with prefix).
    readers: HashMap<String, &'static TopicSchema>,
}

impl InputFormats {
    /// Readers for `touchpoints.<channel>` of each channel, for the requests topic and
    /// for the commands topic (both with their prefix).
    pub fn new(
        cfg: &SchemaRegistrySettings,
        topic_prefix: &str,
        channels: &[String],
        requests_topic: &str,
        commands_topic: &str,
    ) -> Result<Self, RegistryError> {
        let c = catalogue();
        let readers = channels
            .iter()
            .map(|ch| (format!("{topic_prefix}touchpoints.{ch}"), c.input(ch)))
            .chain([
                (requests_topic.to_string(), c.requests()),
                (commands_topic.to_string(), c.commands()),
            ])
            .collect();
        Ok(Self {
            decoder: InputDecoder::new(cfg)?,
            readers,
        })
    }

    fn reader(&self, topic: &str) -> &'static TopicSchema {
        self.readers
            .get(topic)
            .copied()
            .unwrap_or_else(|| catalogue().input(super::schemas::GENERIC_TOUCHPOINT))
    }

    /// The writer schema ids of a batch's Avro records not looked up yet.
    pub fn unknown_ids<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Vec<(u32, &'static TopicSchema)> {
        let mut wanted: Vec<(u32, &'static TopicSchema)> = Vec::new();
        for (topic, bytes) in records {
            if let Some((id, _)) = super::unframe(bytes) {
                let reader = self.reader(topic);
                if !self.decoder.knows(id, reader)
                    && !wanted
                        .iter()
                        .any(|(i, r)| *i == id && r.file.name == reader.file.name)
                {
                    wanted.push((id, reader));
                }
            }
        }
        wanted
    }

    /// Looks up writer schemas (see [`InputFormats::unknown_ids`]); an outage is returned
    /// for the caller to wait and retry.
    pub async fn prepare(
        &self,
        wanted: &[(u32, &'static TopicSchema)],
    ) -> Result<usize, RegistryError> {
        self.decoder.prepare(wanted).await
    }

    /// The document of an Avro record of `topic`, or the reason it is a dead letter.
    pub fn document(
        &self,
        topic: &str,
        bytes: &[u8],
    ) -> Result<serde_json::Map<String, Json>, Rejection> {
        match self
            .decoder
            .decode(bytes, self.reader(topic), Nulls::Drop)?
        {
            Json::Object(doc) => Ok(doc),
            _ => Err(DecodeFailure {
                reason: "avro_undecodable",
                detail: "the datum is not a record".into(),
            }
            .into()),
        }
    }
}

/// The decoder of the reference topics' Avro values (`reference.products`,
/// `reference.stores`): each record is read with its writer schema (from the registry, by
/// id, cached) resolved to unicus's schema of the topic (`schemas/input/reference.*.avsc`),
/// into the JSON document the engine's reference parser reads. Unlike the input topics'
/// records, a record that cannot be decoded has no dead letter: the reader logs it and
/// goes on.
pub struct ReferenceFormats {
    decoder: InputDecoder,
}

impl ReferenceFormats {
    pub fn new(cfg: &SchemaRegistrySettings) -> Result<Self, RegistryError> {
        Ok(Self {
            decoder: InputDecoder::new(cfg)?,
        })
    }

    /// The writer schema id of a framed record of `table` not looked up yet.
    pub fn unknown_id(&self, table: RefTable, bytes: &[u8]) -> Option<u32> {
        let (id, _) = super::unframe(bytes)?;
        (!self.decoder.knows(id, catalogue().reference(table))).then_some(id)
    }

    /// Looks up the writer schema `id` of records of `table` (see [`InputDecoder::prepare`]):
    /// an id the registry does not know, or no registry, is cached as unusable; an outage
    /// is returned, nothing cached, for the caller to retry later.
    pub async fn prepare(&self, table: RefTable, id: u32) -> Result<(), RegistryError> {
        self.decoder
            .prepare(&[(id, catalogue().reference(table))])
            .await
            .map(|_| ())
    }

    /// The document of a framed record of `table` (call [`ReferenceFormats::prepare`] for
    /// its unknown id first), or why it cannot be read (`avro_*`, or `bad_value` for a
    /// number JSON cannot hold). Null fields are left out, as in a JSON value.
    pub fn document(&self, table: RefTable, bytes: &[u8]) -> Result<Json, Rejection> {
        match self
            .decoder
            .decode(bytes, catalogue().reference(table), Nulls::Drop)?
        {
            doc @ Json::Object(_) => Ok(doc),
            _ => Err(DecodeFailure {
                reason: "avro_undecodable",
                detail: "the datum is not a record".into(),
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journey_topic_with_a_schema_id_is_written_in_avro_and_reads_back() {
        let topic = Topic::journey("lapsed_buyer");
        let encoder = OutputEncoder::with_ids([(topic, 31, None)]);
        assert!(encoder.is_avro(topic));
        assert!(
            !encoder.is_avro(Topic::journey("browse_no_cart")),
            "another journey is not"
        );
        let doc = serde_json::json!({
            "trigger_id": "lapsed_buyer:c-7:1772357400000",
            "customer_id": "c-7",
            "journey": "lapsed_buyer",
            "entered_at": "2026-03-01T09:30:00Z",
            "entry_event_id": "e-1",
            "due_at": "2026-04-30T09:30:00Z",
            "purpose": "remarketing",
            "channels_allowed": ["push"],
            "at": "2026-04-30T09:31:00.500Z",
        });
        let value = encoder
            .value(&OutputRecord::json(topic, "c-7", doc.clone()))
            .unwrap()
            .unwrap();
        let (id, body) = super::super::unframe(&value).unwrap();
        assert_eq!(id, 31);
        let schema = catalogue().output(topic).unwrap();
        assert_eq!(
            schema
                .decode_direct(body, Nulls::Keep)
                .map(|v| json_shape(topic, v)),
            Some(doc)
        );
    }

    /// A reference record is read with its writer's schema from the registry, resolved
    /// to unicus's: a producer's catalogue with more fields than unicus reads is read
    /// too; an unknown id, no registry, or bad bytes say why, and an outage caches nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reference_records_are_decoded_with_their_writer_schema() {
        use crate::sim::registry_double::RegistryDouble;
        let registry = RegistryDouble::start().await.unwrap();
        let ours = catalogue().reference(RefTable::Products);
        let id = registry
            .register("reference.products-value", ours.text())
            .unwrap();
        // A catalogue producer's schema: an extra field, required, that unicus drops.
        let mut theirs: Json = serde_json::from_str(ours.text()).unwrap();
        theirs["fields"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "ean", "type": "string", "doc": "EAN-13"}));
        let theirs = TopicSchema::parse(super::super::schemas::SchemaFile {
            dir: "input",
            name: "their-products",
            text: Box::leak(theirs.to_string().into_boxed_str()),
        })
        .unwrap();
        let id_theirs = registry
            .register("their-products-value", theirs.text())
            .unwrap();
        let doc = serde_json::json!({"category_path": ["Sport", "Montagne", "escalade"],
            "brand": "Simond", "price": 129.9, "currency": "EUR"});
        let mut with_ean = doc.clone();
        with_ean["ean"] = "3608439999999".into();
        let framed = super::super::frame(id, &ours.encode(&doc).unwrap());
        let framed_theirs = super::super::frame(id_theirs, &theirs.encode(&with_ean).unwrap());

        let cfg = SchemaRegistrySettings {
            url: registry.url(),
            ..SchemaRegistrySettings::default()
        };
        let formats = ReferenceFormats::new(&cfg).unwrap();
        assert_eq!(formats.unknown_id(RefTable::Products, b"{}"), None, "JSON");
        registry.set_outage(true);
        assert!(formats
            .prepare(RefTable::Products, id)
            .await
            .unwrap_err()
            .is_retriable());
        assert_eq!(
            formats.unknown_id(RefTable::Products, &framed),
            Some(id),
            "nothing cached"
        );
        registry.set_outage(false);
        for (bytes, wid) in [(&framed, id), (&framed_theirs, id_theirs)] {
            assert_eq!(formats.unknown_id(RefTable::Products, bytes), Some(wid));
            formats.prepare(RefTable::Products, wid).await.unwrap();
            assert_eq!(formats.unknown_id(RefTable::Products, bytes), None);
            assert_eq!(formats.document(RefTable::Products, bytes), Ok(doc.clone()));
        }
        // The same id read for the other table is looked up for that table's schema,
        // which a product's schema cannot be resolved to.
        assert_eq!(formats.unknown_id(RefTable::Stores, &framed), Some(id));
        formats.prepare(RefTable::Stores, id).await.unwrap();
        let reason = |table, bytes: &[u8]| match formats.document(table, bytes) {
            Err(r) => r.reason(),
            Ok(doc) => panic!("decoded: {doc}"),
        };
        assert_eq!(
            reason(RefTable::Stores, &framed),
            "avro_incompatible_schema"
        );
        let unknown = super::super::frame(9_999, &ours.encode(&doc).unwrap());
        formats.prepare(RefTable::Products, 9_999).await.unwrap();
        assert_eq!(reason(RefTable::Products, &unknown), "avro_unknown_schema");
        let garbage = super::super::frame(id, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(reason(RefTable::Products, &garbage), "avro_undecodable");
        assert_eq!(reason(RefTable::Products, &[0, 0, 1]), "avro_undecodable");

        // Without a registry, an Avro record says so.
        let none = ReferenceFormats::new(&SchemaRegistrySettings::default()).unwrap();
        none.prepare(RefTable::Products, id).await.unwrap();
        assert_eq!(
            none.document(RefTable::Products, &framed)
                .map_err(|r| r.reason()),
            Err("avro_no_registry")
        );
    }
}
