//! End-to-end tests of the `unicus` binary against a real broker, with kcat as the outside
//! world: kcat produces the touchpoints, the real `unicus run` process resolves them, and
//! kcat reads the public output topics back. Nothing here links the crate: only the
//! contract (topic names, JSON values, headers) is checked.
//!
//! Environment, set by `scripts/test.sh`:
//! - `UNICUS_TEST_BROKERS` (host:port) and `UNICUS_KCAT` (the kcat wrapper that works with
//!   Tansu): without them the tests are skipped, or fail if `UNICUS_REQUIRE_BROKER` is set;
//! - `UNICUS_TANSU_BIN` (optional): topics are created with it before use; without it they
//!   are auto-created on first produce.
//!
//! For local development:
//! `scripts/test-stack.sh install && eval "$(scripts/test-stack.sh start-broker)" &&
//! source scripts/test-stack.sh && cargo test --release --test e2e_kcat -- --nocapture`,
//! then `scripts/test-stack.sh stop-broker`.
//!
//! kcat quirks relied on (see scripts/e2e-kcat-smoke.sh): `-C -e -o beginning -J` reads a
//! topic to its end and prints one JSON envelope per record (`payload` null for a
//! tombstone, `headers` as a flat `[name, value, ...]` list); reading a topic that does not
//! exist yet fails, which the polling helpers treat as "not there yet".

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How long the outputs of a phase may take to show up.
const OUTPUT_DEADLINE: Duration = Duration::from_secs(60);
/// How long unicus may take to drain and exit after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);
/// Bound of one kcat or tansu call.
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Short group timeouts: a group join on Tansu takes about session.timeout.ms / 2.
const CONFIG: &str = r#"[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[runtime]
batch_max_wait_ms = 50

[metrics]
listen = "127.0.0.1:0"
"#;

// ----------------------------------------------------------------------------- environment

/// The broker and tools given by the environment.
struct Stack {
    brokers: String,
    kcat: PathBuf,
    tansu: Option<PathBuf>,
}

fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The test stack, or `None` (after saying so) when the test should be skipped.
fn stack(test: &str) -> Option<Stack> {
    let brokers = non_empty_var("UNICUS_TEST_BROKERS");
    let kcat = non_empty_var("UNICUS_KCAT");
    let (Some(brokers), Some(kcat)) = (brokers.clone(), kcat.clone()) else {
        let missing: Vec<&str> = [
            ("UNICUS_TEST_BROKERS", brokers.is_none()),
            ("UNICUS_KCAT", kcat.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let missing = missing.join(" and ");
        if non_empty_var("UNICUS_REQUIRE_BROKER").is_some_and(|v| v != "0") {
            panic!(
                "{test}: UNICUS_REQUIRE_BROKER is set but {missing} is not: \
                 run the tests through scripts/test.sh, which starts a broker and exports them"
            );
        }
        eprintln!("skipped: {test}: {missing} not set (run scripts/test.sh)");
        return None;
    };
    Some(Stack {
        brokers,
        kcat: PathBuf::from(kcat),
        tansu: non_empty_var("UNICUS_TANSU_BIN").map(PathBuf::from),
    })
}

/// A topic prefix unique to this test run, e.g. `e2e-4242-1795452885688123456-sophie.`.
fn unique_prefix(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("e2e-{}-{nanos}-{tag}.", std::process::id())
}

// ----------------------------------------------------------------------------- processes

/// What a bounded command did.
struct Ran {
    /// `None`: killed at the time limit.
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => format!("{s}"),
            None => format!("killed after {TOOL_TIMEOUT:?}"),
        };
        format!("{status}; stderr: {}", self.stderr.trim())
    }
}

