//! The Kafka runtime: per-channel input topics → engine → output topics.
//!
//! # Guarantees
//!
//! At-least-once on outputs, exactly-once on state. Each batch goes through these steps
//! in this order, and offsets are committed last:
//!
//! 1. consume up to `batch_max_events` records (or for `batch_max_wait_ms`);
//! 2. run the engine over them (a redelivered `event_id` changes nothing);
//! 3. write the engine's state **and the batch's output records (the outbox)** to the
//!    store in one atomic, flushed write; the previous batch's outbox entry, already
//!    acknowledged, is removed in the same write;
//! 4. produce the outputs and wait for every acknowledgement, retrying (with back-off,
//!    logged and counted) for as long as the broker does not acknowledge;
//! 5. commit the offsets after the last record of the batch (a committed offset is the
//!    next one to read).
//!
//! A crash before 3 leaves no trace: the records are consumed again. A crash after 3
//! leaves the outbox: on start, its records are produced again before anything is
//! consumed, and the records of the batch, consumed again since their offsets were not
//! committed, are recognised by `event_id` and change nothing. Outputs may therefore
//! be duplicated, never lost; state is never counted twice.
//!
//! A rebalance can only happen while records are being consumed (step 1), inside the
//! client's poll: the records gathered before it are dropped, since the eager
//! assignment the runtime asserts puts every partition back at its committed offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::engine::{Engine, EngineError, InputKind, Record, Stats};
use crate::kafka::avro::registry::{EncodeError, InputFormats, OutputEncoder, RegistryError};
use crate::kafka::settings::Settings;
use crate::model::output::{OutputRecord, Topic};
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::{self, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kafka client error while {action}: {source}")]
    Kafka {
        action: &'static str,
        source: KafkaError,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode an output record: {0}")]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: String,
        source: std::io::Error,
    },
}

fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> RuntimeError {
    move |source| RuntimeError::Kafka { action, source }
}

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
}

/// Live counters of a running runtime, shared with whoever watches it (demo, bench,
/// the metrics endpoint).
#[derive(Debug, Default)]
pub struct RuntimeStats {
    pub consumed: AtomicU64,
    pub produced: AtomicU64,
    pub batches: AtomicU64,
    pub delivery_retries: AtomicU64,
    pub rebalances: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub outbox_resent: AtomicU64,
    /// Schema Registry calls that failed and were retried (an outage).
    pub registry_retries: AtomicU64,
    pub customers: AtomicU64,
    /// The engine's counters after the last batch.
    pub engine: Mutex<Stats>,
    latencies_ms: Mutex<Vec<u32>>,
    /// Prometheus metrics and health, updated per batch.
    pub telemetry: Arc<Telemetry>,
}

/// Latency samples kept (the most recent ones).
const LATENCY_SAMPLES: usize = 200_000;

impl RuntimeStats {
    fn record_latency(&self, ms: i64) {
        let mut l = self.latencies_ms.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() >= LATENCY_SAMPLES {
            l.drain(..LATENCY_SAMPLES / 2);
        }
        l.push(ms.clamp(0, i64::from(u32::MAX)) as u32);
    }

