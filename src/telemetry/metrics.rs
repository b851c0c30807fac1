//! Telemetry: Prometheus metrics, liveness and readiness, served over HTTP.
//!
//! Every metric is named `unicus_<what>_<unit>` (`_total` for counters, base units:
//! seconds, bytes) and labelled from small fixed sets only: `channel` (the configured
//! channels), `reason` (rejection codes), `topic` (contract topic names, without
//! `kafka.topic_prefix`), `partition`, `rule`, `kind`, `purpose`, `trigger`. Never an
//! identifier, a customer id or an event id.
//!
//! The runtime updates the metrics once per batch, after the batch's outputs are
//! acknowledged and its offsets committed, from the deltas of the engine's
//! [`Stats`] and what it counted itself; nothing is updated per event on the hot path.
//! A batch is applied under a lock that a scrape takes too, so every scrape sees whole
//! batches and the reconciliation identities hold exactly at any scrape:
//!
//! - per channel, `unicus_events_consumed_total` (counted by the runtime, per record
//!   handed to the engine) = `accepted` + `rejected` + `duplicates` + `suppressed`
//!   (counted by the engine, per outcome);
//! - `sum(unicus_events_accepted_total)` = `unicus_records_produced_total{topic=
//!   "touchpoints.resolved"}` (records the broker acknowledged);
//! - `sum(unicus_events_rejected_total) + sum(unicus_requests_rejected_total)` =
//!   `unicus_records_produced_total{topic="touchpoints.dlq"}`.
//!
//! Inputs other than the touchpoint channels (rights requests on `gdpr.requests`, and
//! any other topic the runtime subscribes to) are counted per `topic` in the
//! `unicus_requests_*` families.
//!
//! Counters start at zero with each process. Records re-sent from the outbox on start
//! were counted by the process that decided them: they are in
//! `unicus_outbox_resent_records_total`, not in `unicus_records_produced_total`.
//!
//! Consumer lag comes from librdkafka's statistics (every `metrics.lag_interval_ms`).
//! Liveness (`/healthz`): the main loop moved within `metrics.stall_timeout_ms`.
//! Readiness (`/readyz`): the consumer has received an assignment from its group, the
//! store is open and its last write succeeded, and the process is not stopping.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::engine::input::touchpoint::Rejection;
use crate::engine::Stats;
use crate::kafka::settings::Settings;
use crate::model::output::Topic;

/// Buckets (seconds) of the per-batch phase durations.
const PHASE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) of the input-to-output latency.
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];
/// Buckets of the number of source profiles of a customer.
const SOURCE_PROFILE_BUCKETS: [f64; 14] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 250.0, 1000.0,
];

/// Every metric family, registered once.
struct Families {
    events_consumed: IntCounterVec,
    events_accepted: IntCounterVec,
    events_rejected: IntCounterVec,
    events_duplicates: IntCounterVec,
    events_suppressed: IntCounterVec,
    requests_consumed: IntCounterVec,
    requests_accepted: IntCounterVec,
    requests_rejected: IntCounterVec,
    requests_duplicates: IntCounterVec,
    rights_requests_done: IntCounterVec,
    records_produced: IntCounterVec,
    outbox_pending: IntGauge,
    outbox_resent: IntCounter,
    delivery_retries: IntCounter,
    batches: IntCounter,
    batches_dropped: IntCounter,
    commit_failures: IntCounter,
    consumer_errors: IntCounter,
    input_to_output: Histogram,
    processing: Histogram,
    flush: Histogram,
    delivery: Histogram,
    commit: Histogram,
    lag: IntGaugeVec,
    assigned_partitions: IntGauge,
    rebalances: IntCounterVec,
    customers: IntGauge,
    new_customers: IntCounter,
    merges: IntCounter,
    conflicts: IntCounter,
    generic_values: IntCounter,
    suggestions: IntCounterVec,
    fuzzy_links: IntCounterVec,
    fuzzy_searches: IntCounter,
    fuzzy_candidates: IntCounter,
    generic_blocks: IntCounter,
    anchors_refused: IntCounter,
    splits: IntCounter,
    unresolved: IntCounter,
    values_ignored: IntCounterVec,
    source_profiles: Histogram,
    largest_customer: IntGauge,
    detached: IntCounter,
    consent_changes: IntCounterVec,
    consents_expired: IntCounter,
    triggers_fired: IntCounterVec,
    triggers_suppressed: IntCounterVec,
    store_size: IntGauge,
    build_info: IntGaugeVec,
}

