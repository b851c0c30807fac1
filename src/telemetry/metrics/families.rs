//! The one table of every metric family: name, help, labels, and what feeds it.
//! Registration, the zero series of a run and the per-batch update are generated from it.
//!
//! Adding a metric is one entry in the table below; an engine counter (a plain count or
//! counts by key in [`Stats`]) is one entry in the engine's counter table instead
//! (`engine_counters!`, in `engine/stats.rs`), whose families come here with it. What
//! feeds a family is one of:
//!
//! - `stat(field)`: a cumulative `Stats` count, added as its delta since the last batch;
//! - `stat_by(field, labels)`: a cumulative `Stats` map, each key's delta under the
//!   labels `labels(key)` gives;
//! - `each("label" = field, ...)`: cumulative `Stats` counts under fixed labels, shown at
//!   zero from the start of a run;
//! - `source(Kind, field)` / `rejected(Kind)`: what became of the records of each input
//!   topic of that kind (`SourceCounts`), by channel or by request topic;
//! - `consumed(Kind)` / `produced`: records the runtime handed to the engine per input
//!   topic, and output records the broker acknowledged per topic;
//! - `observe_counts(field)` / `largest_key(field)`: a `Stats` map of counts per number;
//! - `phase(field)`: a duration of the batch; `batch(|family, batch| ...)`: any other
//!   value of the [`Batch`];
//! - `runtime`: fed as it happens, by a method of [`super::Telemetry`].

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::collections::{BTreeMap, HashMap};

use super::Batch;
use crate::engine::input::touchpoint::Rejection;
use crate::engine::{engine_counters, SourceCounts, Stats};
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

/// The type of the family one [`Builder`] constructor makes.
macro_rules! family_type {
    (counter) => {
        IntCounter
    };
    (counters) => {
        IntCounterVec
    };
    (gauge) => {
        IntGauge
    };
    (gauges) => {
        IntGaugeVec
    };
    (histogram) => {
        Histogram
    };
}

/// Shows at zero the series of `$family` a run can feed (see the module comment).
macro_rules! on_start {
    ($family:expr, $run:ident, consumed($kind:ident)) => {
        on_start!($family, $run, source($kind, consumed))
    };
    ($family:expr, $run:ident, source($kind:ident, $field:ident)) => {
        for label in $run.labels(Kind::$kind) {
            $family.with_label_values(&[label]);
        }
    };
    ($family:expr, $run:ident, rejected($kind:ident)) => {
        for label in $run.labels(Kind::$kind) {
            for reason in Rejection::REASONS {
                $family.with_label_values(&[label, reason]);
            }
        }
    };
    ($family:expr, $run:ident, each($($label:literal = $field:ident),*)) => {
        $( $family.with_label_values(&[$label]); )*
    };
    ($family:expr, $run:ident, produced) => {
        for topic in Topic::ALL {
            $family.with_label_values(&[topic.name()]);
        }
    };
    ($family:expr, $run:ident, $($fed_without_zero_series:tt)*) => {};
}

