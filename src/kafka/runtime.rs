//! The Kafka runtime: per-channel input topics → engine → output topics.
//!
//! # Guarantees
//!
//! At-least-once on outputs, exactly-once on state. Each batch goes through these steps
//! in this order, and offsets are committed last:
//!
//! 1. consume up to `batch_max_events` records (or for `batch_max_wait_ms`)
//!    ([`source`]), and fetch the writer schemas of its Avro records ([`decode`]);
//! 2. run the engine over them (a redelivered `event_id` changes nothing) ([`dispatch`]);
//! 3. write the engine's state **and the batch's output records (the outbox)** to the
//!    store in one atomic write, flushed in the background while step 4 runs
//!    ([`dispatch`], [`outbox`]);
//! 4. produce the outputs and wait for every acknowledgement, retrying (with back-off,
//!    logged and counted) for as long as the broker does not acknowledge, with a new
//!    producer after a fatal producer error ([`sink`]); then wait until the write of
//!    step 3 is durable;
//! 5. remove the batch's outbox entry, in a write flushed while the next step runs and
//!    durable before the batch is done ([`outbox`]);
//! 6. commit the offsets after the last record of the batch (a committed offset is the
//!    next one to read) ([`offsets`]).
//!
//! A crash before the write of 3 is durable leaves no trace in the store: the records
//! are consumed again, and outputs acknowledged before the crash are produced again. A
//! crash between that write and 5 leaves the outbox entry: on start, its records are
//! produced again before anything is consumed (those acknowledged before the crash are
//! duplicated), and the records of the batch, consumed again since their offsets were
//! not committed, are recognised by `event_id` and change nothing. A crash after 5
//! re-sends nothing. Outputs may therefore be duplicated (at most the batch in delivery
//! at the crash), never lost; state is never counted twice.
//!
//! A producer that keeps failing fatally, even new ones, makes the run end with
//! [`RuntimeError::ProducerUnrecoverable`] (the process exits non-zero): the outbox
//! keeps what was not acknowledged. Outputs that wait longer than
//! `runtime.stall_timeout_ms` without an acknowledgement turn `/healthz` and `/readyz`
//! to 503.
//!
//! A rebalance can only happen while records are being consumed (step 1), inside the
//! client's poll: the records gathered before it are dropped, since the eager
//! assignment the runtime asserts puts every partition back at its committed offset.

mod clients;
mod decode;
mod dispatch;
mod offsets;
mod outbox;
mod sink;
mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::engine::{Engine, EngineError, Stats};
use crate::kafka::avro::registry::{EncodeError, RegistryError};
use crate::settings::Settings;
use crate::store::{Store, StoreError};
use crate::telemetry::metrics::{self, Telemetry};

pub use clients::{consumer_config, ensure_topics, producer_config};
pub use sink::WireRecord;

use decode::Inputs;
use dispatch::{Dispatch, Processed};
use outbox::Outbox;
use sink::Sink;
use source::{Source, Timers};

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
    #[error(
        "the producer failed fatally after {rebuilds} new producers in a row (last: {cause}); \
         outputs not acknowledged stay in the outbox and are sent on next start"
    )]
    ProducerUnrecoverable { rebuilds: u32, cause: String },
    #[error("cannot serve metrics on {address}: {source}")]
    Metrics {
        address: String,
        source: std::io::Error,
    },
}

fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> RuntimeError {
    move |source| RuntimeError::Kafka { action, source }
}

/// Live counters of a running runtime, shared with whoever watches it (demo, bench,
/// the metrics endpoint).
#[derive(Debug, Default)]
pub struct RuntimeStats {
    pub consumed: AtomicU64,
    pub produced: AtomicU64,
    pub batches: AtomicU64,
    pub delivery_retries: AtomicU64,
    /// Producers replaced after a fatal error.
    pub producer_rebuilds: AtomicU64,
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
    let _endpoint = serve_metrics(&settings, &telemetry).await?;
    telemetry.health.beat();
    let mut engine = open_engine(&settings)?;
    telemetry.health.set_store_ok(true);
    telemetry
        .health
        .set_ack_stall_timeout(Duration::from_millis(settings.runtime.stall_timeout_ms));
    let mut sink = Sink::new(&settings, stats.clone())?;

