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
}

impl Attempt {
    fn failed(&mut self, e: &KafkaError) {
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
        let stats = self.stats.clone();
        let health = &stats.telemetry.health;
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut shutdown_since: Option<Instant> = None;
        loop {
            health.outputs_sent();
            let mut attempt = Attempt::default();
            let (sent, mut failed) = self.enqueue(records, &pending, &mut attempt).await;
            self.acknowledgements(records, sent, &mut failed, &mut attempt)
                .await;
            if attempt.acknowledged > 0 {
                self.rebuilds_in_a_row = 0;
            }
            if failed.is_empty() {
                health.outputs_settled();
                return Ok(true);
            }
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
                    return Ok(false);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.backoff) => {}
                _ = shutdown.changed() => {}
            }
            pending = failed;
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
                        attempt.failed(&e);
                        failed.push(i);
                        break;
                    }
                }
            }
        }
        (sent, failed)
    }

    /// Waits for the acknowledgement of every record sent; adds those not acknowledged
    /// to `failed`.
    async fn acknowledgements(
        &self,
        records: &[WireRecord],
        sent: Vec<(usize, DeliveryFuture)>,
        failed: &mut Vec<usize>,
        attempt: &mut Attempt,
    ) {
        let health = &self.stats.telemetry.health;
        for (i, f) in sent {
            match f.await {
                Ok(Ok(_)) => {
                    attempt.acknowledged += 1;
                    health.output_acknowledged();
                    self.stats.produced.fetch_add(1, Ordering::Relaxed);
                    if let Some(ts) = records[i].source_timestamp {
                        self.stats
                            .record_latency(chrono::Utc::now().timestamp_millis() - ts);
                    }
                }
                Ok(Err((e, _))) => {
                    attempt.failed(&e);
                    failed.push(i);
                }
                Err(_) => {
                    attempt.last_error = Some("delivery cancelled".into());
                    failed.push(i);
                }
            }
        }
    }

    /// Waits (up to the drain deadline) for what the producer still holds.
    pub(super) fn flush(&self) {
        let flushed = tokio::task::block_in_place(|| self.producer.flush(self.drain_deadline));
        if let Err(e) = flushed {
            warn!(error = %e, "producer flush incomplete");
        }
    }
}
