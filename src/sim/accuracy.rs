//! The accuracy benchmark of identity resolution: `unicus bench accuracy`.
//!
//! A labelled stream (see "Labelled mode" in [`crate::sim::generate`]), or a file of events
//! with its ground truth (`--input events.jsonl --truth truth.csv`), goes through the
//! engine by the replay path ([`replay::run`], an on-disk store, an output file) twice:
//! deterministic matching only, then deterministic and fuzzy matching
//! ([`set_fuzzy`]). Each run's output stream is then scored against the truth:
//!
//! * the final customer of an event is the `customer_id` of its `touchpoints.resolved`
//!   record followed through every later `identity.changes` merge (`merged_ids` →
//!   `customer_id`), by union-find over the whole output; an event without a customer
//!   (`unresolved`) or without a resolved record is a cluster of its own; `split`
//!   records are counted and otherwise ignored (a split moves source profiles the
//!   output does not list, so the events it moves cannot be known from the stream);
//! * **pairwise precision** is the share of pairs of labelled events put in one
//!   customer that belong to one true person, **recall** the share of pairs of one
//!   true person put in one customer, F1 their harmonic mean. They come from the
//!   contingency counts `n(person, customer)` ([`pair_counts`]), never from pairs
//!   themselves: `Σ C(n, 2)` over cells, rows and columns;
//! * the largest customer (its events, its source profiles from the golden record,
//!   the true persons it mixes), merges whose two sides were mostly different true
//!   persons (by rule and identifier types), and replay events/s.
//!
//! **Cost.** `--fuzzy-share S` (0.2 by default) sets the share of identifier-less
//! paper forms so that about `S` of the labelled events need fuzzy candidates, and
//! the events/s of each mode and their ratio are printed: the mean of `--rounds`
//! replays per mode (2 by default) in ABBA order, after a warm-up replay of the
//! stream's first fifth, so that neither mode alone meets a cold allocator or the
//! drift of a busy machine; each replay goes into a fresh on-disk store and writes its
//! output to a file, as `unicus replay` does. Until the engine counts the
//! events that looked up fuzzy candidates (`Stats::fuzzy_searches`), that share is
//! estimated from the stream ([`FuzzyDemand`]): events with person data that carry no
//! usable identifier or start a new source profile (channel and strongest identifier,
//! as resolve anchors them), i.e. events deterministic matching cannot place among
//! known profiles.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::engine::config::EngineConfig;
use crate::engine::resolve::Resolver;
use crate::engine::Stats;
use crate::replay;
use crate::sim::generate::{self, GenerateOptions, Generator};

/// Switches fuzzy matching on or off in an engine configuration.
pub fn set_fuzzy(config: &mut EngineConfig, enabled: bool) {
    config.matching.enabled = enabled;
}

/// Events that looked up fuzzy candidates, as the engine counts them.
fn fuzzy_searches(stats: &Stats) -> Option<u64> {
    Some(stats.fuzzy_searches)
}

// ---------------------------------------------------------------------------
// Pairwise metrics
// ---------------------------------------------------------------------------

/// Pair counts of a clustering against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Pairs of events of one true person.
    pub true_pairs: u128,
    /// Pairs of events put in one cluster.
    pub predicted_pairs: u128,
    /// Pairs of events of one true person put in one cluster.
    pub agreeing_pairs: u128,
}

impl PairCounts {
    /// 1 when no pair was put together (nothing claimed, nothing wrong).
    pub fn precision(&self) -> f64 {
        ratio(self.agreeing_pairs, self.predicted_pairs)
    }

    /// 1 when no true pair exists (nothing to find).
    pub fn recall(&self) -> f64 {
        ratio(self.agreeing_pairs, self.true_pairs)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(num: u128, den: u128) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

fn pairs(n: u64) -> u128 {
    let n = u128::from(n);
    n * n.saturating_sub(1) / 2
}

/// Pair counts from `(true person, cluster)` per event, in one pass over the events
/// and one over the contingency cells.
pub fn pair_counts(events: impl IntoIterator<Item = (u32, u64)>) -> PairCounts {
    let mut cells: HashMap<(u32, u64), u64> = HashMap::new();
    let mut persons: HashMap<u32, u64> = HashMap::new();
    let mut clusters: HashMap<u64, u64> = HashMap::new();
    for (person, cluster) in events {
        *cells.entry((person, cluster)).or_default() += 1;
        *persons.entry(person).or_default() += 1;
        *clusters.entry(cluster).or_default() += 1;
    }
    PairCounts {
        true_pairs: persons.values().map(|&n| pairs(n)).sum(),
        predicted_pairs: clusters.values().map(|&n| pairs(n)).sum(),
        agreeing_pairs: cells.values().map(|&n| pairs(n)).sum(),
    }
}

// ---------------------------------------------------------------------------
// Ground truth
// ---------------------------------------------------------------------------

/// `event_id` → index of the true person.
pub type Truth = HashMap<String, u32>;

/// Reads a truth file as `unicus generate --truth` writes it: a CSV header
/// `event_id,person`, then one row per event (RFC 4180 quoting allowed).
pub fn read_truth(reader: impl BufRead) -> Result<Truth> {
    let mut truth = Truth::new();
    let mut lines = reader.lines();
    match lines.next().transpose()? {
        Some(header) if header.trim() == "event_id,person" => {}
        Some(header) => bail!("truth: the header must be `event_id,person`, found `{header}`"),
        None => bail!("truth: empty file"),
    }
    for (i, line) in lines.enumerate() {
        let line = line?;
        let row = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        let (id, person) = split_row(&line).with_context(|| format!("truth line {row}"))?;
        let person: u32 = person
            .trim()
            .parse()
            .with_context(|| format!("truth line {row}: `{person}` is not a person index"))?;
        if truth.insert(id.into_owned(), person).is_some() {
            bail!("truth line {row}: event id seen twice");
        }
    }
    Ok(truth)
}

/// `id,person` or `"quoted, id",person`.
fn split_row(line: &str) -> Result<(Cow<'_, str>, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut id = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '"' {
                id.push(c);
                continue;
            }
            if rest[i + 1..].starts_with('"') {
                id.push('"');
                chars.next();
                continue;
            }
            let tail = &rest[i + 1..];
            let Some(person) = tail.strip_prefix(',') else {
                bail!("expected `,` after the quoted event id");
            };
            return Ok((id.into(), person));
        }
        bail!("unterminated quote");
    }
    match line.rsplit_once(',') {
        Some((id, person)) if !id.is_empty() => Ok((id.into(), person)),
        _ => bail!("expected `event_id,person`"),
    }
}

