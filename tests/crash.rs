//! Crash test against a real broker process (Tansu, started by `scripts/test.sh`):
//! unicus runs as a child process over 200k events and is killed with SIGKILL at random
//! moments, then restarted; once, its store is deleted too (restored from the changelog
//! on start). The final state must equal one uninterrupted replay of the same events, every input event must have its resolved record on the output topic, and
//! duplicates stay within the batch each kill caught in delivery.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Message;
use unicus::engine::config::EngineConfig;
use unicus::replay;
use unicus::sim::generate::{GenerateOptions, Generator};

const EVENTS: usize = 200_000;
const KILLS: usize = 6;
/// `runtime.batch_max_events` of the crash test: a batch has at most this many resolved
/// records.
const BATCH: u64 = 2_000;
/// The kill (from 0) after which the store is deleted.
const LOST_DISK_AFTER_KILL: usize = 2;

fn broker() -> Option<String> {
    match std::env::var("UNICUS_TEST_BROKERS") {
        Ok(b) => Some(b),
        Err(_) if std::env::var_os("UNICUS_REQUIRE_BROKER").is_some() => {
            panic!("UNICUS_TEST_BROKERS is not set: run scripts/test.sh")
        }
        Err(_) => {
            eprintln!("skipped: UNICUS_TEST_BROKERS is not set (run scripts/test.sh)");
            None
        }
    }
}

/// Kills the child on drop, so a failing test never leaves unicus running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    spawn(config, log, "info")
}

/// `unicus run --config config`, its log (filtered by `filter`) written to `log`.
fn spawn(config: &Path, log: std::fs::File, filter: &str) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_unicus"))
            .args(["run", "--config"])
            .arg(config)
            .env("UNICUS_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unicus starts"),
    )
}

/// Lines of the log that contain `what`.
fn log_count(log: &Path, what: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what))
        .count()
}

/// Writes `unicus.toml` in `dir` for a run on `brokers` under `prefix` (group
/// `<prefix>group`, the web channel, `partitions` partitions, the store in `dir/store`),
/// with `member` as its static group membership if any, `properties` added to
/// `[kafka.properties]` and `rest` (tables and their keys) after `[runtime]`'s
/// `store_dir`; returns its path.
fn write_config(
    dir: &Path,
    brokers: &str,
    prefix: &str,
    member: bool,
    partitions: u32,
    properties: &str,
    rest: &str,
) -> std::path::PathBuf {
    let member = if member {
        format!("group_instance_id = \"{prefix}member\"\n")
    } else {
        String::new()
    };
    let path = dir.join("unicus.toml");
    std::fs::write(
        &path,
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "{prefix}group"
{member}topic_prefix = "{prefix}"
channels = ["web"]
partitions = {partitions}
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
{properties}
[metrics]
listen = "127.0.0.1:0"
[runtime]
store_dir = "{}"
{rest}"#,
            dir.join("store").display()
        ),
    )
    .unwrap();
    path
}

/// What unicus logs once its consumer has an assignment from the group (with its
/// target: librdkafka's debug lines say "partitions assigned" too).
const ASSIGNED: &str = "runtime::source: partitions assigned";
/// What unicus logs after re-sending an outbox entry left by the previous run.
const RESENT: &str = "re-sent outputs left in the outbox";

