//! Broker faults against rdkafka's mock cluster, with errors injected on Produce: the
//! outbox after a crash, health while outputs stall, and producers that fail fatally.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use unicus::kafka::runtime::{self, RunSummary, RuntimeError, RuntimeStats, WireRecord};
use unicus::model::output::Topic;
use unicus::settings::Settings;
use unicus::sim::demo::produce_lines;
use unicus::store::keys;

const PARTITIONS: i32 = 3;

struct Cluster {
    mock: MockCluster<'static, DefaultProducerContext>,
    settings: Settings,
    _dir: tempfile::TempDir,
}

fn cluster(group: &str) -> Cluster {
    let mock = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.group_id = group.into();
    settings.kafka.create_topics = false;
    settings.kafka.channels = vec!["web".into()];
    settings.runtime.store_dir = dir.path().join("store");
    settings.runtime.batch_max_wait_ms = 50;
    settings.runtime.batch_max_events = 10;
    settings.runtime.retry_backoff_ms = 100;
    settings.metrics.listen = "127.0.0.1:0".into();
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        // A record the broker refuses fails in 1 s, and the runtime tries again.
        ("message.timeout.ms", "1000"),
    ] {
        settings.kafka.properties.insert(k.into(), v.into());
    }
    for t in settings.kafka.input_topics() {
        mock.create_topic(&t, PARTITIONS, 1).unwrap();
    }
    for t in Topic::ALL {
        mock.create_topic(&settings.kafka.topic(t), PARTITIONS, 1)
            .unwrap();
    }
    mock.create_topic(&settings.kafka.requests_topic(), 1, 1)
        .unwrap();
    mock.create_topic(&settings.kafka.commands_topic(), 1, 1)
        .unwrap();
    Cluster {
        mock,
        settings,
        _dir: dir,
    }
}

/// `n` web events from `first` on, each of its own person: one resolved record each.
fn events(first: usize, n: usize) -> Vec<String> {
    (first..first + n)
        .map(|i| {
            json!({"event_id": format!("e{i}"), "channel": "web", "type": "login",
                   "occurred_at": "2026-11-20T10:00:00Z",
                   "identifiers": {"email": format!("p{i}@x.fr")}})
            .to_string()
        })
        .collect()
}

async fn produce(c: &Cluster, lines: Vec<String>) {
    let n = lines.len() as u64;
    let sent = produce_lines(
        &c.settings.kafka.brokers,
        "",
        &c.settings.kafka.channels,
        lines.into_iter(),
    )
    .await
    .unwrap();
    assert_eq!(sent, n);
}

/// Every Produce request fails with `error` until cleared (or `count` are used up).
fn fail_produce(c: &Cluster, error: RDKafkaRespErr, count: usize) {
    c.mock
        .request_errors(RDKafkaApiKey::Produce, &vec![error; count]);
}

struct Running {
    stats: Arc<RuntimeStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<RunSummary, RuntimeError>>,
}

fn start(settings: &Settings) -> Running {
    let stats = Arc::new(RuntimeStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));
    Running { stats, stop, task }
}

