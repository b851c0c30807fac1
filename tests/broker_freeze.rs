//! A real broker (a Tansu of its own, started by this test) frozen with SIGSTOP for 60 s
//! while unicus has outputs in flight: health fails, output flows again soon after
//! SIGCONT, and every input event has its resolved record.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const EVENTS: usize = 60_000;
const FREEZE: Duration = Duration::from_secs(60);
/// Output must flow again this soon after the broker is back.
const RECOVERY: Duration = Duration::from_secs(15);
const OUTPUT_PARTITIONS: i32 = 2;

fn tansu_bin() -> Option<PathBuf> {
    match std::env::var_os("UNICUS_TANSU_BIN") {
        Some(b) => Some(PathBuf::from(b)),
        None if std::env::var_os("UNICUS_REQUIRE_BROKER").is_some() => {
            panic!("UNICUS_TANSU_BIN is not set: run scripts/test.sh")
        }
        None => {
            eprintln!("skipped: UNICUS_TANSU_BIN is not set (run scripts/test.sh)");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) on drop, so a failing test leaves nothing behind.
struct Process(Child);

impl Process {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    /// The process state letter once it is `want`, or the last one seen after 5 s: a
    /// signal is delivered asynchronously, so the state right after `kill` may lag.
    fn state_becomes(&self, want: char) -> char {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = self.state();
            if state == want || Instant::now() > deadline {
                return state;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The process state letter of /proc/PID/stat (`T`: stopped).
    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.chars().next().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Tansu in a session of its own: a stopped process whose process group loses its
/// parent gets SIGCONT from the kernel, which would end the freeze early.
fn start_broker(bin: &Path, port: u16, log: &Path) -> Process {
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Process(
        Command::new("setsid")
            .arg(bin)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("setsid and tansu start"),
    );
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "tansu does not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // setsid execs tansu in place (the child is no group leader): the pid is tansu's.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", broker.0.id())).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("tansu"));
    broker
}

fn create_topic(bin: &Path, port: u16, name: &str, partitions: i32) {
    let status = Command::new(bin)
        .args(["topic", "create", name])
        .args(["--broker", &format!("tcp://127.0.0.1:{port}")])
        .args(["--partitions", &partitions.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "creating {name}");
}

/// Status and body of a GET, or `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// The value of an unlabelled metric.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, text) = http_get(port, "/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `touchpoints.resolved`, read by assignment (no group to rejoin after the freeze).
struct Reader {
    consumer: BaseConsumer,
    event_ids: HashSet<String>,
    records: usize,
}

impl Reader {
    fn new(brokers: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "freeze-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..OUTPUT_PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(0))
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        Self {
            consumer,
            event_ids: HashSet::new(),
            records: 0,
        }
    }

    fn poll_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
                let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                self.event_ids
                    .insert(v["event_id"].as_str().unwrap().to_string());
                self.records += 1;
            }
        }
    }
}

