//! The reference topics (`reference.products`, `reference.stores`), read whole by every
//! instance as Kafka Streams reads a GlobalKTable: every partition assigned (no group
//! membership, no commit), read from the start to its end before the first batch
//! (restore), then followed: what has arrived is applied before each batch, and made
//! durable with it. Reference data is kept in the store (`engine::reference`); at each
//! start the topics are read again from their start (they are compacted: one record per
//! key), so a restart never misses an update. A topic that does not exist is left out:
//! reference data is optional. A record that cannot be read is logged and counted,
//! never blocks the stream.
//!
//! Values are JSON text, or Avro in the Confluent wire format (magic byte `0`, schema
//! id, body; `schemas/input/reference.*.avsc`): an Avro value is decoded with its writer
//! schema, looked up in the registry by id (once per id, cached, with the runtime's
//! `[schema_registry]` settings), into the JSON document the engine reads. An Avro record
//! that cannot be decoded (an id the registry does not know, no registry configured, bad
//! bytes) is logged with its reason and skipped: its key keeps what it had. During a
//! registry outage the partition is rewound to the record and read again after
//! `runtime.retry_backoff_ms` (the restore waits, within its patience; following, the
//! batches go on meanwhile).

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::{kafka, RuntimeError};
use crate::engine::input::touchpoint::Rejection;
use crate::engine::reference::RefTable;
use crate::engine::Engine;
use crate::kafka::avro::registry::{ReferenceFormats, RegistryError};
use crate::settings::Settings;

/// How long the restore waits for a partition's end before it goes on without it.
const RESTORE_PATIENCE: Duration = Duration::from_secs(60);

pub struct ReferenceReader {
    consumer: BaseConsumer,
    /// `(topic, table)` of the reference topics that exist.
    topics: Vec<(String, RefTable)>,
    /// `(topic, partition, end)`: where each partition ended when the reader opened.
    ends: Vec<(String, i32, i64)>,
    /// Avro values, decoded with their writer schemas from the registry.
    formats: ReferenceFormats,
    /// How long a registry outage is waited out before the record is read again.
    backoff: Duration,
    /// After an outage: when following may read again (the record is rewound to).
    retry_at: Option<Instant>,
}

/// What became of one record.
enum Applied {
    /// Applied, or refused (logged): the reader goes on.
    Read,
    /// Its writer schema could not be looked up (registry outage): read again later.
    Later(RegistryError),
}

/// Why an Avro value was not decoded.
enum Unread {
    Outage(RegistryError),
    Refused(Rejection),
}