/// Runs `cmd` with `stdin` fed in, killing it after `limit`.
fn run_bounded(cmd: &mut Command, stdin: Option<Vec<u8>>, limit: Duration) -> Ran {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes); // dropping the pipe closes it: EOF
        })
    });
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Ran {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A `unicus run` child process, killed when dropped (so a failing test never leaves it
/// running); its log is printed when dropped during a panic.
struct Unicus {
    child: Child,
    log_path: PathBuf,
    label: String,
}

impl Unicus {
    fn start(stack: &Stack, dir: &Path, label: &str, prefix: &str, group: &str) -> Self {
        let config = dir.join("unicus.toml");
        std::fs::write(&config, CONFIG).expect("write the unicus config");
        let log_path = dir.join(format!("{label}.log"));
        let log = File::create(&log_path).expect("create the unicus log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_unicus"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--brokers", &stack.brokers])
            .args(["--group-id", group])
            .args(["--topic-prefix", prefix])
            .arg("--store")
            .arg(dir.join("store"))
            .env("UNICUS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Settings overrides from the developer's shell would make the test not hermetic.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("UNICUS_") && name.contains("__") {
                cmd.env_remove(name.as_ref());
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        eprintln!("{label}: unicus started (pid {})", child.id());
        Self {
            child,
            log_path,
            label: label.to_string(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Fails the test if unicus is no longer running.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{}: unicus exited early with {status} (log printed below)",
                self.label
            );
        }
    }

    /// Sends SIGTERM and waits for the exit, at most `limit`.
    fn terminate(&mut self, limit: Duration) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{}: unicus had already exited with {status} before SIGTERM",
                self.label
            );
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for unicus") {
                eprintln!(
                    "{}: unicus exited with {status} {:.1} s after SIGTERM",
                    self.label,
                    started.elapsed().as_secs_f64()
                );
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "{}: unicus still running {limit:?} after SIGTERM (it must drain and exit)",
                self.label
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `consumed=N` from the `stopped` summary line unicus logs when it exits.
    fn consumed_in_summary(&self) -> Option<u64> {
        self.log()
            .lines()
            .rfind(|l| l.contains("stopped") && l.contains("consumed="))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("consumed="))?
            .parse()
            .ok()
    }
}

impl Drop for Unicus {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}----- end of {} log -----",
                self.label,
                self.log_path.display(),
                self.log(),
                self.label
            );
        }
    }
}

// ----------------------------------------------------------------------------- kcat

/// One record as kcat's `-J` envelope shows it.
#[derive(Debug, Clone)]
struct Msg {
    partition: i64,
    offset: i64,
    key: Option<String>,
    /// `None`: a tombstone.
    payload: Option<String>,
    headers: Vec<(String, String)>,
}

