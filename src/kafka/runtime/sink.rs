//! The sink: output records encoded in their topic's format, produced, and waited for
//! until the broker has acknowledged every one of them (retried, never dropped).
//!
//! A producer that fails fatally (librdkafka's fatal error, a fenced producer id or
//! epoch, a sequence it cannot repair) would refuse every later attempt: it is replaced
//! by a new one with the same settings, which sends what was not acknowledged. After
//! [`REBUILDS_IN_A_ROW`] replacements that acknowledge nothing, delivery gives up with an
//! error and the process exits; the outbox keeps the outputs for the next start.
//! Timeouts are not fatal: a new producer cannot make an absent broker answer, and the
//! idempotent producer repairs its own sequence state after them (it bumps its epoch).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, warn};

use super::{kafka, registry_backoff, RuntimeError, RuntimeStats};
use crate::kafka::avro::registry::{EncodeError, OutputEncoder};
use crate::model::output::OutputRecord;
use crate::settings::Settings;

/// An output record as it goes on the wire (and into the outbox).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRecord {
    pub topic: String,
    /// The key bytes: a customer id as UTF-8, or an Avro string (`schema_registry.key_format`).
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// Timestamp (ms) of the input record that caused it, for the latency histogram.
    pub source_timestamp: Option<i64>,
    /// When unicus began to receive the batch of that input (wall clock, ms): the
    /// latency inside unicus is counted from it. Not kept in the outbox.
    #[serde(skip)]
    pub received_at: Option<i64>,
    /// A record of the store's changelog (never in the outbox): it goes to the
    /// changelog's one partition and is not counted as an output.
    #[serde(skip)]
    pub changelog: bool,
}

impl WireRecord {
    /// The record in its topic's format (JSON, or Avro with the schema id `encoder`
    /// registered). It goes to the outbox as these bytes, so a resent record is the same.
    pub fn from_output(
        record: &OutputRecord,
        settings: &Settings,
        encoder: &OutputEncoder,
        source_timestamp: Option<i64>,
    ) -> Result<Self, EncodeError> {
        Ok(Self {
            topic: settings.kafka.topic(record.topic),
            key: encoder.key(record),
            payload: encoder.value(record)?,
            headers: record.headers.clone(),
            source_timestamp,
            received_at: None,
            changelog: false,
        })
    }

    /// The record as the producer takes it.
    fn to_future_record(&self) -> FutureRecord<'_, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = &self.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &self.payload {
            record = record.payload(p.as_slice());
        }
        if self.changelog {
            record = record.partition(0);
        }
        record
    }
}

