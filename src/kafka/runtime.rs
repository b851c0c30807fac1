//! The Kafka runtime: per-channel input topics → engine → output topics.
//!
//! # Guarantees
//!
//! At-least-once on outputs, exactly-once on state. Each batch goes through these steps
//! in this order, and offsets are committed last:
//!
//! 1. consume up to `batch_max_events` records (or for `batch_max_wait_ms`)
//!    ([`source`]), and fetch the writer schemas of its Avro records ([`decode`]);
//! 2. run the engine over them (a redelivered `event_id` changes nothing); its state
//!    changes are staged in the store ([`dispatch`]);
//! 3. finish the previous batch (steps 6 to 8 below);
//! 4. write the engine's state **and the batch's output records (the outbox)** to the
//!    store in one atomic write, flushed in the background ([`outbox`]);
//! 5. produce the outputs; their acknowledgements are awaited in the background
//!    ([`sink`]), while the next batch goes through steps 1 and 2;
//! 6. wait for every acknowledgement, retrying (with back-off, logged and counted) for
//!    as long as the broker does not acknowledge, with a new producer after a fatal
//!    producer error ([`sink`]); then wait until the write of step 4 is durable; then
//!    send the batch's state changes to the store's changelog ([`changelog`], with
//!    `kafka.changelog`), whose acknowledgements are awaited on the next turn, while
//!    the next batch's outputs are on their way (steps 7 and 8 then come a turn later);
//! 7. stage the removal of the batch's outbox entry in the store's next write (the
//!    next batch's, or the one made on a clean stop) ([`outbox`]);
//! 8. commit the offsets after the last record of the batch (a committed offset is the
//!    next one to read) ([`offsets`]).
//!
//! One batch is in delivery while the next is processed: the engine works on batch
//! N + 1 while the outputs of batch N are acknowledged and its state flushed, and
//! offsets are committed in order. A batch in delivery with no next one to finish it
//! with is finished after `batch_max_wait_ms` without input.
//!
//! A crash before the write of 4 is durable leaves no trace in the store: the records
//! are consumed again, and outputs acknowledged before the crash are produced again. A
//! crash between that write and the next batch's leaves the outbox entry: on start,
//! its records are produced again before anything is consumed (those acknowledged
//! before the crash are duplicated), unless the group's committed offsets show its
//! batch committed (step 8 came before the crash: every output was acknowledged); the
//! records of a batch whose offsets were not committed are consumed again, recognised
//! by `event_id`, and change nothing. Outputs may therefore be duplicated (the batch
//! in delivery; also the one before it if its offset commit failed or the broker does
//! not tell the committed offsets on start), never lost; state is never counted twice.
//!
//! With the changelog, several instances of one deployment elect one writer
//! ([`election`]); the others stand by following the changelog, and a writer that is no
//! longer elected stops at once ([`RuntimeError::NoLongerWriter`]). An empty store is
//! restored from the changelog before anything is consumed, a kept one reads what was
//! written after its place ([`changelog`]); its outbox entries keep the store keys their batch wrote, whose
//! current values go to the changelog again on start if the batch was not committed.
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
//! The batch in delivery then is finished as usual: its state is in the store, so its
//! records consumed again change nothing, and a commit refused for a partition no
//! longer assigned is harmless.

mod api;
mod changelog;
mod clients;
mod decode;
mod dispatch;
mod election;
mod offsets;
mod outbox;
mod reference;
mod sink;
mod source;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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
use sink::Sending;
pub use sink::WireRecord;