fn create_topic(brokers: &str, name: &str, partitions: u32) {
    let tansu =
        std::env::var("UNICUS_TANSU_BIN").expect("UNICUS_TANSU_BIN is set by scripts/test.sh");
    let status = Command::new(tansu)
        .args([
            "topic",
            "create",
            name,
            "--broker",
            &format!("tcp://{brokers}"),
        ])
        .args(["--partitions", &partitions.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "creating {name}");
}

/// The seed of a randomised test: `UNICUS_CRASH_SEED`, or else the process id; printed
/// so that a failing run can be repeated.
fn run_seed(test: &str) -> u64 {
    let seed = std::env::var("UNICUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("{test} seed {seed} (UNICUS_CRASH_SEED to repeat)");
    seed
}

/// Produces `lines` to `<prefix>touchpoints.web`, and returns how many were sent.
fn produce_web(brokers: &str, prefix: &str, lines: &[String]) -> u64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(unicus::sim::demo::produce_lines(
        brokers,
        prefix,
        &["web".to_string()],
        lines.iter().cloned(),
    ))
    .unwrap()
}

/// Reads a topic from the beginning: the distinct values of one field, and (if asked)
/// every record.
struct TopicReader {
    consumer: BaseConsumer,
    field: &'static str,
    distinct: HashSet<String>,
    /// Records on the topic (a record read twice is counted once).
    records: u64,
    positions: HashSet<(i32, i64)>,
    keep: bool,
    values: Vec<serde_json::Value>,
}

impl TopicReader {
    fn new(brokers: &str, topic: &str, field: &'static str, keep: bool) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("crash-reader-{}-{topic}", std::process::id()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            // unicus creates the topic after this subscribes: notice it soon.
            .set("topic.metadata.refresh.interval.ms", "1000")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        Self {
            consumer,
            field,
            distinct: HashSet::new(),
            records: 0,
            positions: HashSet::new(),
            keep,
            values: Vec::new(),
        }
    }

    fn poll_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                if !self.positions.insert((m.partition(), m.offset())) {
                    continue;
                }
                let Some(payload) = m.payload() else { continue };
                let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
                self.distinct
                    .insert(v[self.field].as_str().unwrap().to_string());
                self.records += 1;
                if self.keep {
                    self.values.push(v);
                }
            }
        }
    }
}

