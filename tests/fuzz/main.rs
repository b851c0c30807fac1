//! Fuzz suite (issue #21): no input record may panic the engine, escape the accounting,
//! change state when refused, or stall the stream. Structure-aware generators, on stable.
//!
//! The corpus in tests/fuzz/corpus/ is replayed first, then each generator runs a
//! bounded number of cases (a case: a fresh engine over a temporary store, given a
//! sequence of inputs, commits, timer ticks and retention sweeps). After every input the
//! harness (tests/fuzz/harness.rs) checks:
//!
//! - `consumed` moved by one, and exactly one of `rejected` (any reason), `duplicates`,
//!   `suppressed`, or the input source's `accepted` (a touchpoint resolved, a request or
//!   a command carried out) moved by one; so that always
//!   `consumed == accepted + rejected_total + duplicates + suppressed + requests done +
//!   commands done` and `consumed == Σ by_source total`, with requests done equal to
//!   `requests[export] + requests[erase] + requests[not_found]`;
//! - a rejected input gives one dead letter with its bytes and a declared reason header,
//!   and a rejected or duplicate input leaves the whole store (committed and staged,
//!   [`unicus::store::Store::audit_scan`]) as it was;
//! - an accepted event gives its `touchpoints.resolved` record, a request done its
//!   receipt (and an erased customer has no golden record left), a command done its
//!   `identity.changes` record; every output can be written as a replay line and in its
//!   topic's Avro schema;
//! - no input, commit, tick or sweep takes more than `UNICUS_FUZZ_HANG_MS` (2,000 ms);
//!   a watchdog ends the process if one runs past `UNICUS_FUZZ_ABORT_S` (120 s);
//! - at the end of a case, the state still answers its queries, live customers equal
//!   golden records, and a good event is accepted.
//!
//! Settings: `UNICUS_FUZZ_CASES` (cases per generator), `UNICUS_FUZZ_SEED` (a number, or
//! `random`), `UNICUS_FUZZ_KEEP_GOING=1` (go on after a failure, report them all).
//! A failing case is minimised and written to `target/tmp/fuzz-failures/`.

mod avro;
mod doc;
mod gen;
mod harness;
mod seeds;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use unicus::engine::InputKind;

use avro::AvroWorld;
use doc::J;
use harness::{Entry, Harness, Op, Outcome, INPUTS, MAX_INPUT_NANOS, OUTCOMES};

// ----------------------------------------------------------------------- operations

fn timestamp() -> BoxedStrategy<Option<i64>> {
    prop_oneof![
        6 => Just(None),
        3 => (1_700_000_000_000i64..1_900_000_000_000).prop_map(Some),
        1 => prop::sample::select(&[0, -1, i64::MIN, i64::MAX, 253_402_300_799_999, 253_402_300_800_000][..])
            .prop_map(Some),
    ]
    .boxed()
}

fn key() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(None),
        1 => prop::collection::vec(any::<u8>(), 0..24).prop_map(Some),
    ]
    .boxed()
}

/// How a record of `kind` reaches the engine: mostly as it would, sometimes on the
/// topic of another kind.
fn entry(kind: InputKind) -> BoxedStrategy<Entry> {
    const KINDS: [InputKind; 3] = [
        InputKind::Touchpoint,
        InputKind::Request,
        InputKind::Command,
    ];
    prop_oneof![
        4 => Just(Entry::Line),
        4 => Just(Entry::Typed(kind)),
        2 => Just(Entry::Document(kind)),
        1 => prop::sample::select(&KINDS[..]).prop_map(Entry::Typed),
        1 => prop::sample::select(&KINDS[..]).prop_map(Entry::Document),
    ]
    .boxed()
}

