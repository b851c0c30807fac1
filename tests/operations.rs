//! Operations: the metrics endpoint, and the Prometheus configuration, alert rules,
//! Grafana dashboard, compose file and Kubernetes manifests of `deploy/`, checked with
//! the real tools where this machine has them.
//!
//! Tools, exported by `scripts/test.sh` (which sets `UNICUS_REQUIRE_TOOLS=1`, so that a
//! missing one fails the test): `UNICUS_PROMETHEUS`, `UNICUS_PROMTOOL` (Debian's
//! `prometheus`), `UNICUS_DOCKER_COMPOSE` (compose v1 from PyPI, a validator: no Docker
//! engine runs here). Without them, the tests that need them are skipped with a message.
//! For local development: `scripts/test-stack.sh install && source scripts/test-stack.sh
//! && cargo test --release --test operations -- --nocapture`.
//!
//! The Prometheus test runs the `unicus` binary against rdkafka's in-process mock
//! cluster (Tansu's high watermarks are wrong, so lag could not be checked there), has
//! a real Prometheus scrape it every second while events flow, and asks Prometheus's
//! HTTP API for the reconciliation and lag series.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio::sync::watch;
use unicus::kafka::runtime::{self, RuntimeStats};
use unicus::model::output::Topic;
use unicus::settings::Settings;
use unicus::sim::demo::Feeder;
use unicus::sim::generate::{GenerateOptions, GeneratedEvent, Generator};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Families that may have no sample in a test run: no code path of this branch fills
/// them (fuzzy links and suggestions depend on the data, splits on an operator), so
/// they are only required to be declared.
const FILLED_LATER: [&str; 4] = [
    "unicus_identity_suggestions_total",
    "unicus_identity_fuzzy_links_total",
    "unicus_identity_splits_total",
    // Labelled by route and status: a series once the lookup API answers a request
    // (tests/api.rs checks them).
    "unicus_api_requests_total",
];

fn path(relative: &str) -> PathBuf {
    Path::new(ROOT).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn yaml(relative: &str) -> serde_yaml::Value {
    let mut v: serde_yaml::Value =
        serde_yaml::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{relative}: merge keys: {e}"));
    v
}

// ----------------------------------------------------------------------------- tools

/// A tool from the environment, or `None` (after saying so) when the test is skipped.
fn tool(var: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if found.is_none() {
        if std::env::var("UNICUS_REQUIRE_TOOLS").is_ok_and(|v| v != "0") {
            panic!(
                "{test}: UNICUS_REQUIRE_TOOLS is set but {var} is not an existing file: \
                 run the tests through scripts/test.sh, which installs and exports it"
            );
        }
        eprintln!("skipped: {test}: {var} not set (run scripts/test.sh)");
    }
    found
}

/// Runs a tool to completion; panics with its output when it fails.
fn run_tool(program: &Path, args: &[&str], stdin: Option<&str>, dir: &Path) -> String {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", program.display()));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{text}",
        program.display(),
        out.status
    );
    text
}