#[test]
fn output_flows_again_after_the_broker_is_frozen_for_60_s_and_nothing_is_lost() {
    let Some(tansu) = tansu_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let broker = start_broker(&tansu, port, &dir.path().join("tansu.log"));
    create_topic(&tansu, port, "touchpoints.web", 1);
    for t in ["touchpoints.resolved", "touchpoints.dlq"] {
        create_topic(&tansu, port, t, OUTPUT_PARTITIONS);
    }
    let lines: Vec<String> = (0..EVENTS)
        .map(|i| {
            serde_json::json!({"event_id": format!("f{i}"), "channel": "web", "type": "login",
                "occurred_at": "2026-11-20T10:00:00Z",
                "identifiers": {"email": format!("person{i}@example.org")}})
            .to_string()
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let produced = rt
        .block_on(unicus::sim::demo::produce_lines(
            &brokers,
            "",
            &["web".to_string()],
            lines.into_iter(),
        ))
        .unwrap();
    assert_eq!(produced as usize, EVENTS);

    let metrics_port = free_port();
    let config = dir.path().join("unicus.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "freeze"
channels = ["web"]
partitions = {OUTPUT_PARTITIONS}
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[runtime]
store_dir = "{}"
batch_max_events = 1000
batch_max_wait_ms = 50
retry_backoff_ms = 200
stall_timeout_ms = 10000
"#,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("unicus.log");
    let mut unicus = Process(
        Command::new(env!("CARGO_BIN_EXE_unicus"))
            .args(["run", "--config"])
            .arg(&config)
            .env("UNICUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };

    // Freeze while outputs are in flight: once some are acknowledged and a batch's
    // outputs wait for theirs.
    let mut reader = Reader::new(&brokers, "touchpoints.resolved");
    let started = Instant::now();
    loop {
        reader.poll_for(Duration::from_millis(20));
        if reader.event_ids.len() >= 2_000
            && metric(metrics_port, "unicus_outbox_pending_records").is_some_and(|n| n > 0.0)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no output in flight: {} resolved; log:\n{}",
            reader.event_ids.len(),
            log_tail()
        );
    }
    broker.signal("-STOP");
    let frozen_at = Instant::now();
    assert_eq!(broker.state_becomes('T'), 'T', "tansu is stopped");
    let before = reader.event_ids.len();
    eprintln!("froze the broker with {before} of {EVENTS} events resolved");

    // Frozen: unicus keeps running and reports the stall on /healthz and /readyz.
    let mut health_failed_after = None;
    while frozen_at.elapsed() < FREEZE {
        reader.poll_for(Duration::from_millis(500));
        assert!(
            unicus.0.try_wait().unwrap().is_none(),
            "unicus exited during the freeze; log:\n{}",
            log_tail()
        );
        if health_failed_after.is_none() {
            let health = http_get(metrics_port, "/healthz").expect("/healthz answers");
            if health.0 == 503 {
                assert!(
                    health.1.contains("outputs not acknowledged"),
                    "{}",
                    health.1
                );
                let ready = http_get(metrics_port, "/readyz").expect("/readyz answers");
                assert_eq!(ready.0, 503, "{}", ready.1);
                health_failed_after = Some(frozen_at.elapsed());
            }
        }
    }
    assert_eq!(broker.state(), 'T', "nothing resumed tansu early");
    broker.signal("-CONT");
    let resumed_at = Instant::now();
    let health_failed_after =
        health_failed_after.expect("/healthz turned 503 while outputs were stalled");
    eprintln!("/healthz answered 503 {health_failed_after:?} into the freeze");
    assert!(health_failed_after < Duration::from_secs(20));

    // Output flows again soon after the broker is back.
    let frozen_count = reader.event_ids.len();
    while reader.event_ids.len() == frozen_count {
        assert!(
            resumed_at.elapsed() < RECOVERY,
            "no output within {RECOVERY:?} of the broker's return; log:\n{}",
            log_tail()
        );
        reader.poll_for(Duration::from_millis(50));
    }
    let recovered_after = resumed_at.elapsed();
    eprintln!("output flowed again {recovered_after:?} after SIGCONT");

    // Every event resolved, the process healthy again.
    while reader.event_ids.len() < EVENTS {
        assert!(
            resumed_at.elapsed() < Duration::from_secs(180),
            "only {} of {EVENTS} events resolved; log:\n{}",
            reader.event_ids.len(),
            log_tail()
        );
        assert!(
            unicus.0.try_wait().unwrap().is_none(),
            "unicus exited; log:\n{}",
            log_tail()
        );
        reader.poll_for(Duration::from_millis(500));
    }
    let healthy = http_get(metrics_port, "/healthz").expect("/healthz answers");
    assert_eq!(healthy.0, 200, "{}", healthy.1);
    let rebuilds = metric(metrics_port, "unicus_producer_rebuilds_total");
    let retries = metric(metrics_port, "unicus_output_delivery_retries_total");
    eprintln!(
        "{} resolved records for {EVENTS} events ({} re-sent); producers replaced: {rebuilds:?}; delivery retries: {retries:?}",
        reader.records,
        reader.records - EVENTS
    );
    assert!(
        reader.event_ids.iter().all(|id| id.starts_with('f')),
        "no resolved record for an unknown event"
    );

    unicus.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = unicus.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "unicus did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "unicus exits 0 on SIGTERM: {status}");
    drop(broker);
}