#[test]
fn survives_kill_9_at_random_moments_with_exact_final_state() {
    let Some(brokers) = broker() else { return };
    let seed = run_seed("crash test");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("crash-{}-{seed}.", std::process::id());
    let lines: Vec<String> = Generator::new(GenerateOptions {
        seed,
        customers: 20_000,
        events: EVENTS,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect();
    // The run consumes `touchpoints.web` only, with `channels = ["web"]`: an event of
    // another channel is `unknown_channel` there, so the replay below accepts what it does.
    let config = EngineConfig {
        channels: vec!["web".into()],
        ..EngineConfig::default()
    };
    let valid: HashSet<String> = lines
        .iter()
        .filter_map(|l| unicus::engine::input::touchpoint::parse(l.as_bytes(), &config).ok())
        .map(|t| t.event_id)
        .collect();

    // One partition: the broker's order is the file's order, so the state after the
    // crashes must equal the replay's exactly, customer ids included.
    let input = format!("{prefix}touchpoints.web");
    create_topic(&brokers, &input, 1);
    let config_path = write_config(
        dir.path(),
        &brokers,
        &prefix,
        true,
        2,
        "",
        &format!(
            r#"batch_max_events = {BATCH}
batch_max_wait_ms = 50
retry_backoff_ms = 200
# Timers fire by event time only, like the replay this run is compared with: no
# wall-clock tick on idle moments (the generated events are days old).
[engine.activation]
tick_interval_ms = 86400000
"#
        ),
    );
    let produced = produce_web(&brokers, &prefix, &lines);
    assert_eq!(produced as usize, EVENTS);

    let log = dir.path().join("unicus.log");
    let mut reader = TopicReader::new(
        &brokers,
        &format!("{prefix}touchpoints.resolved"),
        "event_id",
        false,
    );
    for kill in 0..KILLS {
        let assigned_before = log_count(&log, ASSIGNED);
        let child = start(&config_path, &log);
        let started = Instant::now();
        // Every other kill lands during start-up (outbox re-sent, group join); the
        // others while batches flow (processing, store flush, produce, offset commit).
        if kill % 2 == 1 {
            let before = reader.distinct.len();
            let until = Instant::now() + Duration::from_secs(60);
            let mut assigned_after = None;
            while reader.distinct.len() <= before && Instant::now() < until {
                reader.poll_for(Duration::from_millis(100));
                if assigned_after.is_none() && log_count(&log, ASSIGNED) > assigned_before {
                    assigned_after = Some(started.elapsed());
                }
            }
            // With static membership (group_instance_id) a broker that honours it hands
            // the partitions back at once; without, after the dead member's session.
            eprintln!(
                "restart {}: partitions assigned after {assigned_after:?}, new output after {:?}",
                kill + 1,
                started.elapsed()
            );
        }
        let wait = Duration::from_millis(rng.gen_range(200..3_000));
        reader.poll_for(wait);
        drop(child); // SIGKILL
        eprintln!(
            "kill {} after {wait:?}: {} of {} events resolved so far",
            kill + 1,
            reader.distinct.len(),
            valid.len()
        );
        // A lost disk: the next start restores the store from its changelog (and the
        // kill after it may land during that restore).
        if kill == LOST_DISK_AFTER_KILL {
            std::fs::remove_dir_all(dir.path().join("store")).unwrap();
            eprintln!("store deleted after kill {}", kill + 1);
        }
    }
    let last = start(&config_path, &log);
    let started = Instant::now();
    while !valid.is_subset(&reader.distinct) {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "only {} of {} events resolved; log: {}",
            valid.intersection(&reader.distinct).count(),
            valid.len(),
            log.display()
        );
        reader.poll_for(Duration::from_millis(500));
    }

    // Killed once everything is acknowledged: the restart re-sends nothing.
    reader.poll_for(Duration::from_secs(2));
    let (records, resent_before) = (reader.records, log_count(&log, RESENT));
    let assigned_before = log_count(&log, ASSIGNED);
    let elected_before = log_count(&log, ELECTED);
    drop(last); // SIGKILL
    let mut last = start(&config_path, &log);
    let restarted = Instant::now();
    let mut elected_after = None;
    while log_count(&log, ASSIGNED) == assigned_before {
        assert!(
            restarted.elapsed() < Duration::from_secs(60),
            "no assignment after the idle restart; log: {}",
            log.display()
        );
        if elected_after.is_none() && log_count(&log, ELECTED) > elected_before {
            elected_after = Some(restarted.elapsed());
        }
        reader.poll_for(Duration::from_millis(50));
    }
    // Two groups are joined in turn: the writer election's, then the inputs'. Measured
    // on Tansu at session.timeout.ms = 6000: ~6.5 s each with static membership, 11-13 s
    // each without (it waits for the killed member's session to expire); not the
    // immediate hand-back Apache Kafka gives a known group.instance.id.
    let assigned_after = restarted.elapsed();
    let elected_after = elected_after.unwrap_or(assigned_after);
    eprintln!(
        "idle restart: elected the writer after {elected_after:?}, partitions assigned after {assigned_after:?}"
    );
    assert!(
        elected_after < Duration::from_secs(10),
        "static membership: the restarted member waited for the old session in the writer election ({elected_after:?})"
    );
    assert!(
        assigned_after - elected_after < Duration::from_secs(10),
        "static membership: the restarted member waited for the old session in the group ({assigned_after:?})"
    );
    reader.poll_for(Duration::from_secs(2));
    assert_eq!(
        log_count(&log, RESENT),
        resent_before,
        "an acknowledged batch is re-sent after a restart"
    );
    assert_eq!(
        reader.records, records,
        "records appeared after the idle restart"
    );

    stop_cleanly(&mut last);
    let duplicates = reader.records - reader.distinct.len() as u64;
    eprintln!(
        "{} resolved records for {} events: {duplicates} duplicates after {KILLS} kills ({:.0} per kill; a batch holds up to {BATCH}); {} outbox re-sends logged",
        reader.records,
        valid.len(),
        duplicates as f64 / KILLS as f64,
        log_count(&log, RESENT)
    );
    assert_eq!(
        reader.distinct.len(),
        valid.len(),
        "no resolved record for an unknown event"
    );
    // A kill duplicates at most what was acknowledged of the batch in delivery.
    assert!(
        duplicates <= KILLS as u64 * BATCH,
        "{duplicates} duplicates for {KILLS} kills of batches of {BATCH}"
    );

    // The state after six crashes equals one uninterrupted replay.
    let crashed = replay::open_engine(config.clone(), Some(&dir.path().join("store"))).unwrap();
    let mut single = replay::open_engine(config.clone(), None).unwrap();
    let mut sink = std::io::sink();
    replay::run(
        &mut single,
        lines.join("\n").as_bytes(),
        "crash",
        // As the runtime read them: by the wall clock (generated times are all past).
        chrono::Utc::now().timestamp_millis(),
        &mut sink,
        10_000,
        None,
    )
    .unwrap();
    assert_eq!(
        crashed.customer_count().unwrap(),
        single.customer_count().unwrap()
    );
    let a = crashed.golden_records().unwrap();
    let b = single.golden_records().unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "golden records differ");
    }
}