/// A generated input of `kind`, mutated by up to `mutations` changes.
fn input(
    kind: InputKind,
    doc: BoxedStrategy<J>,
    mutations: std::ops::Range<usize>,
) -> BoxedStrategy<Op> {
    (
        entry(kind),
        doc,
        prop::collection::vec(gen::mutation(), mutations),
        timestamp(),
        key(),
    )
        .prop_map(|(entry, doc, mutations, timestamp, key)| Op::Input {
            entry,
            bytes: gen::apply(doc, &mutations),
            timestamp,
            key,
        })
        .boxed()
}

/// Wall-clock times of ticks and sweeps: now-ish, or far in the future.
fn control() -> BoxedStrategy<Op> {
    let now = prop_oneof![
        4 => 1_760_000_000_000i64..1_830_000_000_000,
        1 => Just(253_402_300_799_999i64),
    ];
    prop_oneof![
        3 => Just(Op::Commit),
        1 => Just(Op::CommitInBackground),
        2 => now.clone().prop_map(Op::Tick),
        1 => now.prop_map(Op::Sweep),
    ]
    .boxed()
}

/// Arbitrary bytes, or a soup of JSON tokens.
fn raw_bytes() -> BoxedStrategy<Vec<u8>> {
    const TOKENS: [&str; 24] = [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "\"event_id\"",
        "\"request_id\"",
        "\"command_id\"",
        "\"kind\"",
        "\"erase\"",
        "\"merge\"",
        "\"identifiers\"",
        "\"email\"",
        "null",
        "true",
        "1e309",
        "-0",
        "\"2026-11-20T10:00:00Z\"",
        "\\u0000",
        "\u{feff}",
        "\u{0}",
        " ",
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => prop::collection::vec(prop::sample::select(&TOKENS[..]), 0..48)
            .prop_map(|t| t.concat().into_bytes()),
    ]
    .boxed()
}

/// Hundreds of records over tiny pools of identifiers and names, each touchpoint with an
/// id of its own: the state grows (generic values, crowded blocking keys, long merge
/// chains) and each input must still be handled in bounded time.
fn crowd() -> BoxedStrategy<Vec<Op>> {
    let record = prop_oneof![
        18 => gen::touchpoint().prop_map(|t| (InputKind::Touchpoint, t)),
        1 => gen::request().prop_map(|r| (InputKind::Request, r)),
        1 => gen::command().prop_map(|c| (InputKind::Command, c)),
    ];
    prop::collection::vec(record, 100..300)
        .prop_map(|records| {
            let mut ops = Vec::new();
            for (i, (kind, mut doc)) in records.into_iter().enumerate() {
                if let (InputKind::Touchpoint, J::Obj(fields)) = (kind, &mut doc) {
                    for (k, v) in fields.iter_mut() {
                        if k == "event_id" {
                            *v = J::Str(format!("crowd-{i}"));
                        }
                    }
                }
                ops.push(Op::Input {
                    entry: Entry::Typed(kind),
                    bytes: doc.render(),
                    timestamp: None,
                    key: None,
                });
                if i % 32 == 31 {
                    ops.push(Op::Commit);
                }
            }
            ops
        })
        .boxed()
}

struct Generator {
    name: &'static str,
    ops: BoxedStrategy<Vec<Op>>,
    /// Its share of the cases per generator (a crowd case is a hundred ordinary ones).
    share: u32,
}