impl Msg {
    fn parse(line: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("not a kcat envelope ({e}): {line}"))?;
        let text = |f: &str| v[f].as_str().map(str::to_string);
        // kcat 1.7 prints headers as a flat [name, value, ...] list (its help says an object).
        let headers = match &v["headers"] {
            Value::Array(flat) => flat
                .chunks(2)
                .map(|p| {
                    let s = |x: Option<&Value>| {
                        x.and_then(Value::as_str).unwrap_or_default().to_string()
                    };
                    (s(p.first()), s(p.get(1)))
                })
                .collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Self {
            partition: v["partition"]
                .as_i64()
                .ok_or(format!("no partition: {line}"))?,
            offset: v["offset"].as_i64().ok_or(format!("no offset: {line}"))?,
            key: text("key"),
            payload: text("payload"),
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The payload as JSON (`Value::Null` for a tombstone).
    fn json(&self) -> Value {
        match &self.payload {
            None => Value::Null,
            Some(p) => {
                serde_json::from_str(p).unwrap_or_else(|e| panic!("payload is not JSON ({e}): {p}"))
            }
        }
    }
}

impl Stack {
    fn kcat(&self) -> Command {
        let mut c = Command::new(&self.kcat);
        c.args(["-b", &self.brokers]);
        c
    }

    /// Creates topics with 3 partitions through Tansu's CLI when it is available.
    fn create_topics(&self, names: &[String]) {
        let Some(tansu) = &self.tansu else {
            eprintln!("UNICUS_TANSU_BIN not set: topics are auto-created on first produce");
            return;
        };
        let first = self.brokers.split(',').next().unwrap_or_default().trim();
        let broker = format!("tcp://{first}");
        for name in names {
            let ran = run_bounded(
                Command::new(tansu)
                    .args(["topic", "create", name])
                    .args(["--broker", &broker])
                    .args(["--partitions", "3"]),
                None,
                TOOL_TIMEOUT,
            );
            assert!(ran.ok(), "tansu topic create {name}: {}", ran.describe());
        }
    }

    /// Produces `(key, value)` records in order with `kcat -P -K '|'`.
    fn produce(&self, topic: &str, records: &[(&str, &str)]) {
        let mut input = String::new();
        for (key, value) in records {
            assert!(
                !key.contains(['|', '\n']) && !value.contains('\n'),
                "cannot produce {key:?}/{value:?} as one `key|value` line"
            );
            input.push_str(&format!("{key}|{value}\n"));
        }
        let ran = run_bounded(
            self.kcat().args(["-P", "-t", topic, "-K", "|"]),
            Some(input.into_bytes()),
            TOOL_TIMEOUT,
        );
        assert!(
            ran.ok(),
            "kcat could not produce to {topic}: {}",
            ran.describe()
        );
    }

    /// Every record of `topic`, from the beginning to the current end.
    fn consume(&self, topic: &str) -> Result<Vec<Msg>, String> {
        let ran = run_bounded(
            self.kcat()
                .args(["-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q"]),
            None,
            TOOL_TIMEOUT,
        );
        if !ran.ok() {
            return Err(format!("kcat -C -t {topic}: {}", ran.describe()));
        }
        String::from_utf8_lossy(&ran.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Msg::parse)
            .collect()
    }

    /// Reads `topic` again and again until `done` holds, failing the test at `deadline`
    /// (or as soon as unicus exits).
    fn consume_until(
        &self,
        topic: &str,
        unicus: &mut Unicus,
        deadline: Instant,
        what: &str,
        done: impl Fn(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let started = Instant::now();
        let mut last = Vec::new();
        let mut last_error = None;
        loop {
            unicus.assert_running();
            match self.consume(topic) {
                Ok(msgs) if done(&msgs) => {
                    eprintln!(
                        "{}: {what}: seen on {topic} after {:.1} s",
                        unicus.label,
                        started.elapsed().as_secs_f64()
                    );
                    return msgs;
                }
                Ok(msgs) => last = msgs,
                Err(e) => last_error = Some(e),
            }
            if Instant::now() >= deadline {
                let shown: Vec<String> = last
                    .iter()
                    .map(|m| format!("  {:?} => {:?}", m.key, m.payload))
                    .collect();
                panic!(
                    "timed out waiting for {what} on {topic}; last read gave {} records:\n{}\n\
                     last kcat error: {}",
                    last.len(),
                    shown.join("\n"),
                    last_error.as_deref().unwrap_or("none")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

// ----------------------------------------------------------------------------- helpers

/// The input topics `unicus run` subscribes to by default, one per channel.
fn input_topics(prefix: &str) -> Vec<String> {
    unicus::settings::KafkaSettings {
        topic_prefix: prefix.to_string(),
        ..Default::default()
    }
    .input_topics()
}

/// `event_id` → customer ids of the `touchpoints.resolved` records (one per record).
fn resolved_by_event(msgs: &[Msg]) -> BTreeMap<String, Vec<String>> {
    let mut by_event: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in msgs {
        let v = m.json();
        let event_id = v["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("resolved record without event_id: {v}"))
            .to_string();
        let customer = v["customer_id"]
            .as_str()
            .unwrap_or_else(|| panic!("resolved record without customer_id: {v}"))
            .to_string();
        assert_eq!(
            m.key.as_deref(),
            Some(customer.as_str()),
            "a touchpoints.resolved record must be keyed by its customer_id: {v}"
        );
        by_event.entry(event_id).or_default().push(customer);
    }
    by_event
}

/// The last record of each key of a compacted topic (records of one key share a
/// partition, so the offset orders them).
fn last_per_key(msgs: &[Msg]) -> BTreeMap<String, Msg> {
    let mut sorted: Vec<&Msg> = msgs.iter().collect();
    sorted.sort_by_key(|m| (m.partition, m.offset));
    let mut last = BTreeMap::new();
    for m in sorted {
        if let Some(k) = &m.key {
            last.insert(k.clone(), m.clone());
        }
    }
    last
}

fn merge_records(msgs: &[Msg]) -> Vec<Value> {
    msgs.iter()
        .map(Msg::json)
        .filter(|v| v["type"] == "merge")
        .collect()
}

fn merged_ids(merges: &[Value]) -> BTreeSet<String> {
    merges
        .iter()
        .flat_map(|m| m["merged_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect()
}

fn event(id: &str, channel: &str, kind: &str, at: &str, extra: Value) -> String {
    let mut e = json!({"event_id": id, "channel": channel, "type": kind, "occurred_at": at});
    if let (Value::Object(base), Value::Object(more)) = (&mut e, extra) {
        base.extend(more);
    }
    e.to_string()
}

// ----------------------------------------------------------------------------- tests

/// The Sophie Dupont story through Kafka: a store purchase, a web account and a Twitter
/// handle are three strangers; two later social interactions (phone, then email) link
/// them into one customer whose golden record holds everything.
#[test]
fn kcat_events_on_three_channels_become_one_merged_profile() {
    let Some(stack) = stack("kcat_events_on_three_channels_become_one_merged_profile") else {
        return;
    };
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("sophie");
    let group = format!("{prefix}unicus");
    let topic = |name: &str| format!("{prefix}{name}");
    stack.create_topics(&input_topics(&prefix));

    // Phase 1, before unicus starts: three strangers and a malformed line.
    let store_purchase = event(
        "pos-paris11-000042",
        "store",
        "purchase",
        "2026-11-20T14:03:00+01:00",
        json!({
            "source": "pos-paris-11",
            "identifiers": {"loyalty_id": "FID-99812", "phone": "06 12 34 56 78"},
            "person": {"first_name": "Sophie", "last_name": "Dupont",
                "address": {"line1": "12 rue de la Paix", "postal_code": "75002",
                            "city": "Paris", "country": "FR"}},
            "order": {"order_id": "T-881", "total": 129.90, "currency": "EUR",
                "items": [{"sku": "CLIMB-42", "name": "Chaussons d'escalade",
                           "quantity": 1, "unit_price": 129.90}]}
        }),
    );
    let web_account = event(
        "web-000001",
        "web",
        "account_created",
        "2026-11-20T18:30:00+01:00",
        json!({
            "identifiers": {"account_id": "CRM-000123", "email": "Sophie.Dupont@Gmail.com",
                            "cookie_id": "c-77ab"},
            "person": {"first_name": "Sophie", "last_name": "Dupont"}
        }),
    );
    let social_stranger = event(
        "soc-000001",
        "social",
        "social_interaction",
        "2026-11-21T09:00:00Z",
        json!({"identifiers": {"social_handle": "twitter:@Sophie_D"}}),
    );
    let malformed = "{not json";
    stack.produce(
        &topic("touchpoints.store"),
        &[("FID-99812", &store_purchase)],
    );
    stack.produce(
        &topic("touchpoints.web"),
        &[("CRM-000123", &web_account), ("malformed-1", malformed)],
    );
    stack.produce(
        &topic("touchpoints.social"),
        &[("twitter-sophie_d", &social_stranger)],
    );

    let mut unicus = Unicus::start(&stack, dir.path(), "unicus", &prefix, &group);
    let deadline = Instant::now() + OUTPUT_DEADLINE;
    let phase1 = ["pos-paris11-000042", "web-000001", "soc-000001"];
    let resolved = stack.consume_until(
        &topic("touchpoints.resolved"),
        &mut unicus,
        deadline,
        "the three phase-1 events resolved",
        |msgs| {
            let seen = resolved_by_event(msgs);
            phase1.iter().all(|e| seen.contains_key(*e))
        },
    );
    let by_event = resolved_by_event(&resolved);
    let strangers: BTreeSet<String> = phase1.iter().map(|e| by_event[*e][0].clone()).collect();
    assert_eq!(
        strangers.len(),
        3,
        "store, web and social events share no identifier: three distinct customers \
         expected, got {by_event:?}"
    );
    for r in resolved.iter().map(Msg::json) {
        assert_eq!(
            r["resolution"]["method"], "new",
            "a phase-1 event must create a new customer: {r}"
        );
    }

    // The malformed line: on the DLQ with its original bytes and the reason.
    let dlq = stack.consume_until(
        &topic("touchpoints.dlq"),
        &mut unicus,
        deadline,
        "the malformed line dead-lettered",
        |msgs| msgs.iter().any(|m| m.payload.as_deref() == Some(malformed)),
    );
    assert_eq!(
        dlq.len(),
        1,
        "only the malformed line is rejected, DLQ holds: {dlq:?}"
    );
    let dead = &dlq[0];
    let web_input = stack
        .consume(&topic("touchpoints.web"))
        .expect("read the web input topic back");
    let original = web_input
        .iter()
        .find(|m| m.payload.as_deref() == Some(malformed))
        .expect("the malformed line is on the web input topic");
    assert!(
        dead.header("unicus.error")
            .is_some_and(|e| !e.trim().is_empty()),
        "DLQ record needs a non-empty unicus.error header: {dead:?}"
    );
    assert_eq!(
        dead.header("unicus.source.topic"),
        Some(topic("touchpoints.web").as_str()),
        "unicus.source.topic header of {dead:?}"
    );
    assert_eq!(
        dead.header("unicus.source.offset"),
        Some(original.offset.to_string().as_str()),
        "unicus.source.offset header of {dead:?} (input record at partition {} offset {})",
        original.partition,
        original.offset
    );

    // Phase 2, while unicus runs: the phone links Twitter and the store, then the email
    // links the web account. One key, so one partition: kept in this order.
    let social_phone = event(
        "soc-000002",
        "social",
        "social_interaction",
        "2026-11-21T09:05:00Z",
        json!({"identifiers": {"social_handle": "twitter:@sophie_d",
                               "phone": "+33 6 12 34 56 78"}}),
    );
    let social_email = event(
        "soc-000003",
        "social",
        "social_interaction",
        "2026-11-21T09:10:00Z",
        json!({"identifiers": {"social_handle": "twitter:@sophie_d",
                               "email": "sophie.dupont@gmail.com "}}),
    );
    stack.produce(
        &topic("touchpoints.social"),
        &[
            ("twitter-sophie_d", &social_phone),
            ("twitter-sophie_d", &social_email),
        ],
    );
    let deadline = Instant::now() + OUTPUT_DEADLINE;
    let all_events = [
        "pos-paris11-000042",
        "web-000001",
        "soc-000001",
        "soc-000002",
        "soc-000003",
    ];
    stack.consume_until(
        &topic("touchpoints.resolved"),
        &mut unicus,
        deadline,
        "all five events resolved",
        |msgs| {
            let seen = resolved_by_event(msgs);
            all_events.iter().all(|e| seen.contains_key(*e))
        },
    );
    let changes = stack.consume_until(
        &topic("identity.changes"),
        &mut unicus,
        deadline,
        "merges joining the three strangers",
        |msgs| {
            let merges = merge_records(msgs);
            let mut ids = merged_ids(&merges);
            ids.extend(
                merges
                    .iter()
                    .filter_map(|m| m["customer_id"].as_str().map(str::to_string)),
            );
            strangers.is_subset(&ids)
        },
    );
    let merges = merge_records(&changes);
    let gone = merged_ids(&merges);
    let survivors: Vec<&String> = strangers.difference(&gone).collect();
    assert_eq!(
        survivors.len(),
        1,
        "exactly one of the three customers {strangers:?} must survive the merges {merges:?}"
    );
    let survivor = survivors[0].clone();
    assert!(
        gone.is_subset(&strangers),
        "merged_ids {gone:?} must be customers of the story {strangers:?}"
    );
    for m in &merges {
        assert!(
            m["customer_id"]
                .as_str()
                .is_some_and(|c| strangers.contains(c)),
            "a merge's customer_id must be one of {strangers:?}: {m}"
        );
    }
    for c in &changes {
        assert_eq!(
            c.key.as_deref(),
            c.json()["customer_id"].as_str(),
            "identity.changes records are keyed by customer_id: {c:?}"
        );
    }

    let profiles = stack.consume_until(
        &topic("profiles.merged"),
        &mut unicus,
        deadline,
        "tombstones for merged ids and the survivor's complete golden record",
        |msgs| {
            let last = last_per_key(msgs);
            let tombstoned = gone
                .iter()
                .all(|id| last.get(id).is_some_and(|m| m.payload.is_none()));
            let complete = last.get(&survivor).is_some_and(|m| {
                let ids = &m.json()["identifiers"];
                [
                    "account_id",
                    "loyalty_id",
                    "social_handle",
                    "email",
                    "phone",
                ]
                .iter()
                .all(|t| ids.get(t).is_some())
            });
            tombstoned && complete
        },
    );
    let last = last_per_key(&profiles);
    let golden = last[&survivor].json();
    assert!(
        !golden.is_null(),
        "the survivor {survivor} must not be tombstoned"
    );
    assert_eq!(golden["customer_id"], survivor.as_str(), "{golden}");
    let identifiers = &golden["identifiers"];
    for (kind, value) in [
        ("account_id", "CRM-000123"),
        ("loyalty_id", "FID-99812"),
        ("email", "sophie.dupont@gmail.com"),
        ("phone", "+33612345678"),
        ("social_handle", "twitter:sophie_d"),
        ("cookie_id", "c-77ab"),
    ] {
        assert_eq!(
            identifiers[kind],
            json!([value]),
            "golden record identifiers.{kind} (normalised, once): {identifiers}"
        );
    }
    assert_eq!(
        golden["orders"]["count"], 1,
        "one order (T-881): {}",
        golden["orders"]
    );
    assert_eq!(
        golden["orders"]["totals"]["EUR"], 129.9,
        "order total: {}",
        golden["orders"]
    );
    for channel in ["store", "web", "social"] {
        assert!(
            golden["channels"].get(channel).is_some(),
            "golden record channels must include {channel}: {}",
            golden["channels"]
        );
    }
    // Every customer merged away was tombstoned (checked by the poll); nothing else was.
    let tombstones: BTreeSet<&String> = last
        .iter()
        .filter(|(_, m)| m.payload.is_none())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        tombstones,
        gone.iter().collect(),
        "tombstones on profiles.merged must be exactly the merged_ids of identity.changes"
    );

    // Clean stop, then the final state of touchpoints.resolved.
    let status = unicus.terminate(SHUTDOWN_DEADLINE);
    assert!(
        status.success(),
        "unicus must exit 0 after SIGTERM, got {status}"
    );
    let resolved = stack
        .consume(&topic("touchpoints.resolved"))
        .expect("read touchpoints.resolved");
    let by_event = resolved_by_event(&resolved);
    assert_eq!(
        by_event.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut sorted = all_events.to_vec();
            sorted.sort_unstable();
            sorted
        },
        "touchpoints.resolved: one record per accepted event, none for the malformed line"
    );
    for (event_id, customers) in &by_event {
        assert_eq!(
            customers.len(),
            1,
            "{event_id} resolved more than once in a clean run: {customers:?}"
        );
        assert!(
            strangers.contains(&customers[0]),
            "{event_id} resolved to {}, which is not one of the story's customers {strangers:?}",
            customers[0]
        );
    }
    assert_eq!(
        by_event["soc-000003"][0], survivor,
        "the event that made the last merge resolves to the survivor"
    );
    eprintln!(
        "kcat_events_on_three_channels_become_one_merged_profile: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A clean shutdown commits offsets: a restarted unicus (same store, same group) processes
/// only what was produced while it was down, and outputs nothing twice.
#[test]
fn unicus_resumes_from_committed_offsets_after_restart() {
    let Some(stack) = stack("unicus_resumes_from_committed_offsets_after_restart") else {
        return;
    };
    let t0 = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("resume");
    let group = format!("{prefix}unicus");
    let topic = |name: &str| format!("{prefix}{name}");
    stack.create_topics(&input_topics(&prefix));

    let event_id = |i: usize| format!("web-resume-{i:03}");
    let produce = |range: std::ops::Range<usize>| {
        let records: Vec<(String, String)> = range
            .map(|i| {
                let line = event(
                    &event_id(i),
                    "web",
                    "account_created",
                    &format!("2026-11-20T10:{i:02}:00Z"),
                    json!({"identifiers": {"account_id": format!("CRM-9{i:05}"),
                                           "email": format!("customer{i}@example.org")}}),
                );
                (format!("k{i}"), line)
            })
            .collect();
        let refs: Vec<(&str, &str)> = records
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        stack.produce(&topic("touchpoints.web"), &refs);
    };
    let distinct_events = |msgs: &[Msg]| resolved_by_event(msgs).len();

    // Run 1: the first 20, and a malformed line. The engine ignores a redelivered
    // event_id, so a re-read of the valid events would not show on the outputs; a re-read
    // of the malformed line would: it would be dead-lettered a second time.
    produce(0..20);
    let malformed = "{not json, produced before the restart";
    stack.produce(&topic("touchpoints.web"), &[("malformed", malformed)]);
    let mut run1 = Unicus::start(&stack, dir.path(), "run1", &prefix, &group);
    stack.consume_until(
        &topic("touchpoints.resolved"),
        &mut run1,
        Instant::now() + OUTPUT_DEADLINE,
        "20 resolved events",
        |msgs| distinct_events(msgs) == 20,
    );
    stack.consume_until(
        &topic("touchpoints.dlq"),
        &mut run1,
        Instant::now() + OUTPUT_DEADLINE,
        "the malformed line dead-lettered",
        |msgs| !msgs.is_empty(),
    );
    let status = run1.terminate(SHUTDOWN_DEADLINE);
    assert!(
        status.success(),
        "run 1: unicus must exit 0 after SIGTERM, got {status}"
    );
    let consumed1 = run1.consumed_in_summary();
    drop(run1);

    // Run 2: 20 more produced while unicus was down; same store and group.
    produce(20..40);
    let mut run2 = Unicus::start(&stack, dir.path(), "run2", &prefix, &group);
    stack.consume_until(
        &topic("touchpoints.resolved"),
        &mut run2,
        Instant::now() + OUTPUT_DEADLINE,
        "40 resolved events",
        |msgs| distinct_events(msgs) >= 40,
    );
    let deadline = Instant::now() + OUTPUT_DEADLINE;
    stack.consume_until(
        &topic("profiles.merged"),
        &mut run2,
        deadline,
        "40 golden records",
        |msgs| last_per_key(msgs).len() >= 40,
    );
    let status = run2.terminate(SHUTDOWN_DEADLINE);
    assert!(
        status.success(),
        "run 2: unicus must exit 0 after SIGTERM, got {status}"
    );

    // Final state, read after both runs drained.
    let resolved = stack
        .consume(&topic("touchpoints.resolved"))
        .expect("read touchpoints.resolved");
    let by_event = resolved_by_event(&resolved);
    let expected: BTreeSet<String> = (0..40).map(event_id).collect();
    assert_eq!(
        by_event.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "touchpoints.resolved must hold exactly the 40 produced event_ids"
    );
    let twice: Vec<(&String, usize)> = by_event
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(e, c)| (e, c.len()))
        .collect();
    assert!(
        twice.is_empty(),
        "events resolved more than once across the restart (reprocessed): {twice:?}"
    );
    assert_eq!(resolved.len(), 40, "40 resolved records in all");
    let customers: BTreeSet<&String> = by_event.values().flatten().collect();
    assert_eq!(
        customers.len(),
        40,
        "40 events without shared identifiers are 40 customers"
    );

    let profiles = stack
        .consume(&topic("profiles.merged"))
        .expect("read profiles.merged");
    let last = last_per_key(&profiles);
    let live: BTreeSet<&String> = last
        .iter()
        .filter(|(_, m)| m.payload.is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        live.len(),
        40,
        "profiles.merged must show 40 distinct customers with a golden record, got {}",
        live.len()
    );
    assert_eq!(
        live, customers,
        "profiles.merged customers must be the resolved ones"
    );
    assert!(
        last.values().all(|m| m.payload.is_some()),
        "no customer was merged away, so no tombstone is expected"
    );
    let dlq = stack
        .consume(&topic("touchpoints.dlq"))
        .expect("read touchpoints.dlq");
    let payloads: Vec<Option<&str>> = dlq.iter().map(|m| m.payload.as_deref()).collect();
    assert_eq!(
        payloads,
        [Some(malformed)],
        "the malformed line must be dead-lettered once: run 2 must not read it again"
    );

    // The runtime's own count, from its exit summary in the log (checked when the line is
    // there): run 2 read only the 20 new records.
    let consumed2 = run2.consumed_in_summary();
    eprintln!("consumed per run (from the exit summaries): {consumed1:?}, {consumed2:?}");
    if let (Some(c1), Some(c2)) = (consumed1, consumed2) {
        assert_eq!(c1, 21, "run 1 consumed {c1} records, 21 produced");
        assert_eq!(
            c2, 20,
            "run 2 consumed {c2} records: it must resume from run 1's committed offsets \
             and read only the 20 new ones"
        );
    }
    eprintln!(
        "unicus_resumes_from_committed_offsets_after_restart: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