// ---------------------------------------------------------------------------
// Scoring an output stream
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct Line<T> {
    topic: String,
    value: Option<T>,
}

#[derive(Deserialize)]
struct Resolved<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    resolution: Option<Resolution<'a>>,
}

#[derive(Deserialize)]
struct Resolution<'a> {
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    matched_on: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Change<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    customer_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    merged_ids: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    rule: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    matched_on: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default)]
    identifiers: Value,
}

/// The topic of a replay output line, read from its start when it is written the
/// way [`crate::model::output::OutputRecord::write_replay_line`] writes it.
fn fast_topic(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(r#"{"topic":""#)?;
    rest.split_once('"').map(|(topic, _)| topic)
}

/// Union-find over customer ids; each root knows its events per true person.
#[derive(Default)]
struct Customers {
    index: HashMap<String, u32>,
    ids: Vec<String>,
    parent: Vec<u32>,
    /// Of a root: the id its cluster goes by (the last survivor).
    name: Vec<u32>,
    /// Of a root: labelled events per true person.
    people: Vec<HashMap<u32, u64>>,
}

impl Customers {
    fn intern(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.index.insert(id.to_string(), i);
        self.ids.push(id.to_string());
        self.parent.push(i);
        self.name.push(i);
        self.people.push(HashMap::new());
        i
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// The true person with most events in a root's cluster.
    fn majority(&self, root: u32) -> Option<u32> {
        self.people[root as usize]
            .iter()
            .max_by_key(|(person, n)| (**n, std::cmp::Reverse(**person)))
            .map(|(person, _)| *person)
    }

    /// Merges `merged` into `survivor`; whether their majorities differed, if both
    /// had labelled events.
    fn merge(&mut self, survivor: u32, merged: u32) -> Option<bool> {
        let (s, m) = (self.find(survivor), self.find(merged));
        if s == m {
            return None;
        }
        let differ = match (self.majority(s), self.majority(m)) {
            (Some(a), Some(b)) => Some(a != b),
            _ => None,
        };
        let name = self.name[s as usize];
        let (big, small) = if self.people[s as usize].len() >= self.people[m as usize].len() {
            (s, m)
        } else {
            (m, s)
        };
        let moved = std::mem::take(&mut self.people[small as usize]);
        for (person, n) in moved {
            *self.people[big as usize].entry(person).or_default() += n;
        }
        self.parent[small as usize] = big;
        self.name[big as usize] = name;
        differ
    }
}

/// A merge that joined two clusters whose majorities were different true persons.
#[derive(Debug, Clone)]
pub struct FalseMerge {
    pub event_id: String,
    pub rule: String,
    pub matched_on: String,
    pub identifiers: Value,
    pub survivor_person: u32,
    pub merged_person: u32,
}

/// The largest customer of a run.
#[derive(Debug, Clone, Default)]
pub struct Largest {
    pub customer_id: String,
    pub events: u64,
    pub persons: u64,
    /// From the golden record, filled in by the caller that still has the engine.
    pub source_profiles: Option<u64>,
}

/// One run's output scored against the truth.
#[derive(Debug, Clone, Default)]
pub struct Score {
    /// Labelled events (truth rows).
    pub events: u64,
    pub persons: u64,
    /// Final customers among the labelled events (unresolved and missing events count
    /// as one each).
    pub clusters: u64,
    pub counts: PairCounts,
    pub largest: Largest,
    /// The customer mixing the most true persons.
    pub most_mixed: Largest,
    /// Events placed in a customer whose events so far were mostly another true
    /// person's, by `method matched_on…` (joins through a source profile's anchor
    /// included, which write no merge record).
    pub wrong_joins: BTreeMap<String, u64>,
    /// Customers holding events of more than one true person.
    pub mixed_clusters: u64,
    /// `resolution.method` of the labelled events.
    pub methods: BTreeMap<String, u64>,
    /// Labelled events without a `touchpoints.resolved` record (rejected, suppressed).
    pub missing: u64,
    /// Resolved records whose event id is not in the truth.
    pub unlabelled: u64,
    /// Merge records, and those of them with a rule other than `deterministic`.
    pub merges: u64,
    pub fuzzy_merges: u64,
    /// Merges whose two sides were mostly different true persons, by
    /// `rule matched_on…`.
    pub false_merges: BTreeMap<String, u64>,
    pub false_merge_examples: Vec<FalseMerge>,
    pub suggestions: u64,
    pub splits: u64,
    /// The final cluster of each labelled event (an event without a customer has one
    /// of its own), for [`crate::sim::partition::score`].
    pub clusters_of: HashMap<String, u64>,
}

/// Scores a replay output stream (one `{"topic", "key", "value"}` line per record)
/// against `truth`, keeping up to `examples` false merges.
pub fn score_output(reader: impl BufRead, truth: &Truth, examples: usize) -> Result<Score> {
    let mut score = Score::default();
    let mut customers = Customers::default();
    // Per labelled event seen: its person and customer (None: a cluster of its own).
    let mut events: HashMap<&str, (u32, Option<u32>)> = HashMap::with_capacity(truth.len());
    for (i, line) in reader.lines().enumerate() {
        let line = line.context("reading the replay output")?;
        let topic = match fast_topic(&line) {
            Some(t) => Cow::Borrowed(t),
            None => match serde_json::from_str::<Line<serde::de::IgnoredAny>>(&line) {
                Ok(l) => Cow::Owned(l.topic),
                Err(e) => bail!("output line {}: {e}", i + 1),
            },
        };
        match topic.as_ref() {
            "touchpoints.resolved" => {
                let record: Line<Resolved> = serde_json::from_str(&line)
                    .with_context(|| format!("output line {}", i + 1))?;
                let Some(v) = record.value else { continue };
                let Some((id, &person)) = truth.get_key_value(v.event_id.as_ref()) else {
                    score.unlabelled += 1;
                    continue;
                };
                let (method, matched_on) = match v.resolution {
                    Some(r) => (
                        r.method.map_or_else(|| "?".to_string(), Cow::into_owned),
                        r.matched_on.join("+"),
                    ),
                    None => ("?".to_string(), String::new()),
                };
                let customer = v.customer_id.map(|c| customers.intern(&c));
                if events.insert(id, (person, customer)).is_some() {
                    bail!(
                        "output line {}: a second resolved record for one event",
                        i + 1
                    );
                }
                if let Some(c) = customer {
                    let root = customers.find(c);
                    if customers.majority(root).is_some_and(|m| m != person) {
                        *score
                            .wrong_joins
                            .entry(format!("{method} {matched_on}"))
                            .or_default() += 1;
                    }
                    *customers.people[root as usize].entry(person).or_default() += 1;
                }
                *score.methods.entry(method).or_default() += 1;
            }
            "identity.changes" => {
                let record: Line<Change> = serde_json::from_str(&line)
                    .with_context(|| format!("output line {}", i + 1))?;
                let Some(change) = record.value else { continue };
                match change.kind.as_ref() {
                    "merge" => {
                        let Some(survivor) = change.customer_id.as_deref() else {
                            continue;
                        };
                        score.merges += 1;
                        let rule = change.rule.as_deref().unwrap_or("?");
                        if rule != "deterministic" {
                            score.fuzzy_merges += 1;
                        }
                        let s = customers.intern(survivor);
                        for merged in &change.merged_ids {
                            let m = customers.intern(merged);
                            let (s_root, m_root) = (customers.find(s), customers.find(m));
                            let s_person = customers.majority(s_root);
                            let m_person = customers.majority(m_root);
                            if customers.merge(s, m) != Some(true) {
                                continue;
                            }
                            let matched_on = change.matched_on.join("+");
                            *score
                                .false_merges
                                .entry(format!("{rule} {matched_on}"))
                                .or_default() += 1;
                            if score.false_merge_examples.len() < examples {
                                score.false_merge_examples.push(FalseMerge {
                                    event_id: change.event_id.as_deref().unwrap_or("").into(),
                                    rule: rule.into(),
                                    matched_on,
                                    identifiers: change.identifiers.clone(),
                                    survivor_person: s_person.unwrap_or(u32::MAX),
                                    merged_person: m_person.unwrap_or(u32::MAX),
                                });
                            }
                        }
                    }
                    "suggestion" => score.suggestions += 1,
                    "split" => score.splits += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }

    // Clusters: roots of customers; an event without one is its own cluster.
    let mut singleton = 1u64 << 40;
    let mut assignments: Vec<(u32, u64)> = Vec::with_capacity(truth.len());
    for (id, &person) in truth {
        let cluster = match events.get(id.as_str()) {
            Some(&(_, Some(c))) => u64::from(customers.find(c)),
            Some(&(_, None)) => {
                singleton += 1;
                singleton
            }
            None => {
                score.missing += 1;
                singleton += 1;
                singleton
            }
        };
        assignments.push((person, cluster));
        score.clusters_of.insert(id.clone(), cluster);
    }
    score.events = assignments.len() as u64;
    score.persons = assignments
        .iter()
        .map(|(p, _)| *p)
        .collect::<HashSet<u32>>()
        .len() as u64;
    score.clusters = assignments
        .iter()
        .map(|(_, c)| *c)
        .collect::<HashSet<u64>>()
        .len() as u64;
    score.counts = pair_counts(assignments.iter().copied());
    for root in 0..customers.ids.len() as u32 {
        if customers.parent[root as usize] != root {
            continue;
        }
        let people = &customers.people[root as usize];
        let events: u64 = people.values().sum();
        score.mixed_clusters += u64::from(people.len() > 1);
        let this = || Largest {
            customer_id: customers.ids[customers.name[root as usize] as usize].clone(),
            events,
            persons: people.len() as u64,
            source_profiles: None,
        };
        if events > score.largest.events {
            score.largest = this();
        }
        let persons = people.len() as u64;
        if (persons, events) > (score.most_mixed.persons, score.most_mixed.events) {
            score.most_mixed = this();
        }
    }
    Ok(score)
}

// ---------------------------------------------------------------------------
// Demand for fuzzy candidates, estimated from the input
// ---------------------------------------------------------------------------

/// Counts the labelled events that need fuzzy candidates, from the input alone:
/// events with person data (a name, a birth date or an address) that have no usable
/// identifier or begin a source profile (channel + strongest usable identifier, in
/// resolve's order) not seen before.
pub struct FuzzyDemand {
    resolver: Resolver,
    priority: HashMap<String, u32>,
    anchors: HashSet<(String, String, String)>,
    pub events: u64,
    pub needing: u64,
}

impl FuzzyDemand {
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            resolver: Resolver::new(config),
            priority: config
                .identifiers
                .iter()
                .map(|(k, t)| (k.clone(), t.priority))
                .collect(),
            anchors: HashSet::new(),
            events: 0,
            needing: 0,
        }
    }

    /// One labelled input line, in stream order.
    pub fn observe(&mut self, line: &str) {
        let Ok(doc) = serde_json::from_str::<Value>(line) else {
            return;
        };
        self.events += 1;
        let channel = doc["channel"].as_str().unwrap_or("").to_string();
        let mut strongest: Option<(u32, String, String)> = None;
        for (kind, raw) in doc["identifiers"].as_object().into_iter().flatten() {
            let values: Vec<&str> = match raw {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for raw in values {
                let Some(id) = self.resolver.normalise_identifier(kind, raw) else {
                    continue;
                };
                let key = (self.priority[&id.kind], id.kind.clone(), id.value.clone());
                if strongest.as_ref().is_none_or(|s| key < *s) {
                    strongest = Some(key);
                }
            }
        }
        let person = &doc["person"];
        let has_person = ["first_name", "last_name", "birth_date", "address"]
            .iter()
            .any(|f| !person[f].is_null());
        let new_profile = match strongest {
            None => true,
            Some((_, kind, value)) => self.anchors.insert((channel, kind, value)),
        };
        if has_person && new_profile {
            self.needing += 1;
        }
    }

    pub fn share(&self) -> f64 {
        ratio(u128::from(self.needing), u128::from(self.events))
    }
}

/// The labelled events of a generated stream, and their demand for fuzzy candidates.
fn estimate(opts: &GenerateOptions, config: &EngineConfig) -> FuzzyDemand {
    let mut demand = FuzzyDemand::new(config);
    for event in Generator::new(opts.clone()) {
        if event.person.is_some() {
            demand.observe(&event.line);
        }
    }
    demand
}

/// The share of paper forms for which about `target` of the labelled events need fuzzy
/// candidates (a few generations of the stream, without writing it).
pub fn calibrate_paper_forms(opts: &GenerateOptions, config: &EngineConfig, target: f64) -> f64 {
    let at = |paper_forms: f64| {
        estimate(
            &GenerateOptions {
                paper_forms,
                ..opts.clone()
            },
            config,
        )
        .share()
    };
    let base = at(0.0);
    if base >= target {
        return 0.0;
    }
    // Each paper form needs candidates; it replaces an event that did so with
    // probability `base`.
    let mut p = ((target - base) / (1.0 - base)).clamp(0.0, 1.0);
    for _ in 0..2 {
        let share = at(p);
        if (share - target).abs() < 0.002 {
            break;
        }
        p = (p + (target - share) / (1.0 - base)).clamp(0.0, 1.0);
    }
    (p * 10_000.0).round() / 10_000.0
}

// ---------------------------------------------------------------------------
// The benchmark
// ---------------------------------------------------------------------------

/// Where the labelled events come from.
#[derive(Debug, Clone)]
pub enum Stream {
    /// `unicus generate --labelled` in memory. `paper_forms`: a share, or calibrated
    /// so that `fuzzy_share` of the events need fuzzy candidates.
    Generate {
        customers: usize,
        events: usize,
        seed: u64,
        fuzzy_share: f64,
        paper_forms: Option<f64>,
        shared_identifiers: bool,
    },
    /// An existing events file and its truth file.
    File { input: PathBuf, truth: PathBuf },
}

#[derive(Debug, Clone)]
pub struct AccuracyOptions {
    pub stream: Stream,
    pub config: EngineConfig,
    /// False merges to print as examples, per run.
    pub examples: usize,
    /// Timed replays per mode, in ABBA order (deterministic then fuzzy, then fuzzy
    /// then deterministic…) so that drift on a busy machine cancels out; the first
    /// of each mode is scored. At least 1.
    pub rounds: usize,
}

/// One replay of the stream and its score.
pub struct Run {
    pub score: Score,
    /// The mean of `rates`.
    pub events_per_second: f64,
    /// Events/s of each timed replay, in order.
    pub rates: Vec<f64>,
    pub fuzzy_searches: Option<u64>,
}

/// Replays `input` into a fresh on-disk store under `dir` and scores the output.
pub(crate) fn run_once(
    config: EngineConfig,
    input: &Path,
    truth: &Truth,
    dir: &Path,
    name: &str,
    examples: usize,
) -> Result<Run> {
    let store = dir.join(format!("store-{name}"));
    let output = dir.join(format!("out-{name}.jsonl"));
    let mut engine = replay::open_engine(config, Some(&store))?;
    let summary = {
        let reader = BufReader::with_capacity(
            1 << 20,
            File::open(input).with_context(|| format!("failed to open {}", input.display()))?,
        );
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&output)?);
        let now = chrono::Utc::now().timestamp_millis();
        let summary = replay::run(&mut engine, reader, "bench", now, &mut out, 10_000, None)?;
        out.flush()?;
        summary
    };
    let mut score = score_output(
        BufReader::with_capacity(1 << 20, File::open(&output)?),
        truth,
        examples,
    )?;
    for largest in [&mut score.largest, &mut score.most_mixed] {
        if !largest.customer_id.is_empty() {
            largest.source_profiles = engine
                .golden_record(&largest.customer_id)?
                .and_then(|g| g["source_profiles"].as_u64());
        }
    }
    drop(engine);
    std::fs::remove_file(&output).ok();
    std::fs::remove_dir_all(&store).ok();
    let rate = summary.events_per_second();
    Ok(Run {
        score,
        events_per_second: rate,
        rates: vec![rate],
        fuzzy_searches: fuzzy_searches(&summary.stats),
    })
}

/// Replays the first fifth of `input` (at most 20,000 lines) into a throwaway store.
fn warm_up(config: EngineConfig, input: &Path, dir: &Path) -> Result<u64> {
    let file = File::open(input).with_context(|| format!("failed to open {}", input.display()))?;
    let total = BufReader::new(file).lines().count();
    let take = (total / 5).min(20_000);
    let file = File::open(input)?;
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .take(take)
        .collect::<io::Result<_>>()?;
    let store = dir.join("store-warm-up");
    let mut engine = replay::open_engine(config, Some(&store))?;
    let summary = replay::run(
        &mut engine,
        lines.join("\n").as_bytes(),
        "warm-up",
        chrono::Utc::now().timestamp_millis(),
        &mut io::sink(),
        10_000,
        None,
    )?;
    drop(engine);
    std::fs::remove_dir_all(&store).ok();
    Ok(summary.records)
}

/// `unicus bench accuracy`: prints the figures to `out`.
pub fn bench(opts: &AccuracyOptions, out: &mut impl Write) -> Result<(Run, Run)> {
    let dir = tempfile::tempdir().context("failed to create a temporary directory")?;
    let (input, truth, demand) = prepare(&opts.stream, &opts.config, dir.path(), out)?;
    writeln!(
        out,
        "events needing fuzzy candidates: {:.1}% ({} of {} labelled events; estimated from the stream: person data and no identifier or a new source profile)",
        demand.share() * 100.0,
        demand.needing,
        demand.events
    )?;
    let (det, fuzzy, _) = timed_runs(
        &opts.config,
        None,
        &input,
        &truth,
        dir.path(),
        opts.rounds,
        opts.examples,
        out,
    )?;
    print_table(out, &det, &fuzzy)?;
    Ok((det, fuzzy))
}

/// The labelled stream as a file under `dir` (a generated one is written there), its
/// truth, and its demand for fuzzy candidates; says where it comes from on `out`.
pub(crate) fn prepare(
    stream: &Stream,
    config: &EngineConfig,
    dir: &Path,
    out: &mut impl Write,
) -> Result<(PathBuf, Truth, FuzzyDemand)> {
    Ok(match stream {
        Stream::File { input, truth } => {
            let truth = read_truth(BufReader::new(
                File::open(truth).with_context(|| format!("failed to open {}", truth.display()))?,
            ))?;
            let mut demand = FuzzyDemand::new(config);
            let reader = BufReader::new(
                File::open(input).with_context(|| format!("failed to open {}", input.display()))?,
            );
            for line in reader.lines() {
                let line = line?;
                let labelled = serde_json::from_str::<Value>(&line).ok().is_some_and(|v| {
                    v["event_id"]
                        .as_str()
                        .is_some_and(|id| truth.contains_key(id))
                });
                if labelled {
                    demand.observe(&line);
                }
            }
            writeln!(
                out,
                "input: {} ({} labelled events, {} true persons)",
                input.display(),
                truth.len(),
                truth.values().collect::<HashSet<_>>().len()
            )?;
            (input.clone(), truth, demand)
        }
        Stream::Generate {
            customers,
            events,
            seed,
            fuzzy_share,
            paper_forms,
            shared_identifiers,
        } => {
            let mut gen = GenerateOptions {
                seed: *seed,
                customers: *customers,
                events: *events,
                labelled: true,
                shared_identifiers: *shared_identifiers,
                ..GenerateOptions::default()
            };
            gen.paper_forms = match paper_forms {
                Some(p) => *p,
                None => calibrate_paper_forms(&gen, config, *fuzzy_share),
            };
            let input = dir.join("events.jsonl");
            let mut truth_csv = Vec::new();
            let mut w = BufWriter::new(File::create(&input)?);
            generate::write_jsonl_with_truth(gen.clone(), &mut w, &mut truth_csv)?;
            w.flush()?;
            let truth = read_truth(truth_csv.as_slice())?;
            let demand = estimate(&gen, config);
            writeln!(
                out,
                "labelled stream: {events} events over {customers} persons, seed {seed}, paper forms without identifier {:.2}% of events{}",
                gen.paper_forms * 100.0,
                if *shared_identifiers { "" } else { ", no shared identifiers" }
            )?;
            writeln!(
                out,
                "reproduce: unicus generate --labelled --customers {customers} --events {events} --seed {seed} --paper-forms {}{} -o events.jsonl --truth truth.csv",
                gen.paper_forms,
                if *shared_identifiers { "" } else { " --no-shared-identifiers" }
            )?;
            writeln!(
                out,
                "           unicus bench accuracy --input events.jsonl --truth truth.csv"
            )?;
            (input, truth, demand)
        }
    })
}

/// The timed replays of `input`, deterministic and deterministic+fuzzy (`rounds` each
/// in ABBA order after a warm-up), each scored against `truth`: the first of each
/// mode, with the events/s of all. With `third` (a configuration of its own, fuzzy
/// matching on), a third mode is timed alongside in the same rounds: each round runs
/// the modes in order, the next in reverse order.
#[allow(clippy::too_many_arguments)]
pub(crate) fn timed_runs(
    config: &EngineConfig,
    third: Option<&EngineConfig>,
    input: &Path,
    truth: &Truth,
    dir: &Path,
    rounds: usize,
    examples: usize,
    out: &mut impl Write,
) -> Result<(Run, Run, Option<Run>)> {
    let input = input.to_path_buf();
    // A throwaway replay of the stream's start first, so that neither timed run pays
    // alone for a cold allocator (freed memory is kept for reuse) and page cache.
    let warm_up = warm_up(config.clone(), &input, dir)?;
    let rounds = rounds.max(1);
    writeln!(
        out,
        "timed runs follow a warm-up replay of {warm_up} events, each into a fresh on-disk store; {rounds} per mode, in ABBA order"
    )?;
    let modes = if third.is_some() { 3 } else { 2 };
    // [deterministic, fuzzy, third]: the first run of each mode, with the rates of all.
    let mut runs: [Option<Run>; 3] = [None, None, None];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..modes).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for mode in order {
            let mut config = match (mode, third) {
                (2, Some(third)) => third.clone(),
                _ => config.clone(),
            };
            set_fuzzy(&mut config, mode != 0);
            let name = ["deterministic", "fuzzy", "third"][mode];
            let run = run_once(config, &input, truth, dir, name, examples)?;
            match &mut runs[mode] {
                Some(first) => first.rates.extend(run.rates),
                slot => *slot = Some(run),
            }
        }
    }
    for run in runs.iter_mut().flatten() {
        run.events_per_second = run.rates.iter().sum::<f64>() / run.rates.len() as f64;
    }
    let [Some(det), Some(fuzzy), third] = runs else {
        unreachable!("at least one round");
    };
    Ok((det, fuzzy, third))
}