/// Adds to `$family` what one batch changed (see the module comment).
macro_rules! on_batch {
    ($family:expr, $d:ident, stat($field:ident)) => {
        add(&$family, $d.now.$field, $d.last.$field)
    };
    ($family:expr, $d:ident, stat_by($field:ident, $labels:expr)) => {
        add_map(&$family, &$d.now.$field, &$d.last.$field, $labels)
    };
    ($family:expr, $d:ident, each($($label:literal = $field:ident),*)) => {
        $( add(&$family.with_label_values(&[$label]), $d.now.$field, $d.last.$field); )*
    };
    ($family:expr, $d:ident, source($kind:ident, $field:ident)) => {
        $d.each_source(Kind::$kind, |label, now, before| {
            add(&$family.with_label_values(&[label]), now.$field, before.$field)
        })
    };
    ($family:expr, $d:ident, rejected($kind:ident)) => {
        $d.each_source(Kind::$kind, |label, now, before| {
            add_map(&$family, &now.rejected, &before.rejected, |r| [label, *r])
        })
    };
    ($family:expr, $d:ident, consumed($kind:ident)) => {
        for (topic, n) in $d.batch.consumed {
            if let Some(label) = $d.topics.label(topic, Kind::$kind) {
                $family.with_label_values(&[label]).inc_by(*n);
            }
        }
    };
    ($family:expr, $d:ident, produced) => {
        for (topic, n) in $d.batch.acknowledged {
            if let Some(name) = $d.topics.outputs.get(*topic) {
                $family.with_label_values(&[*name]).inc_by(*n);
            }
        }
    };
    ($family:expr, $d:ident, observe_counts($field:ident)) => {
        observe_counts(&$family, &$d.now.$field, &$d.last.$field)
    };
    ($family:expr, $d:ident, largest_key($field:ident)) => {
        if let Some(largest) = $d.now.$field.keys().next_back() {
            $family.set($family.get().max(i64::from(*largest)));
        }
    };
    ($family:expr, $d:ident, phase($field:ident)) => {
        $family.observe($d.batch.$field.as_secs_f64())
    };
    ($family:expr, $d:ident, batch(|$f:ident, $b:ident| $apply:expr)) => {{
        let ($f, $b) = (&$family, $d.batch);
        $apply;
    }};
    ($family:expr, $d:ident, runtime) => {};
}

/// Declares every family once: its field, constructor, name, help, labels or buckets,
/// and what feeds it; generates the struct, its registration, its zero series and its
/// per-batch update. Called by [`engine_counters!`] with the table below followed by
/// the families of the engine's counters.
macro_rules! families {
    ([$($table:tt)*] fields $stats_fields:tt families { $($engine:tt)* }) => {
        families! { $($table)* $($engine)* }
    };
    ($(
        $field:ident: $ctor:ident($name:literal, $help:literal $(, $shape:expr)?)
            => $how:ident $(($($arg:tt)*))?;
    )*) => {
        /// Every metric family, registered once.
        pub(super) struct Families {
            $( pub(super) $field: family_type!($ctor), )*
        }

        impl Families {
            /// The families, and the names of all of them.
            pub(super) fn new(registry: &Registry) -> (Self, Vec<String>) {
                let b = Builder {
                    registry,
                    names: Default::default(),
                };
                let families = Self {
                    $( $field: b.$ctor($name, $help $(, &$shape)?), )*
                };
                (families, b.names.into_inner())
            }

            /// Shows every channel, topic and outcome of a run at zero, so that a silent
            /// one is a flat series rather than a missing one.
            pub(super) fn show_zero(&self, run: &RunLabels) {
                $( on_start!(self.$field, run, $how $(($($arg)*))?); )*
            }

            /// Adds what one batch changed.
            pub(super) fn apply(&self, d: &Delta) {
                $( on_batch!(self.$field, d, $how $(($($arg)*))?); )*
            }
        }
    };
}

