//! Telemetry: Prometheus metrics, liveness and readiness, served over HTTP.
//!
//! Every metric is named `unicus_<what>_<unit>` (`_total` for counters, base units:
//! seconds, bytes) and labelled from small fixed sets only: `channel` (the configured
//! channels), `reason` (rejection codes), `topic` (contract topic names, without
//! `kafka.topic_prefix`), `partition`, `rule`, `kind`, `purpose`, `trigger`. Never an
//! identifier, a customer id or an event id.
//!
//! Every family is declared once, in the table of `metrics/families.rs` (name, help,
//! labels and what feeds it), or, for an engine counter, with the counter in the
//! engine's table (`engine_counters!`); registration, the zero series of a run and the
//! per-batch update are generated from those tables.
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
//! Liveness (`/healthz`): the main loop moved within `metrics.stall_timeout_ms`, and
//! outputs handed to the producer have not waited longer than `runtime.stall_timeout_ms`
//! without an acknowledgement.
//! Readiness (`/readyz`): the consumer has received an assignment from its group, the
//! store is open (and not being restored from its changelog) and its last write
//! succeeded, outputs are not stalled (as above), and the process is not stopping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Registry, TextEncoder};
use rdkafka::statistics::Statistics;
use tracing::{info, warn};

use crate::engine::Stats;
use crate::model::output::Topic;
use crate::settings::Settings;
use families::{Delta, Families, InputLabel, Kind, RunLabels, Topics};

mod families;

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
    /// The store is being restored from its changelog.
    restoring: AtomicBool,
    /// Another instance is the deployment's writer: this one follows the changelog.
    standby: AtomicBool,
    stopping: AtomicBool,
    /// Milliseconds since `origin` of the last acknowledgement of an output, or of the
    /// hand-off of outputs to the producer when none came since; [`NOTHING_AWAITED`]
    /// when every output is acknowledged.
    awaited_since_ms: AtomicU64,
    /// How long outputs may wait without an acknowledgement (`runtime.stall_timeout_ms`);
    /// 0: no limit.
    ack_stall_ms: AtomicU64,
}

/// No output is waiting for its acknowledgement.
const NOTHING_AWAITED: u64 = u64::MAX;

impl Default for Health {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            store_ok: AtomicBool::new(false),
            restoring: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            awaited_since_ms: AtomicU64::new(NOTHING_AWAITED),
            ack_stall_ms: AtomicU64::new(0),
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