    // Outputs decided before a crash but maybe never acknowledged go out first.
    let mut clean = outbox::resend(&mut engine, &mut sink, &stats, &mut shutdown).await?;
    stats
        .customers
        .store(engine.customer_count()?.max(0) as u64, Ordering::Relaxed);
    telemetry.set_customers(engine.customer_count()?);
    let encoder = sink::connect_encoder(&settings, &stats, sink.backoff, &mut shutdown).await?;
    let Some(encoder) = encoder else {
        return run_summary(&engine, &stats, started, clean);
    };
    ensure_topics(&settings).await;

    let source = Source::new(&settings, stats.clone())?;
    let inputs = Inputs::new(&settings)?;
    telemetry.start_run(&settings, &inputs.topics);
    source.subscribe(&inputs.topics, &settings.kafka.group_id)?;
    let mut pipeline = Pipeline {
        dispatch: Dispatch {
            settings: &settings,
            inputs: &inputs,
            encoder: &encoder,
        },
        engine: &mut engine,
        source,
        sink: &mut sink,
        outbox: Outbox::default(),
        timers: Timers::new(&settings),
        stats: &stats,
    };
    while clean && !*shutdown.borrow() {
        telemetry.health.beat();
        if let Turn::Stop { clean: still_clean } = pipeline.turn(&mut shutdown).await? {
            clean = still_clean;
            break;
        }
    }
    pipeline.stop(clean)?;
    run_summary(&engine, &stats, started, clean)
}

/// Serves `/metrics`, `/healthz` and `/readyz` if enabled, for as long as it is kept.
async fn serve_metrics(
    settings: &Settings,
    telemetry: &Arc<Telemetry>,
) -> Result<Option<metrics::Server>, RuntimeError> {
    if !settings.metrics.enabled {
        return Ok(None);
    }
    let server = metrics::serve(
        &settings.metrics.listen,
        telemetry.clone(),
        Duration::from_millis(settings.metrics.stall_timeout_ms),
    )
    .await
    .map_err(|source| RuntimeError::Metrics {
        address: settings.metrics.listen.clone(),
        source,
    })?;
    Ok(Some(server))
}

/// How a turn of the main loop ended.
enum Turn {
    Next,
    /// Shutdown during an outage. Not clean: outputs were not all acknowledged, and
    /// stay in the outbox for the next start.
    Stop {
        clean: bool,
    },
}

/// When each phase of a batch ended. The store's write and the delivery both start
/// when the engine is done (`processed`) and run at once.
struct Phases {
    gathered: Instant,
    processed: Instant,
    delivered: Instant,
    durable: Instant,
}

/// The steps of the runtime's data path, from input topics to committed offsets.
struct Pipeline<'a> {
    dispatch: Dispatch<'a>,
    engine: &'a mut Engine,
    source: Source,
    sink: &'a mut Sink,
    outbox: Outbox,
    timers: Timers,
    stats: &'a RuntimeStats,
}

