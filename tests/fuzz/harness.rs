//! The fuzz harness: a fresh engine over a sequence of operations, and after each input
//! the checks of accounting, unchanged state on refusal, writable outputs, bounded time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use unicus::engine::config::EngineConfig;
use unicus::engine::input::touchpoint::Rejection;
use unicus::engine::{Engine, Input, InputKind, Record, Stats};
use unicus::kafka::avro::registry::{InputFormats, OutputEncoder};
use unicus::model::output::{OutputRecord, Payload, Topic};
use unicus::store::Store;

/// How an input reaches the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A replay line: `Engine::parse_line`.
    Line,
    /// A JSON record of a topic of that kind: `Engine::parse`.
    Typed(InputKind),
    /// A document decoded before the engine: `Engine::parse_document`.
    Document(InputKind),
    /// A record of a topic as the runtime dispatches it: Confluent-framed bytes decoded
    /// by the topic's Avro reader then `parse_document`, anything else `parse`.
    Topic(&'static str),
}

/// One step of a fuzz case.
#[derive(Clone)]
pub enum Op {
    Input {
        entry: Entry,
        bytes: Vec<u8>,
        /// The record's timestamp (ms), as a broker gives it.
        timestamp: Option<i64>,
        key: Option<Vec<u8>>,
    },
    Commit,
    CommitInBackground,
    /// `Engine::tick` at a wall-clock time (ms).
    Tick(i64),
    /// `Engine::sweep_retention` at a wall-clock time (ms).
    Sweep(i64),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Input {
                entry,
                bytes,
                timestamp,
                key,
            } => write!(
                f,
                "Input {{ entry: {entry:?}, timestamp: {timestamp:?}, key: {:?}, bytes({}): b\"{}\" }}",
                key.as_deref().map(escaped),
                bytes.len(),
                escaped(bytes)
            ),
            Op::Commit => write!(f, "Commit"),
            Op::CommitInBackground => write!(f, "CommitInBackground"),
            Op::Tick(t) => write!(f, "Tick({t})"),
            Op::Sweep(t) => write!(f, "Sweep({t})"),
        }
    }
}

/// Bytes as escaped ASCII, the first 1,000 only (the corpus keeps them whole).
pub fn escaped(bytes: &[u8]) -> String {
    const SHOWN: usize = 1_000;
    let text = bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
    if bytes.len() > SHOWN {
        format!("{text}…[{} bytes more]", bytes.len() - SHOWN)
    } else {
        text
    }
}

// ------------------------------------------------------------------------- limits

/// The longest one input (or commit, tick, sweep) may take before it counts as a hang.
pub fn hang_limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| Duration::from_millis(env_u64("UNICUS_FUZZ_HANG_MS").unwrap_or(2_000)))
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Inputs handled by every harness of the process, and the longest one took.
pub static INPUTS: AtomicU64 = AtomicU64::new(0);
pub static MAX_INPUT_NANOS: AtomicU64 = AtomicU64::new(0);

/// What became of the inputs: outcomes, and dead letters by reason.
pub static OUTCOMES: Mutex<std::collections::BTreeMap<String, u64>> =
    Mutex::new(std::collections::BTreeMap::new());

/// What each thread is doing now, for the watchdog.
static IN_FLIGHT: Mutex<Option<HashMap<ThreadId, (Instant, String)>>> = Mutex::new(None);

/// Starts (once) the thread that ends the process when one step has run far beyond the
/// hang limit: a true hang would otherwise stall the test run instead of failing it.
fn watchdog() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let abort_after =
            Duration::from_secs(env_u64("UNICUS_FUZZ_ABORT_S").unwrap_or(120)).max(hang_limit());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let guard = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
            for (since, what) in guard.iter().flat_map(|m| m.values()) {
                if since.elapsed() > abort_after {
                    eprintln!(
                        "[hang] one step has run for {:?} (limit {:?}), ending the test process: {what}",
                        since.elapsed(),
                        hang_limit()
                    );
                    std::process::exit(3);
                }
            }
        });
    });
}