    pub fn set_restoring(&self, restoring: bool) {
        self.restoring.store(restoring, Ordering::Relaxed);
    }

    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// How long outputs may wait without an acknowledgement before health fails.
    pub fn set_ack_stall_timeout(&self, timeout: Duration) {
        self.ack_stall_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Outputs were handed to the producer: the wait for acknowledgements starts now,
    /// unless outputs already wait.
    pub fn outputs_sent(&self) {
        let _ = self.awaited_since_ms.compare_exchange(
            NOTHING_AWAITED,
            self.now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The broker acknowledged an output: it is answering, the wait starts again.
    pub fn output_acknowledged(&self) {
        self.awaited_since_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Every output handed to the producer is acknowledged.
    pub fn outputs_settled(&self) {
        self.awaited_since_ms
            .store(NOTHING_AWAITED, Ordering::Relaxed);
    }

    /// How long outputs have waited without an acknowledgement, once that is longer
    /// than the limit.
    pub fn ack_stalled(&self) -> Option<Duration> {
        let limit = self.ack_stall_ms.load(Ordering::Relaxed);
        let since = self.awaited_since_ms.load(Ordering::Relaxed);
        if limit == 0 || since == NOTHING_AWAITED {
            return None;
        }
        let waited = self.now_ms().saturating_sub(since);
        (waited > limit).then(|| Duration::from_millis(waited))
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            Some("stopping")
        } else if !self.store_ok.load(Ordering::Relaxed) {
            Some("store not open or last write failed")
        } else if self.ack_stalled().is_some() {
            Some("outputs not acknowledged within runtime.stall_timeout_ms")
        } else if self.standby.load(Ordering::Relaxed) {
            Some("standing by: another instance is the deployment's writer")
        } else if self.restoring.load(Ordering::Relaxed) {
            Some("restoring the store from its changelog")
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
                Some(c) => InputLabel {
                    kind: Kind::Channel,
                    label: c.to_string(),
                },
                None => InputLabel {
                    kind: Kind::Requests,
                    label: name.to_string(),
                },
            };
            topics.inputs.insert(topic.clone(), input);
        }
        for topic in Topic::outputs(&settings.engine) {
            topics.outputs.insert(k.topic(topic), topic.name());
        }
        let requests = inputs
            .iter()
            .filter_map(|topic| topics.inputs.get(topic))
            .filter(|input| input.kind == Kind::Requests)
            .map(|input| input.label.as_str())
            .collect();
        self.families.show_zero(&RunLabels {
            channels: k.channels.iter().map(String::as_str).collect(),
            requests,
        });
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
        let mut applied = self.applied();
        let Applied {
            engine: last,
            topics,
        } = &mut *applied;
        self.families.apply(&Delta {
            now: batch.engine,
            last,
            batch,
            topics,
        });
        let latency = self.families.input_to_output.local();
        for at in input_times_ms {
            latency.observe((acknowledged_at_ms - at).max(0) as f64 / 1000.0);
        }
        latency.flush();
        *last = batch.engine.clone();
    }

    /// Output records in the outbox not yet acknowledged.
    pub fn set_outbox_pending(&self, records: usize) {
        self.families.outbox_pending.set(records as i64);
    }

    pub fn outbox_resent(&self, records: usize) {
        self.families.outbox_resent.inc_by(records as u64);
    }

    /// Whether this instance is the deployment's writer now.
    pub fn set_writer(&self, writer: bool) {
        self.families.store_writer.set(i64::from(writer));
    }

    /// Changelog records applied to the store while restoring it.
    pub fn restored(&self, records: usize) {
        self.families.changelog_restored.inc_by(records as u64);
    }

    /// A lookup API request answered: its route, status and time.
    pub fn api_request(&self, route: &str, status: u16, seconds: f64) {
        self.families
            .api_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.families.api_duration.observe(seconds);
    }

    /// Changelog records acknowledged.
    pub fn changelog_sent(&self, records: usize) {
        self.families.changelog_records.inc_by(records as u64);
    }

    pub fn delivery_retry(&self) {
        self.families.delivery_retries.inc();
    }

    pub fn producer_rebuilt(&self) {
        self.families.producer_rebuilds.inc();
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
    let health = &e.telemetry.health;
    let idle = health.since_beat();
    if idle > e.stall_timeout {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("main loop stalled for {} ms\n", idle.as_millis()),
        )
    } else if let Some(waited) = health.ack_stalled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "outputs not acknowledged for {} ms (runtime.stall_timeout_ms)\n",
                waited.as_millis()
            ),
        )
    } else {
        (StatusCode::OK, "ok\n".to_string())
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
    fn outputs_waiting_past_the_limit_without_an_acknowledgement_fail_health() {
        let t = Telemetry::new();
        t.health.set_store_ok(true);
        t.rebalanced("assign", Some(1));
        let h = &t.health;
        h.set_ack_stall_timeout(Duration::from_millis(50));
        h.outputs_sent();
        assert_eq!(h.ack_stalled(), None, "within the limit");
        std::thread::sleep(Duration::from_millis(80));
        // Sent again while waiting: the wait keeps its start.
        h.outputs_sent();
        assert!(h.ack_stalled().unwrap() >= Duration::from_millis(50));
        assert_eq!(
            h.not_ready(),
            Some("outputs not acknowledged within runtime.stall_timeout_ms")
        );
        h.output_acknowledged();
        assert_eq!(
            h.ack_stalled(),
            None,
            "an acknowledgement restarts the wait"
        );
        std::thread::sleep(Duration::from_millis(80));
        assert!(h.ack_stalled().is_some());
        h.outputs_settled();
        assert_eq!(h.ack_stalled(), None, "nothing waits");
        assert_eq!(h.not_ready(), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(h.ack_stalled(), None);
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