use changelog::Changelog;
use decode::Inputs;
use dispatch::{Dispatch, Processed};
use election::Election;
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
    #[error(transparent)]
    Api(#[from] crate::api::ApiStartError),
    #[error(
        "no longer the deployment's writer (another instance was elected while this one was \
         cut off, and wrote); stopped without finishing the batch in delivery, which stays \
         in the outbox: start again to stand by"
    )]
    NoLongerWriter,
    #[error("cannot start the writer election's thread: {0}")]
    ElectionThread(std::io::Error),
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
    /// Records of committed batches: their outputs acknowledged, their state durable and
    /// their offsets committed (what the lookup API answers from).
    pub committed: AtomicU64,
    pub produced: AtomicU64,
    pub batches: AtomicU64,
    pub delivery_retries: AtomicU64,
    /// Producers replaced after a fatal error.
    pub producer_rebuilds: AtomicU64,
    pub rebalances: AtomicU64,
    pub dropped_batches: AtomicU64,
    pub outbox_resent: AtomicU64,
    /// Records of the store's changelog acknowledged.
    pub changelog_records: AtomicU64,
    /// Changelog records applied to the store while restoring it on start, or while
    /// standing by.
    pub restored_records: AtomicU64,
    /// One past the highest changelog offset acknowledged to this instance (0: none):
    /// where the store is in step once a batch's changelog records are all acknowledged.
    pub changelog_next: AtomicI64,
    /// Whether this instance writes the store (the deployment's writer), or stands by.
    pub writer: AtomicBool,
    /// The term this instance opened as the writer: the changelog offset after its fence.
    pub changelog_term: AtomicI64,
    /// Schema Registry calls that failed and were retried (an outage).
    pub registry_retries: AtomicU64,
    pub customers: AtomicU64,
    /// The engine's counters after the last batch.
    pub engine: Mutex<Stats>,
    /// Input record's timestamp to the acknowledgement of its outputs.
    latencies: LatencySamples,
    /// The first record of the input's batch received by unicus to the acknowledgement
    /// of the outputs: the part of the latency that is unicus's own, without the
    /// producer's and broker's.
    inside: LatencySamples,
    /// Prometheus metrics and health, updated per batch.
    pub telemetry: Arc<Telemetry>,
    /// Where the lookup API listens, once it does (`[api] listen`).
    pub api_endpoint: Mutex<Option<std::net::SocketAddr>>,
}

/// Latency samples kept (the most recent ones).
const LATENCY_SAMPLES: usize = 200_000;

/// The most recent latencies, in ms.
#[derive(Debug, Default)]
struct LatencySamples(Mutex<Vec<u32>>);