engine_counters!(families [
    events_consumed: counters(
        "unicus_events_consumed_total",
        "Touchpoint records read from an input topic and handed to the engine.",
        ["channel"]) => consumed(Channel);
    events_accepted: counters(
        "unicus_events_accepted_total",
        "Touchpoints resolved: one touchpoints.resolved record each.",
        ["channel"]) => source(Channel, accepted);
    events_rejected: counters(
        "unicus_events_rejected_total",
        "Touchpoints refused, sent to touchpoints.dlq.",
        ["channel", "reason"]) => rejected(Channel);
    events_duplicates: counters(
        "unicus_events_duplicates_total",
        "Touchpoints whose event_id was seen before (redelivery): no effect.",
        ["channel"]) => source(Channel, duplicates);
    events_suppressed: counters(
        "unicus_events_suppressed_total",
        "Touchpoints of an erased person: dropped, nothing published.",
        ["channel"]) => source(Channel, suppressed);
    requests_consumed: counters(
        "unicus_requests_consumed_total",
        "Records read from a request topic (gdpr.requests...).",
        ["topic"]) => consumed(Requests);
    requests_accepted: counters(
        "unicus_requests_accepted_total",
        "Requests carried out.",
        ["topic"]) => source(Requests, accepted);
    requests_rejected: counters(
        "unicus_requests_rejected_total",
        "Requests refused, sent to touchpoints.dlq.",
        ["topic", "reason"]) => rejected(Requests);
    requests_duplicates: counters(
        "unicus_requests_duplicates_total",
        "Requests whose id was seen before: no effect.",
        ["topic"]) => source(Requests, duplicates);
    records_produced: counters(
        "unicus_records_produced_total",
        "Output records acknowledged by the broker (outbox re-sends excluded).",
        ["topic"]) => produced;
    outbox_pending: gauge(
        "unicus_outbox_pending_records",
        "Output records written to the outbox and not yet acknowledged.") => runtime;
    outbox_resent: counter(
        "unicus_outbox_resent_records_total",
        "Output records of a previous run re-sent from the outbox on start.") => runtime;
    changelog_records: counter(
        "unicus_changelog_records_total",
        "Records of the store's changelog acknowledged (state changes and batch ends).")
        => runtime;
    changelog_restored: counter(
        "unicus_changelog_restored_records_total",
        "Changelog records applied to the store: restoring an empty store on start, reading what another writer wrote, or following the changelog as a standby.")
        => runtime;
    store_writer: gauge(
        "unicus_store_writer",
        "1 while this instance is the deployment's writer (consumes the inputs and writes the store), 0 while it stands by following the changelog.")
        => runtime;
    api_requests: counters(
        "unicus_api_requests_total",
        "Lookup API requests answered, by route and status (`[api]`).",
        ["route", "status"]) => runtime;
    api_duration: histogram(
        "unicus_api_request_duration_seconds",
        "Time to answer a lookup API request, from its admission to its answer.",
        PHASE_BUCKETS) => runtime;
    delivery_retries: counter(
        "unicus_output_delivery_retries_total",
        "Delivery attempts of a batch's outputs that the broker did not fully acknowledge.")
        => runtime;
    producer_rebuilds: counter(
        "unicus_producer_rebuilds_total",
        "Producers replaced after a fatal error (fenced, idempotence state lost); the new one sends the outputs not acknowledged.")
        => runtime;
    batches: counter(
        "unicus_batches_total",
        "Batches made durable, delivered and committed.") => batch(|f, _b| f.inc());
    batches_dropped: counter(
        "unicus_batches_dropped_total",
        "Batches gathered before a rebalance and dropped (consumed again).") => runtime;
    commit_failures: counter(
        "unicus_offset_commit_failures_total",
        "Offset commits that failed (the batch is consumed again, without effect).") => runtime;
    consumer_errors: counter(
        "unicus_consumer_errors_total",
        "Errors reported by the consumer (missing topic, broker down...).") => runtime;
    // Fed by `record_batch` from the input records' timestamps.
    input_to_output: histogram(
        "unicus_input_to_output_latency_seconds",
        "From an input record's timestamp to the acknowledgement of its batch's outputs.",
        LATENCY_BUCKETS) => runtime;
    processing: histogram(
        "unicus_batch_processing_duration_seconds",
        "Engine time of a batch: parse, resolve, profile, outputs.",
        PHASE_BUCKETS) => phase(processing);
    flush: histogram(
        "unicus_store_flush_duration_seconds",
        "Atomic write and flush of a batch's state and outbox to the store, from the end of its processing (its outputs are delivered meanwhile).",
        PHASE_BUCKETS) => phase(flush);
    delivery: histogram(
        "unicus_output_delivery_duration_seconds",
        "From producing a batch's outputs (at the end of its processing) to the last acknowledgement.",
        PHASE_BUCKETS) => phase(delivery);
    commit: histogram(
        "unicus_offset_commit_duration_seconds",
        "Synchronous offset commit of a batch (its outbox entry's removal staged in the next write), once its outputs are acknowledged and its state durable.",
        PHASE_BUCKETS) => phase(commit);
    lag: gauges(
        "unicus_consumer_lag_records",
        "Records of an assigned partition after its committed offset (librdkafka statistics).",
        ["topic", "partition"]) => runtime;
    assigned_partitions: gauge(
        "unicus_consumer_assigned_partitions",
        "Input partitions assigned to this consumer; -1 before the group is joined.") => runtime;
    rebalances: counters(
        "unicus_consumer_rebalances_total",
        "Consumer group rebalances seen, by kind.",
        ["kind"]) => runtime;
    customers: gauge(
        "unicus_customers",
        "Live customers in the store.") => batch(|f, b| f.set(b.customers));
    source_profiles: histogram(
        "unicus_identity_customer_source_profiles",
        "Source profiles of a customer each time it is created, merged or gains one: the over-merge signal.",
        SOURCE_PROFILE_BUCKETS) => observe_counts(customer_source_profiles);
    largest_customer: gauge(
        "unicus_identity_largest_customer_source_profiles",
        "Most source profiles of a customer changed since start.")
        => largest_key(customer_source_profiles);
    store_size: gauge(
        "unicus_store_size_bytes",
        "Bytes the embedded store takes on disk.") => batch(|f, b| {
            if let Some(bytes) = b.store_bytes {
                f.set(bytes as i64);
            }
        });
    build_info: gauges(
        "unicus_build_info",
        "The running unicus version (always 1).",
        ["version"]) => runtime;
]);