/// One run's figures, labelled, in print order.
fn figures(run: &Run) -> Vec<(String, String)> {
    let s = &run.score;
    let c = &s.counts;
    let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_string(), |v| v.to_string());
    let sum = |m: &BTreeMap<String, u64>| m.values().sum::<u64>().to_string();
    let mut rows = Vec::with_capacity(32);
    let mut add = |label: &str, value: String| rows.push((label.to_string(), value));
    add("labelled events", s.events.to_string());
    add("true persons", s.persons.to_string());
    add("customers found", s.clusters.to_string());
    add("pairwise precision", format!("{:.4}", c.precision()));
    add("pairwise recall", format!("{:.4}", c.recall()));
    add("pairwise F1", format!("{:.4}", c.f1()));
    let agreeing = format!("{}/{}", c.agreeing_pairs, c.predicted_pairs);
    add("pairs agreeing/predicted", agreeing);
    add("pairs of one true person", c.true_pairs.to_string());
    for (name, cluster) in [("largest", &s.largest), ("most mixed", &s.most_mixed)] {
        add(
            &format!("{name} cluster: events"),
            cluster.events.to_string(),
        );
        add(
            &format!("{name} cluster: source profiles"),
            opt(cluster.source_profiles),
        );
        add(
            &format!("{name} cluster: true persons"),
            cluster.persons.to_string(),
        );
    }
    add(
        "customers mixing true persons",
        s.mixed_clusters.to_string(),
    );
    add(
        "events joining another person's customer",
        sum(&s.wrong_joins),
    );
    add("merges", s.merges.to_string());
    add("fuzzy merges", s.fuzzy_merges.to_string());
    add("merges joining different persons", sum(&s.false_merges));
    add("suggestions", s.suggestions.to_string());
    add("splits (not applied)", s.splits.to_string());
    for m in ["new", "deterministic", "fuzzy", "unresolved"] {
        let n = s.methods.get(m).copied().unwrap_or(0);
        add(&format!("events resolved `{m}`"), n.to_string());
    }
    add("events without a resolved record", s.missing.to_string());
    add("fuzzy candidate searches (engine)", opt(run.fuzzy_searches));
    add("replay events/s", format!("{:.0}", run.events_per_second));
    let rates: Vec<String> = run.rates.iter().map(|r| format!("{r:.0}")).collect();
    add("replay events/s of each run", rates.join(","));
    rows
}