#[test]
fn abandoned_carts_fire_once_through_kill_9_around_their_deadlines() {
    const CARTS: usize = 40;
    let Some(brokers) = broker() else { return };
    let seed = run_seed("trigger crash test");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("carts-{}-{seed}.", std::process::id());
    create_topic(&brokers, &format!("{prefix}touchpoints.web"), 1);

    // Deadlines (last activity + 60 s) spread over the 25 s after the first start, so
    // that kills land before, between and after them.
    let delay_ms = 60_000i64;
    let first_due = chrono::Utc::now().timestamp_millis() + 4_000;
    let lines: Vec<String> = (0..CARTS)
        .map(|i| {
            let at = first_due - delay_ms + i as i64 * 25_000 / CARTS as i64;
            serde_json::json!({
                "event_id": format!("cart-{i}"), "channel": "web", "type": "cart_add",
                "occurred_at": chrono::DateTime::from_timestamp_millis(at).unwrap().to_rfc3339(),
                "identifiers": {"account_id": format!("ACC-{i}"), "email": format!("c{i}@example.org")},
                "consent": [{"purpose": "marketing", "channel": "email", "granted": true}],
                "cart": {"cart_id": format!("K-{i}"), "items": [{"sku": "SKU-1", "quantity": 1, "unit_price": 10.0}]},
            })
            .to_string()
        })
        .collect();
    let config_path = write_config(
        dir.path(),
        &brokers,
        &prefix,
        false,
        1,
        "",
        &format!(
            r#"batch_max_wait_ms = 50
retry_backoff_ms = 200
[engine.activation]
cart_abandoned_delay_ms = {delay_ms}
grace_ms = 0
tick_interval_ms = 100
"#
        ),
    );
    produce_web(&brokers, &prefix, &lines);

    let log = dir.path().join("unicus.log");
    let mut reader = TopicReader::new(
        &brokers,
        &format!("{prefix}triggers.cart_abandoned"),
        "cart_id",
        true,
    );
    for kill in 0..5 {
        let child = start(&config_path, &log);
        let wait = Duration::from_millis(rng.gen_range(500..6_000));
        reader.poll_for(wait);
        drop(child); // SIGKILL
        eprintln!(
            "kill {} after {wait:?}: {} trigger records, {} carts",
            kill + 1,
            reader.values.len(),
            reader.distinct.len()
        );
    }
    let _last = start(&config_path, &log);
    let started = Instant::now();
    while reader.distinct.len() < CARTS {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} of {CARTS} carts fired; log: {}",
            reader.distinct.len(),
            log.display()
        );
        reader.poll_for(Duration::from_millis(500));
    }
    // Settle: anything still in flight arrives.
    reader.poll_for(Duration::from_secs(3));
    let carts = &reader.distinct;
    let triggers: HashSet<&str> = reader
        .values
        .iter()
        .map(|v| v["trigger_id"].as_str().unwrap())
        .collect();
    eprintln!(
        "{} trigger records for {CARTS} carts ({} re-sent from the outbox)",
        reader.values.len(),
        reader.values.len() - CARTS
    );
    // Never none, never two: one trigger id per cart; a re-sent record is the same one.
    assert_eq!(carts.len(), CARTS);
    assert_eq!(triggers.len(), CARTS);
    for v in &reader.values {
        assert_eq!(v["channels_allowed"], serde_json::json!(["email"]));
    }
}

/// The time a log line was written (its first word, RFC 3339), if it has one.
fn logged_at(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let first = line.split_whitespace().next()?;
    Some(chrono::DateTime::parse_from_rfc3339(first).ok()?.to_utc())
}

/// When the group protocol's steps happened in one run's log (librdkafka's `cgrp`
/// debug lines), against when the process was started.
#[derive(Debug)]
struct Join {
    /// From the start to the first JoinGroup request: unicus's own start-up.
    until_join_sent: Duration,
    /// From the JoinGroup request to the last SyncGroup response: the broker.
    in_the_group_protocol: Duration,
    /// From the SyncGroup response to unicus's "partitions assigned".
    after_sync: Duration,
}

impl Join {
    fn total(&self) -> Duration {
        self.until_join_sent + self.in_the_group_protocol + self.after_sync
    }

    /// What unicus itself spends: all but the broker's answer to the group protocol.
    fn unicus_share(&self) -> Duration {
        self.until_join_sent + self.after_sync
    }
}