impl Pipeline<'_> {
    /// One batch: gathered, decoded, through the engine into the store and the outbox,
    /// delivered, its outbox entry removed, its offsets committed, then reported.
    async fn turn(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<Turn, RuntimeError> {
        let batch = self.source.gather(self.timers.idle_until(), shutdown).await;
        let due = self.timers.due(&batch);
        if batch.is_empty() && !due.sweep && !due.tick {
            return Ok(Turn::Next);
        }
        debug!(
            records = batch.len(),
            sweep_due = due.sweep,
            tick_due = due.tick,
            "batch gathered"
        );
        let inputs = self.dispatch.inputs;
        if !inputs
            .prepare(&batch, self.stats, self.sink.backoff, shutdown)
            .await?
        {
            return Ok(Turn::Stop { clean: true });
        }

        let gathered = Instant::now();
        let Processed { wire, processed_at } = tokio::task::block_in_place(|| {
            self.dispatch
                .process(self.engine, &mut self.outbox, &batch, due)
        })?;
        self.timers.rearm(due);
        self.stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);

        // The outputs go out while the store writes the batch: a crash before the write
        // is durable leaves the offsets uncommitted, and the batch is consumed again and
        // its outputs sent again (duplicates of the batch in delivery, as after a crash
        // before its acknowledgements); after, its outbox entry sends them again.
        self.stats.telemetry.set_outbox_pending(wire.len());
        if !self.sink.deliver(&wire, shutdown).await? {
            return Ok(Turn::Stop { clean: false });
        }

        let delivered = Instant::now();
        let acknowledged_at = chrono::Utc::now().timestamp_millis();
        self.stats.telemetry.set_outbox_pending(0);
        tokio::task::block_in_place(|| self.engine.wait_durable())?;
        self.outbox.written();
        let durable = Instant::now();
        // The entry's removal is flushed while the offsets are committed.
        self.outbox.acknowledged(self.engine)?;
        offsets::commit(&self.source.consumer, &batch, &self.stats.telemetry)?;
        tokio::task::block_in_place(|| self.engine.wait_durable())?;
        let processed = processed_at.unwrap_or(gathered);
        let phases = Phases {
            gathered,
            processed,
            delivered: delivered.max(processed),
            durable: durable.max(processed),
        };
        self.report(&batch, &wire, &phases, acknowledged_at)
    }

    /// Counts a committed batch, and hands it to the telemetry.
    fn report(
        &self,
        batch: &[OwnedMessage],
        wire: &[WireRecord],
        phases: &Phases,
        acknowledged_at: i64,
    ) -> Result<Turn, RuntimeError> {
        let stats = self.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        debug!(
            records = batch.len(),
            outputs = wire.len(),
            process_ms = (phases.processed - phases.gathered).as_millis() as u64,
            deliver_ms = (phases.delivered - phases.processed).as_millis() as u64,
            durable_ms = (phases.durable - phases.processed).as_millis() as u64,
            commit_ms = phases.durable.elapsed().as_millis() as u64,
            "batch committed"
        );
        let customers = self.engine.customer_count()?;
        stats
            .customers
            .store(customers.max(0) as u64, Ordering::Relaxed);
        *stats.engine.lock().unwrap_or_else(|e| e.into_inner()) = self.engine.stats().clone();
        stats.telemetry.record_batch(
            &metrics::Batch {
                consumed: &count_by_topic(batch.iter().map(|m| m.topic())),
                acknowledged: &count_by_topic(wire.iter().map(|r| r.topic.as_str())),
                engine: self.engine.stats(),
                customers,
                store_bytes: self.engine.store().size_on_disk().ok(),
                processing: phases.processed - phases.gathered,
                flush: phases.durable - phases.processed,
                delivery: phases.delivered - phases.processed,
                commit: phases.durable.elapsed(),
            },
            batch.iter().filter_map(|m| m.timestamp().to_millis()),
            acknowledged_at,
        );
        Ok(Turn::Next)
    }

    /// Drains: everything acknowledged is already committed; flushes the producer and,
    /// on a clean stop, empties the outbox.
    fn stop(self, clean: bool) -> Result<(), RuntimeError> {
        self.stats.telemetry.health.set_stopping();
        info!("stopping");
        self.sink.flush();
        if clean {
            self.outbox.clear(self.engine)?;
        } else {
            // The batch in delivery was being written meanwhile: its outbox entry.
            tokio::task::block_in_place(|| self.engine.wait_durable())?;
            warn!("stopped during a broker outage: unacknowledged outputs stay in the outbox and are sent on next start");
        }
        self.source.close();
        Ok(())
    }
}

/// Records per topic.
fn count_by_topic<'a>(topics: impl Iterator<Item = &'a str>) -> HashMap<&'a str, u64> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for topic in topics {
        *counts.entry(topic).or_default() += 1;
    }
    counts
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