    /// Forgets the latency samples (to measure one phase).
    pub fn reset_latencies(&self) {
        self.latencies_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Input-to-acknowledged-output latency percentile, in ms.
    pub fn latency_percentile(&self, p: f64) -> Option<u32> {
        let mut l = self
            .latencies_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        let i = ((l.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
        Some(l[i])
    }
}

/// Counts rebalances so a batch gathered across one is dropped.
struct RuntimeContext {
    generation: Arc<AtomicU64>,
    stats: Arc<RuntimeStats>,
}

impl ClientContext for RuntimeContext {
    /// Consumer lag, every `metrics.lag_interval_ms`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.stats.telemetry.consumer_statistics(&statistics);
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        let telemetry = &self.stats.telemetry;
        match rebalance {
            Rebalance::Assign(tpl) => {
                info!(partitions = tpl.count(), "partitions assigned");
                telemetry.rebalanced("assign", Some(tpl.count()));
            }
            Rebalance::Revoke(tpl) => {
                info!(partitions = tpl.count(), "partitions revoked");
                telemetry.rebalanced("revoke", Some(0));
            }
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
                telemetry.rebalanced("error", None);
            }
        }
    }
}

const OUTBOX_PREFIX: &[u8] = b"o/";
const OUTBOX_SEQ: &[u8] = b"m/outbox_seq";

fn outbox_key(seq: u64) -> Vec<u8> {
    let mut k = OUTBOX_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Which client a pass-through property is meant for.
#[derive(Clone, Copy, PartialEq)]
enum Role {
    Consumer,
    Producer,
    Admin,
}

/// Properties librdkafka accepts on one kind of client only (it warns on the other).
fn belongs_to(name: &str, role: Role) -> bool {
    const CONSUMER_ONLY: [&str; 12] = [
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "partition.assignment.strategy",
        "isolation.level",
        "enable.partition.eof",
        "group.instance.id",
        "group.protocol",
        "check.crcs",
        "fetch.",
        "queued.",
    ];
    const PRODUCER_ONLY: [&str; 12] = [
        "linger.ms",
        "acks",
        "request.required.acks",
        "compression.",
        "batch.",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "queue.buffering.",
        "enable.idempotence",
        "retries",
        "message.send.max.retries",
        "transactional.id",
    ];
    let is = |list: &[&str]| {
        list.iter().any(|p| {
            if p.ends_with('.') {
                name.starts_with(p)
            } else {
                name == *p
            }
        })
    };
    match role {
        Role::Consumer => !is(&PRODUCER_ONLY),
        Role::Producer => !is(&CONSUMER_ONLY),
        Role::Admin => !is(&PRODUCER_ONLY) && !is(&CONSUMER_ONLY),
    }
}

/// Common client settings: brokers, then the user's pass-through properties.
fn base_config(settings: &Settings, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.brokers);
    for (k, v) in &settings.kafka.properties {
        if belongs_to(k, role) {
            c.set(k, v);
        }
    }
    c
}

pub fn producer_config(settings: &Settings) -> ClientConfig {
    let mut c = base_config(settings, Role::Producer);
    if !settings.kafka.properties.contains_key("linger.ms") {
        c.set("linger.ms", "5");
    }
    if !settings.kafka.properties.contains_key("message.timeout.ms") {
        c.set("message.timeout.ms", "30000");
    }
    // Re-asserted: no duplicates or reordering from producer retries.
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

pub fn consumer_config(settings: &Settings) -> ClientConfig {
    let mut c = base_config(settings, Role::Consumer);
    if !settings.kafka.properties.contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    // Re-asserted: offsets are committed by unicus only, after the effects are durable;
    // eager assignment so that a rebalance resets every partition to its commit.
    c.set("group.id", &settings.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "range,roundrobin");
    if settings.metrics.enabled && settings.metrics.lag_interval_ms > 0 {
        c.set(
            "statistics.interval.ms",
            settings.metrics.lag_interval_ms.to_string(),
        );
    }
    c
}

/// Creates the output topics where the broker allows it; says what is missing.
pub async fn ensure_topics(settings: &Settings) -> Vec<String> {
    let names: Vec<String> = Topic::ALL
        .iter()
        .map(|t| settings.kafka.topic(*t))
        .chain(std::iter::once(settings.kafka.requests_topic()))
        .chain(std::iter::once(settings.kafka.commands_topic()))
        .collect();
    if settings.kafka.create_topics {
        match base_config(settings, Role::Admin).create::<AdminClient<DefaultClientContext>>() {
            Ok(admin) => {
                let topics: Vec<NewTopic> = Topic::ALL
                    .iter()
                    .zip(&names)
                    .map(|(t, name)| {
                        let nt = NewTopic::new(
                            name,
                            settings.kafka.partitions,
                            TopicReplication::Fixed(settings.kafka.replication_factor),
                        );
                        if *t == Topic::ProfilesMerged {
                            nt.set("cleanup.policy", "compact")
                        } else {
                            nt
                        }
                    })
                    .collect();
                let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
                match tokio::time::timeout(
                    Duration::from_secs(15),
                    admin.create_topics(&topics, &opts),
                )
                .await
                {
                    Ok(Ok(results)) => {
                        for r in results {
                            match r {
                                Ok(t) => info!(topic = %t, "created output topic"),
                                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                                Err((t, code)) => {
                                    warn!(topic = %t, error = %code, "cannot create output topic")
                                }
                            }
                        }
                    }
                    Ok(Err(e)) => warn!(error = %e, "cannot create output topics"),
                    Err(_) => {
                        warn!("creating output topics timed out (the broker may have no admin api)")
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot create an admin client"),
        }
    }
    // What exists now, as seen by a metadata request.
    let missing = match base_config(settings, Role::Admin).create::<BaseConsumer>() {
        Ok(client) => {
            let metadata = tokio::task::block_in_place(|| {
                client.fetch_metadata(None, Duration::from_secs(10))
            });
            match metadata {
                Ok(m) => {
                    let present: std::collections::HashSet<&str> = m
                        .topics()
                        .iter()
                        .filter(|t| t.error().is_none())
                        .map(|t| t.name())
                        .collect();
                    names
                        .iter()
                        .filter(|n| !present.contains(n.as_str()))
                        .cloned()
                        .collect()
                }
                Err(e) => {
                    warn!(error = %e, "cannot read topic metadata");
                    Vec::new()
                }
            }
        }
        Err(_) => Vec::new(),
    };
    if !missing.is_empty() {
        warn!(
            missing = ?missing,
            "output topics missing: create them (profiles.merged with cleanup.policy=compact) or allow auto-creation; outputs to them are retried until they exist"
        );
    }
    missing
}

/// Produces records and waits until every one is acknowledged, retrying failures with
/// back-off. Returns early (false) only if shutdown is requested during an outage.
async fn deliver(
    producer: &FutureProducer,
    records: &[WireRecord],
    stats: &RuntimeStats,
    backoff: Duration,
    shutdown: &mut watch::Receiver<bool>,
    deadline_on_shutdown: Duration,
) -> bool {
    let mut pending: Vec<usize> = (0..records.len()).collect();
    let mut shutdown_since: Option<Instant> = None;
    loop {
        let mut futures = Vec::with_capacity(pending.len());
        let mut failed = Vec::new();
        for &i in &pending {
            let r = &records[i];
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&r.topic).headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(p) = &r.payload {
                record = record.payload(p.as_slice());
            }
            loop {
                match producer.send_result(record) {
                    Ok(f) => {
                        futures.push((i, f));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Back-pressure: let librdkafka drain its queue, then retry.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        warn!(error = %e, topic = %r.topic, "cannot enqueue output record");
                        failed.push(i);
                        break;
                    }
                }
            }
        }
        let mut last_error = None;
        for (i, f) in futures {
            match f.await {
                Ok(Ok(_)) => {
                    stats.produced.fetch_add(1, Ordering::Relaxed);
                    if let Some(ts) = records[i].source_timestamp {
                        stats.record_latency(chrono::Utc::now().timestamp_millis() - ts);
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
        if failed.is_empty() {
            return true;
        }
        stats.delivery_retries.fetch_add(1, Ordering::Relaxed);
        stats.telemetry.delivery_retry();
        stats.telemetry.health.beat();
        warn!(
            records = failed.len(),
            error = last_error.as_deref().unwrap_or("enqueue failed"),
            "outputs not acknowledged; retrying in {backoff:?}"
        );
        if *shutdown.borrow() {
            let since = *shutdown_since.get_or_insert_with(Instant::now);
            if since.elapsed() > deadline_on_shutdown {
                return false;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
        pending = failed;
    }
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub consumed: u64,
    pub produced: u64,
    pub batches: u64,
    pub elapsed: Duration,
    pub engine: Stats,
    pub customers: i64,
    /// False if shutdown came during a broker outage: the outbox is kept for next start.
    pub clean: bool,
}

/// Opens the engine on the configured store.
pub fn open_engine(settings: &Settings) -> Result<Engine, RuntimeError> {
    std::fs::create_dir_all(&settings.runtime.store_dir)
        .map_err(|e| RuntimeError::Store(StoreError::Sled(sled::Error::Io(e))))?;
    let mut store = Store::open(&settings.runtime.store_dir)?;
    store.set_cache_budget(settings.runtime.store_cache_bytes);
    Ok(Engine::new(settings.engine.clone(), store)?)
}

/// Runs until `shutdown` turns true, then drains and returns.
pub async fn run(
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
    stats: Arc<RuntimeStats>,
) -> Result<RunSummary, RuntimeError> {
    let started = Instant::now();
    let telemetry = stats.telemetry.clone();
    let _endpoint = match settings.metrics.enabled {
        true => Some(
            metrics::serve(
                &settings.metrics.listen,
                telemetry.clone(),
                Duration::from_millis(settings.metrics.stall_timeout_ms),
            )
            .await
            .map_err(|source| RuntimeError::Metrics {
                address: settings.metrics.listen.clone(),
                source,
            })?,
        ),
        false => None,
    };
    telemetry.health.beat();
    let mut engine = open_engine(&settings)?;
    telemetry.health.set_store_ok(true);
    let backoff = Duration::from_millis(settings.runtime.retry_backoff_ms);
    let drain_deadline = Duration::from_millis(settings.runtime.shutdown_timeout_ms);
    let producer: FutureProducer = producer_config(&settings)
        .create()
        .map_err(kafka("creating the producer"))?;

    // Outputs decided before a crash but maybe never acknowledged go out first.
    let mut clean = resend_outbox(
        &mut engine,
        &producer,
        &stats,
        backoff,
        &mut shutdown,
        drain_deadline,
    )
    .await?;
    stats
        .customers
        .store(engine.customer_count()?.max(0) as u64, Ordering::Relaxed);
    telemetry.set_customers(engine.customer_count()?);

    // Avro outputs: schemas registered (or found) before anything is produced.
    let encoder = loop {
        let connected = OutputEncoder::connect(
            &settings.output,
            &settings.schema_registry,
            &settings.kafka.topic_prefix,
        )
        .await;
        match connected {
            Ok(encoder) => break encoder,
            Err(e) if e.is_retriable() => {
                if !registry_backoff(&e, &stats, backoff, &mut shutdown).await {
                    return run_summary(&engine, &stats, started, clean);
                }
            }
            Err(e) => return Err(e.into()),
        }
    };

    ensure_topics(&settings).await;

    let generation = Arc::new(AtomicU64::new(0));
    let consumer: StreamConsumer<RuntimeContext> = consumer_config(&settings)
        .create_with_context(RuntimeContext {
            generation: generation.clone(),
            stats: stats.clone(),
        })
        .map_err(kafka("creating the consumer"))?;
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
    telemetry.start_run(&settings, &topics);
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topic_refs)
        .map_err(kafka("subscribing to the input topics"))?;
    info!(topics = ?topics, group = %settings.kafka.group_id, "consuming");

    let mut previous_outbox: Option<u64> = None;
    let mut consumer_errors: u64 = 0;
    let max_wait = Duration::from_millis(settings.runtime.batch_max_wait_ms);
    let sweep_every = Duration::from_millis(settings.engine.gdpr.retention.sweep_interval_ms);
    // The retention sweep runs between batches, and on an idle stream too. Timers fire
    // in event time while events flow, and by the wall clock (a tick) when idle.
    let mut next_sweep = tokio::time::Instant::now();
    let tick_every = Duration::from_millis(settings.engine.activation.tick_interval_ms);
    let mut next_tick = tokio::time::Instant::now() + tick_every;
    while clean && !*shutdown.borrow() {
        telemetry.health.beat();
        // 1. Gather a batch. Rebalance callbacks run inside `recv`, before it returns
        // a record of the new assignment: records gathered before a rebalance belong to
        // the old one and are dropped (each partition restarts from its commit).
        let mut seen_generation = generation.load(Ordering::SeqCst);
        let mut batch: Vec<OwnedMessage> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        while batch.len() < settings.runtime.batch_max_events {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, consumer.recv()).await.ok(),
                    None => tokio::time::timeout_at(next_sweep.min(next_tick), consumer.recv())
                        .await
                        .ok(),
                }
            };
            let received = tokio::select! {
                r = next => r,
                _ = shutdown.changed() => break,
            };
            let now_generation = generation.load(Ordering::SeqCst);
            if now_generation != seen_generation {
                seen_generation = now_generation;
                if !batch.is_empty() {
                    debug!(
                        records = batch.len(),
                        "dropping records gathered before a rebalance"
                    );
                    stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
                    telemetry.batch_dropped();
                    batch.clear();
                    deadline = None;
                }
            }
            match received {
                None => break, // batch wait over
                Some(Ok(m)) => {
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + max_wait);
                    batch.push(m.detach());
                }
                Some(Err(e)) => {
                    // A missing input topic reports every poll: say it, not a flood of it.
                    consumer_errors += 1;
                    telemetry.consumer_error();
                    if consumer_errors == 1 || consumer_errors % 600 == 0 {
                        warn!(error = %e, repeated = consumer_errors, "consumer error");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let sweep_due = tokio::time::Instant::now() >= next_sweep;
        let tick_due = batch.is_empty() && tokio::time::Instant::now() >= next_tick;
        if batch.is_empty() && !sweep_due && !tick_due {
            continue;
        }
        debug!(records = batch.len(), sweep_due, tick_due, "batch gathered");

        // Writer schemas of the batch's Avro records, before the (blocking) engine step.
        // During a registry outage the batch waits; on shutdown it is left unconsumed.
        let unknown_ids = formats.unknown_ids(
            batch
                .iter()
                .map(|m| (m.topic(), m.payload().unwrap_or_default())),
        );
        let mut registry_down = false;
        while !unknown_ids.is_empty() {
            match formats.prepare(&unknown_ids).await {
                Ok(_) => break,
                Err(e) if e.is_retriable() => {
                    if !registry_backoff(&e, &stats, backoff, &mut shutdown).await {
                        registry_down = true;
                        break;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        if registry_down {
            break;
        }

        // 2-3. Engine, then state and outbox in one durable write.
        let t_gathered = Instant::now();
        let mut t_processed = t_gathered;
        let (wire, outbox_seq) = tokio::task::block_in_place(|| -> Result<_, RuntimeError> {
            let mut wire = Vec::with_capacity(batch.len() * 3);
            for m in &batch {
                let record = Record {
                    bytes: m.payload().unwrap_or_default(),
                    source_topic: m.topic(),
                    source_offset: m.offset(),
                    key: m.key(),
                    timestamp: m.timestamp().to_millis(),
                };
                let ts = m.timestamp().to_millis();
                // Each input topic has its kind; Avro records are decoded before the engine.
                let kind = if m.topic() == requests_topic {
                    InputKind::Request
                } else if m.topic() == commands_topic {
                    InputKind::Command
                } else {
                    InputKind::Touchpoint
                };
                let input = if crate::kafka::avro::is_framed(record.bytes) {
                    engine.parse_document(kind, formats.document(m.topic(), record.bytes))
                } else {
                    engine.parse(kind, record.bytes)
                };
                let outputs = engine.handle(&record, input)?;
                for out in outputs {
                    wire.push(WireRecord::from_output(&out, &settings, &encoder, ts)?);
                }
            }
            let now = chrono::Utc::now().timestamp_millis();
            if sweep_due {
                for out in engine.sweep_retention(now)? {
                    wire.push(WireRecord::from_output(&out, &settings, &encoder, None)?);
                }
            }
            if tick_due {
                for out in engine.tick(now)? {
                    wire.push(WireRecord::from_output(&out, &settings, &encoder, None)?);
                }
            }
            if batch.is_empty() && wire.is_empty() {
                // An idle tick or sweep that found nothing: no write, no flush. What it
                // may have staged (stale index entries) goes with the next batch.
                return Ok((wire, None));
            }
            let store = engine.store_mut();
            let seq = store.get::<u64>(OUTBOX_SEQ)?.unwrap_or(0) + 1;
            store.put(OUTBOX_SEQ.to_vec(), &seq)?;
            if let Some(prev) = previous_outbox {
                store.remove(outbox_key(prev));
            }
            if !wire.is_empty() {
                store.put(outbox_key(seq), &wire)?;
            }
            t_processed = Instant::now();
            engine.commit()?;
            Ok((wire, Some(seq)))
        })?;
        if outbox_seq.is_some() {
            previous_outbox = outbox_seq;
        }
        if sweep_due {
            next_sweep = tokio::time::Instant::now() + sweep_every;
        }
        if tick_due {
            next_tick = tokio::time::Instant::now() + tick_every;
        }
        stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);

        // 4. Outputs acknowledged.
        let t_flushed = Instant::now();
        telemetry.set_outbox_pending(wire.len());
        if !deliver(
            &producer,
            &wire,
            &stats,
            backoff,
            &mut shutdown,
            drain_deadline,
        )
        .await
        {
            clean = false;
            break;
        }

        // 5. Offsets: the next record to read on each partition of the batch.
        let t_delivered = Instant::now();
        let acknowledged_at = chrono::Utc::now().timestamp_millis();
        telemetry.set_outbox_pending(0);
        let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
        let mut consumed: HashMap<&str, u64> = HashMap::new();
        for m in &batch {
            let e = next.entry((m.topic(), m.partition())).or_insert(0);
            *e = (*e).max(m.offset() + 1);
            *consumed.entry(m.topic()).or_default() += 1;
        }
        if !next.is_empty() {
            let mut tpl = TopicPartitionList::with_capacity(next.len());
            for ((topic, partition), offset) in &next {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                    .map_err(kafka("building the offsets to commit"))?;
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                // Harmless: the records come again and are recognised by event_id.
                warn!(error = %e, "offset commit failed; the batch will be consumed again");
                telemetry.commit_failed();
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        debug!(
            records = batch.len(),
            outputs = wire.len(),
            process_ms = (t_processed - t_gathered).as_millis() as u64,
            flush_ms = (t_flushed - t_processed).as_millis() as u64,
            deliver_ms = (t_delivered - t_flushed).as_millis() as u64,
            commit_ms = t_delivered.elapsed().as_millis() as u64,
            "batch committed"
        );
        let customers = engine.customer_count()?;
        stats
            .customers
            .store(customers.max(0) as u64, Ordering::Relaxed);
        *stats.engine.lock().unwrap_or_else(|e| e.into_inner()) = engine.stats().clone();
        let mut acknowledged: HashMap<&str, u64> = HashMap::new();
        for r in &wire {
            *acknowledged.entry(r.topic.as_str()).or_default() += 1;
        }
        telemetry.record_batch(
            &metrics::Batch {
                consumed: &consumed,
                acknowledged: &acknowledged,
                engine: engine.stats(),
                customers,
                store_bytes: engine.store().size_on_disk().ok(),
                processing: t_processed - t_gathered,
                flush: t_flushed - t_processed,
                delivery: t_delivered - t_flushed,
                commit: t_delivered.elapsed(),
            },
            batch.iter().filter_map(|m| m.timestamp().to_millis()),
            acknowledged_at,
        );
    }
    telemetry.health.set_stopping();

    // Drain: everything acknowledged is already committed; flush and clean the outbox.
    info!("stopping");
    let flushed = tokio::task::block_in_place(|| producer.flush(drain_deadline));
    if let Err(e) = flushed {
        warn!(error = %e, "producer flush incomplete");
    }
    if clean {
        if let Some(prev) = previous_outbox {
            engine.store_mut().remove(outbox_key(prev));
        }
        tokio::task::block_in_place(|| engine.commit())?;
    } else {
        warn!("stopped during a broker outage: unacknowledged outputs stay in the outbox and are sent on next start");
    }
    consumer.unsubscribe();
    drop(consumer);
    run_summary(&engine, &stats, started, clean)
}

/// Waits out a registry outage (logged, counted). False: shutdown was requested.
async fn registry_backoff(
    error: &RegistryError,
    stats: &RuntimeStats,
    backoff: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let retries = stats.registry_retries.fetch_add(1, Ordering::Relaxed) + 1;
    warn!(error = %error, retries, "schema registry call failed; retrying in {backoff:?}");
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(backoff) => {}
        _ = shutdown.changed() => {}
    }
    !*shutdown.borrow()
}

/// The summary of a run.
fn run_summary(
    engine: &Engine,
    stats: &RuntimeStats,
    started: Instant,
    clean: bool,
) -> Result<RunSummary, RuntimeError> {
    Ok(RunSummary {
        consumed: stats.consumed.load(Ordering::Relaxed),
        produced: stats.produced.load(Ordering::Relaxed),
        batches: stats.batches.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        engine: engine.stats().clone(),
        customers: engine.customer_count()?,
        clean,
    })
}

/// Sends what the outbox holds, then empties it.
async fn resend_outbox(
    engine: &mut Engine,
    producer: &FutureProducer,
    stats: &RuntimeStats,
    backoff: Duration,
    shutdown: &mut watch::Receiver<bool>,
    deadline: Duration,
) -> Result<bool, RuntimeError> {
    let entries = engine.store().scan_prefix(OUTBOX_PREFIX)?;
    if entries.is_empty() {
        return Ok(true);
    }
    let mut total = 0;
    for (key, value) in &entries {
        let records: Vec<WireRecord> =
            postcard::from_bytes(value).map_err(|source| StoreError::Decode {
                key: "outbox".into(),
                source,
            })?;
        stats.telemetry.set_outbox_pending(records.len());
        if !deliver(producer, &records, stats, backoff, shutdown, deadline).await {
            return Ok(false);
        }
        total += records.len();
        engine.store_mut().remove(key.clone());
    }
    tokio::task::block_in_place(|| engine.commit())?;
    stats
        .outbox_resent
        .fetch_add(total as u64, Ordering::Relaxed);
    stats.telemetry.outbox_resent(total);
    stats.telemetry.set_outbox_pending(0);
    info!(
        records = total,
        "re-sent outputs left in the outbox by the previous run"
    );
    Ok(true)
}