/// Registers families on one registry; a name or label set that Prometheus refuses is
/// a bug of the table, caught by every test that builds a [`super::Telemetry`].
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

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram"),
        )
    }
}

/// What an input topic's records are counted as: a channel, or requests of a topic.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Channel,
    Requests,
}

/// The label an input topic's records are counted under: its channel, or its topic
/// (without prefix) for a request topic.
pub(super) struct InputLabel {
    pub(super) kind: Kind,
    pub(super) label: String,
}

/// Topic names of one run, to label what the runtime and the engine count by topic.
#[derive(Default)]
pub(super) struct Topics {
    pub(super) prefix: String,
    pub(super) inputs: HashMap<String, InputLabel>,
    pub(super) outputs: HashMap<String, &'static str>,
}

impl Topics {
    /// The label of an input topic's records, if they are of `kind`.
    fn label(&self, topic: &str, kind: Kind) -> Option<&str> {
        self.inputs
            .get(topic)
            .filter(|input| input.kind == kind)
            .map(|input| input.label.as_str())
    }
}

/// The labels a run shows at zero from its start.
pub(super) struct RunLabels<'a> {
    pub(super) channels: Vec<&'a str>,
    pub(super) requests: Vec<&'a str>,
}

impl RunLabels<'_> {
    fn labels(&self, kind: Kind) -> &[&str] {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Requests => &self.requests,
        }
    }
}

/// One batch against what was applied before it.
pub(super) struct Delta<'a> {
    pub(super) now: &'a Stats,
    pub(super) last: &'a Stats,
    pub(super) batch: &'a Batch<'a>,
    pub(super) topics: &'a Topics,
}

impl Delta<'_> {
    /// Calls `apply` with the label, the counts now and the counts before of every
    /// input topic of `kind` the engine counted.
    fn each_source(&self, kind: Kind, mut apply: impl FnMut(&str, &SourceCounts, &SourceCounts)) {
        let empty = SourceCounts::default();
        for (topic, now) in &self.now.by_source {
            let Some(label) = self.topics.label(topic, kind) else {
                continue;
            };
            apply(label, now, self.last.by_source.get(topic).unwrap_or(&empty));
        }
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

/// Observes each number once per count it gained since `before`.
fn observe_counts(histogram: &Histogram, now: &BTreeMap<u32, u64>, before: &BTreeMap<u32, u64>) {
    for (number, n) in now {
        let before = before.get(number).copied().unwrap_or(0);
        for _ in before..*n {
            histogram.observe(f64::from(*number));
        }
    }
}
