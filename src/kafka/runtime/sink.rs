//! The sink: output records encoded in their topic's format, produced, and waited for
//! until the broker has acknowledged every one of them (retried, never dropped).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::warn;

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

/// The producer, and how its deliveries are retried.
pub(super) struct Sink {
    producer: FutureProducer,
    stats: Arc<RuntimeStats>,
    /// Wait between two delivery attempts.
    pub(super) backoff: Duration,
    /// How long an outage may hold a shutdown up, and the final flush.
    pub(super) drain_deadline: Duration,
}

impl Sink {
    pub(super) fn new(settings: &Settings, stats: Arc<RuntimeStats>) -> Result<Self, RuntimeError> {
        Ok(Self {
            producer: super::producer_config(settings)
                .create()
                .map_err(kafka("creating the producer"))?,
            stats,
            backoff: Duration::from_millis(settings.runtime.retry_backoff_ms),
            drain_deadline: Duration::from_millis(settings.runtime.shutdown_timeout_ms),
        })
    }

    /// Produces records and waits until every one is acknowledged, retrying failures
    /// with back-off. Returns early (false) only if shutdown is requested during an
    /// outage.
    pub(super) async fn deliver(
        &self,
        records: &[WireRecord],
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut shutdown_since: Option<Instant> = None;
        loop {
            let (sent, mut failed) = self.enqueue(records, &pending).await;
            let last_error = self.acknowledgements(records, sent, &mut failed).await;
            if failed.is_empty() {
                return true;
            }
            self.stats.delivery_retries.fetch_add(1, Ordering::Relaxed);
            self.stats.telemetry.delivery_retry();
            self.stats.telemetry.health.beat();
            warn!(
                records = failed.len(),
                error = last_error.as_deref().unwrap_or("enqueue failed"),
                "outputs not acknowledged; retrying in {:?}",
                self.backoff
            );
            if *shutdown.borrow() {
                let since = *shutdown_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.drain_deadline {
                    return false;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.backoff) => {}
                _ = shutdown.changed() => {}
            }
            pending = failed;
        }
    }

    /// Hands the `pending` records to the producer: their delivery futures, and the
    /// records it refused.
    async fn enqueue(
        &self,
        records: &[WireRecord],
        pending: &[usize],
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
                        warn!(error = %e, topic = %records[i].topic, "cannot enqueue output record");
                        failed.push(i);
                        break;
                    }
                }
            }
        }
        (sent, failed)
    }

    /// Waits for the acknowledgement of every record sent; adds those not acknowledged
    /// to `failed` and returns the last error.
    async fn acknowledgements(
        &self,
        records: &[WireRecord],
        sent: Vec<(usize, DeliveryFuture)>,
        failed: &mut Vec<usize>,
    ) -> Option<String> {
        let mut last_error = None;
        for (i, f) in sent {
            match f.await {
                Ok(Ok(_)) => {
                    self.stats.produced.fetch_add(1, Ordering::Relaxed);
                    if let Some(ts) = records[i].source_timestamp {
                        self.stats
                            .record_latency(chrono::Utc::now().timestamp_millis() - ts);
                    }
                }
                Ok(Err((e, _))) => {
                    last_error = Some(e.to_string());
                    failed.push(i);
                }
                Err(_) => {
                    last_error = Some("delivery cancelled".into());
                    failed.push(i);
                }
            }
        }
        last_error
    }

    /// Waits (up to the drain deadline) for what the producer still holds.
    pub(super) fn flush(&self) {
        let flushed = tokio::task::block_in_place(|| self.producer.flush(self.drain_deadline));
        if let Err(e) = flushed {
            warn!(error = %e, "producer flush incomplete");
        }
    }
}