/// Times a step; the watchdog knows what it is meanwhile.
fn timed<T>(what: impl FnOnce() -> String, step: impl FnOnce() -> T) -> (T, Duration) {
    let id = std::thread::current().id();
    let started = Instant::now();
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(id, (started, what()));
    let out = step();
    let took = started.elapsed();
    if let Some(m) = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        m.remove(&id);
    }
    (out, took)
}

// ------------------------------------------------------------------------ harness

/// How one input ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Rejected,
    Duplicate,
    Suppressed,
    RequestDone,
    CommandDone,
    /// A reference record applied to the local copy.
    ReferenceApplied,
}

/// Why a case failed: a hang, or a property that does not hold. (A panic is caught by
/// the runner around the harness.)
pub type Failure = String;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("[violation] {}", format!($($msg)+)));
        }
    };
}

/// One engine over a temporary store, and what the checks remember across inputs.
pub struct Harness<'a> {
    pub engine: Engine,
    formats: Option<&'a InputFormats>,
    encoder: OutputEncoder,
    /// Customer ids the engine gave, in order; merged-away ones too.
    customers: Vec<String>,
    merged: Vec<String>,
    requests_done: u64,
    commands_done: u64,
    references_applied: u64,
    canaries: u64,
}

/// The parsed input's kind and id, kept to check its outputs.
enum Parsed {
    Touchpoint(String),
    Request(String),
    Command(String),
    Reference,
    Refused,
}