/// Starts unicus on `config`, waits for its assignment and reads the join's steps
/// from its log; the process is left running.
fn start_and_join(config: &Path, log: &Path) -> (Running, Join) {
    let spawned = chrono::Utc::now();
    let child = spawn(
        config,
        std::fs::File::create(log).unwrap(),
        "info,librdkafka=debug",
    );
    let until = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ASSIGNED) {
            break text;
        }
        assert!(
            Instant::now() < until,
            "no assignment; log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let at = |what: &str, last: bool| {
        let mut found = text
            .lines()
            .filter(|l| l.contains(what))
            .filter_map(logged_at);
        let t = if last {
            found.next_back()
        } else {
            found.next()
        };
        t.unwrap_or_else(|| panic!("no `{what}` in {}", log.display()))
    };
    let join_sent = at("Joining group", false);
    let synced = at("SyncGroup response", true);
    let assigned = at(ASSIGNED, false);
    let span = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (b - a).to_std().unwrap_or_default()
    };
    let join = Join {
        until_join_sent: span(spawned, join_sent),
        in_the_group_protocol: span(join_sent, synced),
        after_sync: span(synced, assigned),
    };
    (child, join)
}

/// Static membership (`kafka.group_instance_id`): a member restarted after SIGKILL takes
/// its partitions back as soon as a new member gets them, without waiting for the dead
/// one's session to expire (11-13 s at `session.timeout.ms` = 6000 without it), and
/// what unicus itself adds to the broker's group protocol stays under 3 s.
///
/// Tansu 0.6 holds every JoinGroup and SyncGroup of a static member for 3 s each
/// (`PAUSE_MS` in its group coordinator), so a static join there takes about 6 s
/// however fresh the group; Apache Kafka answers a known `group.instance.id` at once.
#[test]
fn a_member_restarted_after_kill_9_is_assigned_as_soon_as_a_new_one() {
    let Some(brokers) = broker() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("static-{}.", std::process::id());
    create_topic(&brokers, &format!("{prefix}touchpoints.web"), 1);
    let config = write_config(
        dir.path(),
        &brokers,
        &prefix,
        true,
        1,
        "\"debug\" = \"cgrp\"",
        "",
    );
    let (first, new_member) = start_and_join(&config, &dir.path().join("first.log"));
    drop(first); // SIGKILL: the member does not leave the group
    let (last, restarted) = start_and_join(&config, &dir.path().join("restart.log"));
    drop(last);
    eprintln!(
        "new member: {new_member:?}, assigned after {:?}",
        new_member.total()
    );
    eprintln!(
        "restarted after SIGKILL: {restarted:?}, assigned after {:?} (unicus's share {:?})",
        restarted.total(),
        restarted.unicus_share()
    );
    assert!(
        restarted.total() < new_member.total() + Duration::from_secs(2),
        "the restarted member waited for the old session: {restarted:?} against {new_member:?}"
    );
    assert!(
        restarted.unicus_share() < Duration::from_secs(3),
        "{restarted:?}"
    );
}

/// What an instance logs once it is the deployment's writer, and while it stands by.
const ELECTED: &str = "elected the deployment's writer";
const STANDING_BY: &str = "standing by";

/// SIGTERM, then waits (at most 20 s) for a clean exit.
fn stop_cleanly(child: &mut Running) {
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "unicus did not stop within 20 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "unicus exits 0 on SIGTERM: {status}");
}

/// Sends `signal` (`-STOP`, `-CONT`) to a running instance.
fn signal(child: &Running, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal}");
}

/// Several instances of one deployment on a test broker: the same group, each with its
/// store, configuration and log in a directory of its own; a generated stream on one
/// input partition (the broker's order is the stream's, so every final state must equal
/// one replay's exactly).
struct Deployment {
    brokers: String,
    prefix: String,
    lines: Vec<String>,
    config: EngineConfig,
    /// The events the engine accepts: each must get its resolved record.
    valid: HashSet<String>,
    dirs: Vec<tempfile::TempDir>,
    configs: Vec<std::path::PathBuf>,
    logs: Vec<std::path::PathBuf>,
    reader: TopicReader,
}

