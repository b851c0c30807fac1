//! `unicus generate --labelled --truth` and `unicus bench accuracy` as a user runs them.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Output};

use serde_json::Value;

fn unicus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args(args)
        .env_remove("UNICUS_LOG")
        .output()
        .unwrap()
}

/// `unicus bench accuracy` over an events file and its truth.
fn bench_file(events: &str, truth: &str) -> Output {
    unicus(&[
        "bench", "accuracy", "--input", events, "--truth", truth, "--rounds", "1",
    ])
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The table of `bench accuracy`: label → (deterministic, deterministic+fuzzy) cells.
fn table(text: &str) -> BTreeMap<String, (String, String)> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        if cells.len() < 3 || line.starts_with(' ') {
            continue;
        }
        let (label, values) = cells.split_at(cells.len() - 2);
        rows.insert(
            label.join(" "),
            (values[0].to_string(), values[1].to_string()),
        );
    }
    rows
}

fn figure(rows: &BTreeMap<String, (String, String)>, label: &str) -> (f64, f64) {
    let (a, b) = rows
        .get(label)
        .unwrap_or_else(|| panic!("no row `{label}` in {rows:#?}"));
    (a.parse().unwrap(), b.parse().unwrap())
}

/// `agreeing/predicted` as two numbers.
fn pairs(cell: &str) -> (u64, u64) {
    let (a, p) = cell.split_once('/').unwrap();
    (a.parse().unwrap(), p.parse().unwrap())
}

#[test]
fn the_benchmark_prints_sound_figures_and_is_exact_without_shared_identifiers() {
    let out = unicus(&[
        "bench",
        "accuracy",
        "--customers",
        "300",
        "--events",
        "3000",
        "--seed",
        "11",
        "--no-shared-identifiers",
    ]);
    let text = ok(&out);
    let rows = table(&text);
    for label in ["pairwise precision", "pairwise recall", "pairwise F1"] {
        let (a, b) = figure(&rows, label);
        assert!(
            (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b),
            "{label}: {text}"
        );
    }
    // Every identifier value belongs to one person: deterministic matching merges
    // only events of one person.
    let (agreeing, predicted) = pairs(&rows["pairs agreeing/predicted"].0);
    assert!(predicted > 0, "{text}");
    assert_eq!(agreeing, predicted, "{text}");
    assert_eq!(figure(&rows, "pairwise precision").0, 1.0);
    assert_eq!(figure(&rows, "customers mixing true persons").0, 0.0);
    assert_eq!(figure(&rows, "merges joining different persons").0, 0.0);
    // Paper forms and relay e-mails leave persons split: recall is not 1.
    let (recall, _) = figure(&rows, "pairwise recall");
    assert!(recall < 1.0 && recall > 0.3, "{text}");
    let (events, _) = figure(&rows, "labelled events");
    let (persons, _) = figure(&rows, "true persons");
    let (customers, _) = figure(&rows, "customers found");
    assert!(
        events > 2_900.0 && persons <= 300.0 && customers > persons,
        "{text}"
    );
    let (largest, _) = figure(&rows, "largest cluster: events");
    assert!(largest >= 1.0);
    assert_eq!(figure(&rows, "largest cluster: true persons").0, 1.0);
    let (rate, fuzzy_rate) = figure(&rows, "replay events/s");
    assert!(rate > 0.0 && fuzzy_rate > 0.0);
    // Two rounds by default: two timed replays per mode, their mean above.
    let (each, _) = &rows["replay events/s of each run"];
    let each: Vec<f64> = each.split(',').map(|r| r.parse().unwrap()).collect();
    assert_eq!(each.len(), 2, "{text}");
    assert!(
        (each.iter().sum::<f64>() / 2.0 - rate).abs() <= 1.0,
        "{text}"
    );
    assert!(text.contains("throughput fuzzy/deterministic: "), "{text}");
    let share: f64 = text
        .split("events needing fuzzy candidates: ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no share in {text}"));
    assert!((15.0..=25.0).contains(&share), "{share}% for a 20% target");
}

#[test]
fn with_shared_identifiers_deterministic_matching_makes_false_merges() {
    let text = ok(&unicus(&[
        "bench",
        "accuracy",
        "--customers",
        "1000",
        "--events",
        "10000",
        "--examples",
        "3",
        "--rounds",
        "1",
    ]));
    let rows = table(&text);
    let (precision, _) = figure(&rows, "pairwise precision");
    assert!(precision < 1.0 && precision > 0.5, "{text}");
    // Households share a phone or an e-mail: some events land with another person.
    assert!(figure(&rows, "events joining another person's customer").0 > 0.0);
    assert!(
        text.contains("events joining another person's customer, deterministic, by method"),
        "{text}"
    );
}