/// Avro outputs: schemas registered (or found) before anything is produced. `None`:
/// shutdown was requested during a registry outage.
pub(super) async fn connect_encoder(
    settings: &Settings,
    stats: &RuntimeStats,
    backoff: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<OutputEncoder>, RuntimeError> {
    loop {
        let connected = OutputEncoder::connect(
            &settings.output,
            &settings.schema_registry,
            &settings.kafka.topic_prefix,
            &crate::model::output::Topic::outputs(&settings.engine),
        )
        .await;
        match connected {
            Ok(encoder) => return Ok(Some(encoder)),
            Err(e) if e.is_retriable() => {
                if !registry_backoff(&e, stats, backoff, shutdown).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Producers replaced after a fatal error, without an acknowledgement in between,
/// before delivery gives up.
pub(super) const REBUILDS_IN_A_ROW: u32 = 5;

/// Errors after which a producer cannot deliver again: librdkafka's fatal error (its
/// idempotence state is lost), and a broker that no longer accepts its producer id or
/// epoch. Retrying with the same producer fails forever.
fn is_fatal(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fatal
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::GaplessGuarantee
    )
}

/// What one delivery attempt came to.
#[derive(Default)]
struct Attempt {
    /// Records the broker acknowledged.
    acknowledged: usize,
    /// The last error of a record not acknowledged.
    last_error: Option<String>,
    /// A fatal error of the producer, if one was seen.
    fatal: Option<String>,
    /// Records not acknowledged.
    failed: Vec<usize>,
    /// When the last acknowledgement came (wall clock, ms).
    last_acknowledged: Option<i64>,
}

impl Attempt {
    fn saw_error(&mut self, e: &KafkaError) {
        let text = e.to_string();
        if self.fatal.is_none() && e.rdkafka_error_code().is_some_and(is_fatal) {
            self.fatal = Some(text.clone());
        }
        self.last_error = Some(text);
    }
}

/// The producer, and how its deliveries are retried.
pub(super) struct Sink {
    producer: FutureProducer,
    /// The producer's settings, to make a new one after a fatal error.
    config: ClientConfig,
    /// Producers replaced since the last acknowledgement.
    rebuilds_in_a_row: u32,
    stats: Arc<RuntimeStats>,
    /// Wait between two delivery attempts.
    pub(super) backoff: Duration,
    /// How long an outage may hold a shutdown up, and the final flush.
    pub(super) drain_deadline: Duration,
}

impl Sink {
    pub(super) fn new(settings: &Settings, stats: Arc<RuntimeStats>) -> Result<Self, RuntimeError> {
        let config = super::producer_config(settings);
        Ok(Self {
            producer: config.create().map_err(kafka("creating the producer"))?,
            config,
            rebuilds_in_a_row: 0,
            stats,
            backoff: Duration::from_millis(settings.runtime.retry_backoff_ms),
            drain_deadline: Duration::from_millis(settings.runtime.shutdown_timeout_ms),
        })
    }

    /// Produces records and waits until every one is acknowledged, retrying failures
    /// with back-off and replacing a producer that failed fatally. Returns early
    /// (`Ok(false)`) if shutdown is requested during an outage, and an error once
    /// [`REBUILDS_IN_A_ROW`] new producers in a row failed fatally too.
    pub(super) async fn deliver(
        &mut self,
        records: &[WireRecord],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, RuntimeError> {
        let sending = self.send(records).await;
        Ok(self.settle(records, sending, shutdown).await?.is_some())
    }

    /// Hands every record to the producer and returns at once: their acknowledgements
    /// are awaited in the background (each timed when it arrives) until
    /// [`Sink::settle`].
    pub(super) async fn send(&self, records: &[WireRecord]) -> Sending {
        let all: Vec<usize> = (0..records.len()).collect();
        self.send_some(records, &all).await
    }

    async fn send_some(&self, records: &[WireRecord], pending: &[usize]) -> Sending {
        self.stats.telemetry.health.outputs_sent();
        let mut attempt = Attempt::default();
        let (sent, failed) = self.enqueue(records, pending, &mut attempt).await;
        let stamps: Vec<Stamp> = sent
            .iter()
            .map(|(i, _)| Stamp {
                index: *i,
                source_timestamp: records[*i].source_timestamp,
                received_at: records[*i].received_at,
                changelog: records[*i].changelog,
            })
            .collect();
        let futures: Vec<DeliveryFuture> = sent.into_iter().map(|(_, f)| f).collect();
        let acknowledgements = tokio::spawn(acknowledgements(self.stats.clone(), stamps, futures));
        Sending {
            acknowledgements,
            failed,
            attempt,
        }
    }

    /// Waits until every record of `sending` (made of `records`) is acknowledged,
    /// sending again what was not, as [`Sink::deliver`] does. Returns when the last
    /// acknowledgement came (wall clock, ms; now if there was none to wait for), or
    /// `None` if shutdown was requested during an outage.
    pub(super) async fn settle(
        &mut self,
        records: &[WireRecord],
        mut sending: Sending,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<i64>, RuntimeError> {
        let mut last_acknowledged: Option<i64> = None;
        let stats = self.stats.clone();
        let health = &stats.telemetry.health;
        let mut shutdown_since: Option<Instant> = None;
        loop {
            let mut attempt = sending.attempt;
            let mut failed = sending.failed;
            match sending.acknowledgements.await {
                Ok(acks) => {
                    attempt.acknowledged += acks.acknowledged;
                    if let Some(e) = acks.last_error {
                        attempt.last_error = Some(e);
                    }
                    if attempt.fatal.is_none() {
                        attempt.fatal = acks.fatal;
                    }
                    failed.extend(acks.failed);
                    last_acknowledged = last_acknowledged.max(acks.last_acknowledged);
                }
                Err(e) => {
                    // The task cannot fail but by a panic: none of its records counts
                    // as acknowledged.
                    attempt.last_error = Some(format!("acknowledgements lost: {e}"));
                    failed = (0..records.len()).collect();
                }
            }
            if attempt.acknowledged > 0 {
                self.rebuilds_in_a_row = 0;
            }
            if failed.is_empty() {
                health.outputs_settled();
                return Ok(Some(
                    last_acknowledged.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
                ));
            }
            failed.sort_unstable();
            failed.dedup();
            stats.delivery_retries.fetch_add(1, Ordering::Relaxed);
            stats.telemetry.delivery_retry();
            health.beat();
            warn!(
                records = failed.len(),
                error = attempt.last_error.as_deref().unwrap_or("enqueue failed"),
                "outputs not acknowledged; retrying in {:?}",
                self.backoff
            );
            let fatal = attempt.fatal.or_else(|| {
                let (code, reason) = self.producer.client().fatal_error()?;
                Some(format!("{code}: {reason}"))
            });
            if let Some(cause) = fatal {
                self.replace_producer(&cause)?;
            }
            if *shutdown.borrow() {
                let since = *shutdown_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.drain_deadline {
                    return Ok(None);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.backoff) => {}
                _ = shutdown.changed() => {}
            }
            sending = self.send_some(records, &failed).await;
        }
    }

    /// Replaces a producer that failed fatally by a new one with the same settings; an
    /// error once too many did in a row.
    fn replace_producer(&mut self, cause: &str) -> Result<(), RuntimeError> {
        if self.rebuilds_in_a_row >= REBUILDS_IN_A_ROW {
            error!(
                error = cause,
                rebuilds = self.rebuilds_in_a_row,
                "the producer keeps failing fatally; giving up: outputs not acknowledged stay in the outbox for the next start"
            );
            return Err(RuntimeError::ProducerUnrecoverable {
                rebuilds: self.rebuilds_in_a_row,
                cause: cause.to_string(),
            });
        }
        let fresh = self
            .config
            .create()
            .map_err(kafka("re-creating the producer"))?;
        let failed = std::mem::replace(&mut self.producer, fresh);
        // Dropping purges what it still holds and waits for it (up to 500 ms).
        tokio::task::block_in_place(|| drop(failed));
        self.rebuilds_in_a_row += 1;
        self.stats.producer_rebuilds.fetch_add(1, Ordering::Relaxed);
        self.stats.telemetry.producer_rebuilt();
        warn!(
            error = cause,
            rebuilds_in_a_row = self.rebuilds_in_a_row,
            "the producer failed fatally; a new one sends the outputs not acknowledged"
        );
        Ok(())
    }

    /// Hands the `pending` records to the producer: their delivery futures, and the
    /// records it refused (the error goes to `attempt`).
    async fn enqueue(
        &self,
        records: &[WireRecord],
        pending: &[usize],
        attempt: &mut Attempt,
    ) -> (Vec<(usize, DeliveryFuture)>, Vec<usize>) {
        let mut sent = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        for &i in pending {
            let mut record = records[i].to_future_record();
            loop {
                match self.producer.send_result(record) {
                    Ok(f) => {
                        sent.push((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Back-pressure: let librdkafka drain its queue, then retry.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        if failed.is_empty() {
                            warn!(error = %e, topic = %records[i].topic, "cannot enqueue output record");
                        }
                        attempt.saw_error(&e);
                        failed.push(i);
                        break;
                    }
                }
            }
        }
        (sent, failed)
    }

    /// Waits (up to the drain deadline) for what the producer still holds.
    pub(super) fn flush(&self) {
        let flushed = tokio::task::block_in_place(|| self.producer.flush(self.drain_deadline));
        if let Err(e) = flushed {
            warn!(error = %e, "producer flush incomplete");
        }
    }
}

/// Records handed to the producer, whose acknowledgements are awaited in the
/// background.
pub(super) struct Sending {
    acknowledgements: tokio::task::JoinHandle<Attempt>,
    /// Records the producer refused.
    failed: Vec<usize>,
    attempt: Attempt,
}

/// A record sent, as its acknowledgement is counted.
struct Stamp {
    index: usize,
    /// The timestamp of its input.
    source_timestamp: Option<i64>,
    /// When unicus began to receive its input's batch.
    received_at: Option<i64>,
    changelog: bool,
}

/// Waits for the acknowledgement of each record sent (`stamps`, in the order of
/// `futures`), timing each as it arrives; the records not acknowledged are in `failed`.
async fn acknowledgements(
    stats: Arc<RuntimeStats>,
    stamps: Vec<Stamp>,
    futures: Vec<DeliveryFuture>,
) -> Attempt {
    let health = &stats.telemetry.health;
    let mut attempt = Attempt::default();
    for (stamp, f) in stamps.into_iter().zip(futures) {
        let i = stamp.index;
        match f.await {
            Ok(Ok(delivery)) => {
                attempt.acknowledged += 1;
                health.output_acknowledged();
                if stamp.changelog {
                    stats.changelog_records.fetch_add(1, Ordering::Relaxed);
                    stats
                        .changelog_next
                        .fetch_max(delivery.offset.saturating_add(1), Ordering::Relaxed);
                } else {
                    stats.produced.fetch_add(1, Ordering::Relaxed);
                }
                let now = chrono::Utc::now().timestamp_millis();
                attempt.last_acknowledged = Some(now);
                if let Some(ts) = stamp.source_timestamp {
                    stats.record_latency(now, ts, stamp.received_at);
                }
            }
            Ok(Err((e, _))) => {
                attempt.saw_error(&e);
                attempt.failed.push(i);
            }
            Err(_) => {
                attempt.last_error = Some("delivery cancelled".into());
                attempt.failed.push(i);
            }
        }
    }
    attempt
}