fn print_table(out: &mut impl Write, det: &Run, fuzzy: &Run) -> io::Result<()> {
    writeln!(
        out,
        "\n{:<42} {:>16} {:>22}",
        "", "deterministic", "deterministic+fuzzy"
    )?;
    for ((label, x), (_, y)) in figures(det).iter().zip(figures(fuzzy)) {
        writeln!(out, "{label:<42} {x:>16} {y:>22}")?;
    }
    writeln!(
        out,
        "throughput fuzzy/deterministic: {:.3}",
        fuzzy.events_per_second / det.events_per_second.max(1e-9)
    )?;
    let by_count = |m: &BTreeMap<String, u64>| {
        let mut by: Vec<(&String, &u64)> = m.iter().collect();
        by.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        by.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (name, run) in [("deterministic", det), ("deterministic+fuzzy", fuzzy)] {
        let s = &run.score;
        if !s.wrong_joins.is_empty() {
            writeln!(
                out,
                "events joining another person's customer, {name}, by method and match: {}",
                by_count(&s.wrong_joins)
            )?;
        }
        if s.false_merges.is_empty() {
            continue;
        }
        writeln!(
            out,
            "merges joining different persons, {name}, by rule and identifiers: {}",
            by_count(&s.false_merges)
        )?;
        for e in &s.false_merge_examples {
            writeln!(
                out,
                "  {name} {} {} on {}: persons {} and {}, identifiers {}",
                e.event_id, e.rule, e.matched_on, e.survivor_person, e.merged_person, e.identifiers
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(events: &[(u32, u64)]) -> PairCounts {
        pair_counts(events.iter().copied())
    }

    #[test]
    fn perfect_clustering() {
        let c = counts(&[(1, 10), (1, 10), (2, 20), (2, 20), (2, 20)]);
        assert_eq!(
            c,
            PairCounts {
                true_pairs: 1 + 3,
                predicted_pairs: 4,
                agreeing_pairs: 4
            }
        );
        assert_eq!((c.precision(), c.recall(), c.f1()), (1.0, 1.0, 1.0));
    }

    #[test]
    fn one_false_merge() {
        // Persons 1 (2 events) and 2 (1 event) in one cluster: 3 pairs claimed, 1 true.
        let c = counts(&[(1, 7), (1, 7), (2, 7)]);
        assert_eq!(c.predicted_pairs, 3);
        assert_eq!(c.true_pairs, 1);
        assert_eq!(c.agreeing_pairs, 1);
        assert!((c.precision() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.recall(), 1.0);
        assert!((c.f1() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn split_person() {
        // Person 1's four events in two clusters of two: 6 true pairs, 2 found.
        let c = counts(&[(1, 1), (1, 1), (1, 2), (1, 2), (3, 9)]);
        assert_eq!(c.true_pairs, 6);
        assert_eq!(c.predicted_pairs, 2);
        assert_eq!(c.agreeing_pairs, 2);
        assert_eq!(c.precision(), 1.0);
        assert!((c.recall() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.f1() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn mixed_and_split() {
        // Clusters {a1 a1 b}, {a1 b b}: true pairs a:3 b:3 = 6; predicted 3+3 = 6;
        // agreeing: a1a1 in the first, bb in the second = 2.
        let c = counts(&[(1, 1), (1, 1), (2, 1), (1, 2), (2, 2), (2, 2)]);
        assert_eq!(
            (c.true_pairs, c.predicted_pairs, c.agreeing_pairs),
            (6, 6, 2)
        );
        assert!((c.precision() - 1.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn singletons_and_empty_input() {
        let c = counts(&[(1, 1), (2, 2), (3, 3)]);
        assert_eq!(
            (c.true_pairs, c.predicted_pairs, c.agreeing_pairs),
            (0, 0, 0)
        );
        assert_eq!((c.precision(), c.recall()), (1.0, 1.0));
        let c = counts(&[(1, 1), (1, 2)]);
        assert_eq!((c.precision(), c.recall(), c.f1()), (1.0, 0.0, 0.0));
        assert_eq!(counts(&[]), PairCounts::default());
    }

    #[test]
    fn truth_csv_is_read_with_quotes_and_refused_when_malformed() {
        let t = read_truth("event_id,person\nweb-1,3\n\"a,\"\"b\",4\n\nstory-0001,0\n".as_bytes())
            .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t["web-1"], 3);
        assert_eq!(t["a,\"b"], 4);
        assert_eq!(t["story-0001"], 0);
        for bad in [
            "",
            "id,who\nweb-1,3\n",
            "event_id,person\nweb-1\n",
            "event_id,person\nweb-1,x\n",
            "event_id,person\nweb-1,1\nweb-1,2\n",
            "event_id,person\n\"web-1,1\n",
        ] {
            assert!(read_truth(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    fn resolved(event: &str, customer: Option<&str>, method: &str) -> String {
        serde_json::json!({"topic": "touchpoints.resolved", "key": customer, "value": {
            "event_id": event, "customer_id": customer,
            "resolution": {"method": method, "matched_on": [], "score": null}}})
        .to_string()
    }

    fn merge(survivor: &str, merged: &[&str], rule: &str) -> String {
        serde_json::json!({"topic": "identity.changes", "key": survivor, "value": {
            "type": "merge", "customer_id": survivor, "merged_ids": merged, "rule": rule,
            "matched_on": ["phone"], "identifiers": [], "event_id": "x", "at": "t"}})
        .to_string()
    }

    #[test]
    fn merges_are_followed_to_the_final_customer() {
        let truth: Truth = [
            ("e1", 1),
            ("e2", 1),
            ("e3", 1),
            ("e4", 2),
            ("e5", 2),
            ("e6", 3),
        ]
        .into_iter()
        .map(|(e, p)| (e.to_string(), p))
        .collect();
        // e1 → A, e2 → B, then B into A; e3 → C, C into A (chain through the alias);
        // e4 → D, e5 → D; e6 unresolved; D is wrongly merged into A at the end.
        let lines = [
            resolved("e1", Some("A"), "new"),
            resolved("e2", Some("B"), "new"),
            merge("A", &["B"], "deterministic"),
            resolved("e3", Some("C"), "new"),
            r#"{"topic":"profiles.merged","key":"A","value":{"customer_id":"A"}}"#.to_string(),
            merge("A", &["C"], "deterministic"),
            resolved("e4", Some("D"), "new"),
            resolved("e5", Some("D"), "deterministic"),
            resolved("e6", None, "unresolved"),
            resolved("zz", Some("Z"), "new"),
            // A key-first serialisation takes the slow path to the topic.
            serde_json::json!({"key": "A", "topic": "identity.changes", "value": {
                "type": "merge", "customer_id": "A", "merged_ids": ["D"], "rule": "fuzzy",
                "matched_on": ["last_name"], "event_id": "e5"}})
            .to_string(),
            r#"{"topic":"identity.changes","key":"A","value":{"type":"split","customer_id":"A","new_customer_id":"E"}}"#
                .to_string(),
        ];
        let score = score_output(lines.join("\n").as_bytes(), &truth, 5).unwrap();
        // Clusters: {e1 e2 e3 e4 e5}, {e6}: predicted pairs C(5,2) = 10; true pairs
        // 3 + 1 = 4, all inside the big cluster.
        assert_eq!(score.events, 6);
        assert_eq!(score.persons, 3);
        assert_eq!(score.clusters, 2);
        assert_eq!(
            score.counts,
            PairCounts {
                true_pairs: 4,
                predicted_pairs: 10,
                agreeing_pairs: 4
            }
        );
        assert_eq!(score.largest.customer_id, "A");
        assert_eq!(score.largest.events, 5);
        assert_eq!(score.largest.persons, 2);
        assert_eq!(score.mixed_clusters, 1);
        assert_eq!(score.most_mixed.customer_id, "A");
        assert_eq!(score.most_mixed.persons, 2);
        // e5 joined D, whose events were person 2's: no wrong join.
        assert!(score.wrong_joins.is_empty(), "{:?}", score.wrong_joins);
        assert_eq!((score.merges, score.fuzzy_merges, score.splits), (3, 1, 1));
        assert_eq!(score.unlabelled, 1);
        assert_eq!(score.missing, 0);
        assert_eq!(score.methods["unresolved"], 1);
        assert_eq!(
            score.false_merges,
            BTreeMap::from([("fuzzy last_name".to_string(), 1)])
        );
        let e = &score.false_merge_examples[0];
        assert_eq!((e.survivor_person, e.merged_person), (1, 2));

        // An event without a resolved record is a cluster of its own.
        let mut more = truth.clone();
        more.insert("e7".into(), 3);
        let score = score_output(lines.join("\n").as_bytes(), &more, 0).unwrap();
        assert_eq!(score.missing, 1);
        assert_eq!(score.clusters, 3);
        assert_eq!(score.counts.true_pairs, 5);
        assert!(score.false_merge_examples.is_empty());
    }

    #[test]
    fn an_event_landing_with_another_persons_events_is_a_wrong_join() {
        let truth: Truth = [("w1", 1), ("w2", 1), ("w3", 2), ("w4", 2)]
            .into_iter()
            .map(|(e, p)| (e.to_string(), p))
            .collect();
        let mut walk_in = resolved("w3", Some("S"), "deterministic");
        walk_in = walk_in.replace(r#""matched_on":[]"#, r#""matched_on":["phone"]"#);
        let lines = [
            resolved("w1", Some("S"), "new"),
            resolved("w2", Some("S"), "deterministic"),
            walk_in,
            resolved("w4", Some("T"), "new"),
        ];
        let score = score_output(lines.join("\n").as_bytes(), &truth, 0).unwrap();
        assert_eq!(
            score.wrong_joins,
            BTreeMap::from([("deterministic phone".to_string(), 1)])
        );
        assert_eq!(score.merges, 0);
        // {w1 w2 w3}, {w4}: 3 predicted pairs, 1 right; 2 true pairs, 1 found.
        assert_eq!(
            score.counts,
            PairCounts {
                true_pairs: 2,
                predicted_pairs: 3,
                agreeing_pairs: 1
            }
        );
        assert_eq!((score.most_mixed.persons, score.most_mixed.events), (2, 3));
    }

    #[test]
    fn a_second_resolved_record_for_an_event_is_an_error() {
        let truth: Truth = [("e1".to_string(), 1)].into_iter().collect();
        let lines = [
            resolved("e1", Some("A"), "new"),
            resolved("e1", Some("A"), "deterministic"),
        ];
        assert!(score_output(lines.join("\n").as_bytes(), &truth, 0).is_err());
        assert!(score_output("not json".as_bytes(), &truth, 0).is_err());
    }

    #[test]
    fn demand_counts_person_data_without_a_known_source_profile() {
        let mut d = FuzzyDemand::new(&EngineConfig::default());
        for line in [
            // Paper form: person data, no identifier.
            r#"{"event_id":"1","channel":"store","person":{"last_name":"Roux"}}"#,
            // New web profile with a name.
            r#"{"event_id":"2","channel":"web","identifiers":{"email":"a@b.fr"},"person":{"first_name":"Léa"}}"#,
            // Same profile again (spelt differently): known.
            r#"{"event_id":"3","channel":"web","identifiers":{"email":" A@B.fr"},"person":{"first_name":"Léa"}}"#,
            // Same e-mail on another channel: a new source profile.
            r#"{"event_id":"4","channel":"crm","identifiers":{"email":"a@b.fr"},"person":{"first_name":"Léa"}}"#,
            // No person data: never fuzzy.
            r#"{"event_id":"5","channel":"web","identifiers":{"cookie_id":"c-1"}}"#,
            // A junk value only: no usable identifier, a name.
            r#"{"event_id":"6","channel":"web","identifiers":{"email":"test@test.com"},"person":{"last_name":"X"}}"#,
            // The strongest identifier anchors: the account is new here.
            r#"{"event_id":"7","channel":"web","identifiers":{"email":"a@b.fr","account_id":["CRM-1"]},"person":{"last_name":"Roux"}}"#,
            "not json",
        ] {
            d.observe(line);
        }
        assert_eq!(d.events, 7);
        assert_eq!(d.needing, 5, "events 1, 2, 4, 6 and 7");
    }
}