impl LatencySamples {
    fn record(&self, ms: i64) {
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() >= LATENCY_SAMPLES {
            l.drain(..LATENCY_SAMPLES / 2);
        }
        l.push(ms.clamp(0, i64::from(u32::MAX)) as u32);
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn percentile(&self, p: f64) -> Option<u32> {
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if l.is_empty() {
            return None;
        }
        l.sort_unstable();
        let i = ((l.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
        Some(l[i])
    }
}

impl RuntimeStats {
    /// An output acknowledged at `now` (wall clock, ms), caused by an input stamped
    /// `source_timestamp` whose batch began to be received at `received_at`.
    fn record_latency(&self, now: i64, source_timestamp: i64, received_at: Option<i64>) {
        self.latencies.record(now - source_timestamp);
        if let Some(at) = received_at {
            self.inside.record(now - at);
        }
    }

    /// Forgets the latency samples (to measure one phase).
    pub fn reset_latencies(&self) {
        self.latencies.clear();
        self.inside.clear();
    }

    /// Input-to-acknowledged-output latency percentile, in ms.
    pub fn latency_percentile(&self, p: f64) -> Option<u32> {
        self.latencies.percentile(p)
    }

    /// Percentile of the latency inside unicus, in ms: from the first record of the
    /// input's batch received to the acknowledgement of the outputs.
    pub fn inside_latency_percentile(&self, p: f64) -> Option<u32> {
        self.inside.percentile(p)
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
    let api_ready = Arc::new(AtomicBool::new(false));
    let reader = engine.store().reader()?;
    let _api = api::serve(&settings, reader, api_ready.clone(), telemetry.clone()).await?;
    if let Some(server) = &_api {
        *stats.api_endpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.address);
    }
    telemetry
        .health
        .set_ack_stall_timeout(Duration::from_millis(settings.runtime.stall_timeout_ms));
    let mut sink = Sink::new(&settings, stats.clone())?;
    // Not in the group until it subscribes: it reads the group's committed offsets first.
    let source = Source::new(&settings, stats.clone())?;

    // With the changelog, the deployment's writer is elected among its instances; the
    // others stand by, following the changelog, until elected.
    let changelog = Changelog::new(&settings);
    let missing = ensure_topics(&settings).await;
    let election = match &changelog {
        Some(c) => {
            // The election subscribes to the changelog: a broker that creates topics on
            // first use creates it now (a record no reader applies).
            if missing.contains(&settings.kafka.changelog_topic())
                && !c.announce(&mut sink, &mut shutdown).await?
            {
                return run_summary(&engine, &stats, started, true);
            }
            Some(Election::join(&settings)?)
        }
        None => None,
    };
    if let (Some(c), Some(e)) = (&changelog, &election) {
        telemetry.set_writer(false);
        let elected = changelog::stand_by(
            c,
            &settings,
            &mut engine,
            e,
            &stats,
            &api_ready,
            &mut shutdown,
        )
        .await?;
        if !elected {
            return run_summary(&engine, &stats, started, true);
        }
    }
    stats.writer.store(true, Ordering::Relaxed);
    telemetry.set_writer(true);
    // An empty store is restored from the changelog first; outputs decided before a
    // crash but maybe never acknowledged go out next.
    let mut clean = changelog::sync(
        changelog.as_ref(),
        &settings,
        &mut engine,
        &mut sink,
        &stats,
        &mut shutdown,
    )
    .await?;
    // The term is claimed before anything is consumed: a writer cut off from the group
    // learns from it that this one took over.
    if let (true, Some(e)) = (clean, &election) {
        let term = stats.changelog_term.load(Ordering::Relaxed);
        if let Err(error) = tokio::task::block_in_place(|| e.claim(term)) {
            warn!(%error, "cannot claim the writer's term: a writer cut off earlier may write on once");
        }
    }
    if clean {
        clean = outbox::resend(
            &mut engine,
            changelog.as_ref(),
            &mut sink,
            &source,
            &stats,
            &mut shutdown,
        )
        .await?;
    }
    stats
        .customers
        .store(engine.customer_count()?.max(0) as u64, Ordering::Relaxed);
    telemetry.set_customers(engine.customer_count()?);
    api_ready.store(clean, Ordering::Release);
    let encoder = sink::connect_encoder(&settings, &stats, sink.backoff, &mut shutdown).await?;
    let Some(encoder) = encoder else {
        return run_summary(&engine, &stats, started, clean);
    };

    // Reference data whole before the first event, then followed batch by batch.
    let mut reference = reference::ReferenceReader::open(&settings)?;
    if let Some(r) = reference.as_mut() {
        tokio::task::block_in_place(|| r.restore(&mut engine))?;
    }
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
        changelog,
        timers: Timers::new(&settings),
        stats: &stats,
        in_flight: None,
        committing: None,
        max_wait: Duration::from_millis(settings.runtime.batch_max_wait_ms),
        reference,
        election: election.as_ref(),
        deposed: false,
    };
    while clean && !*shutdown.borrow() {
        telemetry.health.beat();
        if let Turn::Stop { clean: still_clean } = pipeline.turn(&mut shutdown).await? {
            clean = still_clean;
            break;
        }
    }
    let deposed = pipeline.deposed();
    pipeline.stop(clean, &mut shutdown).await?;
    if deposed {
        stats.writer.store(false, Ordering::Relaxed);
        telemetry.set_writer(false);
        return Err(RuntimeError::NoLongerWriter);
    }
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
/// when the engine is done (`processed`) and run while the next batch is gathered and
/// processed.
struct Phases {
    gathered: Instant,
    processed: Instant,
    delivered: Instant,
    durable: Instant,
}

/// What settling the batch in delivery gave.
enum Settling {
    /// No batch was in delivery.
    Nothing,
    /// Shutdown during an outage: its outputs are not all acknowledged.
    Stopped,
    Settled(Box<Settled>),
}

/// A batch whose outputs are acknowledged and whose write is durable, its state changes
/// on their way to the changelog, its offsets not committed yet.
struct Settled {
    batch: Processing,
    changelog: Vec<WireRecord>,
    changelog_sending: Option<Sending>,
    acknowledged_at: i64,
    delivered: Instant,
    durable: Instant,
}

/// A batch processed, its state being written and its outputs delivered, its offsets
/// not committed yet.
struct InFlight {
    sending: Sending,
    batch: Processing,
    /// Its state changes, for the changelog once its outputs are acknowledged.
    changelog: Vec<WireRecord>,
}

/// A batch in delivery, as it is reported once finished.
struct Processing {
    records: Vec<OwnedMessage>,
    /// Where its input ends on each partition: what its outbox entry keeps and its
    /// commit gives.
    ends: Vec<offsets::InputEnd>,
    wire: Vec<WireRecord>,
    gathered: Instant,
    processed: Instant,
    /// The engine's counters and customers once it was processed (the engine has moved
    /// on when it is reported).
    engine: Stats,
    customers: i64,
}

/// The steps of the runtime's data path, from input topics to committed offsets.
struct Pipeline<'a> {
    dispatch: Dispatch<'a>,
    engine: &'a mut Engine,
    source: Source,
    sink: &'a mut Sink,
    outbox: Outbox,
    changelog: Option<Changelog>,
    timers: Timers,
    stats: &'a RuntimeStats,
    /// The batch in delivery, finished when the next one is processed (or when no
    /// record comes within `batch_max_wait_ms`).
    in_flight: Option<InFlight>,
    /// With a changelog: the batch before it, its outputs acknowledged and its
    /// changelog on its way, committed on the next turn.
    committing: Option<Settled>,
    /// How long the batch in delivery may wait for a next batch to finish with.
    max_wait: Duration,
    /// The reference topics, followed (none when there is none).
    reference: Option<reference::ReferenceReader>,
    /// The writer election, with the changelog on.
    election: Option<&'a Election>,
    /// Another instance wrote as the writer: this one stops.
    deposed: bool,
}

impl Pipeline<'_> {
    /// One batch: gathered and decoded (while the previous one is delivered and
    /// written), through the engine; then the previous batch is finished (its outputs
    /// acknowledged, its state durable, its offsets committed) and this one's state,
    /// outbox entry and outputs start going out.
    async fn turn(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<Turn, RuntimeError> {
        // No longer elected (a broker outage, or this instance's session timed out):
        // nothing more is done until the election comes back, and then only if no
        // other writer wrote meanwhile; else it stops at once, finishing nothing.
        if !self.still_writer(shutdown).await? {
            return Ok(Turn::Stop { clean: false });
        }
        let mut idle_until = self.timers.idle_until();
        if self.in_flight.is_some() || self.committing.is_some() {
            idle_until = idle_until.min(tokio::time::Instant::now() + self.max_wait);
        }
        let batch = self.source.gather(idle_until, shutdown).await;
        let due = self.timers.due(&batch);
        if batch.is_empty() && !due.sweep && !due.tick {
            return self.finish_in_flight(shutdown, false).await;
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
            // Shutdown during a registry outage: the batch is consumed again.
            return Ok(Turn::Stop { clean: true });
        }

        let gathered = Instant::now();
        let Processed {
            mut wire,
            processed_at,
        } = tokio::task::block_in_place(|| {
            // What the reference topics brought since joins this batch's write.
            if let Some(r) = self.reference.as_mut() {
                r.follow(self.engine)?;
            }
            self.dispatch.process(self.engine, &batch, due)
        })?;
        let received_at = self.source.first_received_at();
        for w in wire.iter_mut().filter(|w| w.source_timestamp.is_some()) {
            w.received_at = received_at;
        }
        self.timers.rearm(due);
        self.stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // The batch before the previous one is committed: its changelog, sent a turn
        // ago, acknowledged (its outbox entry's removal joins this batch's write). Then
        // the previous batch's outputs are acknowledged and its write durable before
        // this one's go out, and offsets are committed in order. What this batch staged
        // is never written if that stops: it is consumed again.
        if let stop @ Turn::Stop { .. } = self.complete_committing(shutdown, false).await? {
            return Ok(stop);
        }
        let mut settled = match self.settle_in_flight(shutdown).await? {
            Settling::Nothing => None,
            Settling::Stopped => return Ok(Turn::Stop { clean: false }),
            Settling::Settled(settled) => Some(*settled),
        };
        // Without a changelog it is finished now: its outbox entry's removal joins this
        // batch's write.
        if self.changelog.is_none() {
            if let Some(s) = settled.take() {
                if let stop @ Turn::Stop { .. } = self.complete(s, shutdown, false).await? {
                    return Ok(stop);
                }
            }
        }
        // A turn without outputs but with state changes (timers) is a batch too when
        // the changelog is kept: every state change goes to it after a batch.
        let processed = match processed_at {
            Some(at) => at,
            None if self.changelog.is_some() && Changelog::stages_state(self.engine.store()) => {
                Instant::now()
            }
            None => {
                return match settled {
                    Some(s) => self.complete(s, shutdown, false).await,
                    None => Ok(Turn::Next),
                }
            }
        };
        let (engine_stats, customers) =
            (self.engine.stats().clone(), self.engine.customer_count()?);
        // The outputs go out while the store writes the batch: a crash before the write
        // is durable leaves the offsets uncommitted, and the batch is consumed again and
        // its outputs sent again (duplicates of the batch in delivery, as after a crash
        // before its acknowledgements); after, its outbox entry sends them again.
        let ends = offsets::input_ends(&batch);
        let (changelog, changed) = match &self.changelog {
            Some(c) => c.records(self.engine.store()),
            None => Default::default(),
        };
        self.outbox
            .stage(self.engine.store_mut(), &wire, &changed, &ends)?;
        self.engine.commit_in_background()?;
        self.stats.telemetry.set_outbox_pending(wire.len());
        let sending = self.sink.send(&wire).await;
        self.in_flight = Some(InFlight {
            sending,
            changelog,
            batch: Processing {
                records: batch,
                ends,
                wire,
                gathered,
                processed,
                engine: engine_stats,
                customers,
            },
        });
        // With a changelog, the previous batch's state changes were sent once its
        // outputs were acknowledged; they are awaited next turn, while this batch's
        // outputs are on their way and the next batch is gathered (a batch's changelog
        // goes out only after the previous one's is acknowledged).
        self.committing = settled;
        Ok(Turn::Next)
    }

    /// Whether this instance was the writer and is no longer.
    fn deposed(&self) -> bool {
        self.deposed
    }

    /// Whether this instance may go on writing: it is elected, or the election comes
    /// back and the group holds no other writer's term. While the election is away, the
    /// group is asked every [`election::regain_within`]: another writer's term deposes
    /// this one. False: deposed (or shutdown requested meanwhile).
    async fn still_writer(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, RuntimeError> {
        let Some(election) = self.election else {
            return Ok(true);
        };
        if election.is_writer() {
            return Ok(true);
        }
        let every = election::regain_within(self.dispatch.settings);
        let mine = self.stats.changelog_term.load(Ordering::Relaxed);
        warn!(
            "the writer election was lost: nothing is written until it comes back, and only if no other writer took over meanwhile"
        );
        loop {
            let lost = Instant::now();
            while !election.is_writer() && lost.elapsed() < every {
                if *shutdown.borrow() {
                    return Ok(false);
                }
                self.stats.telemetry.health.beat();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            match tokio::task::block_in_place(|| election.term()) {
                Ok(Some(term)) if term != mine => {
                    self.deposed = true;
                    return Ok(false);
                }
                Ok(_) if election.is_writer() => {
                    info!("the writer election came back, and no other writer took over meanwhile: going on");
                    return Ok(true);
                }
                Ok(_) => warn!(
                    seconds = every.as_secs(),
                    "the writer election is still away, and no other writer has taken over: waiting on"
                ),
                Err(error) => warn!(%error, "cannot read the writer's term: waiting on"),
            }
        }
    }

    /// Commits the batch whose changelog is on its way, if any ([`Pipeline::complete`]).
    async fn complete_committing(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        write_now: bool,
    ) -> Result<Turn, RuntimeError> {
        match self.committing.take() {
            Some(s) => self.complete(s, shutdown, write_now).await,
            None => Ok(Turn::Next),
        }
    }

    /// Commits the batch whose changelog is on its way, then finishes the batch in
    /// delivery, if any, at once ([`Pipeline::settle_in_flight`], then
    /// [`Pipeline::complete`]), its outbox entry's removal staged in the next
    /// write (`next_write`: a next batch's, about to start) or written now (durable
    /// before the offsets are committed: a restart after an idle finish re-sends
    /// nothing).
    async fn finish_in_flight(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        next_write: bool,
    ) -> Result<Turn, RuntimeError> {
        // Written now if nothing else is in flight to write it with.
        let alone = !next_write && self.in_flight.is_none();
        if let stop @ Turn::Stop { .. } = self.complete_committing(shutdown, alone).await? {
            return Ok(stop);
        }
        match self.settle_in_flight(shutdown).await? {
            Settling::Nothing => Ok(Turn::Next),
            Settling::Stopped => Ok(Turn::Stop { clean: false }),
            Settling::Settled(settled) => self.complete(*settled, shutdown, !next_write).await,
        }
    }

    /// The first half of finishing the batch in delivery: waits for every
    /// acknowledgement of its outputs and for its write to be durable, then sends its
    /// state changes to the changelog (a batch on the changelog has had all its
    /// outputs, so a restore does not make them again).
    async fn settle_in_flight(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Settling, RuntimeError> {
        let Some(InFlight {
            sending,
            batch,
            changelog,
        }) = self.in_flight.take()
        else {
            return Ok(Settling::Nothing);
        };
        let Some(acknowledged_at) = self.sink.settle(&batch.wire, sending, shutdown).await? else {
            return Ok(Settling::Stopped);
        };
        let delivered = Instant::now();
        self.stats.telemetry.set_outbox_pending(0);
        tokio::task::block_in_place(|| self.engine.wait_durable())?;
        self.outbox.written();
        let durable = Instant::now();
        let changelog_sending = if changelog.is_empty() {
            None
        } else {
            Some(self.sink.send(&changelog).await)
        };
        Ok(Settling::Settled(Box::new(Settled {
            batch,
            changelog,
            changelog_sending,
            acknowledged_at,
            delivered,
            durable,
        })))
    }

    /// The second half: waits for the changelog's acknowledgements, stages the removal
    /// of the batch's outbox entry in the store's next write (or writes it now:
    /// `write_now`), commits its offsets, then reports it.
    async fn complete(
        &mut self,
        settled: Settled,
        shutdown: &mut watch::Receiver<bool>,
        write_now: bool,
    ) -> Result<Turn, RuntimeError> {
        let Settled {
            batch: f,
            changelog,
            changelog_sending,
            acknowledged_at,
            delivered,
            durable,
        } = settled;
        let changelog_sent = changelog_sending.is_some();
        if let Some(sending) = changelog_sending {
            if self
                .sink
                .settle(&changelog, sending, shutdown)
                .await?
                .is_none()
            {
                return Ok(Turn::Stop { clean: false });
            }
            self.stats.telemetry.changelog_sent(changelog.len());
        }
        self.outbox.acknowledged(self.engine.store_mut());
        if changelog_sent {
            // The store is in step with the changelog up to this batch's end.
            let next = self.stats.changelog_next.load(Ordering::Relaxed);
            changelog::NEXT.put(self.engine.store_mut(), &next)?;
        }
        if write_now {
            tokio::task::block_in_place(|| self.engine.commit())?;
        }
        offsets::commit(&self.source.consumer, &f.ends, &self.stats.telemetry)?;
        let phases = Phases {
            gathered: f.gathered,
            processed: f.processed,
            delivered,
            durable,
        };
        self.report(&f, &phases, acknowledged_at)
    }

    /// Counts a committed batch, and hands it to the telemetry.
    fn report(
        &self,
        f: &Processing,
        phases: &Phases,
        acknowledged_at: i64,
    ) -> Result<Turn, RuntimeError> {
        let (batch, wire, customers) = (&f.records, &f.wire, f.customers);
        let stats = self.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .committed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        debug!(
            records = batch.len(),
            outputs = wire.len(),
            process_ms = (phases.processed - phases.gathered).as_millis() as u64,
            deliver_ms = (phases.delivered - phases.processed).as_millis() as u64,
            durable_ms = (phases.durable - phases.processed).as_millis() as u64,
            commit_ms = phases.durable.elapsed().as_millis() as u64,
            "batch committed"
        );
        stats
            .customers
            .store(customers.max(0) as u64, Ordering::Relaxed);
        *stats.engine.lock().unwrap_or_else(|e| e.into_inner()) = f.engine.clone();
        stats.telemetry.record_batch(
            &metrics::Batch {
                consumed: &count_by_topic(batch.iter().map(|m| m.topic())),
                acknowledged: &count_by_topic(wire.iter().map(|r| r.topic.as_str())),
                engine: &f.engine,
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

    /// Drains: finishes the batch in delivery (on a clean stop), flushes the producer
    /// and, on a clean stop, writes the outbox entry's removal.
    async fn stop(
        mut self,
        mut clean: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        self.stats.telemetry.health.set_stopping();
        info!("stopping");
        if clean {
            if let Turn::Stop { clean: finished } = self.finish_in_flight(shutdown, false).await? {
                clean = finished;
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_inside_unicus_is_counted_from_its_batch_received_apart_from_the_whole() {
        let stats = RuntimeStats::default();
        // Stamped at 100 by its producer, its batch received at 130, acknowledged at 150.
        stats.record_latency(150, 100, Some(130));
        stats.record_latency(160, 100, Some(150));
        // Re-sent from the outbox after a restart: when it was received is not kept.
        stats.record_latency(400, 100, None);
        assert_eq!(stats.latency_percentile(0.0), Some(50));
        assert_eq!(stats.latency_percentile(1.0), Some(300));
        assert_eq!(stats.inside_latency_percentile(0.0), Some(10));
        assert_eq!(stats.inside_latency_percentile(1.0), Some(20));
        stats.reset_latencies();
        assert_eq!(stats.inside_latency_percentile(0.5), None);
        assert_eq!(stats.latency_percentile(0.5), None);
    }
}
