//! The source: input records gathered into batches, the rebalances that void a batch
//! gathered across them, and the timers (retention sweep, activation tick) that make
//! a batch due on an idle stream.
//!
//! A rebalance can only happen while records are being gathered, inside the client's
//! poll: the records gathered before it are dropped, since the eager assignment the
//! runtime asserts puts every partition back at its committed offset.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedMessage;
use rdkafka::ClientContext;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{kafka, RuntimeError, RuntimeStats};
use crate::settings::Settings;

/// Counts rebalances so a batch gathered across one is dropped.
pub(super) struct RuntimeContext {
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

/// The consumer of the input topics, and what gathering needs to remember.
pub(super) struct Source {
    pub(super) consumer: StreamConsumer<RuntimeContext>,
    /// Rebalances seen, bumped by the consumer's callback.
    generation: Arc<AtomicU64>,
    /// Consumer errors since start, to log only some of a flood.
    consumer_errors: u64,
    max_events: usize,
    max_wait: Duration,
    /// A batch ends this long after its last record (`batch_idle_ms`; `None`: off).
    idle: Option<Duration>,
    /// When the first record of the batch gathered last came (wall clock, ms).
    first_received_at: Option<i64>,
    stats: Arc<RuntimeStats>,
}

impl Source {
    pub(super) fn new(settings: &Settings, stats: Arc<RuntimeStats>) -> Result<Self, RuntimeError> {
        let generation = Arc::new(AtomicU64::new(0));
        let consumer: StreamConsumer<RuntimeContext> = super::consumer_config(settings)
            .create_with_context(RuntimeContext {
                generation: generation.clone(),
                stats: stats.clone(),
            })
            .map_err(kafka("creating the consumer"))?;
        Ok(Self {
            consumer,
            generation,
            consumer_errors: 0,
            max_events: settings.runtime.batch_max_events,
            max_wait: Duration::from_millis(settings.runtime.batch_max_wait_ms),
            idle: (settings.runtime.batch_idle_ms > 0)
                .then(|| Duration::from_millis(settings.runtime.batch_idle_ms)),
            first_received_at: None,
            stats,
        })
    }

    pub(super) fn subscribe(&self, topics: &[String], group: &str) -> Result<(), RuntimeError> {
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topic_refs)
            .map_err(kafka("subscribing to the input topics"))?;
        info!(topics = ?topics, group = %group, "consuming");
        Ok(())
    }

    /// Gathers up to `batch_max_events` records, for up to `batch_max_wait_ms` after the
    /// first and `batch_idle_ms` after the last; with none, waits until `idle_until` (or
    /// shutdown). Rebalance callbacks run
    /// inside `recv`, before it returns a record of the new assignment: records gathered
    /// before a rebalance belong to the old one and are dropped (each partition restarts
    /// from its commit).
    pub(super) async fn gather(
        &mut self,
        idle_until: Instant,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Vec<OwnedMessage> {
        let mut seen_generation = self.generation.load(Ordering::SeqCst);
        let mut batch: Vec<OwnedMessage> = Vec::new();
        let mut deadline: Option<Instant> = None;
        self.first_received_at = None;
        while batch.len() < self.max_events {
            let until = match (deadline, self.idle) {
                (Some(deadline), Some(idle)) => deadline.min(Instant::now() + idle),
                (Some(deadline), None) => deadline,
                (None, _) => idle_until,
            };
            let next = async {
                tokio::time::timeout_at(until, self.consumer.recv())
                    .await
                    .ok()
            };
            let received = tokio::select! {
                r = next => r,
                _ = shutdown.changed() => break,
            };
            let now_generation = self.generation.load(Ordering::SeqCst);
            if now_generation != seen_generation {
                seen_generation = now_generation;
                if !batch.is_empty() {
                    self.drop_gathered(&mut batch);
                    deadline = None;
                    self.first_received_at = None;
                }
            }
            match received {
                None => break, // batch wait over
                Some(Ok(m)) => {
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + self.max_wait);
                        self.first_received_at = Some(chrono::Utc::now().timestamp_millis());
                    }
                    batch.push(m.detach());
                }
                Some(Err(e)) => self.consumer_error(e).await,
            }
        }
        batch
    }

    /// When the first record of the batch gathered last came (wall clock, ms).
    pub(super) fn first_received_at(&self) -> Option<i64> {
        self.first_received_at
    }

    /// Drops the records gathered before a rebalance.
    fn drop_gathered(&self, batch: &mut Vec<OwnedMessage>) {
        debug!(
            records = batch.len(),
            "dropping records gathered before a rebalance"
        );
        self.stats.dropped_batches.fetch_add(1, Ordering::Relaxed);
        self.stats.telemetry.batch_dropped();
        batch.clear();
    }

    /// A missing input topic reports every poll: says it, not a flood of it.
    async fn consumer_error(&mut self, e: KafkaError) {
        self.consumer_errors += 1;
        self.stats.telemetry.consumer_error();
        if self.consumer_errors == 1 || self.consumer_errors % 600 == 0 {
            warn!(error = %e, repeated = self.consumer_errors, "consumer error");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Leaves the group.
    pub(super) fn close(self) {
        self.consumer.unsubscribe();
    }
}

/// Which engine steps without input are due with a batch.
#[derive(Clone, Copy)]
pub(super) struct Due {
    pub(super) sweep: bool,
    pub(super) tick: bool,
}

/// The retention sweep runs between batches, and on an idle stream too. Timers fire in
/// event time while events flow, and by the wall clock (a tick) when idle.
pub(super) struct Timers {
    sweep_every: Duration,
    tick_every: Duration,
    next_sweep: Instant,
    next_tick: Instant,
}

impl Timers {
    pub(super) fn new(settings: &Settings) -> Self {
        let tick_every = Duration::from_millis(settings.engine.activation.tick_interval_ms);
        Self {
            sweep_every: Duration::from_millis(settings.engine.gdpr.retention.sweep_interval_ms),
            tick_every,
            next_sweep: Instant::now(),
            next_tick: Instant::now() + tick_every,
        }
    }

    /// How long an idle stream is waited for.
    pub(super) fn idle_until(&self) -> Instant {
        self.next_sweep.min(self.next_tick)
    }

    /// What is due now with `batch` (the tick only on an idle stream).
    pub(super) fn due(&self, batch: &[OwnedMessage]) -> Due {
        Due {
            sweep: Instant::now() >= self.next_sweep,
            tick: batch.is_empty() && Instant::now() >= self.next_tick,
        }
    }

    /// The steps `done` ran: their next time.
    pub(super) fn rearm(&mut self, done: Due) {
        if done.sweep {
            self.next_sweep = Instant::now() + self.sweep_every;
        }
        if done.tick {
            self.next_tick = Instant::now() + self.tick_every;
        }
    }
}
