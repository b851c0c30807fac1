//! The runtime against rdkafka's in-process mock cluster: a cluster holding every topic
//! of the settings that point at it, the runtime started and stopped in-process, and
//! records produced and read back.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use unicus::kafka::runtime::{self, RunSummary, RuntimeError, RuntimeStats};
use unicus::model::output::Topic;
use unicus::settings::Settings;
use unicus::sim::demo::produce_lines;

/// Partitions of every input and output topic (requests and commands have one).
pub const PARTITIONS: i32 = 3;

pub struct Cluster {
    pub mock: MockCluster<'static, DefaultProducerContext>,
    pub settings: Settings,
    /// Holds the store of `settings` until the test ends.
    _dir: tempfile::TempDir,
}

/// A one-broker mock cluster with the topics of `channels`, every output topic, requests
/// and commands, and settings for it: consumer group `group`, a temporary store, batches
/// closed after 50 ms, the metrics on a free port (tests run side by side).
pub fn cluster(group: &str, channels: &[&str]) -> Cluster {
    let mock = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.group_id = group.into();
    settings.kafka.create_topics = false;
    settings.kafka.channels = channels.iter().map(|c| c.to_string()).collect();
    settings.runtime.store_dir = dir.path().join("store");
    settings.runtime.batch_max_wait_ms = 50;
    settings.metrics.listen = "127.0.0.1:0".into();
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
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
    mock.create_topic(&settings.kafka.changelog_topic(), 1, 1)
        .unwrap();
    Cluster {
        mock,
        settings,
        _dir: dir,
    }
}

/// Produces touchpoint lines to the topics of their channels, and checks all were sent.
pub async fn produce(c: &Cluster, lines: Vec<String>) {
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

/// The runtime running in a task of the test.
pub struct Running {
    pub stats: Arc<RuntimeStats>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<Result<RunSummary, RuntimeError>>,
}

pub fn start(settings: &Settings) -> Running {
    let stats = Arc::new(RuntimeStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));
    Running { stats, stop, task }
}

impl Running {
    /// Waits until `done` holds, failing after `limit` or if the runtime stops.
    pub async fn until(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&RuntimeStats) -> bool,
    ) {
        let started = Instant::now();
        while !done(&self.stats) {
            assert!(
                started.elapsed() < limit,
                "{what}: not within {limit:?} (consumed {}, delivery retries {}, rebalances {}, \
                 dropped batches {})",
                self.stats.consumed.load(Ordering::Relaxed),
                self.stats.delivery_retries.load(Ordering::Relaxed),
                self.stats.rebalances.load(Ordering::Relaxed),
                self.stats.dropped_batches.load(Ordering::Relaxed),
            );
            if self.task.is_finished() {
                panic!("runtime stopped early: {:?}", (&mut self.task).await);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events of committed batches, as the metrics show them (a batch shows once its
    /// outputs are acknowledged, its outbox entry removed and its offsets committed).
    pub fn committed_events(&self) -> f64 {
        self.stats
            .telemetry
            .exposition()
            .lines()
            .filter(|l| l.starts_with("unicus_events_consumed_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `events` are in committed batches ([`Running::committed_events`]),
    /// failing after `limit`.
    pub async fn until_committed(&self, limit: Duration, events: f64) {
        let started = Instant::now();
        while self.committed_events() < events {
            assert!(
                started.elapsed() < limit,
                "{events} events committed: not within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A crash: the runtime's task is dropped wherever it is, nothing drained.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Stops the runtime and waits for it to drain.
    pub async fn stop(self) -> RunSummary {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the runtime drains within 15 s")
            .unwrap()
            .unwrap()
    }
}

/// A record read back: key, value, headers.
pub type Record = (Option<String>, Option<Vec<u8>>, BTreeMap<String, String>);

/// Every record of a topic of [`PARTITIONS`] partitions, as it holds them now.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    read_partitions(brokers, topic, PARTITIONS)
}

/// Every record of a topic of `partitions` partitions, as it holds them now.
pub fn read_partitions(brokers: &str, topic: &str, partitions: i32) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    drop(tpl);
    // Everything the topic holds now: read to each partition's high watermark (a
    // reader that stops after a quiet spell misses records on a loaded machine).
    let mut expected = 0;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        expected += (high - low).max(0) as usize;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < expected {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: {} of {expected} records within 60 s",
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    m.payload().map(<[u8]>::to_vec),
                    headers,
                ));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The JSON values of the records that have one (tombstones left out).
pub fn json_values(records: &[Record]) -> Vec<Value> {
    records
        .iter()
        .filter_map(|(_, v, _)| v.as_ref().map(|v| serde_json::from_slice(v).unwrap()))
        .collect()
}