impl<'a> Harness<'a> {
    pub fn new(formats: Option<&'a InputFormats>) -> Self {
        watchdog();
        let engine = Engine::new(EngineConfig::default(), Store::temporary().expect("store"))
            .expect("engine");
        Self {
            engine,
            formats,
            // Every output topic in Avro, as the strictest runtime would write them.
            encoder: OutputEncoder::with_ids(
                Topic::ALL
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (t, 100 + i as u32, Some(1))),
            ),
            customers: Vec::new(),
            merged: Vec::new(),
            requests_done: 0,
            commands_done: 0,
            references_applied: 0,
            canaries: 0,
        }
    }

    /// Runs every operation, then checks that the state still serves and a good event
    /// still goes through.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), Failure> {
        for (i, op) in ops.iter().enumerate() {
            self.op(op)
                .map_err(|e| format!("{e}\n  at op {i}: {op:?}"))?;
        }
        self.finish()
    }

    pub fn op(&mut self, op: &Op) -> Result<(), Failure> {
        match op {
            Op::Input {
                entry,
                bytes,
                timestamp,
                key,
            } => self
                .input(*entry, bytes, *timestamp, key.as_deref())
                .map(|_| ()),
            Op::Commit => self.step("commit", |e| e.commit().map(|()| Vec::new())),
            Op::CommitInBackground => self.step("commit_in_background", |e| {
                e.commit_in_background().map(|()| Vec::new())
            }),
            Op::Tick(now) => self.step("tick", |e| e.tick(*now)),
            Op::Sweep(now) => self.step("sweep_retention", |e| e.sweep_retention(*now)),
        }
    }

    /// A step that is not an input: it must not fail, hang, or produce a bad record.
    fn step(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Engine) -> Result<Vec<OutputRecord>, unicus::engine::EngineError>,
    ) -> Result<(), Failure> {
        let (result, took) = timed(|| name.to_string(), || f(&mut self.engine));
        let out = result.map_err(|e| format!("[engine error] {name}: {e}"))?;
        if took > hang_limit() {
            return Err(format!("[hang] {name} took {took:?}"));
        }
        self.check_outputs(&out)?;
        Ok(())
    }

    /// Gives one input to the engine the way `entry` says, and checks what became of it.
    pub fn input(
        &mut self,
        entry: Entry,
        bytes: &[u8],
        timestamp: Option<i64>,
        key: Option<&[u8]>,
    ) -> Result<Outcome, Failure> {
        let bytes = self.fill_in(bytes);
        let source_topic = match entry {
            Entry::Line => "replay",
            Entry::Typed(k) | Entry::Document(k) => topic_of(k),
            Entry::Topic(t) => t,
        };
        let record = Record {
            bytes: &bytes,
            source_topic,
            source_offset: INPUTS.load(Ordering::Relaxed) as i64,
            key,
            timestamp,
            // Read as a replay in 2030 would: the generators' times lie before it.
            received_at: 1_893_456_000_000,
        };
        let before = self
            .engine
            .store()
            .audit_scan()
            .map_err(|e| format!("[engine error] {e}"))?;
        let stats = self.engine.stats().clone();
        let formats = self.formats;
        let engine = &mut self.engine;
        let ((parsed, result), took) = timed(
            || format!("{entry:?} b\"{}\"", escaped(&bytes)),
            || {
                let input = parse(engine, formats, entry, &record);
                let parsed = match &input {
                    Ok(Input::Touchpoint(tp)) => Parsed::Touchpoint(tp.event_id.clone()),
                    Ok(Input::Request(r)) => Parsed::Request(r.request_id.clone()),
                    Ok(Input::Command(c)) => Parsed::Command(c.command_id.clone()),
                    Ok(Input::Reference(_)) => Parsed::Reference,
                    Err(_) => Parsed::Refused,
                };
                (parsed, engine.handle(&record, input))
            },
        );
        INPUTS.fetch_add(1, Ordering::Relaxed);
        MAX_INPUT_NANOS.fetch_max(took.as_nanos() as u64, Ordering::Relaxed);
        let out = result.map_err(|e| format!("[engine error] handle: {e}"))?;
        if took > hang_limit() {
            return Err(format!(
                "[hang] one input took {took:?} (limit {:?})",
                hang_limit()
            ));
        }
        let outcome = self.account(&stats, &record, &parsed, &out)?;
        if matches!(outcome, Outcome::Rejected | Outcome::Duplicate) {
            let after = self
                .engine
                .store()
                .audit_scan()
                .map_err(|e| format!("[engine error] {e}"))?;
            ensure!(
                before == after,
                "a {outcome:?} input changed the store: {}",
                store_difference(&before, &after)
            );
        }
        self.check_outputs(&out)?;
        self.check_done(outcome, &parsed, &out)?;
        let name = match (outcome, out.first()) {
            (Outcome::Rejected, Some(dl)) => dl
                .headers
                .iter()
                .find(|(k, _)| k == "unicus.error.reason")
                .map_or("rejected", |(_, v)| v.as_str())
                .to_string(),
            _ => outcome_name(outcome).to_string(),
        };
        *OUTCOMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name)
            .or_default() += 1;
        Ok(outcome)
    }

    /// Exactly one counter moved for the input, and the totals still add up.
    fn account(
        &mut self,
        before: &Stats,
        record: &Record,
        parsed: &Parsed,
        out: &[OutputRecord],
    ) -> Result<Outcome, Failure> {
        let now = self.engine.stats();
        let source = |s: &Stats| {
            s.by_source
                .get(record.source_topic)
                .cloned()
                .unwrap_or_default()
        };
        let (src_before, src_now) = (source(before), source(now));
        ensure!(
            now.consumed == before.consumed + 1,
            "consumed moved by {}",
            now.consumed - before.consumed
        );
        let moved = [
            now.rejected_total() - before.rejected_total(),
            now.duplicates - before.duplicates,
            now.suppressed - before.suppressed,
            src_now.accepted - src_before.accepted,
        ];
        ensure!(
            moved.iter().sum::<u64>() == 1,
            "not exactly one outcome counted (rejected, duplicate, suppressed, accepted moved by {moved:?})"
        );
        ensure!(
            src_now.total() == src_before.total() + 1,
            "the counts of source `{}` moved by {}",
            record.source_topic,
            src_now.total() - src_before.total()
        );
        let outcome = match (moved, parsed) {
            ([1, ..], _) => Outcome::Rejected,
            ([_, 1, ..], Parsed::Refused) | ([_, _, 1, _], Parsed::Refused) => {
                return Err("[violation] an input that did not parse was counted as done".into())
            }
            ([_, 1, ..], _) => Outcome::Duplicate,
            ([_, _, 1, _], Parsed::Touchpoint(_)) => Outcome::Suppressed,
            ([_, _, _, 1], Parsed::Touchpoint(_)) => Outcome::Accepted,
            ([_, _, _, 1], Parsed::Request(_)) => Outcome::RequestDone,
            ([_, _, _, 1], Parsed::Command(_)) => Outcome::CommandDone,
            ([_, _, _, 1], Parsed::Reference) => Outcome::ReferenceApplied,
            _ => {
                return Err(format!(
                    "[violation] outcome {moved:?} for a {}",
                    parsed.kind()
                ))
            }
        };
        match outcome {
            Outcome::RequestDone => self.requests_done += 1,
            Outcome::CommandDone => self.commands_done += 1,
            Outcome::ReferenceApplied => self.references_applied += 1,
            Outcome::Accepted => ensure!(
                now.accepted == before.accepted + 1,
                "an accepted touchpoint not counted in `accepted`"
            ),
            _ => {}
        }
        // The whole-stream identities.
        let sources: u64 = now.by_source.values().map(|s| s.total()).sum();
        ensure!(
            now.consumed == sources,
            "consumed {} but sources total {sources}",
            now.consumed
        );
        let counted = now.accepted
            + now.rejected_total()
            + now.duplicates
            + now.suppressed
            + self.requests_done
            + self.commands_done
            + self.references_applied;
        ensure!(
            now.consumed == counted,
            "consumed {} != accepted + rejected + duplicates + suppressed + requests + commands + references = {counted}",
            now.consumed
        );
        let receipts: u64 = ["export", "erase", "not_found"]
            .iter()
            .map(|k| now.requests.get(k).copied().unwrap_or(0))
            .sum();
        ensure!(
            receipts == self.requests_done,
            "{} requests done, {receipts} counted by kind",
            self.requests_done
        );
        if outcome == Outcome::Rejected {
            self.check_dead_letter(record, out)?;
        } else if matches!(outcome, Outcome::Duplicate | Outcome::Suppressed) {
            ensure!(
                out.is_empty(),
                "a {outcome:?} input produced {} records",
                out.len()
            );
        }
        Ok(outcome)
    }

    /// A refusal is one dead letter: the bytes as they came, the reason in its headers.
    fn check_dead_letter(&self, record: &Record, out: &[OutputRecord]) -> Result<(), Failure> {
        ensure!(
            out.len() == 1,
            "a rejected input produced {} records",
            out.len()
        );
        let dl = &out[0];
        ensure!(
            dl.topic == Topic::Dlq,
            "a rejected input produced a {} record",
            dl.topic.name()
        );
        ensure!(
            matches!(&dl.payload, Payload::Raw(b) if b.as_slice() == record.bytes),
            "the dead letter does not carry the input's bytes"
        );
        let header = |name: &str| {
            dl.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let reason = header("unicus.error.reason").unwrap_or_default();
        ensure!(
            Rejection::REASONS.contains(&reason),
            "dead letter reason header `{reason}` is not one of the declared reasons"
        );
        let error = header("unicus.error").unwrap_or_default();
        ensure!(
            !error.trim().is_empty(),
            "dead letter without an `unicus.error` text"
        );
        ensure!(
            header("unicus.source.topic") == Some(record.source_topic),
            "dead letter without its source topic"
        );
        Ok(())
    }

    /// What an input that was carried out must have given.
    fn check_done(
        &mut self,
        outcome: Outcome,
        parsed: &Parsed,
        out: &[OutputRecord],
    ) -> Result<(), Failure> {
        let count = |topic: Topic, field: &str, id: &str| {
            out.iter()
                .filter(|r| r.topic == topic)
                .filter(|r| matches!(&r.payload, Payload::Json(v) if v[field] == id))
                .count()
        };
        match (outcome, parsed) {
            (Outcome::Accepted, Parsed::Touchpoint(id)) => {
                let n = count(Topic::Resolved, "event_id", id);
                ensure!(
                    n == 1,
                    "an accepted event gave {n} touchpoints.resolved records"
                );
            }
            (Outcome::RequestDone, Parsed::Request(id)) => {
                let n = count(Topic::GdprReceipts, "request_id", id);
                ensure!(n == 1, "a request done gave {n} receipts");
                self.check_erased(out, id)?;
            }
            (Outcome::CommandDone, Parsed::Command(id)) => {
                let n = count(Topic::IdentityChanges, "command_id", id);
                ensure!(n == 1, "a command done gave {n} identity.changes records");
            }
            _ => {}
        }
        Ok(())
    }

    /// After an erasure receipt naming a customer, nothing is left of that customer.
    fn check_erased(&self, out: &[OutputRecord], request_id: &str) -> Result<(), Failure> {
        for r in out.iter().filter(|r| r.topic == Topic::GdprReceipts) {
            let Payload::Json(v) = &r.payload else {
                continue;
            };
            if v["request_id"] != request_id || v["kind"] != "erase" {
                continue;
            }
            if let Some(customer) = v["customer_id"].as_str() {
                let left = self
                    .engine
                    .golden_record(customer)
                    .map_err(|e| format!("[engine error] {e}"))?;
                ensure!(
                    left.is_none(),
                    "customer {customer} has a golden record after its erasure"
                );
            }
        }
        Ok(())
    }

    /// Every output can be written: as a replay line (valid JSON) and in its topic's
    /// Avro schema (an encoding failure would stop the runtime's batch).
    fn check_outputs(&mut self, out: &[OutputRecord]) -> Result<(), Failure> {
        for r in out {
            let mut line = Vec::new();
            r.write_replay_line(&mut line).map_err(|e| {
                format!(
                    "[violation] a {} record cannot be written as a replay line: {e}",
                    r.topic.name()
                )
            })?;
            ensure!(
                serde_json::from_slice::<Value>(&line).is_ok(),
                "the replay line of a {} record is not JSON",
                r.topic.name()
            );
            if let Err(e) = self.encoder.value(r) {
                return Err(format!("[violation] {e}"));
            }
            self.learn(r);
        }
        Ok(())
    }

    /// Remembers the customer ids the outputs name, for the placeholders of later inputs.
    fn learn(&mut self, r: &OutputRecord) {
        let add = |list: &mut Vec<String>, id: Option<&str>| {
            if let Some(id) = id {
                if !id.is_empty() && !list.iter().any(|c| c == id) {
                    list.push(id.to_string());
                }
            }
        };
        match (&r.topic, &r.payload) {
            (Topic::Resolved, _) => add(&mut self.customers, r.key.as_deref()),
            (Topic::IdentityChanges, Payload::Json(v)) => {
                add(&mut self.customers, v["customer_id"].as_str());
                add(&mut self.customers, v["new_customer_id"].as_str());
                for m in v["merged_ids"].as_array().into_iter().flatten() {
                    add(&mut self.merged, m.as_str());
                }
            }
            _ => {}
        }
    }

    /// Replaces `@CUS<n>@` and `@MERGED<n>@` by the n-th customer id the engine gave (a
    /// merged-away one for the second), so that requests and commands can name them, and
    /// `@HOLDER@` by the customer holding the record's `identifier`.
    fn fill_in(&self, bytes: &[u8]) -> Vec<u8> {
        let out = self.fill_in_ids(bytes);
        const HOLDER: &[u8] = b"@HOLDER@";
        let Some(at) = out.windows(HOLDER.len()).position(|w| w == HOLDER) else {
            return out;
        };
        let holder = serde_json::from_slice::<Value>(&out)
            .ok()
            .and_then(|v| {
                let kind = v["identifier"]["type"].as_str()?.to_string();
                let raw = v["identifier"]["value"].as_str()?.to_string();
                self.engine.find_customer(&kind, &raw).ok().flatten()
            })
            .unwrap_or_else(|| "cus_none".into());
        [&out[..at], holder.as_bytes(), &out[at + HOLDER.len()..]].concat()
    }

    fn fill_in_ids(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'@' {
                if let Some((len, id)) = self.placeholder(&bytes[i..]) {
                    out.extend_from_slice(id.as_bytes());
                    i += len;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        out
    }

    fn placeholder(&self, at: &[u8]) -> Option<(usize, &str)> {
        let (prefix, list) = if at.starts_with(b"@CUS") {
            (4, &self.customers)
        } else if at.starts_with(b"@MERGED") {
            (7, &self.merged)
        } else {
            return None;
        };
        let digits = at[prefix..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || at.get(prefix + digits) != Some(&b'@') {
            return None;
        }
        let n: usize = std::str::from_utf8(&at[prefix..prefix + digits])
            .ok()?
            .parse()
            .ok()?;
        let id = match list.len() {
            0 => "cus_none",
            len => list[n % len].as_str(),
        };
        Some((prefix + digits + 1, id))
    }

    /// The state still serves every query, and a good event still goes through.
    pub fn finish(&mut self) -> Result<(), Failure> {
        self.op(&Op::Commit)?;
        let records = self
            .engine
            .golden_records()
            .map_err(|e| format!("[engine error] golden_records: {e}"))?;
        let live = self
            .engine
            .customer_count()
            .map_err(|e| format!("[engine error] customer_count: {e}"))?;
        ensure!(
            live == records.len() as i64,
            "{live} live customers counted but {} golden records",
            records.len()
        );
        for c in self.customers.clone() {
            self.engine
                .explain(&c)
                .map_err(|e| format!("[engine error] explain {c}: {e}"))?;
        }
        self.canaries += 1;
        let canary = format!(
            r#"{{"event_id":"canary-{n}","channel":"web","type":"login","occurred_at":"2026-11-20T10:00:00Z","identifiers":{{"email":"canary-{n}@fuzz.example"}}}}"#,
            n = self.canaries
        );
        let outcome = self.input(Entry::Line, canary.as_bytes(), None, None)?;
        ensure!(
            outcome == Outcome::Accepted,
            "a good event after the case was {outcome:?}"
        );
        self.op(&Op::Commit)
    }
}

impl Parsed {
    fn kind(&self) -> &'static str {
        match self {
            Parsed::Touchpoint(_) => "touchpoint",
            Parsed::Request(_) => "request",
            Parsed::Command(_) => "command",
            Parsed::Reference => "reference record",
            Parsed::Refused => "refused input",
        }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Accepted => "accepted",
        Outcome::Rejected => "rejected",
        Outcome::Duplicate => "duplicate",
        Outcome::Suppressed => "suppressed",
        Outcome::RequestDone => "request done",
        Outcome::CommandDone => "command done",
        Outcome::ReferenceApplied => "reference applied",
    }
}

/// The topic a record of that kind comes from.
pub fn topic_of(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Touchpoint => "touchpoints.web",
        InputKind::Request => "gdpr.requests",
        InputKind::Command => "identity.commands",
        InputKind::Reference => "reference.products",
    }
}

/// The kind of the records of a topic, as the runtime tells it.
pub fn kind_of_topic(topic: &str) -> InputKind {
    match topic {
        "gdpr.requests" => InputKind::Request,
        "identity.commands" => InputKind::Command,
        _ => InputKind::Touchpoint,
    }
}

fn parse(
    engine: &Engine,
    formats: Option<&InputFormats>,
    entry: Entry,
    record: &Record,
) -> Result<Input, Rejection> {
    match entry {
        Entry::Line => engine.parse_line(record.bytes),
        Entry::Typed(kind) => engine.parse(kind, record.bytes),
        Entry::Document(kind) => {
            let doc = serde_json::from_slice::<Map<String, Value>>(record.bytes)
                .map_err(|e| Rejection::NotJson(e.to_string()));
            engine.parse_document(kind, doc)
        }
        Entry::Topic(topic) => {
            let kind = kind_of_topic(topic);
            match formats {
                Some(f) if unicus::kafka::avro::is_framed(record.bytes) => {
                    engine.parse_document(kind, f.document(topic, record.bytes))
                }
                _ => engine.parse(kind, record.bytes),
            }
        }
    }
}

/// The first keys that differ between two store contents.
fn store_difference(before: &[(Vec<u8>, Vec<u8>)], after: &[(Vec<u8>, Vec<u8>)]) -> String {
    let a: HashMap<_, _> = before.iter().cloned().collect();
    let b: HashMap<_, _> = after.iter().cloned().collect();
    let mut changed: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| escaped(k))
        .collect();
    changed.sort();
    changed.dedup();
    changed.truncate(8);
    changed.join(", ")
}
