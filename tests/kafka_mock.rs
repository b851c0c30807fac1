//! The runtime against rdkafka's in-process mock cluster: consume, produce, commit and
//! resume, dead letters, and the outbox re-sent on start.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::mock_cluster::{self, json_values, produce, read_topic, start, Cluster};
use rdkafka::config::ClientConfig;
use serde_json::{json, Value};
use unicus::kafka::runtime::{self, RuntimeStats, WireRecord};
use unicus::settings::Settings;
use unicus::sim::demo::produce_lines;
use unicus::store::keys::kafka_runtime::OUTBOX;

/// The mock cluster of these tests: three channels, batches of 7 (many batches, many
/// commits).
fn cluster(group: &str) -> Cluster {
    let mut c = mock_cluster::cluster(group, &["web", "store", "social"]);
    c.settings.runtime.batch_max_events = 7;
    c
}

/// A purchase of 2026-11-20 on `channel`, with `extra` fields over those.
fn event(id: &str, channel: &str, extra: Value) -> String {
    common::event(id, channel, "purchase", "2026-11-20T10:00:00Z", extra)
}

/// Runs the runtime until it has consumed `expected` records, then stops it.
async fn run_until(settings: &Settings, expected: u64) -> runtime::RunSummary {
    let mut run = start(settings);
    let what = format!("{expected} records consumed");
    run.until(Duration::from_secs(60), &what, |s| {
        s.consumed.load(Ordering::Relaxed) >= expected
    })
    .await;
    run.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_channels_and_publishes_resolved_records_and_profiles() {
    let c = cluster("g-publish");
    let lines = vec![
        event(
            "s1",
            "store",
            json!({"identifiers": {"loyalty_id": "FID-1", "phone": "06 12 34 56 78"},
            "order": {"order_id": "T-1", "total": 10.5, "currency": "EUR"}}),
        ),
        event(
            "w1",
            "web",
            json!({"type": "login", "identifiers": {"account_id": "CRM-1", "email": "a@b.fr"}}),
        ),
        event(
            "x1",
            "social",
            json!({"type": "social_interaction",
            "identifiers": {"social_handle": "twitter:@a", "phone": "+33612345678", "email": "A@B.fr"}}),
        ),
    ];
    produce(&c, lines).await;
    let summary = run_until(&c.settings, 3).await;
    assert!(summary.clean);
    assert_eq!(summary.customers, 1);

    let resolved = json_values(&read_topic(
        &c.settings.kafka.brokers,
        "touchpoints.resolved",
    ));
    assert_eq!(resolved.len(), 3);
    let ids: HashSet<&str> = resolved
        .iter()
        .map(|v| v["customer_id"].as_str().unwrap())
        .collect();
    let golden = runtime::open_engine(&c.settings)
        .unwrap()
        .golden_records()
        .unwrap();
    assert_eq!(golden.len(), 1);
    let survivor = golden[0]["customer_id"].as_str().unwrap();
    let profiles = read_topic(&c.settings.kafka.brokers, "profiles.merged");
    let last: Value = profiles
        .iter()
        .rev()
        .find(|(k, v, _)| k.as_deref() == Some(survivor) && v.is_some())
        .map(|(_, v, _)| serde_json::from_slice(v.as_ref().unwrap()).unwrap())
        .unwrap();
    assert_eq!(last["orders"]["count"], 1);
    assert_eq!(last["identifiers"]["account_id"], json!(["CRM-1"]));
    assert_eq!(last["identifiers"]["loyalty_id"], json!(["FID-1"]));
    let tombstones: HashSet<&str> = profiles
        .iter()
        .filter(|(_, v, _)| v.is_none())
        .map(|(k, _, _)| k.as_deref().unwrap())
        .collect();
    assert!(ids.is_superset(&tombstones));
    assert!(ids.contains(survivor));
    // How many customers existed before the merge depends on the order the three
    // topics are read in; every id merged away has a merge record and a tombstone.
    let merged: HashSet<String> =
        json_values(&read_topic(&c.settings.kafka.brokers, "identity.changes"))
            .iter()
            .filter(|v| v["type"] == "merge")
            .flat_map(|v| {
                v["merged_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_string())
            })
            .collect();
    assert_eq!(
        merged,
        tombstones
            .iter()
            .map(|t| t.to_string())
            .collect::<HashSet<_>>()
    );
    assert_eq!(ids.len(), 1 + merged.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_from_committed_offsets_with_no_loss_and_no_double_count() {
    let c = cluster("g-resume");
    let brokers = c.settings.kafka.brokers.clone();
    let make = |range: std::ops::Range<usize>| -> Vec<String> {
        range
            .map(|i| {
                event(&format!("e{i}"), ["web", "store", "social"][i % 3],
                    json!({"identifiers": {"email": format!("c{}@x.fr", i % 25)},
                           "order": {"order_id": format!("O{i}"), "total": 1.0, "currency": "EUR"}}))
            })
            .collect()
    };
    produce(&c, make(0..60)).await;
    let first = run_until(&c.settings, 60).await;
    assert_eq!(first.engine.accepted, 60);

    // A second consumer of the same group and store picks up where the first committed.
    produce(&c, make(60..100)).await;
    let second = run_until(&c.settings, 40).await;
    assert_eq!(
        second.consumed, 40,
        "nothing consumed twice after a clean stop"
    );
    assert_eq!(second.engine.duplicates, 0);
    assert_eq!(second.customers, 25);

    let resolved = json_values(&read_topic(&brokers, "touchpoints.resolved"));
    let ids: HashSet<String> = resolved
        .iter()
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 100, "every input event has its resolved record");
    assert_eq!(resolved.len(), 100);

    let engine = runtime::open_engine(&c.settings).unwrap();
    let orders: u64 = engine
        .golden_records()
        .unwrap()
        .iter()
        .map(|g| g["orders"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(orders, 100, "each purchase counted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advances_past_poison_records_to_the_dead_letter_topic() {
    let c = cluster("g-dlq");
    let lines = vec![
        "{not json".to_string(),
        event("ok1", "web", json!({"identifiers": {"email": "z@z.fr"}})),
        event("bad", "web", json!({"attributes": {"religion": "x"}})),
        event("ok2", "web", json!({"identifiers": {"email": "z@z.fr"}})),
    ];
    produce(&c, lines.clone()).await;
    let summary = run_until(&c.settings, 4).await;
    assert_eq!(summary.engine.rejected_total(), 2);
    assert_eq!(summary.engine.accepted, 2);
    let dlq = read_topic(&c.settings.kafka.brokers, "touchpoints.dlq");
    assert_eq!(dlq.len(), 2);
    let mut originals: Vec<String> = dlq
        .iter()
        .map(|(_, v, _)| String::from_utf8(v.clone().unwrap()).unwrap())
        .collect();
    originals.sort();
    let mut expected = vec![lines[0].clone(), lines[2].clone()];
    expected.sort();
    assert_eq!(originals, expected, "original bytes kept");
    for (_, _, h) in &dlq {
        assert_eq!(h["unicus.source.topic"], "touchpoints.web");
        assert!(h["unicus.source.offset"].parse::<i64>().is_ok());
        assert!(!h["unicus.error"].is_empty());
    }
    assert_eq!(
        json_values(&read_topic(
            &c.settings.kafka.brokers,
            "touchpoints.resolved"
        ))
        .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_the_outbox_left_by_a_crash_before_consuming() {
    let c = cluster("g-outbox");
    // What a crash between the store flush and the acknowledgements leaves behind.
    {
        let mut engine = runtime::open_engine(&c.settings).unwrap();
        let record = WireRecord {
            topic: "identity.changes".into(),
            key: Some("cus_X".into()),
            payload: Some(br#"{"type":"merge"}"#.to_vec()),
            headers: vec![("h".into(), "v".into())],
            source_timestamp: None,
            received_at: None,
            changelog: false,
        };
        let entry = [OUTBOX.bytes(), &1u64.to_be_bytes()].concat();
        engine.store_mut().put(entry, &vec![record]).unwrap();
        engine.commit().unwrap();
    }
    let mut run = start(&c.settings);
    run.until(Duration::from_secs(30), "the outbox re-sent", |s| {
        s.outbox_resent.load(Ordering::Relaxed) > 0
    })
    .await;
    run.stop().await;
    let changes = read_topic(&c.settings.kafka.brokers, "identity.changes");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0.as_deref(), Some("cus_X"));
    assert_eq!(changes[0].2["h"], "v");
    let engine = runtime::open_engine(&c.settings).unwrap();
    assert!(
        engine
            .store()
            .scan_prefix(OUTBOX.bytes())
            .unwrap()
            .is_empty(),
        "outbox emptied once acknowledged"
    );
    drop(c.mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_and_retries_through_a_broker_outage_without_losing_records() {
    let mut c = cluster("g-outage");
    c.settings.runtime.retry_backoff_ms = 200;
    c.settings
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "1000".into());
    let brokers = c.settings.kafka.brokers.clone();
    let batch = |range: std::ops::Range<usize>| -> Vec<String> {
        range
            .map(|i| {
                event(
                    &format!("o{i}"),
                    "web",
                    json!({"identifiers": {"email": format!("p{i}@x.fr")}}),
                )
            })
            .collect()
    };
    produce(&c, batch(0..20)).await;
    let mut run = start(&c.settings);
    let consumed = |n: u64| move |s: &RuntimeStats| s.consumed.load(Ordering::Relaxed) >= n;
    run.until(Duration::from_secs(60), "20 consumed", consumed(20))
        .await;

    // The broker goes away while more records are on their way, then comes back.
    let more = tokio::spawn({
        let brokers = brokers.clone();
        let channels = c.settings.kafka.channels.clone();
        async move { produce_lines(&brokers, "", &channels, batch(20..40).into_iter()).await }
    });
    c.mock.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !run.task.is_finished(),
        "the runtime must not crash during an outage"
    );
    c.mock.broker_up(1).unwrap();
    more.await.unwrap().unwrap();
    // Counted once each, their batch finished: a rebalance during the outage delivers
    // the batch in delivery again (its offsets were not committed yet), and `consumed`
    // counts those records twice.
    run.until(Duration::from_secs(60), "40 accepted", |s| {
        s.engine.lock().unwrap().accepted >= 40
    })
    .await;
    let stats = run.stats.clone();
    let summary = run.stop().await;
    assert!(summary.clean);
    let ids: HashSet<String> = json_values(&read_topic(&brokers, "touchpoints.resolved"))
        .iter()
        .map(|v| v["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 40, "no record lost across the outage");
    eprintln!(
        "delivery retries during the outage: {}; rebalances {}, records delivered again {}",
        stats.delivery_retries.load(Ordering::Relaxed),
        stats.rebalances.load(Ordering::Relaxed),
        summary.engine.duplicates
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rights_requests_and_retention_are_answered_on_gdpr_receipts() {
    let c = cluster("g-gdpr");
    let lines = vec![
        event(
            "w1",
            "web",
            json!({"type": "login", "identifiers": {"account_id": "CRM-1", "email": "a@b.fr"}}),
        ),
        event(
            "w2",
            "web",
            json!({"type": "login", "occurred_at": "2020-01-01T00:00:00Z",
                   "identifiers": {"email": "gone@b.fr"}}),
        ),
    ];
    produce(&c, lines).await;
    run_until(&c.settings, 2).await;

    // A request, and a bad one; the restart also sweeps retention at once.
    send_all(
        &c.settings.kafka.brokers,
        &c.settings.kafka.requests_topic(),
        &[
            r#"{"request_id":"dpo-1","kind":"erase","identifier":{"type":"email","value":"A@B.fr"}}"#,
            r#"{"request_id":"dpo-2","kind":"erase"}"#,
        ],
    )
    .await;
    run_until(&c.settings, 2).await;

    let receipts = json_values(&read_topic(&c.settings.kafka.brokers, "gdpr.receipts"));
    let kinds: std::collections::BTreeSet<(String, String)> = receipts
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("erase", "done"), ("retention", "done")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        "{receipts:#?}"
    );
    let dlq = read_topic(&c.settings.kafka.brokers, "touchpoints.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].2["unicus.source.topic"], "gdpr.requests");
    let tombstones = read_topic(&c.settings.kafka.brokers, "profiles.merged")
        .into_iter()
        .filter(|(_, v, _)| v.is_none())
        .count();
    assert_eq!(tombstones, 2);
    let engine = runtime::open_engine(&c.settings).unwrap();
    assert_eq!(engine.customer_count().unwrap(), 0);
    drop(c.mock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splits_a_customer_from_an_identity_commands_record() {
    let c = cluster("g-commands");
    let lines = vec![
        event(
            "w1",
            "web",
            json!({"type": "login", "identifiers": {"account_id": "CRM-1", "email": "famille@b.fr"}}),
        ),
        event(
            "a1",
            "app",
            json!({"type": "login", "identifiers": {"device_id": "dev-9", "email": "famille@b.fr"}}),
        ),
    ];
    produce(&c, lines).await;
    run_until(&c.settings, 2).await;
    let customer = {
        let engine = runtime::open_engine(&c.settings).unwrap();
        assert_eq!(engine.customer_count().unwrap(), 1);
        engine
            .find_customer("email", "famille@b.fr")
            .unwrap()
            .unwrap()
    };

    let split = json!({"command_id": "ops-1", "kind": "split", "customer_id": customer,
                       "identifier": {"type": "device_id", "value": "dev-9"}})
    .to_string();
    send_all(
        &c.settings.kafka.brokers,
        &c.settings.kafka.commands_topic(),
        &[split.as_str(), r#"{"command_id":"ops-2","kind":"split"}"#],
    )
    .await;
    run_until(&c.settings, 2).await;

    let changes = json_values(&read_topic(&c.settings.kafka.brokers, "identity.changes"));
    let splits: Vec<&Value> = changes.iter().filter(|v| v["type"] == "split").collect();
    assert_eq!(splits.len(), 1, "{changes:#?}");
    assert_eq!(splits[0]["customer_id"], customer.as_str());
    assert_eq!(splits[0]["command_id"], "ops-1");
    let dlq = read_topic(&c.settings.kafka.brokers, "touchpoints.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].2["unicus.source.topic"], "identity.commands");
    assert_eq!(dlq[0].2["unicus.error.reason"], "missing_field");
    let engine = runtime::open_engine(&c.settings).unwrap();
    assert_eq!(engine.customer_count().unwrap(), 2);
    drop(c.mock);
}

/// Produces each body to `topic`, one acknowledged record at a time.
async fn send_all(brokers: &str, topic: &str, bodies: &[&str]) {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for body in bodies {
        producer
            .send(
                rdkafka::producer::FutureRecord::<(), _>::to(topic).payload(*body),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_is_answered_when_its_records_stop_not_at_the_batch_deadline() {
    let mut c = cluster("g-quiet");
    c.settings.runtime.batch_max_events = 5_000;
    c.settings.runtime.batch_max_wait_ms = 5_000;
    c.settings.runtime.batch_idle_ms = 2;
    let mut run = start(&c.settings);
    // The group is joined once a first record is consumed.
    produce(&c, vec![event("q0", "web", json!({}))]).await;
    run.until(Duration::from_secs(60), "the first record", |s| {
        s.consumed.load(Ordering::Relaxed) >= 1 && s.produced.load(Ordering::Relaxed) >= 1
    })
    .await;
    let before = run.stats.produced.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    produce(
        &c,
        (1..=3)
            .map(|i| event(&format!("q{i}"), "web", json!({})))
            .collect(),
    )
    .await;
    // One touchpoints.resolved record per event at least.
    run.until(Duration::from_secs(60), "outputs of three records", |s| {
        s.produced.load(Ordering::Relaxed) >= before + 3
    })
    .await;
    let answered = started.elapsed();
    // Their batch ended 2 ms after the last record, not 5 s after the first.
    assert!(
        answered < Duration::from_millis(2_500),
        "answered after {answered:?}"
    );
    // The batch in delivery is finished (offsets committed) with no record after it.
    run.until(Duration::from_secs(60), "both batches committed", |s| {
        s.batches.load(Ordering::Relaxed) >= 2
    })
    .await;
    let summary = run.stop().await;
    assert!(summary.clean);
    assert_eq!(summary.consumed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_entry_of_a_batch_the_group_committed_is_not_re_sent() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    use unicus::store::keys::kafka_runtime::OUTBOX_INPUT;

    let c = cluster("g-outbox-committed");
    let input = c.settings.kafka.topic_prefix.clone() + "touchpoints.web";
    // Two entries left by a crash: the first one's batch ends at offset 4 of partition 0,
    // which the group committed (so its outputs were all acknowledged); the second's at
    // offset 9 of partition 1, past the group's commit there.
    {
        let mut engine = runtime::open_engine(&c.settings).unwrap();
        for (seq, key, partition, end) in [(1u64, "cus_A", 0, 4i64), (2, "cus_B", 1, 9)] {
            let record = WireRecord {
                topic: "identity.changes".into(),
                key: Some(key.into()),
                payload: Some(br#"{"type":"merge"}"#.to_vec()),
                headers: vec![],
                source_timestamp: None,
                received_at: None,
                changelog: false,
            };
            let at = [OUTBOX.bytes(), &seq.to_be_bytes()].concat();
            engine.store_mut().put(at, &vec![record]).unwrap();
            let at = [OUTBOX_INPUT.bytes(), &seq.to_be_bytes()].concat();
            let ends = vec![(input.clone(), partition, end)];
            engine.store_mut().put(at, &ends).unwrap();
        }
        engine.commit().unwrap();
    }
    {
        let committer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &c.settings.kafka.brokers)
            .set("group.id", &c.settings.kafka.group_id)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&input, 0, Offset::Offset(4))
            .unwrap();
        tpl.add_partition_offset(&input, 1, Offset::Offset(8))
            .unwrap();
        committer.commit(&tpl, CommitMode::Sync).unwrap();
        drop(tpl);
    }
    let mut run = start(&c.settings);
    run.until(Duration::from_secs(30), "the outbox re-sent", |s| {
        s.outbox_resent.load(Ordering::Relaxed) > 0
    })
    .await;
    let summary = run.stop().await;
    assert!(summary.clean);
    let changes = read_topic(&c.settings.kafka.brokers, "identity.changes");
    let keys: Vec<_> = changes.iter().map(|(k, _, _)| k.as_deref()).collect();
    assert_eq!(keys, [Some("cus_B")]);
    let engine = runtime::open_engine(&c.settings).unwrap();
    for table in [OUTBOX.bytes(), OUTBOX_INPUT.bytes()] {
        assert!(engine.store().scan_prefix(table).unwrap().is_empty());
    }
    drop(c.mock);
}

/// Produces `(key, value)` records to `topic` (a `None` value is a tombstone).
async fn send_keyed(brokers: &str, topic: &str, records: &[(&str, Option<&str>)]) {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, value) in records {
        let mut record = rdkafka::producer::FutureRecord::<str, str>::to(topic).key(*key);
        if let Some(value) = value {
            record = record.payload(*value);
        }
        producer.send(record, Duration::from_secs(5)).await.unwrap();
    }
}

/// A product view of CLIMB-42 by Léa's account.
fn climbing_view(id: &str, at: &str) -> String {
    common::event(
        id,
        "web",
        "product_view",
        at,
        json!({"identifiers": {"account_id": "A-1"}, "page": {"product_sku": "CLIMB-42"}}),
    )
}

/// Léa's account, then two views of CLIMB-42.
async fn produce_two_climbing_views(c: &Cluster) {
    produce(
        c,
        vec![
            common::lea_emailable("2026-11-20T09:00:00Z"),
            climbing_view("v-1", "2026-11-20T10:00:00Z"),
            climbing_view("v-2", "2026-11-20T10:01:00Z"),
        ],
    )
    .await;
}

/// Audiences of views of the `escalade` (two) and `ski` (one) categories.
fn climbers_and_skiers() -> std::collections::BTreeMap<String, String> {
    unicus::engine::profile::audiences::named(&[
        (
            "climbers",
            r#"count(product_view where category = "escalade", 30d) >= 2"#,
        ),
        (
            "skiers",
            r#"count(product_view where category = "ski", 30d) >= 1"#,
        ),
    ])
}

/// Once the reference reader had time to follow an update: a third view of CLIMB-42,
/// then a clean stop; gives the run's summary and the audiences entered.
async fn view_again_and_stop(
    c: &Cluster,
    run: mock_cluster::Running,
) -> (runtime::RunSummary, Vec<String>) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    produce(c, vec![climbing_view("v-3", "2026-11-20T10:02:00Z")]).await;
    run.until_committed(Duration::from_secs(60), 4.0).await;
    let summary = run.stop().await;
    assert!(summary.clean);
    let entered = json_values(&read_topic(&c.settings.kafka.brokers, "audiences.changes"))
        .iter()
        .filter(|v| v["change"] == "entered")
        .map(|v| v["audience"].as_str().unwrap().to_string())
        .collect();
    (summary, entered)
}

/// Reference data through the broker, the GlobalKTable way: the catalogue on
/// `reference.products` is read whole before the first event (an audience's filter
/// reads a product's category from the start), then followed: an update counts for the
/// events after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_data_is_restored_before_the_first_event_then_followed() {
    let mut c = cluster("reference");
    c.settings.engine.audiences = climbers_and_skiers();
    c.settings.engine.enrichment.enabled = true;
    c.mock.create_topic("reference.products", 2, 1).unwrap();
    let brokers = c.settings.kafka.brokers.clone();
    send_keyed(
        &brokers,
        "reference.products",
        &[
            ("CLIMB-42", Some(r#"{"category_path": ["Sport", "ski"]}"#)),
            (
                "CLIMB-42",
                Some(r#"{"category_path": ["Sport", "escalade"]}"#),
            ),
            (
                "ROPE-9",
                Some(r#"{"category_path": ["Sport", "escalade"]}"#),
            ),
            ("ROPE-9", None),
        ],
    )
    .await;
    produce_two_climbing_views(&c).await;
    let run = start(&c.settings);
    run.until_committed(Duration::from_secs(60), 3.0).await;
    // The catalogue changes while the stream runs; a view after it reads the change.
    send_keyed(
        &brokers,
        "reference.products",
        &[("CLIMB-42", Some(r#"{"category_path": ["Sport", "ski"]}"#))],
    )
    .await;
    let (summary, entered) = view_again_and_stop(&c, run).await;
    assert_eq!(summary.engine.reference_products, 5);
    assert_eq!(summary.engine.product_misses, 0);

    assert_eq!(entered, vec!["climbers", "skiers"]);
    // The enriched golden record: two views as escalade, the third as ski.
    let records = json_values(&read_topic(&brokers, "profiles.merged"));
    let last = records.last().unwrap();
    let categories: Vec<(&str, f64)> = last["enrichment"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["score"].as_f64().unwrap()))
        .collect();
    assert_eq!(
        categories,
        vec![("escalade", 2.0), ("ski", 1.0)],
        "{last:#}"
    );
    assert_eq!(last["enrichment"]["top_category"]["value"], "escalade");
    // Kept in the store: the removed product is gone, the other has its last value.
    let engine = runtime::open_engine(&c.settings).unwrap();
    let product = unicus::engine::reference::product(engine.store(), "CLIMB-42").unwrap();
    assert_eq!(product.unwrap().category_path, vec!["Sport", "ski"]);
    assert_eq!(
        unicus::engine::reference::product(engine.store(), "ROPE-9").unwrap(),
        None
    );
    drop(c.mock);
}

/// A journey of the configuration through the broker: a product view with no cart
/// within the hour gives one trigger on `triggers.<journey>`, keyed by customer id, once
/// its due time has passed: here, on a live stream (events of two hours ago), the
/// runtime's idle tick fires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_triggers_on_its_own_topic_keyed_by_customer() {
    let mut c = cluster("journeys");
    c.settings.engine.journeys = [(
        "viewed_no_cart".to_string(),
        unicus::engine::config::JourneyConfig {
            unless: Some("cart_add".into()),
            ..unicus::engine::config::JourneyConfig::new("product_view", "1h")
        },
    )]
    .into();
    let topic = c
        .settings
        .kafka
        .topic(unicus::model::output::Topic::journey("viewed_no_cart"));
    assert_eq!(topic, "triggers.viewed_no_cart");
    c.mock
        .create_topic(&topic, mock_cluster::PARTITIONS, 1)
        .unwrap();
    let brokers = c.settings.kafka.brokers.clone();
    let ago = |minutes: i64| {
        (chrono::Utc::now() - chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let view_at = ago(120);
    let view = common::event(
        "v-1",
        "web",
        "product_view",
        &view_at,
        json!({"identifiers": {"account_id": "A-1"}}),
    );
    produce(&c, vec![common::lea_emailable(&ago(180)), view]).await;
    let run = start(&c.settings);
    run.until_committed(Duration::from_secs(60), 2.0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = read_topic(&brokers, &topic);
        if !records.is_empty() || std::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(run.stop().await.clean);

    let values = json_values(&records);
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(records[0].0.as_deref(), values[0]["customer_id"].as_str());
    assert_eq!(values[0]["journey"], "viewed_no_cart");
    assert_eq!(values[0]["entry_event_id"], "v-1");
    assert_eq!(values[0]["entered_at"], view_at.as_str());
    assert_eq!(values[0]["channels_allowed"], json!(["email"]));
    drop(c.mock);
}

/// An audience of the configuration through the broker: a customer enters it on its
/// third web view and leaves it when it refuses marketing e-mails on another channel;
/// `audiences.changes` is keyed by customer id and the golden record follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_changes_go_to_their_topic_keyed_by_customer() {
    let mut c = cluster("audiences");
    c.settings.engine.audiences = [(
        "web_browsers".to_string(),
        r#"count(product_view where channel = "web", 30d) >= 3 and allowed("marketing", "email")"#
            .to_string(),
    )]
    .into();
    let brokers = c.settings.kafka.brokers.clone();
    let lea = common::lea_emailable("2026-11-20T09:00:00Z");
    let view = |i: u32| {
        common::event(
            &format!("v-{i}"),
            "web",
            "product_view",
            &format!("2026-11-20T10:0{i}:00Z"),
            json!({"identifiers": {"account_id": "A-1"}, "page": {"product_sku": "CLIMB-42"}}),
        )
    };
    produce(&c, vec![lea, view(1), view(2), view(3)]).await;
    let run = start(&c.settings);
    run.until_committed(Duration::from_secs(60), 4.0).await;
    let no = common::event(
        "st-1",
        "store",
        "consent_update",
        "2026-11-20T11:00:00Z",
        json!({"identifiers": {"email": "LEA@example.org"},
               "consent": [{"purpose": "marketing", "channel": "email", "granted": false}]}),
    );
    produce(&c, vec![no]).await;
    run.until_committed(Duration::from_secs(60), 5.0).await;
    assert!(run.stop().await.clean);

    let records = read_topic(&brokers, "audiences.changes");
    let values = json_values(&records);
    let seen: Vec<(Option<&str>, &str, &str)> = records
        .iter()
        .zip(&values)
        .map(|((key, _, _), v)| {
            assert_eq!(
                key.as_deref(),
                v["customer_id"].as_str(),
                "keyed by customer"
            );
            (
                key.as_deref(),
                v["change"].as_str().unwrap(),
                v["audience"].as_str().unwrap(),
            )
        })
        .collect();
    let lea_id = values[0]["customer_id"].as_str();
    assert_eq!(
        seen,
        vec![
            (lea_id, "entered", "web_browsers"),
            (lea_id, "exited", "web_browsers")
        ]
    );
    let profiles = json_values(&read_topic(&brokers, "profiles.merged"));
    let last = profiles
        .iter()
        .rev()
        .find(|p| p["customer_id"].as_str() == lea_id)
        .unwrap();
    assert_eq!(last["audiences"], json!([]));
}

/// Avro reference data through the broker: records of `reference.products` in the
/// Confluent wire format are decoded with their writer schema, fetched from the registry
/// by id (down when the runtime starts: the restore waits for it, no event is read
/// before), and an audience reads the category they give, from the restore on and then
/// as followed; a record whose schema id the registry does not know is skipped (its key
/// keeps what it had) and the stream goes on; JSON values are read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_reference_data_is_decoded_with_the_registry_and_an_unknown_schema_is_skipped() {
    use unicus::engine::reference::RefTable;
    use unicus::kafka::avro::{frame, schemas::catalogue};

    let registry = unicus::sim::registry_double::RegistryDouble::start()
        .await
        .unwrap();
    let schema = catalogue().reference(RefTable::Products);
    let id = registry
        .register("reference.products-value", schema.text())
        .unwrap();
    let avro = |id: u32, doc: Value| frame(id, &schema.encode(&doc).unwrap());
    let unknown_id = id + 1_000;
    let mut c = cluster("reference-avro");
    c.settings.schema_registry.url = registry.url();
    c.settings.runtime.retry_backoff_ms = 100;
    c.settings.engine.audiences = climbers_and_skiers();
    c.mock.create_topic("reference.products", 2, 1).unwrap();
    let brokers = c.settings.kafka.brokers.clone();
    let send = |records: Vec<(&'static str, Option<Vec<u8>>)>| {
        let brokers = brokers.clone();
        async move {
            let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            for (key, value) in &records {
                let mut record =
                    rdkafka::producer::FutureRecord::<str, [u8]>::to("reference.products")
                        .key(*key);
                if let Some(value) = value {
                    record = record.payload(value.as_slice());
                }
                producer.send(record, Duration::from_secs(5)).await.unwrap();
            }
        }
    };
    send(vec![
        (
            "ROPE-9",
            Some(avro(
                id,
                json!({"category_path": ["Sport", "escalade"], "brand": "Beal"}),
            )),
        ),
        // Written with a schema the registry does not know: skipped.
        (
            "CLIMB-42",
            Some(avro(unknown_id, json!({"category_path": ["Sport", "ski"]}))),
        ),
        (
            "CLIMB-42",
            Some(avro(
                id,
                json!({"category_path": ["Sport", "Montagne", "escalade"], "brand": "Simond",
                       "price": 129.9, "currency": "EUR"}),
            )),
        ),
        // Skipped again: CLIMB-42 stays in `escalade`.
        (
            "CLIMB-42",
            Some(avro(unknown_id, json!({"category_path": ["Sport", "ski"]}))),
        ),
        // Bytes that are not a datum of the schema: skipped.
        (
            "BOOT-7",
            Some(frame(id, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01])),
        ),
        (
            "TENT-1",
            Some(br#"{"category_path": ["Sport", "camping"]}"#.to_vec()),
        ),
        ("ROPE-9", None),
    ])
    .await;
    produce_two_climbing_views(&c).await;

    // The registry is down at start: the restore waits for it, nothing is consumed.
    registry.set_outage(true);
    let run = start(&c.settings);
    let asked = std::time::Instant::now();
    while registry.requests() < 3 {
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "the restore asks the registry again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        run.stats.consumed.load(Ordering::Relaxed),
        0,
        "no event before the reference data"
    );
    assert!(!run.task.is_finished(), "an outage does not stop the run");
    registry.set_outage(false);
    run.until_committed(Duration::from_secs(60), 3.0).await;

    // Followed: the known id is read from the cache; an unknown one is skipped.
    send(vec![
        ("BOOT-7", Some(avro(unknown_id, json!({"brand": "Millet"})))),
        (
            "CLIMB-42",
            Some(avro(
                id,
                json!({"category_path": ["Sport", "ski"], "brand": "Simond", "price": 119.5}),
            )),
        ),
    ])
    .await;
    let (summary, entered) = view_again_and_stop(&c, run).await;
    // ROPE-9, CLIMB-42, TENT-1 (JSON), ROPE-9 removed, then CLIMB-42 again: the four
    // records not decoded never reach the engine, and are counted as refused.
    assert_eq!(summary.engine.reference_products, 5);
    assert_eq!(summary.engine.reference_rejected, 4);
    assert_eq!(summary.engine.product_misses, 0);

    assert_eq!(entered, vec!["climbers", "skiers"]);
    let engine = runtime::open_engine(&c.settings).unwrap();
    let product = |sku: &str| unicus::engine::reference::product(engine.store(), sku).unwrap();
    let climb = product("CLIMB-42").unwrap();
    assert_eq!(climb.category_path, vec!["Sport", "ski"]);
    assert_eq!(climb.brand.as_deref(), Some("Simond"));
    assert_eq!(climb.price, Some(119.5));
    assert_eq!(climb.currency, None, "absent in the last record");
    assert_eq!(product("ROPE-9"), None, "removed by its tombstone");
    assert_eq!(product("BOOT-7"), None, "never decoded");
    assert_eq!(
        product("TENT-1").unwrap().category_path,
        vec!["Sport", "camping"]
    );
    drop(c.mock);
}