fn generators(world: &AvroWorld) -> Vec<Generator> {
    use InputKind::*;
    let ops =
        |op: BoxedStrategy<Op>, len: std::ops::Range<usize>| prop::collection::vec(op, len).boxed();
    vec![
        Generator {
            name: "crowd",
            ops: crowd(),
            share: 20,
        },
        Generator {
            name: "touchpoints",
            ops: ops(
                prop_oneof![
                    14 => input(Touchpoint, gen::touchpoint(), 0..1),
                    6 => input(Touchpoint, gen::touchpoint(), 1..3),
                    2 => control(),
                ]
                .boxed(),
                1..24,
            ),
            share: 1,
        },
        Generator {
            name: "mixed",
            ops: ops(
                prop_oneof![
                    10 => input(Touchpoint, gen::touchpoint(), 0..1),
                    4 => input(Request, gen::request(), 0..1),
                    4 => input(Command, gen::command(), 0..1),
                    3 => prop_oneof![
                        input(Touchpoint, gen::touchpoint(), 1..3),
                        input(Request, gen::request(), 1..3),
                        input(Command, gen::command(), 1..3),
                    ],
                    2 => control(),
                ]
                .boxed(),
                1..32,
            ),
            share: 1,
        },
        Generator {
            name: "mutated",
            ops: ops(
                prop_oneof![
                    6 => input(Touchpoint, gen::touchpoint(), 1..5),
                    2 => input(Request, gen::request(), 1..5),
                    2 => input(Command, gen::command(), 1..5),
                    1 => control(),
                ]
                .boxed(),
                1..16,
            ),
            share: 1,
        },
        Generator {
            name: "bytes",
            ops: ops(
                prop_oneof![
                    8 => (entry(Touchpoint), raw_bytes(), timestamp()).prop_map(|(entry, bytes, timestamp)| {
                        Op::Input { entry, bytes, timestamp, key: None }
                    }),
                    1 => control(),
                ]
                .boxed(),
                1..16,
            ),
            share: 1,
        },
        Generator {
            name: "avro",
            ops: ops(
                prop_oneof![
                    10 => avro::avro_op(&world.writers),
                    2 => input(Touchpoint, gen::touchpoint(), 0..2).prop_map(|op| match op {
                        // The same events as JSON on an Avro topic, as a mixed producer would.
                        Op::Input { bytes, timestamp, key, .. } => Op::Input {
                            entry: Entry::Topic("touchpoints.web"), bytes, timestamp, key,
                        },
                        other => other,
                    }),
                    1 => control(),
                ]
                .boxed(),
                1..24,
            ),
            share: 1,
        },
    ]
}

// -------------------------------------------------------------------------- runs