#[test]
fn a_generated_file_and_its_truth_reproduce_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let text = ok(&unicus(&[
        "bench",
        "accuracy",
        "--customers",
        "200",
        "--events",
        "2000",
        "--seed",
        "3",
        "--rounds",
        "1",
    ]));
    // The printed command line generates the same stream.
    let command = text
        .lines()
        .find_map(|l| l.strip_prefix("reproduce: unicus "))
        .unwrap_or_else(|| panic!("no command in {text}"));
    let mut args: Vec<String> = command.split_whitespace().map(String::from).collect();
    for arg in args.iter_mut() {
        if arg == "events.jsonl" || arg == "truth.csv" {
            *arg = p(arg);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&unicus(&args));
    let again = ok(&bench_file(&p("events.jsonl"), &p("truth.csv")));
    let (a, b) = (table(&text), table(&again));
    for label in [
        "labelled events",
        "true persons",
        "customers found",
        "pairwise precision",
        "pairwise recall",
        "pairwise F1",
        "pairs agreeing/predicted",
        "largest cluster: events",
        "merges",
    ] {
        assert_eq!(a[label], b[label], "{label}");
    }
    let share = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("events needing fuzzy candidates"))
            .map(String::from)
    };
    assert_eq!(share(&text), share(&again));
}

#[test]
fn generate_labelled_is_deterministic_and_its_truth_covers_every_valid_event() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let generate = |events: &str, truth: &str| {
        let out = unicus(&[
            "generate",
            "--labelled",
            "--customers",
            "300",
            "--events",
            "4000",
            "--invalid-rate",
            "0.02",
            "-o",
            &p(events),
            "--truth",
            &p(truth),
        ]);
        ok(&out);
        (
            std::fs::read(p(events)).unwrap(),
            std::fs::read(p(truth)).unwrap(),
        )
    };
    let first = generate("a.jsonl", "a.csv");
    assert_eq!(first, generate("b.jsonl", "b.csv"), "same seed, same bytes");

    let truth = String::from_utf8(first.1).unwrap();
    let mut rows = truth.lines();
    assert_eq!(rows.next(), Some("event_id,person"));
    let truth_ids: Vec<&str> = rows.map(|r| r.split_once(',').unwrap().0).collect();
    let unique: HashSet<&str> = truth_ids.iter().copied().collect();
    assert_eq!(unique.len(), truth_ids.len());
    assert!(truth_ids.len() < 4000, "invalid lines have no row");

    // The events the engine accepts are exactly the rows of the truth.
    ok(&unicus(&[
        "replay",
        "--input",
        &p("a.jsonl"),
        "--output",
        &p("out.jsonl"),
    ]));
    let out = std::fs::read_to_string(p("out.jsonl")).unwrap();
    let mut resolved = HashSet::new();
    let mut rejected = 0;
    for line in out.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        match record["topic"].as_str() {
            Some("touchpoints.resolved") => {
                resolved.insert(record["value"]["event_id"].as_str().unwrap().to_string());
            }
            Some("touchpoints.dlq") => rejected += 1,
            _ => {}
        }
    }
    let resolved: HashSet<&str> = resolved.iter().map(String::as_str).collect();
    assert_eq!(resolved, unique);
    assert_eq!(rejected + truth_ids.len(), 4000);
}

#[test]
fn the_default_stream_is_unchanged_on_the_command_line() {
    // The hash `generate::tests::default_output_is_pinned` holds for the library's
    // default options (start 2026-07-26), through the command's writer.
    let out = unicus(&[
        "generate",
        "--customers",
        "1000",
        "--events",
        "10000",
        "--seed",
        "42",
    ]);
    let bytes = out.stdout.clone();
    ok(&out);
    assert_eq!(xxhash_rust::xxh3::xxh3_64(&bytes), 0x79dc_4aae_e6b6_308b);
}

#[test]
fn bad_arguments_and_truth_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let out = unicus(&["generate", "--paper-forms", "0.2"]);
    assert!(!out.status.success(), "--paper-forms needs --labelled");
    let out = unicus(&["generate", "--labelled", "--paper-forms", "1.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--paper-forms"));
    let out = unicus(&["bench", "accuracy", "--input", "x.jsonl"]);
    assert!(!out.status.success(), "--input needs --truth");

    std::fs::write(p("events.jsonl"), "").unwrap();
    std::fs::write(p("truth.csv"), "event,who\nweb-1,1\n").unwrap();
    let out = bench_file(&p("events.jsonl"), &p("truth.csv"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("event_id,person"), "{err}");
}