/// Registers families on one registry; a name or label set that Prometheus refuses is
/// a bug of this file, caught by every test that builds a [`Telemetry`].
struct Builder<'a> {
    registry: &'a Registry,
    names: std::cell::RefCell<Vec<String>>,
}

impl Builder<'_> {
    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.names
            .borrow_mut()
            .extend(c.desc().iter().map(|d| d.fq_name.clone()));
        self.registry
            .register(Box::new(c.clone()))
            .expect("metric names and labels are valid and unique");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid counter"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid gauge"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram"),
        )
    }
}

impl Families {
    /// The families, and the names of all of them.
    fn new(registry: &Registry) -> (Self, Vec<String>) {
        let b = Builder {
            registry,
            names: Default::default(),
        };
        let families = Self {
            events_consumed: b.counters(
                "unicus_events_consumed_total",
                "Touchpoint records read from an input topic and handed to the engine.",
                &["channel"],
            ),
            events_accepted: b.counters(
                "unicus_events_accepted_total",
                "Touchpoints resolved: one touchpoints.resolved record each.",
                &["channel"],
            ),
            events_rejected: b.counters(
                "unicus_events_rejected_total",
                "Touchpoints refused, sent to touchpoints.dlq.",
                &["channel", "reason"],
            ),
            events_duplicates: b.counters(
                "unicus_events_duplicates_total",
                "Touchpoints whose event_id was seen before (redelivery): no effect.",
                &["channel"],
            ),
            events_suppressed: b.counters(
                "unicus_events_suppressed_total",
                "Touchpoints of an erased person: dropped, nothing published.",
                &["channel"],
            ),
            requests_consumed: b.counters(
                "unicus_requests_consumed_total",
                "Records read from a request topic (gdpr.requests...).",
                &["topic"],
            ),
            requests_accepted: b.counters(
                "unicus_requests_accepted_total",
                "Requests carried out.",
                &["topic"],
            ),
            requests_rejected: b.counters(
                "unicus_requests_rejected_total",
                "Requests refused, sent to touchpoints.dlq.",
                &["topic", "reason"],
            ),
            requests_duplicates: b.counters(
                "unicus_requests_duplicates_total",
                "Requests whose id was seen before: no effect.",
                &["topic"],
            ),
            rights_requests_done: b.counters(
                "unicus_rights_requests_done_total",
                "Rights requests carried out, by kind (retention: expiries of the retention sweep).",
                &["kind"],
            ),
            records_produced: b.counters(
                "unicus_records_produced_total",
                "Output records acknowledged by the broker (outbox re-sends excluded).",
                &["topic"],
            ),
            outbox_pending: b.gauge(
                "unicus_outbox_pending_records",
                "Output records written to the outbox and not yet acknowledged.",
            ),
            outbox_resent: b.counter(
                "unicus_outbox_resent_records_total",
                "Output records of a previous run re-sent from the outbox on start.",
            ),
            delivery_retries: b.counter(
                "unicus_output_delivery_retries_total",
                "Delivery attempts of a batch's outputs that the broker did not fully acknowledge.",
            ),
            batches: b.counter(
                "unicus_batches_total",
                "Batches made durable, delivered and committed.",
            ),
            batches_dropped: b.counter(
                "unicus_batches_dropped_total",
                "Batches gathered before a rebalance and dropped (consumed again).",
            ),
            commit_failures: b.counter(
                "unicus_offset_commit_failures_total",
                "Offset commits that failed (the batch is consumed again, without effect).",
            ),
            consumer_errors: b.counter(
                "unicus_consumer_errors_total",
                "Errors reported by the consumer (missing topic, broker down...).",
            ),
            input_to_output: b.histogram(
                "unicus_input_to_output_latency_seconds",
                "From an input record's timestamp to the acknowledgement of its batch's outputs.",
                &LATENCY_BUCKETS,
            ),
            processing: b.histogram(
                "unicus_batch_processing_duration_seconds",
                "Engine time of a batch: parse, resolve, profile, outputs.",
                &PHASE_BUCKETS,
            ),
            flush: b.histogram(
                "unicus_store_flush_duration_seconds",
                "Atomic write and flush of a batch's state and outbox to the store.",
                &PHASE_BUCKETS,
            ),
            delivery: b.histogram(
                "unicus_output_delivery_duration_seconds",
                "From producing a batch's outputs to the last acknowledgement.",
                &PHASE_BUCKETS,
            ),
            commit: b.histogram(
                "unicus_offset_commit_duration_seconds",
                "Synchronous offset commit of a batch.",
                &PHASE_BUCKETS,
            ),
            lag: b.register(
                IntGaugeVec::new(
                    Opts::new(
                        "unicus_consumer_lag_records",
                        "Records of an assigned partition after its committed offset (librdkafka statistics).",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid gauge"),
            ),
            assigned_partitions: b.gauge(
                "unicus_consumer_assigned_partitions",
                "Input partitions assigned to this consumer; -1 before the group is joined.",
            ),
            rebalances: b.counters(
                "unicus_consumer_rebalances_total",
                "Consumer group rebalances seen, by kind.",
                &["kind"],
            ),
            customers: b.gauge("unicus_customers", "Live customers in the store."),
            new_customers: b.counter(
                "unicus_identity_new_customers_total",
                "Customers created.",
            ),
            merges: b.counter(
                "unicus_identity_merges_total",
                "Customers merged into an older one.",
            ),
            conflicts: b.counter(
                "unicus_identity_conflicts_refused_total",
                "Links refused by a guardrail (unique or weak identifier contradiction).",
            ),
            generic_values: b.counter(
                "unicus_identity_generic_values_total",
                "Identifier values that became generic and stopped linking.",
            ),
            suggestions: b.counters(
                "unicus_identity_suggestions_total",
                "Fuzzy matches suggested (not applied), by rule.",
                &["rule"],
            ),
            fuzzy_links: b.counters(
                "unicus_identity_fuzzy_links_total",
                "Links made by a fuzzy match rule (person data, no shared identifier), by rule.",
                &["rule"],
            ),
            fuzzy_searches: b.counter(
                "unicus_identity_fuzzy_searches_total",
                "Events that brought new person data and looked up fuzzy candidates.",
            ),
            fuzzy_candidates: b.counter(
                "unicus_identity_fuzzy_candidates_total",
                "Source profiles compared by fuzzy matching.",
            ),
            generic_blocks: b.counter(
                "unicus_identity_generic_blocking_keys_total",
                "Blocking keys shared by more than matching.max_candidates, no longer used.",
            ),
            anchors_refused: b.counter(
                "unicus_identity_anchors_refused_total",
                "Events kept off their anchor's source profile: a generic value, or clearly another person.",
            ),
            splits: b.counter(
                "unicus_identity_splits_total",
                "Customers split by an operator's command.",
            ),
            unresolved: b.counter(
                "unicus_identity_unresolved_events_total",
                "Accepted touchpoints with no usable identifier nor person data.",
            ),
            values_ignored: b.counters(
                "unicus_identity_values_ignored_total",
                "Identifier values that did not link, by reason.",
                &["reason"],
            ),
            source_profiles: b.histogram(
                "unicus_identity_customer_source_profiles",
                "Source profiles of a customer each time it is created, merged or gains one: the over-merge signal.",
                &SOURCE_PROFILE_BUCKETS,
            ),
            largest_customer: b.gauge(
                "unicus_identity_largest_customer_source_profiles",
                "Most source profiles of a customer changed since start.",
            ),
            detached: b.counter(
                "unicus_identity_source_profiles_detached_total",
                "Behavioural source profiles detached by retention.",
            ),
            consent_changes: b.counters(
                "unicus_consent_changes_total",
                "consent.changes records, by purpose and channel.",
                &["purpose", "channel"],
            ),
            consents_expired: b.counter(
                "unicus_consent_expired_total",
                "Consent decisions that lapsed.",
            ),
            triggers_fired: b.counters(
                "unicus_triggers_fired_total",
                "Trigger records published, by trigger.",
                &["trigger"],
            ),
            triggers_suppressed: b.counters(
                "unicus_triggers_suppressed_total",
                "Triggers not sent: no allowed and reachable channel.",
                &["trigger"],
            ),
            store_size: b.gauge(
                "unicus_store_size_bytes",
                "Bytes the embedded store takes on disk.",
            ),
            build_info: b.register(
                IntGaugeVec::new(
                    Opts::new(
                        "unicus_build_info",
                        "The running unicus version (always 1).",
                    ),
                    &["version"],
                )
                .expect("valid gauge"),
            ),
        };
        (families, b.names.into_inner())
    }
}

/// Where an input topic's records are counted: the label of its channel, or of its
/// topic (without prefix) for a request topic.
#[derive(Clone)]
enum Input {
    Channel(String),
    Requests(String),
}

/// Topic names of one run, to label what the runtime and the engine count by topic.
#[derive(Default)]
struct Topics {
    prefix: String,
    inputs: HashMap<String, Input>,
    outputs: HashMap<String, &'static str>,
}

/// What was applied so far, behind the lock a scrape takes.
#[derive(Default)]
struct Applied {
    engine: Stats,
    topics: Topics,
}

/// One batch, as the runtime reports it once its offsets are committed.
pub struct Batch<'a> {
    /// Records handed to the engine, per input topic.
    pub consumed: &'a HashMap<&'a str, u64>,
    /// Output records the broker acknowledged, per topic.
    pub acknowledged: &'a HashMap<&'a str, u64>,
    /// The engine's counters after the batch.
    pub engine: &'a Stats,
    pub customers: i64,
    pub store_bytes: Option<u64>,
    pub processing: Duration,
    pub flush: Duration,
    pub delivery: Duration,
    pub commit: Duration,
}

/// Liveness and readiness facts, written by the runtime.
pub struct Health {
    origin: Instant,
    /// Milliseconds since `origin` of the main loop's last turn.
    heartbeat_ms: AtomicU64,
    /// An assignment came from the group since start.
    joined: AtomicBool,
    /// The store is open and its last write succeeded.
    store_ok: AtomicBool,
    stopping: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            store_ok: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// The main loop is turning.
    pub fn beat(&self) {
        self.heartbeat_ms
            .store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn since_beat(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            Some("stopping")
        } else if !self.store_ok.load(Ordering::Relaxed) {
            Some("store not open or last write failed")
        } else if !self.joined.load(Ordering::Relaxed) {
            Some("no assignment from the consumer group yet")
        } else {
            None
        }
    }
}

/// The metrics of one runtime and its health, on a registry of its own (tests run
/// several runtimes in one process).
pub struct Telemetry {
    registry: Registry,
    families: Families,
    /// Every `unicus_*` family, with or without samples yet.
    names: Vec<String>,
    /// Held while a batch is applied and while a scrape gathers.
    applied: Mutex<Applied>,
    pub health: Health,
    /// Where `/metrics` is served, once it is.
    endpoint: Mutex<Option<SocketAddr>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("endpoint", &self.endpoint())
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Adds to a counter what a cumulative count gained since `before`.
fn add(counter: &IntCounter, now: u64, before: u64) {
    counter.inc_by(now.saturating_sub(before));
}

/// Adds to a labelled counter what each key of a cumulative map gained.
fn add_map<K: Ord, V: AsRef<str> + std::fmt::Debug, const N: usize>(
    counters: &IntCounterVec,
    now: &BTreeMap<K, u64>,
    before: &BTreeMap<K, u64>,
    labels: impl Fn(&K) -> [V; N],
) {
    for (k, n) in now {
        let delta = n.saturating_sub(before.get(k).copied().unwrap_or(0));
        if delta > 0 {
            counters.with_label_values(&labels(k)).inc_by(delta);
        }
    }
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Telemetry {
    pub fn new() -> Self {
        let registry = Registry::new();
        let (families, names) = Families::new(&registry);
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");
        families
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        families.assigned_partitions.set(-1);
        Self {
            registry,
            families,
            names,
            applied: Mutex::new(Applied::default()),
            health: Health::default(),
            endpoint: Mutex::new(None),
        }
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Learns the topics of a run (`inputs`: every topic consumed, prefix included) and
    /// shows every channel, topic and outcome at zero, so that a silent channel is a
    /// flat series rather than a missing one. The engine of the run starts its counters
    /// at zero.
    pub fn start_run(&self, settings: &Settings, inputs: &[String]) {
        let f = &self.families;
        let mut applied = self.applied();
        let k = &settings.kafka;
        let mut topics = Topics {
            prefix: k.topic_prefix.clone(),
            ..Topics::default()
        };
        for topic in inputs {
            let name = topic.strip_prefix(&k.topic_prefix).unwrap_or(topic);
            let channel = name
                .strip_prefix("touchpoints.")
                .filter(|c| k.channels.iter().any(|k| k == c));
            let input = match channel {
                Some(c) => Input::Channel(c.to_string()),
                None => Input::Requests(name.to_string()),
            };
            topics.inputs.insert(topic.clone(), input);
        }
        for topic in inputs {
            let Some(Input::Requests(name)) = topics.inputs.get(topic) else {
                continue;
            };
            for family in [
                &f.requests_consumed,
                &f.requests_accepted,
                &f.requests_duplicates,
            ] {
                family.with_label_values(&[name]);
            }
            for reason in Rejection::REASONS {
                f.requests_rejected
                    .with_label_values(&[name.as_str(), reason]);
            }
        }
        for channel in &k.channels {
            for family in [
                &f.events_consumed,
                &f.events_accepted,
                &f.events_duplicates,
                &f.events_suppressed,
            ] {
                family.with_label_values(&[channel]);
            }
            for reason in Rejection::REASONS {
                f.events_rejected.with_label_values(&[channel, reason]);
            }
        }
        for topic in Topic::ALL {
            topics.outputs.insert(k.topic(topic), topic.name());
            f.records_produced.with_label_values(&[topic.name()]);
        }
        for reason in ["junk", "unusable", "generic", "limit"] {
            f.values_ignored.with_label_values(&[reason]);
        }
        for trigger in ["cart_abandoned", "purchase_completed", "lifecycle_changed"] {
            f.triggers_fired.with_label_values(&[trigger]);
        }
        f.triggers_suppressed.with_label_values(&["cart_abandoned"]);
        *applied = Applied {
            engine: Stats::default(),
            topics,
        };
    }

    /// Applies one committed batch.
    pub fn record_batch(
        &self,
        batch: &Batch,
        input_times_ms: impl Iterator<Item = i64>,
        acknowledged_at_ms: i64,
    ) {
        let f = &self.families;
        let mut applied = self.applied();
        let Applied {
            engine: last,
            topics,
        } = &mut *applied;
        let now = batch.engine;

        for (topic, n) in batch.consumed {
            match topics.inputs.get(*topic) {
                Some(Input::Channel(c)) => f.events_consumed.with_label_values(&[c]).inc_by(*n),
                Some(Input::Requests(t)) => f.requests_consumed.with_label_values(&[t]).inc_by(*n),
                None => {}
            }
        }
        let empty = Default::default();
        for (topic, counts) in &now.by_source {
            let before = last.by_source.get(topic).unwrap_or(&empty);
            match topics.inputs.get(topic) {
                Some(Input::Channel(c)) => {
                    let c = c.as_str();
                    add(
                        &f.events_accepted.with_label_values(&[c]),
                        counts.accepted,
                        before.accepted,
                    );
                    add(
                        &f.events_duplicates.with_label_values(&[c]),
                        counts.duplicates,
                        before.duplicates,
                    );
                    add(
                        &f.events_suppressed.with_label_values(&[c]),
                        counts.suppressed,
                        before.suppressed,
                    );
                    add_map(
                        &f.events_rejected,
                        &counts.rejected,
                        &before.rejected,
                        |r| [c, *r],
                    );
                }
                Some(Input::Requests(t)) => {
                    let t = t.as_str();
                    add(
                        &f.requests_accepted.with_label_values(&[t]),
                        counts.accepted,
                        before.accepted,
                    );
                    add(
                        &f.requests_duplicates.with_label_values(&[t]),
                        counts.duplicates,
                        before.duplicates,
                    );
                    add_map(
                        &f.requests_rejected,
                        &counts.rejected,
                        &before.rejected,
                        |r| [t, *r],
                    );
                }
                None => {}
            }
        }
        add_map(
            &f.rights_requests_done,
            &now.requests,
            &last.requests,
            |k| [*k],
        );
        for (topic, n) in batch.acknowledged {
            if let Some(name) = topics.outputs.get(*topic) {
                f.records_produced.with_label_values(&[*name]).inc_by(*n);
            }
        }

        add(&f.new_customers, now.new_customers, last.new_customers);
        add(&f.merges, now.merges, last.merges);
        add(&f.conflicts, now.conflicts, last.conflicts);
        add(&f.generic_values, now.generic_values, last.generic_values);
        add(&f.unresolved, now.unresolved, last.unresolved);
        add_map(&f.suggestions, &now.suggestions, &last.suggestions, |r| {
            [r.clone()]
        });
        add_map(&f.fuzzy_links, &now.fuzzy_links, &last.fuzzy_links, |r| {
            [r.clone()]
        });
        add(&f.fuzzy_searches, now.fuzzy_searches, last.fuzzy_searches);
        add(
            &f.fuzzy_candidates,
            now.fuzzy_candidates,
            last.fuzzy_candidates,
        );
        add(&f.generic_blocks, now.generic_blocks, last.generic_blocks);
        add(
            &f.anchors_refused,
            now.anchors_refused,
            last.anchors_refused,
        );
        add(&f.splits, now.splits, last.splits);
        for (reason, n, before) in [
            ("junk", now.junk_values, last.junk_values),
            ("unusable", now.unusable_values, last.unusable_values),
            ("generic", now.generic_skipped, last.generic_skipped),
            ("limit", now.limit_dropped, last.limit_dropped),
        ] {
            add(&f.values_ignored.with_label_values(&[reason]), n, before);
        }
        for (count, n) in &now.customer_source_profiles {
            let before = last
                .customer_source_profiles
                .get(count)
                .copied()
                .unwrap_or(0);
            for _ in before..*n {
                f.source_profiles.observe(f64::from(*count));
            }
        }
        if let Some(largest) = now.customer_source_profiles.keys().next_back() {
            f.largest_customer
                .set(f.largest_customer.get().max(i64::from(*largest)));
        }
        add(
            &f.detached,
            now.detached_source_profiles,
            last.detached_source_profiles,
        );
        add_map(
            &f.consent_changes,
            &now.consent_changes,
            &last.consent_changes,
            |key| {
                let (purpose, channel) = key.split_once('/').unwrap_or((key.as_str(), "?"));
                [purpose.to_string(), channel.to_string()]
            },
        );
        add(
            &f.consents_expired,
            now.consents_expired,
            last.consents_expired,
        );
        for (trigger, n, before) in [
            ("cart_abandoned", now.carts_fired, last.carts_fired),
            ("purchase_completed", now.purchases, last.purchases),
            (
                "lifecycle_changed",
                now.lifecycle_changes,
                last.lifecycle_changes,
            ),
        ] {
            add(&f.triggers_fired.with_label_values(&[trigger]), n, before);
        }
        add(
            &f.triggers_suppressed.with_label_values(&["cart_abandoned"]),
            now.carts_suppressed,
            last.carts_suppressed,
        );

        f.customers.set(batch.customers);
        if let Some(bytes) = batch.store_bytes {
            f.store_size.set(bytes as i64);
        }
        f.batches.inc();
        f.processing.observe(seconds(batch.processing));
        f.flush.observe(seconds(batch.flush));
        f.delivery.observe(seconds(batch.delivery));
        f.commit.observe(seconds(batch.commit));
        let latency = f.input_to_output.local();
        for at in input_times_ms {
            latency.observe((acknowledged_at_ms - at).max(0) as f64 / 1000.0);
        }
        latency.flush();
        *last = now.clone();
    }

    /// Output records in the outbox not yet acknowledged.
    pub fn set_outbox_pending(&self, records: usize) {
        self.families.outbox_pending.set(records as i64);
    }

    pub fn outbox_resent(&self, records: usize) {
        self.families.outbox_resent.inc_by(records as u64);
    }

    pub fn delivery_retry(&self) {
        self.families.delivery_retries.inc();
    }

    pub fn batch_dropped(&self) {
        self.families.batches_dropped.inc();
    }

    pub fn commit_failed(&self) {
        self.families.commit_failures.inc();
    }

    pub fn consumer_error(&self) {
        self.families.consumer_errors.inc();
    }

    pub fn set_customers(&self, customers: i64) {
        self.families.customers.set(customers);
    }

    /// A rebalance: `assigned` is the new number of partitions (`None`: unchanged).
    pub fn rebalanced(&self, kind: &'static str, assigned: Option<usize>) {
        self.families.rebalances.with_label_values(&[kind]).inc();
        if let Some(n) = assigned {
            self.families.assigned_partitions.set(n as i64);
            if kind == "assign" {
                self.health.joined.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Consumer lag per assigned partition, from librdkafka's statistics. Partitions no
    /// longer assigned disappear.
    pub fn consumer_statistics(&self, statistics: &Statistics) {
        let applied = self.applied();
        let lag = &self.families.lag;
        lag.reset();
        for (name, topic) in &statistics.topics {
            let label = name.strip_prefix(&applied.topics.prefix).unwrap_or(name);
            for p in topic.partitions.values() {
                if p.partition < 0 || !p.desired {
                    continue;
                }
                // Nothing committed yet: every retained record is still to be read.
                let records = if p.consumer_lag >= 0 {
                    p.consumer_lag
                } else if p.hi_offset >= 0 && p.lo_offset >= 0 {
                    p.hi_offset - p.lo_offset
                } else {
                    continue;
                };
                lag.with_label_values(&[label, &p.partition.to_string()])
                    .set(records);
            }
        }
    }

    /// The text exposition of every metric, as `/metrics` serves it.
    pub fn exposition(&self) -> String {
        let families = {
            let _whole_batches = self.applied();
            self.registry.gather()
        };
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# cannot encode metrics: {e}\n"))
    }

    /// The name of every `unicus_*` family, including those with no sample yet (a
    /// labelled family shows in the exposition from its first label set on).
    pub fn metric_names(&self) -> &[String] {
        &self.names
    }

    /// Where the endpoint listens, once it does.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running HTTP endpoint; stops when dropped.
pub struct Server {
    task: tokio::task::JoinHandle<()>,
    pub address: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Endpoint {
    telemetry: Arc<Telemetry>,
    stall_timeout: Duration,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` until the returned
/// [`Server`] is dropped.
pub async fn serve(
    listen: &str,
    telemetry: Arc<Telemetry>,
    stall_timeout: Duration,
) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    *telemetry.endpoint.lock().unwrap_or_else(|e| e.into_inner()) = Some(address);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoint {
            telemetry,
            stall_timeout,
        });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    info!(%address, "serving /metrics, /healthz and /readyz");
    Ok(Server { task, address })
}

async fn metrics(State(e): State<Endpoint>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.telemetry.exposition(),
    )
}

async fn healthz(State(e): State<Endpoint>) -> impl IntoResponse {
    let idle = e.telemetry.health.since_beat();
    if idle <= e.stall_timeout {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("main loop stalled for {} ms\n", idle.as_millis()),
        )
    }
}

async fn readyz(State(e): State<Endpoint>) -> impl IntoResponse {
    let partitions = e.telemetry.families.assigned_partitions.get();
    match e.telemetry.health.not_ready() {
        None => (
            StatusCode::OK,
            format!("ready: {partitions} partitions assigned\n"),
        ),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SourceCounts;

    fn start(t: &Telemetry) {
        let settings = Settings::default();
        let mut inputs = settings.kafka.input_topics();
        inputs.push(settings.kafka.requests_topic());
        t.start_run(&settings, &inputs);
    }

    fn sample(exposition: &str, series: &str) -> Option<f64> {
        exposition.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
        })
    }

    fn stats(accepted: u64, not_json: u64, duplicates: u64) -> Stats {
        let mut s = Stats::default();
        s.by_source.insert(
            "touchpoints.web".into(),
            SourceCounts {
                accepted,
                rejected: [("not_json", not_json)].into_iter().collect(),
                duplicates,
                suppressed: 0,
            },
        );
        s.merges = accepted / 2;
        s.customer_source_profiles = [(1, accepted), (4, 1)].into_iter().collect();
        s.consent_changes = [("marketing/email".to_string(), 2)].into_iter().collect();
        s
    }

    fn batch<'a>(
        consumed: &'a HashMap<&'a str, u64>,
        acknowledged: &'a HashMap<&'a str, u64>,
        engine: &'a Stats,
    ) -> Batch<'a> {
        Batch {
            consumed,
            acknowledged,
            engine,
            customers: 3,
            store_bytes: Some(4096),
            processing: Duration::from_millis(3),
            flush: Duration::from_millis(2),
            delivery: Duration::from_millis(4),
            commit: Duration::from_millis(1),
        }
    }

    #[test]
    fn batches_add_their_deltas_once_per_channel_and_outcome() {
        let t = Telemetry::new();
        start(&t);
        let shown = t.exposition();
        // Every channel and outcome is there from the start, at zero.
        assert_eq!(
            sample(&shown, r#"unicus_events_consumed_total{channel="crm"}"#),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &shown,
                r#"unicus_events_rejected_total{channel="email",reason="special_category"}"#
            ),
            Some(0.0)
        );

        let first = stats(4, 1, 0);
        let consumed = HashMap::from([("touchpoints.web", 5)]);
        let acknowledged = HashMap::from([("touchpoints.resolved", 4), ("touchpoints.dlq", 1)]);
        t.record_batch(
            &batch(&consumed, &acknowledged, &first),
            [1_000, 1_500].into_iter(),
            2_000,
        );
        let second = stats(6, 1, 2);
        let consumed = HashMap::from([("touchpoints.web", 4)]);
        let acknowledged = HashMap::from([("touchpoints.resolved", 2)]);
        t.record_batch(
            &batch(&consumed, &acknowledged, &second),
            std::iter::empty(),
            0,
        );

        let shown = t.exposition();
        let web = |name: &str| sample(&shown, &format!(r#"{name}{{channel="web"}}"#));
        assert_eq!(web("unicus_events_consumed_total"), Some(9.0));
        assert_eq!(web("unicus_events_accepted_total"), Some(6.0));
        assert_eq!(web("unicus_events_duplicates_total"), Some(2.0));
        assert_eq!(
            sample(
                &shown,
                r#"unicus_events_rejected_total{channel="web",reason="not_json"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &shown,
                r#"unicus_records_produced_total{topic="touchpoints.resolved"}"#
            ),
            Some(6.0)
        );
        assert_eq!(sample(&shown, "unicus_identity_merges_total"), Some(3.0));
        assert_eq!(
            sample(
                &shown,
                r#"unicus_consent_changes_total{channel="email",purpose="marketing"}"#
            ),
            Some(2.0)
        );
        // 4 + 1 observations, then 2 more of one source profile.
        assert_eq!(
            sample(&shown, "unicus_identity_customer_source_profiles_count"),
            Some(7.0)
        );
        assert_eq!(
            sample(&shown, "unicus_identity_largest_customer_source_profiles"),
            Some(4.0)
        );
        assert_eq!(
            sample(&shown, "unicus_input_to_output_latency_seconds_sum"),
            Some(1.5)
        );
        assert_eq!(sample(&shown, "unicus_batches_total"), Some(2.0));
        assert_eq!(sample(&shown, "unicus_store_size_bytes"), Some(4096.0));
    }

    #[test]
    fn every_other_input_topic_is_counted_as_requests_of_its_topic() {
        let t = Telemetry::new();
        let mut settings = Settings::default();
        settings.kafka.topic_prefix = "prod.".into();
        let inputs = [
            "prod.touchpoints.web".to_string(),
            "prod.gdpr.requests".to_string(),
            "prod.identity.commands".to_string(),
        ];
        t.start_run(&settings, &inputs);
        let mut s = Stats::default();
        for topic in ["prod.gdpr.requests", "prod.identity.commands"] {
            s.by_source.insert(
                topic.into(),
                SourceCounts {
                    accepted: 2,
                    rejected: [("bad_value", 1)].into_iter().collect(),
                    duplicates: 1,
                    suppressed: 0,
                },
            );
        }
        let consumed = HashMap::from([("prod.gdpr.requests", 4), ("prod.identity.commands", 4)]);
        let acknowledged = HashMap::from([("prod.touchpoints.dlq", 2)]);
        t.record_batch(&batch(&consumed, &acknowledged, &s), std::iter::empty(), 0);
        let shown = t.exposition();
        for topic in ["gdpr.requests", "identity.commands"] {
            let get = |name: &str| sample(&shown, &format!(r#"{name}{{topic="{topic}"}}"#));
            assert_eq!(get("unicus_requests_consumed_total"), Some(4.0));
            assert_eq!(get("unicus_requests_accepted_total"), Some(2.0));
            assert_eq!(get("unicus_requests_duplicates_total"), Some(1.0));
            assert_eq!(
                sample(
                    &shown,
                    &format!(
                        r#"unicus_requests_rejected_total{{reason="bad_value",topic="{topic}"}}"#
                    )
                ),
                Some(1.0)
            );
        }
        assert_eq!(
            sample(
                &shown,
                r#"unicus_records_produced_total{topic="touchpoints.dlq"}"#
            ),
            Some(2.0)
        );
        // No channel of that name.
        assert!(!shown.contains(r#"channel="gdpr.requests""#));
    }

    #[test]
    fn a_new_run_counts_its_engine_from_zero() {
        let t = Telemetry::new();
        start(&t);
        let s = stats(10, 0, 0);
        let consumed = HashMap::from([("touchpoints.web", 10)]);
        let none = HashMap::new();
        t.record_batch(&batch(&consumed, &none, &s), std::iter::empty(), 0);
        // The next run's engine starts again at zero: 3 more, not 3 - 10.
        start(&t);
        let s = stats(3, 0, 0);
        t.record_batch(&batch(&consumed, &none, &s), std::iter::empty(), 0);
        let shown = t.exposition();
        assert_eq!(
            sample(&shown, r#"unicus_events_accepted_total{channel="web"}"#),
            Some(13.0)
        );
    }

    #[test]
    fn readiness_needs_an_assignment_and_the_store_and_ends_when_stopping() {
        let t = Telemetry::new();
        assert!(t.health.not_ready().is_some());
        t.health.set_store_ok(true);
        assert_eq!(
            t.health.not_ready(),
            Some("no assignment from the consumer group yet")
        );
        t.rebalanced("assign", Some(0)); // an empty assignment is a joined group
        assert_eq!(t.health.not_ready(), None);
        t.rebalanced("revoke", Some(0));
        assert_eq!(
            t.health.not_ready(),
            None,
            "a revocation precedes the next assignment"
        );
        t.health.set_stopping();
        assert_eq!(t.health.not_ready(), Some("stopping"));
    }

    #[test]
    fn every_family_is_named_by_convention() {
        let t = Telemetry::new();
        for name in t.metric_names() {
            assert!(name.starts_with("unicus_"), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
        assert!(t
            .metric_names()
            .iter()
            .any(|n| n == "unicus_identity_suggestions_total"));
    }
}