/// Kills the child on drop, so a failing test leaves nothing running.
struct Running(Child, &'static str);

impl Running {
    /// SIGTERM, then the exit status (SIGKILL after `deadline`).
    fn terminate(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            eprintln!("stopping {} left running", self.1);
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `unicus run --log-level info` on a configuration file, standard error to `log`.
fn start_unicus(config: &Path, log: &Path) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_unicus"))
            .args(["run", "--log-level", "info", "--config"])
            .arg(config)
            .env_remove("UNICUS_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
        "unicus",
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

// ----------------------------------------------------------------------------- http

/// `GET` over HTTP/1.0 (no chunked answers): status and body.
fn http_get(address: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an http answer");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One series of a Prometheus instant query: labels and value.
type Sample = (BTreeMap<String, String>, f64);

fn prom_query(address: &str, expr: &str) -> Result<Vec<Sample>, String> {
    let (status, body) = http_get(
        address,
        &format!("/api/v1/query?query={}", url_encode(expr)),
    )
    .map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{expr}: {body}"));
    }
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    Ok(result
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let value = r["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            (labels, value)
        })
        .collect())
}

/// The single value of a query without labels.
fn prom_value(address: &str, expr: &str) -> Option<f64> {
    prom_query(address, expr)
        .ok()
        .and_then(|r| r.first().map(|s| s.1))
}

/// Polls until `check` gives `Some`, or panics after `deadline` with `what`.
fn eventually<T>(deadline: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < deadline, "after {deadline:?}: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ----------------------------------------------------------------------------- exposition

/// `# TYPE` of each family in a text exposition.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// Value of one series (name and labels exactly as exposed), if present.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    })
}

/// Sum of every series of a family.
fn family_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Names of metrics (`unicus_…`, `process_…`) a text refers to.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if (i == 0 || !word(bytes[i - 1]))
            && (text[i..].starts_with("unicus_") || text[i..].starts_with("process_"))
        {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            out.insert(text[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/unicus.json")).unwrap();
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect()
}

/// What an in-process runtime exposed after a mixed stream (shared by several tests).
struct Observed {
    exposition: String,
    declared: Vec<String>,
    /// `/readyz` right after the endpoint came up, and once the events were consumed.
    ready_at_start: (u16, String),
    ready_when_running: (u16, String),
    healthy: (u16, String),
    events: Vec<GeneratedEvent>,
}

fn observed() -> &'static Observed {
    static ONCE: OnceLock<Observed> = OnceLock::new();
    ONCE.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(observe())
    })
}

async fn observe() -> Observed {
    let mock = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::default();
    settings.kafka.brokers = mock.bootstrap_servers();
    settings.kafka.group_id = "g-operations".into();
    settings.kafka.create_topics = false;
    settings.runtime.store_dir = dir.path().join("store");
    settings.runtime.batch_max_wait_ms = 50;
    settings.metrics.listen = "127.0.0.1:0".into();
    settings.metrics.lag_interval_ms = 200;
    for (k, v) in [
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        settings.kafka.properties.insert(k.into(), v.into());
    }
    for t in settings.kafka.input_topics() {
        mock.create_topic(&t, 2, 1).unwrap();
    }
    for t in Topic::ALL {
        mock.create_topic(&settings.kafka.topic(t), 2, 1).unwrap();
    }
    mock.create_topic(&settings.kafka.requests_topic(), 1, 1)
        .unwrap();

    let events: Vec<GeneratedEvent> = Generator::new(GenerateOptions {
        seed: 5,
        customers: 400,
        events: 4_000,
        invalid_rate: 0.01,
        ..GenerateOptions::default()
    })
    .collect();
    let feeder = Feeder::new(
        &settings.kafka.brokers,
        &settings.kafka.topic_prefix,
        &settings.kafka.channels,
    )
    .unwrap();
    let sent = feeder
        .send(events.iter().map(|e| e.line.clone()))
        .await
        .unwrap();
    assert_eq!(sent, events.len() as u64);
    let stats = Arc::new(RuntimeStats::default());
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(runtime::run(settings.clone(), stop_rx, stats.clone()));
    let endpoint = loop {
        if let Some(a) = stats.telemetry.endpoint() {
            break a.to_string();
        }
        assert!(!task.is_finished(), "runtime stopped: {:?}", task.await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ready_at_start = http_get(&endpoint, "/readyz").unwrap();
    let started = Instant::now();
    // One rights request, so the request families have samples too. It is sent once
    // every event is consumed: topics are read in no fixed order, and an export read
    // before the customer's events would find nobody.
    for target in [sent, sent + 1] {
        if target > sent {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &settings.kafka.brokers)
                .create()
                .unwrap();
            let request = r#"{"request_id": "r-1", "kind": "export",
                "identifier": {"type": "email", "value": "sophie.dupont@gmail.com"}}"#;
            producer
                .send(
                    FutureRecord::<(), str>::to(&settings.kafka.requests_topic()).payload(request),
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
        while stats.consumed.load(Ordering::Relaxed) < target {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "consumed {} of {target}",
                stats.consumed.load(Ordering::Relaxed),
            );
            assert!(!task.is_finished(), "runtime stopped: {:?}", task.await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // A batch shows once its offsets are committed, lag with librdkafka's next
    // statistics: wait until every record is shown and every partition caught up.
    let partitions = settings.kafka.channels.len() * 2 + 1;
    let exposition = loop {
        let (_, text) = http_get(&endpoint, "/metrics").unwrap();
        let lag_series = text
            .lines()
            .filter(|l| l.starts_with("unicus_consumer_lag_records{"))
            .count();
        if family_sum(&text, "unicus_events_consumed_total") == sent as f64
            && sample(
                &text,
                r#"unicus_requests_consumed_total{topic="gdpr.requests"}"#,
            ) == Some(1.0)
            && lag_series == partitions
            && family_sum(&text, "unicus_consumer_lag_records") == 0.0
        {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not every record shown, or lag not at zero on {partitions} partitions:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ready_when_running = http_get(&endpoint, "/readyz").unwrap();
    let healthy = http_get(&endpoint, "/healthz").unwrap();
    stop.send(true).unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the runtime drains")
        .unwrap()
        .unwrap();
    assert!(summary.clean);
    drop(mock);
    Observed {
        exposition,
        declared: stats.telemetry.metric_names().to_vec(),
        ready_at_start,
        ready_when_running,
        healthy,
        events,
    }
}

#[test]
fn exposition_passes_promtool_check_metrics() {
    let Some(promtool) = tool(
        "UNICUS_PROMTOOL",
        "exposition_passes_promtool_check_metrics",
    ) else {
        return;
    };
    let o = observed();
    assert!(o.exposition.contains("unicus_events_consumed_total"));
    let out = run_tool(
        &promtool,
        &["check", "metrics"],
        Some(&o.exposition),
        Path::new(ROOT),
    );
    assert!(out.trim().is_empty(), "promtool lint: {out}");
}

#[test]
fn every_metric_of_the_dashboard_and_the_alerts_is_exposed() {
    let o = observed();
    let exposed = families(&o.exposition);
    let mut referenced = metric_names_in(&read("deploy/prometheus/alerts.yml"));
    for expr in dashboard_exprs() {
        referenced.extend(metric_names_in(&expr));
    }
    assert!(
        referenced.len() >= 30,
        "too few names found: {referenced:?}"
    );
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|name| {
            let histogram = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| exposed.get(base).is_some_and(|t| t == "histogram"))
            });
            let later = FILLED_LATER.contains(&name.as_str()) && o.declared.contains(name);
            !exposed.contains_key(*name) && !histogram && !later
        })
        .collect();
    assert!(
        missing.is_empty(),
        "used by a panel or an alert but not exposed: {missing:?}"
    );
    // And every declared family but those filled later had a sample in this run.
    let silent: Vec<&String> = o
        .declared
        .iter()
        .filter(|n| !exposed.contains_key(*n) && !FILLED_LATER.contains(&n.as_str()))
        .collect();
    assert!(silent.is_empty(), "declared but never exposed: {silent:?}");
}

#[test]
fn the_counters_reconcile_with_what_was_sent() {
    let o = observed();
    let e = &o.exposition;
    let channels = Settings::default().kafka.channels;
    for c in &channels {
        let get = |name: &str| sample(e, &format!(r#"{name}{{channel="{c}"}}"#)).unwrap();
        let rejected: f64 = e
            .lines()
            .filter(|l| l.starts_with(&format!(r#"unicus_events_rejected_total{{channel="{c}","#)))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum();
        assert_eq!(
            get("unicus_events_consumed_total"),
            get("unicus_events_accepted_total")
                + rejected
                + get("unicus_events_duplicates_total")
                + get("unicus_events_suppressed_total"),
            "channel {c}"
        );
    }
    let consumed = family_sum(e, "unicus_events_consumed_total");
    assert_eq!(
        consumed,
        o.events.len() as f64,
        "every line sent was consumed"
    );
    let invalid = o.events.iter().filter(|ev| ev.person.is_none()).count();
    assert!(invalid > 0);
    assert_eq!(
        family_sum(e, "unicus_events_rejected_total"),
        invalid as f64
    );
    assert_eq!(
        family_sum(e, "unicus_events_accepted_total"),
        sample(
            e,
            r#"unicus_records_produced_total{topic="touchpoints.resolved"}"#
        )
        .unwrap()
    );
    assert_eq!(
        family_sum(e, "unicus_events_rejected_total")
            + family_sum(e, "unicus_requests_rejected_total"),
        sample(
            e,
            r#"unicus_records_produced_total{topic="touchpoints.dlq"}"#
        )
        .unwrap()
    );
    for family in [
        "unicus_requests_consumed_total",
        "unicus_requests_accepted_total",
    ] {
        assert_eq!(
            sample(e, &format!(r#"{family}{{topic="gdpr.requests"}}"#)),
            Some(1.0),
            "{family}"
        );
    }
    assert_eq!(
        sample(e, r#"unicus_rights_requests_done_total{kind="export"}"#),
        Some(1.0)
    );
    assert!(sample(e, "unicus_identity_merges_total").unwrap() > 0.0);
    assert!(sample(e, "unicus_customers").unwrap() > 0.0);
    assert!(sample(e, "unicus_identity_largest_customer_source_profiles").unwrap() >= 2.0);
    assert!(sample(e, "unicus_store_size_bytes").unwrap() > 0.0);
    // Lag series: one per assigned partition (two per channel, one for requests).
    let lag_series = e
        .lines()
        .filter(|l| l.starts_with("unicus_consumer_lag_records{"))
        .count();
    assert_eq!(lag_series, channels.len() * 2 + 1, "{e}");
}

#[test]
fn readiness_follows_the_group_and_the_store_and_liveness_the_loop() {
    let o = observed();
    assert_eq!(o.ready_at_start.0, 503, "{:?}", o.ready_at_start);
    assert!(o.ready_at_start.1.starts_with("not ready"));
    assert_eq!(o.ready_when_running.0, 200, "{:?}", o.ready_when_running);
    assert!(o.ready_when_running.1.contains("17 partitions assigned"));
    assert_eq!(o.healthy.0, 200, "{:?}", o.healthy);
}

// ----------------------------------------------------------------------------- deploy/

#[test]
fn alert_rules_and_scrape_config_pass_promtool() {
    let Some(promtool) = tool(
        "UNICUS_PROMTOOL",
        "alert_rules_and_scrape_config_pass_promtool",
    ) else {
        return;
    };
    let dir = path("deploy/prometheus");
    let rules = run_tool(&promtool, &["check", "rules", "alerts.yml"], None, &dir);
    assert!(rules.contains("SUCCESS"), "{rules}");
    let tests = run_tool(&promtool, &["test", "rules", "alerts.test.yml"], None, &dir);
    assert!(tests.contains("SUCCESS"), "{tests}");
    let config = run_tool(
        &promtool,
        &["check", "config", "prometheus.yml"],
        None,
        &dir,
    );
    assert!(config.contains("SUCCESS"), "{config}");
    // Every alert of alerts.yml has a unit test that shows it firing.
    let tested = read("deploy/prometheus/alerts.test.yml");
    for line in read("deploy/prometheus/alerts.yml").lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            assert!(
                tested.contains(&format!(
                    "alertname: {name}\n        exp_alerts:\n          - exp_labels"
                )),
                "no test shows {name} firing"
            );
        }
    }
}

#[test]
fn grafana_dashboard_has_a_row_per_concern_and_is_provisioned() {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/unicus.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "Flow per channel",
            "Latency",
            "Consumer lag",
            "Identity graph health",
            "Consent and triggers",
            "Store and delivery"
        ]
    );
    let mut ids = HashSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id {p}");
        let pos = &p["gridPos"];
        assert!(
            pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!t["expr"].as_str().unwrap().is_empty());
        }
    }
    let datasource = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &datasource["datasources"][0];
    assert_eq!(ds["type"], "prometheus");
    assert_eq!(ds["url"], "http://prometheus:9090");
    let provider = yaml("deploy/grafana/provisioning/dashboards/unicus.yml");
    let compose = yaml("docker-compose.yml");
    let grafana_mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let dashboards_dir = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        grafana_mounts
            .contains(&format!("./deploy/grafana/dashboards:{dashboards_dir}:ro").as_str()),
        "{grafana_mounts:?}"
    );
    assert!(grafana_mounts.contains(&"./deploy/grafana/provisioning:/etc/grafana/provisioning:ro"));
}

#[test]
fn compose_file_passes_the_compose_validator() {
    let Some(compose) = tool(
        "UNICUS_DOCKER_COMPOSE",
        "compose_file_passes_the_compose_validator",
    ) else {
        return;
    };
    let root = Path::new(ROOT);
    run_tool(
        &compose,
        &["-f", "docker-compose.yml", "config", "-q"],
        None,
        root,
    );
    let services: BTreeSet<String> = run_tool(
        &compose,
        &["-f", "docker-compose.yml", "config", "--services"],
        None,
        root,
    )
    .lines()
    .map(String::from)
    .collect();
    for s in [
        "kafka",
        "schema-registry",
        "unicus",
        "producer",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(s), "no service {s}: {services:?}");
    }
}

#[test]
fn compose_file_is_wired_pinned_and_names_files_that_exist() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().unwrap();
    let names: BTreeSet<&str> = services.keys().filter_map(|k| k.as_str()).collect();
    for s in [
        "kafka",
        "kafka-init",
        "schema-registry",
        "unicus",
        "producer",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(s), "no service {s}");
    }
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no image"));
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{name}: image {image} has no tag"));
        assert!(
            tag != "latest" && tag.bytes().any(|b| b.is_ascii_digit()),
            "{name}: image {image} is not pinned to a version"
        );
        if let Some(dockerfile) = service["build"]["dockerfile"].as_str() {
            assert!(path(dockerfile).is_file(), "{name}: {dockerfile}");
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            if let Some(source) = spec.split(':').next().filter(|s| s.starts_with("./")) {
                assert!(path(source).exists(), "{name}: {source} does not exist");
            }
        }
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let spec = port.as_str().unwrap();
            assert!(
                spec.starts_with("127.0.0.1:"),
                "{name}: port {spec} is not bound to loopback"
            );
        }
    }
    // Kafka in KRaft mode, no ZooKeeper.
    let kafka = &services["kafka"]["environment"];
    assert_eq!(kafka["KAFKA_PROCESS_ROLES"], "broker,controller");
    // unicus's metrics port is published and scraped by the Prometheus service.
    let port = Settings::default()
        .metrics
        .listen
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    let unicus_ports: Vec<&str> = services["unicus"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(unicus_ports.contains(&format!("127.0.0.1:{port}:{port}").as_str()));
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let targets = &prometheus["scrape_configs"][0]["static_configs"][0]["targets"];
    assert_eq!(targets[0], format!("unicus:{port}").as_str());
    let mounts: Vec<&str> = services["prometheus"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(mounts.contains(&"./deploy/prometheus:/etc/prometheus:ro"));
    // The image serves the same port and runs unprivileged.
    let dockerfile = read("deploy/Dockerfile");
    assert!(dockerfile.contains(&format!("EXPOSE {port}")));
    assert!(dockerfile.contains("USER 10001"));
    // The producer's command runs commands that exist.
    let command = services["producer"]["command"][0].as_str().unwrap();
    assert!(command.contains("unicus produce --input - --rate"));
}

#[test]
fn kubernetes_manifests_are_valid_and_probe_the_metrics_endpoint() {
    let mut kinds = BTreeMap::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path("deploy/k8s")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.ends_with(".yaml"), "{name}");
        let v = yaml(&format!("deploy/k8s/{name}"));
        let kind = v["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: kind"))
            .to_string();
        assert!(v["apiVersion"].as_str().is_some(), "{name}: apiVersion");
        if kind != "Kustomization" {
            files.push(name.clone());
        }
        kinds.insert(kind, v);
    }
    for k in [
        "Namespace",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "Kustomization",
    ] {
        assert!(kinds.contains_key(k), "no {k}");
    }
    let listed: BTreeSet<&str> = kinds["Kustomization"]["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(listed, files.iter().map(String::as_str).collect());

    // The deployment's configuration is a valid unicus.toml.
    let toml = kinds["ConfigMap"]["data"]["unicus.toml"].as_str().unwrap();
    let settings = Settings::from_toml_and_env(toml, []).expect("configmap's unicus.toml");
    let port: u64 = settings
        .metrics
        .listen
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();

    let sts = &kinds["StatefulSet"];
    let pod = &sts["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&sts["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(
        &kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        labels
    );
    assert_eq!(&kinds["Service"]["spec"]["selector"], labels);
    assert_eq!(
        sts["spec"]["serviceName"],
        kinds["Service"]["metadata"]["name"]
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(port));
    let port_name = container["ports"][0]["name"].as_str().unwrap();
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], port_name, "{probe}");
    }
    for r in ["requests", "limits"] {
        assert!(
            container["resources"][r]["memory"].as_str().is_some(),
            "{r}"
        );
        assert!(container["resources"][r]["cpu"].as_str().is_some(), "{r}");
    }
    // The store on a persistent volume, where the configuration puts it.
    let claim = &sts["spec"]["volumeClaimTemplates"][0];
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim["metadata"]["name"])
        .expect("the claimed volume is mounted");
    assert!(settings
        .runtime
        .store_dir
        .starts_with(mount["mountPath"].as_str().unwrap()));
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteOnce");
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(10001)
    );
    // The configuration is mounted where the container's arguments read it.
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/unicus/unicus.toml"]);
}

