//! Avro end to end through a real broker with clients nobody here wrote: Python
//! confluent-kafka's `AvroSerializer` (with its `SchemaRegistryClient`, against the
//! registry double) produces Avro touchpoints, a rights request and an operator's split
//! command, the unicus runtime
//! consumes them and writes every output topic in Avro with Avro keys, and confluent-kafka's
//! `AvroDeserializer` decodes all of them.
//!
//! Needs `UNICUS_TEST_BROKERS` and `UNICUS_PYTHON` (the test stack's venv), set by
//! `scripts/test.sh`: skipped without them, failed if `UNICUS_REQUIRE_BROKER` is set.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use unicus::kafka::runtime::{self, RuntimeStats};
use unicus::settings::avro::{Format, KeyFormat};
use unicus::settings::Settings;
use unicus::sim::registry_double::RegistryDouble;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn stack(test: &str) -> Option<(String, String)> {
    match (var("UNICUS_TEST_BROKERS"), var("UNICUS_PYTHON")) {
        (Some(b), Some(p)) => Some((b, p)),
        _ => {
            if var("UNICUS_REQUIRE_BROKER").is_some_and(|v| v != "0") {
                panic!("{test}: UNICUS_REQUIRE_BROKER is set but UNICUS_TEST_BROKERS or UNICUS_PYTHON is not: run scripts/test.sh");
            }
            eprintln!("skipped: {test}: UNICUS_TEST_BROKERS and UNICUS_PYTHON not set (run scripts/test.sh)");
            None
        }
    }
}

