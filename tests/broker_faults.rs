//! Broker faults against rdkafka's mock cluster, with errors injected on Produce: the
//! outbox after a crash, health while outputs stall, and producers that fail fatally.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::mock_cluster::{cluster, json_values, produce, read_topic, start, Cluster};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;
use unicus::kafka::runtime::{self, RuntimeError, RuntimeStats, WireRecord};
use unicus::settings::Settings;
use unicus::store::keys;

/// The mock cluster of these tests: web events, batches of 10, a record the broker
/// refuses failed in 1 s and tried again after 100 ms. No wall-clock timer tick: a tick
/// that moves the timers' mark is a batch of its own (its change goes to the changelog),
/// which a refusing broker would hold before the events these tests send.
fn web_cluster(group: &str) -> Cluster {
    let mut c = cluster(group, &["web"]);
    c.settings.engine.activation.tick_interval_ms = 86_400_000;
    c.settings.runtime.batch_max_events = 10;
    c.settings.runtime.retry_backoff_ms = 100;
    c.settings
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "1000".into());
    c
}

/// Starts and stops once, so that the store has run before (in step with its
/// changelog): the tests below are about the outputs of batches, not the changelog's
/// read-back on an empty store.
async fn warm_up(c: &Cluster) {
    let mut warm = start(&c.settings);
    warm.until(Duration::from_secs(60), "ready", |s| {
        s.telemetry.health.not_ready().is_none()
    })
    .await;
    assert!(warm.stop().await.clean);
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

/// Every Produce request fails with `error` until cleared (or `count` are used up).
fn fail_produce(c: &Cluster, error: RDKafkaRespErr, count: usize) {
    c.mock
        .request_errors(RDKafkaApiKey::Produce, &vec![error; count]);
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
    let mut counts = HashMap::new();
    for v in json_values(&read_topic(brokers, "touchpoints.resolved")) {
        *counts
            .entry(v["event_id"].as_str().unwrap().to_string())
            .or_default() += 1;
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
    let mut c = web_cluster("g-outbox-clear");
    // Every start with the changelog writes a fence on it before it consumes: the
    // produce errors below would hold the second start there. About the outbox only.
    c.settings.kafka.changelog = false;
    let brokers = c.settings.kafka.brokers.clone();

    // Acknowledged, then a crash: the outbox is empty, and nothing is re-sent.
    produce(&c, events(0, 30)).await;
    let first = start(&c.settings);
    first.until_committed(Duration::from_secs(60), 30.0).await;
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
    // The 5 events lie on 3 partitions: the batch waits long enough to hold them all, as
    // a batch closed after the first fetch would stall delivering only part of them (on
    // a loaded machine the partitions' fetches come more than the default idle gap of
    // 2 ms apart).
    let mut patient = c.settings.clone();
    patient.runtime.batch_max_wait_ms = 3_000;
    patient.runtime.batch_idle_ms = 3_000;
    let mut second = start(&patient);
    // Alone this takes seconds; beside the other fault tests on a loaded machine the
    // group join and the producer's retries took over a minute once.
    second
        .until(Duration::from_secs(150), "a failed delivery", |s| {
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
    let mut c = web_cluster("g-stall");
    c.settings.runtime.stall_timeout_ms = 1_000;
    warm_up(&c).await;
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
    // Ready once the store is read back from its changelog (empty here) and the group
    // has assigned the partitions, both of which waited for the broker.
    let started = Instant::now();
    while http_get(&run.stats, "/readyz").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never ready again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.until(Duration::from_secs(60), "the 5 events", |s| {
        s.consumed.load(Ordering::Relaxed) == 5
    })
    .await;
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
        let c = web_cluster(group);
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
    let mut c = web_cluster("g-unrecoverable");
    // With the changelog, every start writes a fence on it before it consumes anything
    // (README, "State that survives a lost disk"): a broker that refuses every produce
    // ends such a start before any batch. This test is about the outbox: no changelog.
    c.settings.kafka.changelog = false;
    warm_up(&c).await;
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
    let waiting = outbox(&c.settings);
    assert_eq!(waiting.len(), 1, "the outputs wait in the outbox");
    // The first batch may hold fewer than the 5 events: what it decided waits.
    let staged = waiting[0].len() as u64;
    assert!(staged > 0);

    // Once the broker accepts the producer again, the next start delivers them.
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let mut next = start(&c.settings);
    next.until(Duration::from_secs(60), "the batch consumed again", |s| {
        s.consumed.load(Ordering::Relaxed) == 5
    })
    .await;
    assert_eq!(next.stats.outbox_resent.load(Ordering::Relaxed), staged);
    assert!(next.stop().await.clean);
    each_resolved_once(&c.settings.kafka.brokers, 5);
}