// ----------------------------------------------------------------------------- logs

#[test]
fn json_logs_are_one_object_per_line_and_a_bad_level_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("unicus.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:{}\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
             [runtime]\nstore_dir = \"{}\"\n[log]\nformat = \"json\"\n",
            free_port(),
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("unicus.log");
    let mut unicus = start_unicus(&config, &log);
    let line = eventually(Duration::from_secs(20), "a log line about metrics", || {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| l.contains("serving /metrics"))
            .map(String::from)
    });
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    // Still creating topics on a broker that is not there: no need to wait.
    let _ = unicus.0.kill();
    let _ = unicus.0.wait();
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not json ({e}): {l}"));
    }

    let out = Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args(["check-config", "--log-level", "info,=x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--log-level"), "{stderr}");
}

// ----------------------------------------------------------------------------- prometheus

/// Identifier values and names of the events: what must never be in an info log.
fn personal_values(events: &[GeneratedEvent]) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut keep = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| s.len() >= 5) {
            out.insert(s.to_string());
        }
    };
    for e in events {
        let Ok(doc) = serde_json::from_str::<Value>(&e.line) else {
            continue;
        };
        if let Some(ids) = doc["identifiers"].as_object() {
            for v in ids.values() {
                match v {
                    Value::Array(values) => values.iter().for_each(&mut keep),
                    other => keep(other),
                }
            }
        }
        for field in ["first_name", "last_name", "email", "phone"] {
            keep(&doc["person"][field]);
        }
    }
    out
}