fn python(py: &str, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/avro_interop.py");
    let out = Command::new(py)
        .arg(script)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn events() -> Vec<Value> {
    let t0 = "2026-11-20T09:00:00Z";
    vec![
        json!({"event_id": "web-1", "channel": "web", "type": "account_created", "occurred_at": t0,
               "identifiers": {"email": "Sophie.Dupont@Gmail.com", "account_id": "CRM-000123"},
               "person": {"first_name": "Sophie", "last_name": "Dupont"},
               "consent": [{"purpose": "marketing", "channel": "email", "granted": true}]}),
        json!({"event_id": "pos-1", "channel": "store", "type": "purchase", "occurred_at": "2026-11-20T09:10:00+01:00",
               "source": "pos-paris-11",
               "identifiers": {"loyalty_id": "FID-99812", "phone": "06 12 34 56 78"},
               "person": {"first_name": "Sophie", "last_name": "Dupont", "birth_date": "1985-04-12",
                          "address": {"line1": "12 rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"}},
               "order": {"order_id": "T-881", "total": 129.90, "currency": "EUR",
                         "items": [{"sku": "CLIMB-42", "name": "Chaussons d'escalade", "quantity": 1, "unit_price": 129.90}]}}),
        json!({"event_id": "crm-1", "channel": "crm", "type": "account_updated", "occurred_at": "2026-11-20T10:00:00Z",
               "identifiers": {"email": "sophie.dupont@gmail.com", "loyalty_id": "FID-99812"},
               "attributes": {"preferred_store": "Paris 11"}}),
        json!({"event_id": "web-2", "channel": "web", "type": "cart_add", "occurred_at": "2026-11-20T11:00:00Z",
               "identifiers": {"email": "sophie.dupont@gmail.com", "cookie_id": "c-77"},
               "cart": {"cart_id": "K-19", "items": [{"sku": "ROPE-9", "quantity": 1, "unit_price": 89.5}]},
               "page": {"url": "https://shop.example/p/ROPE-9", "product_sku": "ROPE-9"}}),
        json!({"event_id": "app-1", "channel": "app", "type": "page_view", "occurred_at": "2026-11-20T14:00:00Z",
               "identifiers": {"email": "sophie.dupont@gmail.com", "device_id": "a1f3"}, "app_version": "5.2"}),
        json!({"request_id": "req-1", "kind": "export",
               "identifier": {"type": "email", "value": "sophie.dupont@gmail.com"},
               "requested_at": "2026-11-21T00:00:00Z"}),
    ]
}

const OUTPUTS: [&str; 8] = [
    "touchpoints.resolved",
    "identity.changes",
    "profiles.merged",
    "consent.changes",
    "triggers.cart_abandoned",
    "triggers.purchase_completed",
    "triggers.lifecycle_changed",
    "gdpr.receipts",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_avro_clients_produce_what_unicus_reads_and_read_what_it_writes() {
    let Some((brokers, py)) =
        stack("confluent_kafka_avro_clients_produce_what_unicus_reads_and_read_what_it_writes")
    else {
        return;
    };
    let registry = RegistryDouble::start().await.unwrap();
    let prefix = format!(
        "avro-{}-{}.",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    );
    let dir = tempfile::tempdir().unwrap();
    let produce = |phase: usize, events: &[Value]| {
        let input = dir.path().join(format!("phase-{phase}.jsonl"));
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        std::fs::write(&input, lines.join("\n")).unwrap();
        let out = python(
            &py,
            &[
                "produce",
                "--brokers",
                &brokers,
                "--registry",
                &registry.url(),
                "--prefix",
                &prefix,
                "--input",
                input.to_str().unwrap(),
            ],
        );
        assert!(
            out.contains(&format!(r#""produced": {}"#, events.len())),
            "{out}"
        );
    };
    // Python decodes `topics` (comma-separated) and prints a JSON line per record.
    let consume = |topics: &str, extra: &[&str]| {
        let url = registry.url();
        let mut args = vec![
            "consume",
            "--brokers",
            &brokers,
            "--registry",
            &url,
            "--prefix",
            &prefix,
            "--topics",
            topics,
        ];
        args.extend_from_slice(extra);
        python(&py, &args)
    };
    // Phases, so that the order across topics is the story's: two strangers, the record
    // that merges them, a cart, a later visit that makes it abandoned, an export.
    let all = events();
    let phases: [&[Value]; 4] = [&all[0..2], &all[2..3], &all[3..4], &all[4..6]];

    // 1. Python produces Avro, registering the schemas of schemas/input.
    produce(0, phases[0]);
    let subjects = registry.subjects();
    assert!(
        subjects.contains_key(&format!("{prefix}touchpoints.web-value")),
        "{subjects:?}"
    );

    // 2. unicus consumes them and writes Avro.
    let mut settings = Settings::default();
    settings.kafka.brokers = brokers.clone();
    settings.kafka.topic_prefix = prefix.clone();
    settings.kafka.group_id = format!("{prefix}unicus");
    settings.kafka.channels = ["web", "store", "crm", "app"].map(String::from).to_vec();
    settings.runtime.store_dir = dir.path().join("store");
    settings.runtime.batch_max_wait_ms = 50;
    settings.schema_registry.url = registry.url();
    settings.schema_registry.key_format = KeyFormat::Avro;
    settings.output.format = Format::Avro;
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        // Topics the producer creates later are found quickly.
        ("topic.metadata.refresh.interval.ms", "500"),
    ] {
        settings.kafka.properties.insert(k.into(), v.into());
    }
    let stats = Arc::new(RuntimeStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(settings, stop_rx, stats.clone()));
    let mut expected = 0;
    for (i, phase) in phases.iter().enumerate() {
        if i > 0 {
            produce(i, phase);
        }
        expected += phase.len() as u64;
        let started = Instant::now();
        while stats.consumed.load(Ordering::Relaxed) < expected {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "consumed {} of {expected}",
                stats.consumed.load(Ordering::Relaxed)
            );
            assert!(!task.is_finished(), "runtime stopped: {:?}", task.await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // An operator splits the app's device off the customer, by an Avro command.
    let resolved = consume("touchpoints.resolved", &["--idle", "1"]);
    // The customer after the merge: the one the merging record (crm-1) resolved to. The
    // first record read may be either stranger, since topics are read in no fixed order.
    let merged_into = |records: &[Value]| {
        records
            .iter()
            .find(|r| r["value"]["event_id"] == "crm-1")
            .expect("the merging record is resolved")["value"]["customer_id"]
            .clone()
    };
    let read: Vec<Value> = resolved
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let survivor = merged_into(&read);
    let split = json!({"command_id": "ops-1", "kind": "split",
        "customer_id": survivor, "reason": "a shared tablet",
        "identifier": {"type": "device_id", "value": "a1f3"}, "requested_at": "2026-11-22T00:00:00Z"});
    produce(phases.len(), &[split]);
    expected += 1;
    let started = Instant::now();
    while stats.consumed.load(Ordering::Relaxed) < expected {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the command is not consumed"
        );
        assert!(!task.is_finished(), "runtime stopped: {:?}", task.await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(summary.clean);
    assert_eq!(
        summary.engine.rejected_total(),
        0,
        "{:?}",
        summary.engine.rejected
    );
    for t in OUTPUTS {
        assert!(
            registry
                .subjects()
                .contains_key(&format!("{prefix}{t}-value")),
            "{t} registered"
        );
    }

    // 3. Python decodes every output topic.
    let consumed = consume(&OUTPUTS.join(","), &[]);
    let mut by_topic: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in consumed.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        by_topic
            .entry(v["topic"].as_str().unwrap().into())
            .or_default()
            .push(v);
    }
    for t in OUTPUTS {
        assert!(
            by_topic.get(t).is_some_and(|r| !r.is_empty()),
            "nothing decoded on {t}: {consumed}"
        );
    }
    let resolved = &by_topic["touchpoints.resolved"];
    assert_eq!(resolved.len(), 5);
    let customer = merged_into(resolved).as_str().unwrap().to_string();
    assert!(customer.starts_with("cus_"));
    assert!(
        resolved
            .iter()
            .all(|r| r["key"] == r["value"]["customer_id"] && r["key"].is_string()),
        "keys decode as Avro strings: {resolved:?}"
    );
    let merge = by_topic["identity.changes"]
        .iter()
        .find(|r| r["value"]["type"] == "merge")
        .expect("a merge");
    assert_eq!(merge["value"]["merged_ids"].as_array().unwrap().len(), 1);
    let split = by_topic["identity.changes"]
        .iter()
        .find(|r| r["value"]["type"] == "split")
        .expect("the split of the command");
    assert_eq!(split["key"], json!(customer));
    assert_eq!(
        (
            &split["value"]["command_id"],
            &split["value"]["source_profiles"]
        ),
        (&json!("ops-1"), &json!(1))
    );
    assert_eq!(split["value"]["at"], "2026-11-22T00:00:00+00:00");
    assert!(split["value"]["new_customer_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("cus_")));
    let cart = &by_topic["triggers.cart_abandoned"][0]["value"];
    assert_eq!(cart["cart_id"], "K-19");
    assert_eq!(cart["value"], "89.50", "money is a decimal");
    assert_eq!(cart["channels_allowed"], json!(["email"]));
    let purchase = &by_topic["triggers.purchase_completed"][0]["value"];
    assert_eq!(purchase["order_id"], "T-881");
    assert_eq!(
        purchase["at"], "2026-11-20T08:10:00+00:00",
        "a timestamp-millis instant"
    );
    let receipt = &by_topic["gdpr.receipts"][0]["value"];
    assert_eq!(
        (receipt["kind"].as_str(), receipt["status"].as_str()),
        (Some("export"), Some("done"))
    );
    let export: Value = serde_json::from_str(receipt["export"].as_str().unwrap()).unwrap();
    assert_eq!(export["golden_record"]["customer_id"], json!(customer));
    let profile = by_topic["profiles.merged"]
        .iter()
        .rev()
        .find(|r| r["key"] == json!(customer))
        .unwrap();
    assert_eq!(
        profile["value"]["person"]["birth_date"]["value"],
        "1985-04-12"
    );
    assert_eq!(profile["value"]["orders"]["totals"]["EUR"], "129.90");
}