impl Deployment {
    /// `instances` configurations of `events` generated events over `customers`, with
    /// batches of `batch` events; `None` without a test broker.
    fn new(
        name: &str,
        events: usize,
        customers: usize,
        instances: usize,
        batch: u64,
    ) -> Option<Self> {
        let brokers = broker()?;
        let seed = run_seed(name);
        let prefix = format!("{name}-{}-{seed}.", std::process::id());
        let lines: Vec<String> = Generator::new(GenerateOptions {
            seed,
            customers,
            events,
            ..GenerateOptions::default()
        })
        .map(|e| e.line)
        .collect();
        let config = EngineConfig {
            channels: vec!["web".into()],
            ..EngineConfig::default()
        };
        let valid = lines
            .iter()
            .filter_map(|l| unicus::engine::input::touchpoint::parse(l.as_bytes(), &config).ok())
            .map(|t| t.event_id)
            .collect();
        create_topic(&brokers, &format!("{prefix}touchpoints.web"), 1);
        let dirs: Vec<tempfile::TempDir> = (0..instances)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let rest = format!(
            r#"batch_max_events = {batch}
batch_max_wait_ms = 50
retry_backoff_ms = 200
[engine.activation]
tick_interval_ms = 86400000
"#
        );
        let configs = dirs
            .iter()
            .map(|d| write_config(d.path(), &brokers, &prefix, false, 2, "", &rest))
            .collect();
        let logs = dirs.iter().map(|d| d.path().join("unicus.log")).collect();
        let reader = TopicReader::new(
            &brokers,
            &format!("{prefix}touchpoints.resolved"),
            "event_id",
            false,
        );
        Some(Self {
            brokers,
            prefix,
            lines,
            config,
            valid,
            dirs,
            configs,
            logs,
            reader,
        })
    }

    fn start(&self, i: usize) -> Running {
        start(&self.configs[i], &self.logs[i])
    }

    fn produce(&self) {
        let produced = produce_web(&self.brokers, &self.prefix, &self.lines);
        assert_eq!(produced as usize, self.lines.len());
    }

    /// Lines of instance `i`'s log that contain `what`.
    fn logged(&self, i: usize, what: &str) -> usize {
        log_count(&self.logs[i], what)
    }

    /// Reads the outputs until instance `i` logs `what` (at most 90 s).
    fn wait_for(&mut self, i: usize, what: &str) {
        let until = Instant::now() + Duration::from_secs(90);
        while self.logged(i, what) == 0 {
            assert!(
                Instant::now() < until,
                "no `{what}` in {}",
                self.logs[i].display()
            );
            self.reader.poll_for(Duration::from_millis(50));
        }
    }

    /// Reads the outputs until `n` events are resolved (at most `limit`).
    fn until_resolved(&mut self, n: usize, limit: Duration) {
        let until = Instant::now() + limit;
        while self.valid.intersection(&self.reader.distinct).count() < n {
            assert!(
                Instant::now() < until,
                "only {} of {n} events resolved",
                self.valid.intersection(&self.reader.distinct).count()
            );
            self.reader.poll_for(Duration::from_millis(50));
        }
    }

    /// Asserts that the stores of `instances` hold the golden records of one
    /// uninterrupted replay of the stream.
    fn assert_stores_equal_replay(&self, instances: std::ops::Range<usize>) {
        let mut single = replay::open_engine(self.config.clone(), None).unwrap();
        replay::run(
            &mut single,
            self.lines.join("\n").as_bytes(),
            "deployment",
            chrono::Utc::now().timestamp_millis(),
            &mut std::io::sink(),
            10_000,
            None,
        )
        .unwrap();
        let want = single.golden_records().unwrap();
        for i in instances {
            let store = self.dirs[i].path().join("store");
            let engine = replay::open_engine(self.config.clone(), Some(&store)).unwrap();
            let got = engine.golden_records().unwrap();
            assert_eq!(got.len(), want.len(), "customers of instance {i}");
            for (x, y) in got.iter().zip(&want) {
                assert_eq!(x, y, "golden records of instance {i} differ");
            }
        }
    }
}