/// Cases per generator: a bounded default for the test command, more by the variable.
fn cases() -> u32 {
    harness::env_u64("UNICUS_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32)
}

const DEFAULT_CASES: u32 = 2_000;

fn seed() -> u64 {
    match std::env::var("UNICUS_FUZZ_SEED").as_deref() {
        Ok("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(21, |d| d.as_nanos() as u64),
        _ => harness::env_u64("UNICUS_FUZZ_SEED").unwrap_or(0x2100_0007),
    }
}

/// What a generator's run found.
#[derive(Default)]
struct Report {
    cases: u64,
    inputs: u64,
    crashes: u64,
    hangs: u64,
    violations: u64,
    max_input: Duration,
    wall: Duration,
    failures: Vec<String>,
}

fn run_generator(
    g: &Generator,
    world: &AvroWorld,
    cases: u32,
    seed: u64,
    keep_going: bool,
) -> Report {
    let mut report = Report::default();
    let started = Instant::now();
    let inputs_before = INPUTS.load(Ordering::Relaxed);
    MAX_INPUT_NANOS.store(0, Ordering::Relaxed);
    let mut left = cases;
    let mut round = 0u64;
    while left > 0 {
        // Cases that passed before the first failure (shrinking runs more, not counted).
        let passed = AtomicU64::new(0);
        let failed = AtomicBool::new(false);
        let config = Config {
            cases: left,
            failure_persistence: None,
            max_shrink_iters: 2_000,
            max_shrink_time: 120_000,
            ..Config::default()
        };
        let mut rng_seed = [0u8; 32];
        rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
        rng_seed[8..16].copy_from_slice(&round.to_le_bytes());
        rng_seed[16..16 + g.name.len().min(16)]
            .copy_from_slice(&g.name.as_bytes()[..g.name.len().min(16)]);
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed));
        let result = runner.run(&g.ops, |ops| {
            let formats = (g.name == "avro").then_some(&world.formats);
            let result = guarded(|| Harness::new(formats).run(&ops));
            match &result {
                Ok(()) if !failed.load(Ordering::Relaxed) => {
                    passed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(()) => {}
                Err(_) => failed.store(true, Ordering::Relaxed),
            }
            result.map_err(TestCaseError::fail)
        });
        let done = match &result {
            Ok(()) => left,
            Err(_) => (passed.load(Ordering::Relaxed) as u32 + 1).min(left),
        };
        report.cases += u64::from(done);
        left -= done.min(left);
        if let Err(e) = result {
            let (reason, ops) = match e {
                TestError::Fail(reason, ops) => (reason.message().to_string(), Some(ops)),
                TestError::Abort(reason) => (reason.message().to_string(), None),
            };
            if reason.starts_with("[hang]") {
                report.hangs += 1;
            } else if reason.starts_with("[crash]") {
                report.crashes += 1;
            } else {
                report.violations += 1;
            }
            let saved = ops.map(|ops| save_failure(g.name, seed, round, &reason, &ops));
            report.failures.push(format!(
                "{} (seed {seed}, round {round}): {reason}\n  minimal case: {}",
                g.name,
                saved.unwrap_or_default()
            ));
            if !keep_going {
                break;
            }
        }
        round += 1;
    }
    report.inputs = INPUTS.load(Ordering::Relaxed) - inputs_before;
    report.max_input = Duration::from_nanos(MAX_INPUT_NANOS.load(Ordering::Relaxed));
    report.wall = started.elapsed();
    report
}

thread_local! {
    /// The last panic of this thread while [`guarded`] runs it, instead of its printing.
    static PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a case; a panic in it becomes a `[crash]` failure with its message and place,
/// not printed (shrinking panics many times over).
fn guarded(case: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(|g| g.get()) {
                PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                default(info);
            }
        }));
    });
    GUARDED.with(|g| g.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case));
    GUARDED.with(|g| g.set(false));
    result.unwrap_or_else(|_| {
        let message = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
        Err(format!("[crash] {message}"))
    })
}

/// Writes a minimised failing case where it can be turned into a corpus file: its
/// operations, and each input's bytes in a file of its own.
fn save_failure(generator: &str, seed: u64, round: u64, reason: &str, ops: &[Op]) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let stem = format!("{generator}-{seed}-{round}");
    let mut text = format!("{reason}\n\n");
    for (i, op) in ops.iter().enumerate() {
        text.push_str(&format!("{i}: {op:?}\n"));
        if let Op::Input { bytes, .. } = op {
            let _ = std::fs::write(dir.join(format!("{stem}-{i}.bin")), bytes);
        }
    }
    let path = dir.join(format!("{stem}.txt"));
    let _ = std::fs::write(&path, text);
    format!("{} ({} operations)", path.display(), ops.len())
}