impl ReferenceReader {
    /// Assigns every partition of the reference topics that exist, from their start;
    /// `None` when there is none. Avro values are read with `settings.schema_registry`.
    pub fn open(settings: &Settings) -> Result<Option<Self>, RuntimeError> {
        let consumer = super::clients::assigned_consumer(
            settings,
            "reference",
            "creating the reference reader",
        )?;
        let mut topics = Vec::new();
        let mut ends = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for table in RefTable::ALL {
            let topic = format!("{}{}", settings.kafka.topic_prefix, table.topic());
            let partitions = match consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)) {
                Ok(m) => m
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .map(|t| t.partitions().len() as i32)
                    .sum::<i32>(),
                Err(e) => {
                    warn!(%topic, error = %e, "reference topic metadata unavailable: left out");
                    0
                }
            };
            if partitions == 0 {
                info!(%topic, "no reference topic: its reference data stays as it is");
                continue;
            }
            for p in 0..partitions {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .map_err(kafka("reading a reference partition's end"))?;
                ends.push((topic.clone(), p, high));
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .map_err(kafka("assigning the reference topics"))?;
            }
            topics.push((topic, table));
        }
        if topics.is_empty() {
            return Ok(None);
        }
        consumer
            .assign(&tpl)
            .map_err(kafka("assigning the reference topics"))?;
        drop(tpl);
        Ok(Some(Self {
            consumer,
            topics,
            ends,
            formats: ReferenceFormats::new(&settings.schema_registry)?,
            backoff: Duration::from_millis(settings.runtime.retry_backoff_ms),
            retry_at: None,
        }))
    }

    /// Reads every partition to the end it had when the reader opened, applies it, and
    /// makes it durable: the reference data is whole before the first event. Gives the
    /// records read.
    pub fn restore(&mut self, engine: &mut Engine) -> Result<u64, RuntimeError> {
        let started = Instant::now();
        let mut read = 0;
        let mut last_progress = Instant::now();
        while !self.caught_up()? {
            if last_progress.elapsed() > RESTORE_PATIENCE {
                warn!(
                    records = read,
                    "reference data not read to its end in 60 s: going on, the rest follows"
                );
                break;
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => match self.apply(engine, &m)? {
                    Applied::Read => {
                        read += 1;
                        last_progress = Instant::now();
                    }
                    Applied::Later(e) => {
                        self.rewind(&m, &e);
                        std::thread::sleep(self.backoff.min(RESTORE_PATIENCE));
                    }
                },
                Some(Err(e)) => warn!(error = %e, "reading reference data"),
                None => {}
            }
        }
        engine.commit()?;
        info!(
            records = read,
            ms = started.elapsed().as_millis() as u64,
            "reference data restored"
        );
        Ok(read)
    }

    /// Whether every partition's position has reached its end as of opening.
    fn caught_up(&self) -> Result<bool, RuntimeError> {
        let positions = self
            .consumer
            .position()
            .map_err(kafka("reading the reference positions"))?;
        Ok(self.ends.iter().all(|(topic, p, end)| {
            *end == 0
                || positions
                    .find_partition(topic, *p)
                    .is_some_and(|tp| matches!(tp.offset(), Offset::Offset(o) if o >= *end))
        }))
    }

    /// Applies what has arrived since (without waiting): staged in the store, durable
    /// with the next batch. Gives the records read. After a registry outage, nothing is
    /// read until its back-off has passed.
    pub fn follow(&mut self, engine: &mut Engine) -> Result<u64, RuntimeError> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(0);
        }
        self.retry_at = None;
        let mut read = 0;
        while let Some(polled) = self.consumer.poll(Duration::ZERO) {
            match polled {
                Ok(m) => match self.apply(engine, &m)? {
                    Applied::Read => read += 1,
                    Applied::Later(e) => {
                        self.rewind(&m, &e);
                        self.retry_at = Some(Instant::now() + self.backoff);
                        break;
                    }
                },
                Err(e) => warn!(error = %e, "reading reference data"),
            }
        }
        Ok(read)
    }

    /// Puts the partition of `m` back at `m`, to read it again once the registry
    /// answers. If that fails, the record is left out until the next start (which reads
    /// the topics again from their start).
    fn rewind(&self, m: &BorrowedMessage<'_>, outage: &RegistryError) {
        let rewound = self.consumer.seek(
            m.topic(),
            m.partition(),
            Offset::Offset(m.offset()),
            Duration::from_secs(10),
        );
        match rewound {
            Ok(()) => warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                error = %outage,
                "avro reference record: writer schema not available; read again in {:?}",
                self.backoff
            ),
            Err(e) => warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                error = %outage,
                seek_error = %e,
                "avro reference record: writer schema not available, and the partition cannot be rewound: left out until the next start"
            ),
        }
    }

    fn apply(&self, engine: &mut Engine, m: &BorrowedMessage<'_>) -> Result<Applied, RuntimeError> {
        let Some(&(_, table)) = self.topics.iter().find(|(t, _)| t == m.topic()) else {
            return Ok(Applied::Read);
        };
        let decoded;
        let value = match m.payload() {
            Some(bytes) if crate::kafka::avro::is_framed(bytes) => {
                match self.decode(table, bytes) {
                    Ok(json) => {
                        decoded = json;
                        Some(decoded.as_slice())
                    }
                    Err(Unread::Outage(e)) => return Ok(Applied::Later(e)),
                    Err(Unread::Refused(rejection)) => {
                        refused(m, &rejection);
                        engine.count_reference_refused();
                        return Ok(Applied::Read);
                    }
                }
            }
            other => other,
        };
        if let Err(rejection) = engine.reference(table, m.key(), value)? {
            refused(m, &rejection);
        }
        Ok(Applied::Read)
    }

    /// The JSON text of a Confluent-framed Avro value, its writer schema looked up first
    /// if it is not known yet.
    fn decode(&self, table: RefTable, bytes: &[u8]) -> Result<Vec<u8>, Unread> {
        if let Some(id) = self.formats.unknown_id(table, bytes) {
            block_on(self.formats.prepare(table, id))
                .and_then(|looked_up| looked_up)
                .map_err(Unread::Outage)?;
        }
        let doc = self
            .formats
            .document(table, bytes)
            .map_err(Unread::Refused)?;
        serde_json::to_vec(&doc).map_err(|e| {
            Unread::Refused(Rejection::Avro {
                reason: "avro_undecodable",
                detail: e.to_string(),
            })
        })
    }
}

/// Logs a reference record that cannot be read (counted by the engine).
fn refused(m: &BorrowedMessage<'_>, rejection: &Rejection) {
    warn!(
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        reason = rejection.reason(),
        error = %rejection,
        "reference record refused: its key keeps what it had"
    );
}

/// Runs a registry lookup to its end from the reader, which runs in a blocking context:
/// inside `tokio::task::block_in_place` on the runtime's threads (the registry client
/// then works on the runtime), or outside any runtime (then on one of its own).
fn block_on<F: Future>(lookup: F) -> Result<F::Output, RegistryError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(handle.block_on(lookup)),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(lookup))
            .map_err(|e| {
                RegistryError::Unavailable(format!("no runtime for the registry client: {e}"))
            }),
    }
}