/// Several instances of one deployment: one writes, the others stand by following the
/// changelog. The writer is killed with SIGKILL mid-stream and a standby takes over;
/// later a fourth instance starts on an empty store. Every event is resolved,
/// duplicates stay within the batch the kill caught, and every store (the writer's and
/// the standbys', the one started empty included) ends with the state of one
/// uninterrupted replay.
#[test]
fn a_standby_takes_over_from_a_killed_writer_and_every_store_ends_equal() {
    let Some(mut d) = Deployment::new("standby", 30_000, 3_000, 4, BATCH) else {
        return;
    };
    let all = d.valid.len();
    // The first instance is the writer; two more stand by.
    let a = d.start(0);
    d.wait_for(0, ELECTED);
    let mut others = vec![d.start(1), d.start(2)];
    d.wait_for(1, STANDING_BY);
    d.wait_for(2, STANDING_BY);
    d.produce();
    d.until_resolved(all / 3, Duration::from_secs(120));
    for i in 1..3 {
        assert_eq!(
            d.logged(i, ELECTED),
            0,
            "a standby wrote while the writer lived"
        );
    }
    drop(a); // SIGKILL
    let killed_at = d.reader.distinct.len();
    let took_over = Instant::now();
    let until = Instant::now() + Duration::from_secs(90);
    let new_writer = loop {
        if let Some(i) = (1..3).find(|i| d.logged(*i, ELECTED) > 0) {
            break i;
        }
        assert!(Instant::now() < until, "no standby took over");
        d.reader.poll_for(Duration::from_millis(50));
    };
    eprintln!(
        "writer killed at {killed_at} of {all} events; instance {new_writer} elected after {:?}",
        took_over.elapsed()
    );
    // A new machine joins on an empty store: it stands by, restoring from the changelog.
    others.push(d.start(3));
    d.until_resolved(all, Duration::from_secs(240));
    d.reader.poll_for(Duration::from_secs(3));
    let duplicates = d.reader.records - d.reader.distinct.len() as u64;
    eprintln!(
        "{} resolved records for {all} events: {duplicates} duplicates",
        d.reader.records
    );
    assert_eq!(d.reader.distinct.len(), all);
    assert!(duplicates <= BATCH, "{duplicates} duplicates for one kill");
    assert_eq!(
        d.logged(3, ELECTED),
        0,
        "the instance started last stood by"
    );

    // The standbys stop first (each in step with what it has read), then the writer.
    let mut writer = others.remove(new_writer - 1);
    for standby in &mut others {
        stop_cleanly(standby);
    }
    stop_cleanly(&mut writer);
    d.assert_stores_equal_replay(1..4);
}

/// A writer frozen past its session (SIGSTOP) is replaced by a standby, which writes;
/// resumed (SIGCONT), the old writer finds the election gone for good and exits
/// non-zero without writing on as the writer. A batch it may still have put on the
/// changelog after the new writer's fence is never applied by a reader: an instance
/// started afterwards on an empty store ends with the new writer's state, and both equal
/// one uninterrupted replay.
#[test]
fn a_frozen_writer_is_replaced_and_stops_when_it_wakes_up() {
    // Small batches: the frozen writer is caught with one in delivery.
    let Some(mut d) = Deployment::new("frozen", 20_000, 2_000, 3, 500) else {
        return;
    };
    let all = d.valid.len();
    let mut a = d.start(0);
    d.wait_for(0, ELECTED);
    let mut b = d.start(1);
    d.wait_for(1, STANDING_BY);
    d.produce();
    d.until_resolved(all / 4, Duration::from_secs(120));
    signal(&a, "-STOP");
    let frozen_at = d.reader.distinct.len();
    d.wait_for(1, ELECTED);
    d.until_resolved(frozen_at + all / 4, Duration::from_secs(120));
    signal(&a, "-CONT");
    let woke = Instant::now();
    let status = loop {
        if let Some(s) = a.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            woke.elapsed() < Duration::from_secs(60),
            "the old writer did not stop after it woke up"
        );
        d.reader.poll_for(Duration::from_millis(100));
    };
    eprintln!(
        "frozen at {frozen_at} of {all} events; the old writer stopped {:?} after it woke up: {status}",
        woke.elapsed()
    );
    assert!(!status.success(), "the deposed writer exits non-zero");
    assert!(
        d.logged(0, "no longer the deployment's writer") > 0,
        "the deposed writer says why; log: {}",
        d.logs[0].display()
    );
    d.until_resolved(all, Duration::from_secs(240));
    // A new machine on an empty store restores from the changelog as a standby.
    let mut c = d.start(2);
    d.wait_for(2, STANDING_BY);
    d.reader.poll_for(Duration::from_secs(5));
    stop_cleanly(&mut c);
    stop_cleanly(&mut b);
    d.assert_stores_equal_replay(1..3);
}