impl Running {
    /// Waits until `done` holds, failing after `limit` or if the runtime stops.
    async fn until(&mut self, limit: Duration, what: &str, done: impl Fn(&RuntimeStats) -> bool) {
        let started = Instant::now();
        while !done(&self.stats) {
            assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
            if self.task.is_finished() {
                panic!("runtime stopped early: {:?}", (&mut self.task).await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events of committed batches, as the metrics show them (a batch shows once its
    /// outputs are acknowledged, its outbox entry removed and its offsets committed).
    fn committed_events(&self) -> f64 {
        self.stats
            .telemetry
            .exposition()
            .lines()
            .filter(|l| l.starts_with("unicus_events_consumed_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// A crash: the runtime's task is dropped wherever it is, nothing drained.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    async fn stop(self) -> RunSummary {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the runtime drains")
            .unwrap()
            .unwrap()
    }
}

/// The records the outbox holds, per entry.
fn outbox(settings: &Settings) -> Vec<Vec<WireRecord>> {
    let engine = runtime::open_engine(settings).unwrap();
    engine
        .store()
        .scan_prefix(keys::kafka_runtime::OUTBOX.bytes())
        .unwrap()
        .into_iter()
        .map(|(_, v)| postcard::from_bytes(&v).unwrap())
        .collect()
}

/// How many times each event id has a record on `touchpoints.resolved`.
fn resolved(brokers: &str) -> HashMap<String, usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("touchpoints.resolved", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    drop(tpl);
    let mut counts = HashMap::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(1500) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                *counts
                    .entry(v["event_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
                idle_since = Instant::now();
            }
            Some(Err(e)) => panic!("reading touchpoints.resolved: {e}"),
            None => {}
        }
    }
    counts
}

/// Asserts every one of `n` events has exactly one resolved record.
fn each_resolved_once(brokers: &str, n: usize) {
    let counts = resolved(brokers);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "re-sent: {twice:?}");
    assert_eq!(counts.len(), n, "every event has its resolved record");
}

/// Status and body of a GET on the runtime's endpoint.
fn http_get(stats: &RuntimeStats, path: &str) -> (u16, String) {
    let address = stats.telemetry.endpoint().expect("the endpoint is served");
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_only_what_was_not_acknowledged_across_crashes() {
    let c = cluster("g-outbox-clear");
    let brokers = c.settings.kafka.brokers.clone();

    // Acknowledged, then a crash: the outbox is empty, and nothing is re-sent.
    produce(&c, events(0, 30)).await;
    let first = start(&c.settings);
    let started = Instant::now();
    while first.committed_events() < 30.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "30 events committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.crash().await;
    assert!(
        outbox(&c.settings).is_empty(),
        "an acknowledged batch leaves nothing in the outbox"
    );

    // Not acknowledged, then a crash: the outbox holds the batch's outputs.
    produce(&c, events(30, 5)).await;
    fail_produce(
        &c,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        100_000,
    );
    let mut second = start(&c.settings);
    second
        .until(Duration::from_secs(60), "a failed delivery", |s| {
            s.consumed.load(Ordering::Relaxed) == 5
                && s.delivery_retries.load(Ordering::Relaxed) > 0
        })
        .await;
    assert_eq!(second.stats.outbox_resent.load(Ordering::Relaxed), 0);
    second.crash().await;
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let left = outbox(&c.settings);
    assert_eq!(left.len(), 1, "one batch in delivery");
    let unacknowledged = left[0].len();
    let resolved_left = left[0]
        .iter()
        .filter(|r| r.topic == "touchpoints.resolved")
        .count();
    assert_eq!(resolved_left, 5, "the 5 events of the batch");

    // The restart re-sends exactly that entry, and the batch consumed again changes nothing.
    let mut third = start(&c.settings);
    third
        .until(Duration::from_secs(60), "the batch consumed again", |s| {
            s.consumed.load(Ordering::Relaxed) == 5
        })
        .await;
    assert_eq!(
        third.stats.outbox_resent.load(Ordering::Relaxed),
        unacknowledged as u64
    );
    let summary = third.stop().await;
    assert!(summary.clean);
    assert_eq!(summary.engine.duplicates, 5);
    assert!(outbox(&c.settings).is_empty());
    each_resolved_once(&brokers, 35);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_stalled_past_the_limit_fail_health_until_acknowledged() {
    let mut c = cluster("g-stall");
    c.settings.runtime.stall_timeout_ms = 1_000;
    produce(&c, events(0, 5)).await;
    fail_produce(
        &c,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        100_000,
    );
    let mut run = start(&c.settings);
    run.until(Duration::from_secs(60), "a failed delivery", |s| {
        s.delivery_retries.load(Ordering::Relaxed) > 0
    })
    .await;
    let mut health = http_get(&run.stats, "/healthz");
    let started = Instant::now();
    while health.0 == 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "/healthz still 200 with outputs stalled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = http_get(&run.stats, "/healthz");
    }
    assert_eq!(health.0, 503);
    assert!(
        health.1.starts_with("outputs not acknowledged for"),
        "{}",
        health.1
    );
    let ready = http_get(&run.stats, "/readyz");
    assert_eq!(ready.0, 503);
    assert!(ready.1.contains("outputs not acknowledged"), "{}", ready.1);

    // The broker acknowledges again: healthy, ready, nothing lost.
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let started = Instant::now();
    while http_get(&run.stats, "/healthz").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never healthy again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http_get(&run.stats, "/readyz").0, 200);
    let summary = run.stop().await;
    assert!(summary.clean);
    each_resolved_once(&c.settings.kafka.brokers, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_fails_fatally_is_replaced_and_nothing_is_lost() {
    // Fenced by the broker, and a sequence gap librdkafka itself declares fatal.
    for (group, error) in [
        (
            "g-fenced",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
        ),
        (
            "g-sequence",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        ),
    ] {
        let c = cluster(group);
        produce(&c, events(0, 20)).await;
        fail_produce(&c, error, 2);
        let mut run = start(&c.settings);
        run.until(Duration::from_secs(60), "20 events", |s| {
            s.consumed.load(Ordering::Relaxed) == 20
        })
        .await;
        let stats = run.stats.clone();
        assert!(run.stop().await.clean, "{group}");
        assert!(
            stats.producer_rebuilds.load(Ordering::Relaxed) >= 1,
            "{group}: a new producer was made"
        );
        // Nothing lost; a record the old producer may have written is sent again at most
        // once, and only from the batch in delivery.
        let counts = resolved(&c.settings.kafka.brokers);
        assert_eq!(
            counts.len(),
            20,
            "{group}: every event has its resolved record"
        );
        let resent: usize = counts.values().map(|n| n - 1).sum();
        assert!(
            resent <= c.settings.runtime.batch_max_events,
            "{group}: {resent} re-sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_keeps_failing_fatally_ends_the_run_and_keeps_the_outbox() {
    let c = cluster("g-unrecoverable");
    produce(&c, events(0, 5)).await;
    fail_produce(
        &c,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
        100_000,
    );
    let run = start(&c.settings);
    let stats = run.stats.clone();
    let ended = tokio::time::timeout(Duration::from_secs(60), run.task)
        .await
        .expect("the run ends instead of retrying forever")
        .unwrap();
    match ended {
        Err(RuntimeError::ProducerUnrecoverable { rebuilds, cause }) => {
            assert_eq!(rebuilds, 5);
            assert!(
                cause.contains("fenced") || cause.contains("Fenced"),
                "{cause}"
            );
        }
        other => panic!("expected ProducerUnrecoverable, got {other:?}"),
    }
    assert_eq!(stats.producer_rebuilds.load(Ordering::Relaxed), 5);
    assert!(stats
        .telemetry
        .exposition()
        .contains("unicus_producer_rebuilds_total 5"));
    assert_eq!(
        outbox(&c.settings).len(),
        1,
        "the outputs wait in the outbox"
    );

    // Once the broker accepts the producer again, the next start delivers them.
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let mut next = start(&c.settings);
    next.until(Duration::from_secs(60), "the batch consumed again", |s| {
        s.consumed.load(Ordering::Relaxed) == 5
    })
    .await;
    assert!(next.stats.outbox_resent.load(Ordering::Relaxed) >= 5);
    assert!(next.stop().await.clean);
    each_resolved_once(&c.settings.kafka.brokers, 5);
}