/// Records on every partition of a topic of the mock cluster.
fn count_records(brokers: &str, topic: &str, partitions: i32) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "operations-reader")
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
    let mut n = 0;
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(2000) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                n += 1;
                idle_since = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    n
}

#[test]
fn prometheus_scrapes_unicus_under_load_and_the_chain_loses_nothing() {
    const TEST: &str = "prometheus_scrapes_unicus_under_load_and_the_chain_loses_nothing";
    let Some(prometheus_bin) = tool("UNICUS_PROMETHEUS", TEST) else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    const PARTITIONS: i32 = 3;
    let mock = MockCluster::new(1).unwrap();
    let brokers = mock.bootstrap_servers();
    let channels = Settings::default().kafka.channels;
    for c in &channels {
        mock.create_topic(&format!("touchpoints.{c}"), PARTITIONS, 1)
            .unwrap();
    }
    for t in Topic::ALL {
        mock.create_topic(t.name(), PARTITIONS, 1).unwrap();
    }
    mock.create_topic("gdpr.requests", 1, 1).unwrap();

    // unicus, the real binary, with JSON logs at info.
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("unicus.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{brokers}"
create_topics = false
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[runtime]
store_dir = "{}"
batch_max_events = 1000
batch_max_wait_ms = 50
[metrics]
listen = "{metrics}"
lag_interval_ms = 1000
[log]
format = "json"
"#,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let unicus_log = dir.path().join("unicus.log");
    let mut unicus = start_unicus(&config, &unicus_log);

    // Prometheus on loopback, scraping every second, with the alert rules of deploy/.
    let prom = format!("127.0.0.1:{}", free_port());
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: unicus\n    static_configs:\n      - targets: [\"{metrics}\"]\n",
            path("deploy/prometheus/alerts.yml").display()
        ),
    )
    .unwrap();
    let prom_log = dir.path().join("prometheus.log");
    let mut prometheus = Running(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .unwrap(),
        "prometheus",
    );

    // Load: a burst before unicus has joined its group, then a steady stream.
    let events: Vec<GeneratedEvent> = Generator::new(GenerateOptions {
        seed: 11,
        customers: 2_000,
        events: 24_000,
        invalid_rate: 0.005,
        ..GenerateOptions::default()
    })
    .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let feeder = Feeder::new(&brokers, "", &channels).unwrap();
    let (burst, stream) = events.split_at(8_000);
    let mut sent = rt
        .block_on(feeder.send(burst.iter().map(|e| e.line.clone())))
        .unwrap();
    sent += rt
        .block_on(feeder.send_paced(stream.iter().map(|e| e.line.clone()), 2_500.0))
        .unwrap();
    assert_eq!(sent, events.len() as u64);
    let loaded_at = started.elapsed();

    let consumed = "sum(unicus_events_consumed_total)";
    eventually(
        Duration::from_secs(120),
        "Prometheus sees every event consumed",
        || (prom_value(&prom, consumed)? == sent as f64).then_some(()),
    );
    // Caught up: lag back to zero on every partition.
    eventually(Duration::from_secs(60), "lag back to zero", || {
        (prom_value(&prom, "sum(unicus_consumer_lag_records)")? == 0.0).then_some(())
    });

    // Reconciliation, at this scrape and at every scrape since the start.
    let unaccounted = "sum by (channel) (unicus_events_consumed_total) \
        - sum by (channel) (unicus_events_accepted_total) \
        - sum by (channel) (unicus_events_rejected_total) \
        - sum by (channel) (unicus_events_duplicates_total) \
        - sum by (channel) (unicus_events_suppressed_total)";
    let per_channel = prom_query(&prom, unaccounted).unwrap();
    assert_eq!(per_channel.len(), channels.len(), "{per_channel:?}");
    assert!(
        per_channel.iter().all(|(_, v)| *v == 0.0),
        "{per_channel:?}"
    );
    let unpublished = "sum(unicus_events_accepted_total) \
        - sum(unicus_records_produced_total{topic=\"touchpoints.resolved\"})";
    let undead = "sum(unicus_events_rejected_total) + sum(unicus_requests_rejected_total) \
        - sum(unicus_records_produced_total{topic=\"touchpoints.dlq\"})";
    for expr in [unaccounted, unpublished, undead] {
        let always = format!("max(max_over_time(abs({expr})[5m:1s]))");
        assert_eq!(prom_value(&prom, &always), Some(0.0), "{always}");
    }
    // Against the ground truth: what was sent, what is on the topic.
    let invalid = events.iter().filter(|e| e.person.is_none()).count();
    assert!(invalid > 0);
    assert_eq!(
        prom_value(&prom, "sum(unicus_events_rejected_total)"),
        Some(invalid as f64)
    );
    let resolved = count_records(&brokers, "touchpoints.resolved", PARTITIONS);
    assert_eq!(
        prom_value(&prom, "sum(unicus_events_accepted_total)"),
        Some(resolved as f64)
    );
    assert_eq!(resolved + invalid, events.len());

    // Lag: one series per input partition; records were waiting at some scrape.
    let lag = prom_query(&prom, "unicus_consumer_lag_records").unwrap();
    assert_eq!(
        lag.len(),
        channels.len() * PARTITIONS as usize + 1,
        "{lag:?}"
    );
    assert!(lag
        .iter()
        .all(|(labels, v)| *v >= 0.0 && labels.contains_key("partition")));
    let most = prom_value(
        &prom,
        "max_over_time(sum(unicus_consumer_lag_records)[5m:1s])",
    )
    .unwrap();
    assert!(most > 0.0, "lag was never seen above zero");

    // Every dashboard query and every alert rule evaluates on these series.
    for expr in dashboard_exprs() {
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        prom_query(&prom, &concrete).unwrap_or_else(|e| panic!("dashboard query: {e}"));
    }
    let rules = eventually(Duration::from_secs(10), "rules evaluated", || {
        let (_, body) = http_get(&prom, "/api/v1/rules").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules
            .iter()
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
            .then_some(rules)
    });
    assert!(rules.len() >= 9);
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
        if r["name"]
            .as_str()
            .unwrap()
            .starts_with("UnicusReconciliation")
        {
            assert_eq!(r["state"], "inactive", "{r}");
        }
    }

    // Logs: JSON objects, nothing personal at info level.
    let personal = personal_values(&events);
    assert!(personal.len() > 1_000);
    let log = std::fs::read_to_string(&unicus_log).unwrap();
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not json ({e}): {line}"));
        if let Some(leak) = personal.iter().find(|p| line.contains(p.as_str())) {
            panic!("personal data `{leak}` in a log line: {line}");
        }
    }

    let status = unicus.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "unicus exits 0 on SIGTERM: {status:?}"
    );
    let _ = prometheus.terminate(Duration::from_secs(10));
    drop(mock);
    eprintln!(
        "{TEST}: {} events, loaded in {:.1}s, all checks done after {:.1}s",
        events.len(),
        loaded_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