#[test]
fn hostile_input_never_panics_stalls_escapes_accounting_or_changes_state_when_refused() {
    let started = Instant::now();
    let world = AvroWorld::start();
    let corpus = seeds::replay(&world).unwrap_or_else(|e| panic!("corpus: {e}"));
    OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    eprintln!("fuzz: corpus replayed, {corpus} inputs");

    let (cases, seed) = (cases(), seed());
    let keep_going = std::env::var("UNICUS_FUZZ_KEEP_GOING").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut total_inputs = 0;
    for g in generators(&world) {
        let r = run_generator(&g, &world, (cases / g.share).max(1), seed, keep_going);
        eprintln!(
            "fuzz: {:<11} cases {:>7}  inputs {:>8}  crashes {}  hangs {}  violations {}  max/input {:>8.1?}  wall {:.1?}",
            g.name, r.cases, r.inputs, r.crashes, r.hangs, r.violations, r.max_input, r.wall
        );
        let outcomes = std::mem::take(&mut *OUTCOMES.lock().unwrap_or_else(|e| e.into_inner()));
        let outcomes: Vec<String> = outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        eprintln!("fuzz: {:<11} outcomes: {}", "", outcomes.join(", "));
        total_inputs += r.inputs;
        failures.extend(r.failures);
    }
    eprintln!(
        "fuzz: seed {seed}, {cases} cases per generator, {total_inputs} inputs in {:.1?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

// ------------------------------------------------------------- the harness itself

/// The harness tells each outcome apart, so that its accounting checks can fail.
#[test]
fn the_harness_tells_every_outcome_apart() {
    let mut h = Harness::new(None);
    let event = br#"{"event_id":"e1","channel":"web","type":"login","occurred_at":"2026-11-20T10:00:00Z","identifiers":{"email":"a@example.org"}}"#;
    let mut outcome = |bytes: &[u8]| h.input(Entry::Line, bytes, None, None).unwrap();
    assert_eq!(outcome(event), Outcome::Accepted);
    assert_eq!(outcome(event), Outcome::Duplicate);
    assert_eq!(outcome(b"{not json"), Outcome::Rejected);
    assert_eq!(
        outcome(br#"{"command_id":"c1","kind":"merge","customer_ids":["cus_x","cus_y"]}"#),
        Outcome::Rejected,
        "a command that cannot be carried out is a dead letter"
    );
    assert_eq!(
        outcome(br#"{"request_id":"r1","kind":"erase","identifier":{"type":"email","value":"a@example.org"}}"#),
        Outcome::RequestDone
    );
    let again = br#"{"event_id":"e2","channel":"web","type":"login","occurred_at":"2026-11-20T11:00:00Z","identifiers":{"email":"a@example.org"}}"#;
    assert_eq!(
        outcome(again),
        Outcome::Suppressed,
        "an erased person's event is dropped"
    );
    h.finish().unwrap();
}

/// The placeholders of requests and commands reach a merged-away customer id: the
/// corpus scenario that merges two customers and then asks to erase the one merged away.
#[test]
fn a_request_can_name_a_merged_away_customer() {
    let path = seeds::corpus_dir().join("json/erase-merged-away-customer.jsonl");
    let records = seeds::lines(&std::fs::read(path).unwrap());
    let mut h = Harness::new(None);
    let mut outcomes = Vec::new();
    for r in &records {
        outcomes.push(h.input(Entry::Line, &r.bytes, r.timestamp, None).unwrap());
    }
    assert!(
        String::from_utf8_lossy(&records.last().unwrap().bytes).contains("@MERGED0@"),
        "the scenario ends with a request naming a merged-away id"
    );
    assert_eq!(outcomes.last(), Some(&Outcome::RequestDone), "{outcomes:?}");
    h.finish().unwrap();
}

/// Every hostile case named in issue #21 has its corpus file.
#[test]
fn the_corpus_holds_every_known_hostile_case() {
    let names: Vec<String> = seeds::files("json")
        .iter()
        .chain(seeds::files("avro").iter())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "event-dated-9999.jsonl",
        "attributes-200-keys.jsonl",
        "attribute-key-500kb.jsonl",
        "attribute-key-fullwidth-health.jsonl",
        "attribute-key-zero-width-health.jsonl",
        "attribute-key-cyrillic-health.jsonl",
        "attribute-key-uppercase-accented-health.jsonl",
        "attribute-key-sante.jsonl",
        "identifiers-duplicate-keys.jsonl",
        "channel-foo.jsonl",
        "purchase-negative-total.jsonl",
        "number-1e309.jsonl",
        "number-400-digits.jsonl",
        "empty-values.jsonl",
        "bom-before-object.jsonl",
        "erase-merged-away-customer.jsonl",
        "export-merged-away-customer.jsonl",
        "request-broker-timestamp-year-10000.jsonl",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "corpus/json/{wanted} is missing"
        );
    }
}
