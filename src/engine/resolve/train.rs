//! Fitting a [`MatchModel`] (`unicus train-matching`), as Splink does:
//!
//! 1. **Records.** One per distinct statement of a person (name, birth date, address,
//!    e-mail addresses) in match-key form; exact repeats count once.
//! 2. **Term frequencies** of the fields adjusted for them, over the records (the
//!    [`TrainOptions::tf_values`] most frequent values kept).
//! 3. **u** of each level: the `exact` level from the value frequencies (the chance
//!    that two records drawn at random share a value is the sum of the squared
//!    shares), the other levels from [`TrainOptions::random_pairs`] random pairs of
//!    records, scaled to sum to one with it.
//! 4. **m** by expectation-maximisation over the candidate pairs the blocking keys of
//!    either scoring give ([`every_blocking_key`]; a key shared by more
//!    than [`TrainOptions::max_block`] records is left out, as the runtime does). Pairs
//!    found by one key family agree on that family's fields whoever they are, so each
//!    family is fitted on its own with its fields left out, and a field's `m` is the
//!    mean over the families that estimate it, weighted by their expected matches,
//!    taken from the families keyed on the person ([`PERSON_KEYED`]) when any
//!    estimates it, and shrunk towards `u` by [`PSEUDO_MATCHES`] (a field compared in
//!    few candidate pairs weighs little). `u` stays fixed.
//! 5. **λ**, the prior: the expected matches among all candidate pairs (EM of the
//!    match share only, with `m` and `u` fixed) over all pairs of records.
//!
//! Deterministic: the random pairs come from a seeded generator, everything else is
//! in sorted order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::{Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::engine::resolve::levels::{self, COMPARISONS, FIELDS};
use crate::engine::resolve::matching::{every_blocking_key, AddressKey, MatchView};
use crate::engine::resolve::model::{
    MatchModel, ModelError, TermFrequencies, Training, MIN_PROBABILITY,
};
use crate::model::Field;

/// What one source profile says of the person, owned, for training.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrainRecord {
    pub first: Option<String>,
    pub last: Option<String>,
    pub birth: Option<String>,
    pub street: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub emails: Vec<String>,
}

impl TrainRecord {
    fn address(&self) -> AddressKey {
        AddressKey {
            street: self.street.clone(),
            postal_code: self.postal_code.clone(),
            city: self.city.clone(),
        }
    }

    /// The value of a field adjusted for term frequencies.
    fn value(&self, field: Field) -> Option<&str> {
        match field {
            Field::FirstName => self.first.as_deref(),
            Field::LastName => self.last.as_deref(),
            Field::BirthDate => self.birth.as_deref(),
            Field::Street => self.street.as_deref(),
            Field::PostalCode => self.postal_code.as_deref(),
            Field::City => self.city.as_deref(),
            Field::EmailLocal => None,
        }
    }

    fn has_person(&self) -> bool {
        self.first.is_some() || self.last.is_some() || self.birth.is_some()
    }
}

/// A record with its address key built once.
struct Prepared<'r> {
    record: &'r TrainRecord,
    address: AddressKey,
}

impl Prepared<'_> {
    fn view(&self) -> MatchView<'_> {
        MatchView {
            first: self.record.first.as_deref(),
            last: self.record.last.as_deref(),
            birth: self.record.birth.as_deref(),
            address: (!self.address.is_empty()).then_some(&self.address),
            emails: &self.record.emails,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub seed: u64,
    pub random_pairs: usize,
    /// A blocking key shared by more records is generic and left out.
    pub max_block: usize,
    /// Candidate pairs kept per key family at most (a seeded sample beyond).
    pub max_pairs_per_family: usize,
    pub max_iterations: u32,
    /// EM stops when no parameter moves more than this in an iteration.
    pub tolerance: f64,
    /// Values kept per field in the term-frequency tables.
    pub tf_values: usize,
    /// Where the records come from, written in the model file.
    pub source: String,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            seed: 42,
            random_pairs: 1_000_000,
            max_block: 50,
            max_pairs_per_family: 2_000_000,
            max_iterations: 200,
            tolerance: 1e-6,
            tf_values: 2_000,
            source: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0} records with person data: at least 2 are needed")]
    TooFewRecords(usize),
    #[error("the blocking keys give no candidate pair: nothing to fit m on")]
    NoCandidatePairs,
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A comparison vector: the level of each field, or none.
pub type Pattern = [Option<u8>; FIELDS];

/// One EM run.
#[derive(Debug, Clone, PartialEq)]
pub struct EmRun {
    /// The key family whose pairs were used (`prior`: all, for λ).
    pub name: String,
    pub pairs: u64,
    pub iterations: u32,
    pub converged: bool,
    /// Share of the pairs estimated to be matches.
    pub match_share: f64,
}

/// A fitted model and how the fit went.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub model: MatchModel,
    pub runs: Vec<EmRun>,
}

/// `(m, u)` per field and level.
pub type Params = [Vec<(f64, f64)>; FIELDS];

/// The fields each blocking-key family requires to agree (left out of its EM run).
fn family_fields(family: &str) -> &'static [Field] {
    use Field::*;
    match family {
        "np" => &[LastName, PostalCode, City],
        "bi" | "bx" => &[BirthDate],
        "ad" => &[Street, PostalCode, City],
        "el" => &[EmailLocal],
        "pf" => &[FirstName, LastName],
        "pl" => &[PostalCode, LastName],
        "hn" => &[PostalCode, Street],
        "fa" => &[FirstName, PostalCode, City],
        _ => &[],
    }
}

/// Key families whose pairs share something of the person (a birth date, both names,
/// an e-mail local part), not only a place: pairs that share an address are mostly
/// households, whom EM would take for one person (same street, town and last name),
/// teaching it that first names and birth dates often differ between records of one
/// person. The `m` of a field comes from these families when any estimates it.
const PERSON_KEYED: [&str; 4] = ["bi", "bx", "el", "pf"];

/// Matches' worth of `u` added to the `m` estimates of every field (see [`train`]).
const PSEUDO_MATCHES: f64 = 10.0;

/// Fits a model on `records` (see the module).
pub fn train(records: Vec<TrainRecord>, opts: &TrainOptions) -> Result<Fitted, TrainError> {
    let mut records: Vec<TrainRecord> = records.into_iter().filter(|r| r.has_person()).collect();
    records.sort();
    records.dedup();
    if records.len() < 2 {
        return Err(TrainError::TooFewRecords(records.len()));
    }
    let prepared: Vec<Prepared> = records
        .iter()
        .map(|record| Prepared {
            record,
            address: record.address(),
        })
        .collect();
    let (tf, sum_sq) = term_frequencies(&records, opts.tf_values);
    let u = u_probabilities(&prepared, &sum_sq, opts);
    let families = blocked_patterns(&prepared, opts);
    if families.values().all(|p| p.is_empty()) {
        return Err(TrainError::NoCandidatePairs);
    }
    let mut runs = Vec::new();
    // Per field and level: Σ weight · m, and Σ weight.
    let mut m_sum: [Vec<f64>; FIELDS] = COMPARISONS.map(|c| vec![0.0; c.levels.len()]);
    let mut m_weight = [0.0; FIELDS];
    let mut person_sum = m_sum.clone();
    let mut person_weight = [0.0; FIELDS];
    let mut union: HashMap<Pattern, u64> = HashMap::new();
    for (family, patterns) in &families {
        for (p, n) in patterns {
            *union.entry(*p).or_default() += n;
        }
        let mut active = [true; FIELDS];
        for f in family_fields(family) {
            active[f.index()] = false;
        }
        let fit = em(patterns, &initial_params(&u), 0.1, &active, false, opts);
        runs.push(EmRun {
            name: family.clone(),
            pairs: patterns.iter().map(|(_, n)| n).sum(),
            iterations: fit.iterations,
            converged: fit.converged,
            match_share: fit.lambda,
        });
        let person_keyed = PERSON_KEYED.contains(&family.as_str());
        for (i, on) in active.iter().enumerate() {
            if !on || fit.expected_matches[i] <= 0.0 {
                continue;
            }
            // A field estimated by a person-keyed family takes only those estimates.
            let w = fit.expected_matches[i];
            if person_keyed {
                for (k, (m, _)) in fit.params[i].iter().enumerate() {
                    person_sum[i][k] += w * m;
                }
                person_weight[i] += w;
            }
            for (k, (m, _)) in fit.params[i].iter().enumerate() {
                m_sum[i][k] += w * m;
            }
            m_weight[i] += w;
        }
    }
    let mut params = u.clone();
    for i in 0..FIELDS {
        let (sum, weight) = if person_weight[i] > 0.0 {
            (&person_sum[i], person_weight[i])
        } else {
            (&m_sum[i], m_weight[i])
        };
        // Shrunk towards u by PSEUDO_MATCHES: a field or level seen in few matches
        // weighs little rather than whatever the start of EM said.
        for (k, level) in params[i].iter_mut().enumerate() {
            level.0 = (sum[k] + PSEUDO_MATCHES * level.1) / (weight + PSEUDO_MATCHES);
        }
        floor_and_normalise(&mut params[i], |l| &mut l.0);
    }
    // λ: the match share of all candidate pairs, m and u fixed.
    let union: Vec<(Pattern, u64)> = sorted_patterns(union);
    let prior_fit = em(&union, &params, 0.1, &[true; FIELDS], true, opts);
    let pairs: u64 = union.iter().map(|(_, n)| n).sum();
    runs.push(EmRun {
        name: "prior".into(),
        pairs,
        iterations: prior_fit.iterations,
        converged: prior_fit.converged,
        match_share: prior_fit.lambda,
    });
    let n = records.len() as f64;
    let all_pairs = n * (n - 1.0) / 2.0;
    let prior = (prior_fit.lambda * pairs as f64 / all_pairs).clamp(1e-12, 0.5);
    let training = Training {
        source: opts.source.clone(),
        records: records.len() as u64,
        blocked_pairs: pairs,
        random_pairs: opts.random_pairs as u64,
        seed: opts.seed,
        em_iterations: runs
            .iter()
            .map(|r| (r.name.clone(), r.iterations))
            .collect(),
        converged: runs.iter().all(|r| r.converged),
    };
    let model = MatchModel::new(prior, round_params(params), tf, training)?;
    Ok(Fitted { model, runs })
}

/// Parameters rounded to 6 significant digits (a stable, readable model file), still
/// summing to one.
fn round_params(mut params: Params) -> Params {
    for levels in params.iter_mut() {
        for l in levels.iter_mut() {
            l.0 = round_sig(l.0);
            l.1 = round_sig(l.1);
        }
    }
    params
}

fn round_sig(x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let digits = 6 - x.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Term-frequency tables of the adjusted fields (the `max_values` most frequent values,
/// ties by value), and for every field the sum of squared value shares.
fn term_frequencies(
    records: &[TrainRecord],
    max_values: usize,
) -> ([Option<TermFrequencies>; FIELDS], [Option<f64>; FIELDS]) {
    let mut tables: [Option<TermFrequencies>; FIELDS] = Default::default();
    let mut sum_sq: [Option<f64>; FIELDS] = [None; FIELDS];
    for c in COMPARISONS {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for r in records {
            if let Some(v) = r.value(c.field) {
                *counts.entry(v).or_default() += 1;
            }
        }
        let total: u64 = counts.values().sum();
        if total == 0 {
            continue;
        }
        let t = total as f64;
        sum_sq[c.field.index()] = Some(counts.values().map(|n| (*n as f64 / t).powi(2)).sum());
        if !c.term_frequency {
            continue;
        }
        let mut by_count: Vec<(&str, u64)> = counts.iter().map(|(v, n)| (*v, *n)).collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        tables[c.field.index()] = Some(TermFrequencies {
            records: total,
            distinct: counts.len() as u64,
            counts: by_count
                .into_iter()
                .take(max_values)
                .map(|(v, n)| (v.to_string(), n))
                .collect(),
        });
    }
    (tables, sum_sq)
}

/// `u` of every level (see the module); `m` left at zero.
fn u_probabilities(
    records: &[Prepared],
    sum_sq: &[Option<f64>; FIELDS],
    opts: &TrainOptions,
) -> Params {
    let mut counts: [Vec<f64>; FIELDS] = COMPARISONS.map(|c| vec![0.0; c.levels.len()]);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let n = records.len();
    for _ in 0..opts.random_pairs {
        let i = rng.gen_range(0..n);
        let mut j = rng.gen_range(0..n - 1);
        if j >= i {
            j += 1;
        }
        let (a, b) = (&records[i], &records[j]);
        let mut g = levels::compare(&a.view(), &b.view());
        // Scoring compares towns only without postal codes; their u is the same.
        if let (Some(x), Some(y)) = (&a.record.city, &b.record.city) {
            g.levels[Field::City.index()] =
                levels::level_index(Field::City, levels::city_level(x, y));
        }
        for (f, level) in g.levels.iter().enumerate() {
            if let Some(l) = level {
                counts[f][*l as usize] += 1.0;
            }
        }
    }
    let mut params: Params = COMPARISONS.map(|c| vec![(0.0, 0.0); c.levels.len()]);
    for f in 0..FIELDS {
        // Half a pair more on every level: a level no random pair showed is rare, not
        // impossible.
        let total: f64 = counts[f].iter().map(|c| c + 0.5).sum();
        for (k, c) in counts[f].iter().enumerate() {
            params[f][k].1 = (c + 0.5) / total;
        }
        if let Some(exact) = sum_sq[f] {
            let exact = exact.max(MIN_PROBABILITY);
            let rest: f64 = params[f][1..].iter().map(|l| l.1).sum();
            params[f][0].1 = exact;
            for l in params[f][1..].iter_mut() {
                l.1 *= (1.0 - exact) / rest;
            }
        }
        floor_and_normalise(&mut params[f], |l| &mut l.1);
    }
    params
}

/// `u` as given, `m` at its starting values: halving from the strongest level down.
fn initial_params(u: &Params) -> Params {
    let mut p = u.clone();
    for levels in p.iter_mut() {
        let n = levels.len();
        let total: f64 = (0..n).map(|k| 0.5f64.powi(k as i32)).sum();
        for (k, l) in levels.iter_mut().enumerate() {
            l.0 = 0.5f64.powi(k as i32) / total;
        }
    }
    p
}

/// Keeps every probability of a field at least [`MIN_PROBABILITY`] (times ten) and the
/// sum at one.
fn floor_and_normalise(levels: &mut [(f64, f64)], get: impl Fn(&mut (f64, f64)) -> &mut f64) {
    for l in levels.iter_mut() {
        let p = get(l);
        *p = p.max(MIN_PROBABILITY * 10.0);
    }
    let sum: f64 = levels.iter_mut().map(|l| *get(l)).sum();
    for l in levels.iter_mut() {
        *get(l) /= sum;
    }
}

/// The candidate pairs of each blocking-key family, as comparison patterns with counts.
/// Every family of either scoring takes part ([`every_blocking_key`]), also those the
/// stream leaves out because others hold their pairs: each family is an EM run with its
/// own fields left out, and the family keyed on both names (`pf`) is the one keyed on
/// the person that estimates the `m` of the birth date when records carry no e-mail
/// address. The same families as before the stream left some out: the same model.
fn blocked_patterns(
    records: &[Prepared],
    opts: &TrainOptions,
) -> BTreeMap<String, Vec<(Pattern, u64)>> {
    let mut blocks: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        for k in every_blocking_key(&r.view()) {
            blocks.entry(k).or_default().push(i as u32);
        }
    }
    let mut pairs: BTreeMap<String, BTreeSet<(u32, u32)>> = BTreeMap::new();
    for (key, members) in &blocks {
        if members.len() < 2 || members.len() > opts.max_block {
            continue;
        }
        let family = key.split('\0').next().unwrap_or_default().to_string();
        let set = pairs.entry(family).or_default();
        for (x, a) in members.iter().enumerate() {
            for b in &members[x + 1..] {
                set.insert((*a, *b));
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed);
    pairs
        .into_iter()
        .map(|(family, set)| {
            let mut list: Vec<(u32, u32)> = set.into_iter().collect();
            if list.len() > opts.max_pairs_per_family {
                // A seeded partial shuffle: the first `max` are a uniform sample.
                for k in 0..opts.max_pairs_per_family {
                    let j = rng.gen_range(k..list.len());
                    list.swap(k, j);
                }
                list.truncate(opts.max_pairs_per_family);
            }
            let mut patterns: HashMap<Pattern, u64> = HashMap::new();
            for (a, b) in list {
                let g = levels::compare(&records[a as usize].view(), &records[b as usize].view());
                *patterns.entry(g.levels).or_default() += 1;
            }
            (family, sorted_patterns(patterns))
        })
        .collect()
}

fn sorted_patterns(patterns: HashMap<Pattern, u64>) -> Vec<(Pattern, u64)> {
    let mut v: Vec<(Pattern, u64)> = patterns.into_iter().collect();
    v.sort();
    v
}

/// The result of [`em`].
#[derive(Debug, Clone)]
pub struct EmFit {
    pub params: Params,
    /// The match share of the pairs.
    pub lambda: f64,
    pub iterations: u32,
    pub converged: bool,
    /// Per field, the expected matches among the pairs where it is compared.
    pub expected_matches: [f64; FIELDS],
}

/// Expectation-maximisation of a two-class mixture over comparison patterns (with their
/// counts): `lambda` the match share, `m` and (unless `fix_u`) `u` per level of the
/// `active` fields; inactive fields and missing levels are ignored. With `only_lambda`,
/// `m` stays fixed too.
pub fn em(
    patterns: &[(Pattern, u64)],
    start: &Params,
    lambda: f64,
    active: &[bool; FIELDS],
    only_lambda: bool,
    opts: &TrainOptions,
) -> EmFit {
    em_with(patterns, start, lambda, active, only_lambda, true, opts)
}

/// [`em`], choosing whether `u` is re-estimated too (tests of the mixture).
pub fn em_with(
    patterns: &[(Pattern, u64)],
    start: &Params,
    mut lambda: f64,
    active: &[bool; FIELDS],
    only_lambda: bool,
    fix_u: bool,
    opts: &TrainOptions,
) -> EmFit {
    let mut params = start.clone();
    let mut iterations = 0;
    let mut converged = false;
    let mut expected_matches = [0.0; FIELDS];
    let total: f64 = patterns.iter().map(|(_, n)| *n as f64).sum();
    while iterations < opts.max_iterations {
        iterations += 1;
        let mut m_acc: Params = params.clone().map(|l| vec![(0.0, 0.0); l.len()]);
        let mut matches = 0.0;
        for (p, n) in patterns {
            let mut w = logit(lambda);
            for (f, level) in p.iter().enumerate() {
                if let (true, Some(l)) = (active[f], level) {
                    let (m, u) = params[f][*l as usize];
                    w += (m / u).ln();
                }
            }
            let post = 1.0 / (1.0 + (-w).exp());
            let n = *n as f64;
            matches += post * n;
            for (f, level) in p.iter().enumerate() {
                if let (true, Some(l)) = (active[f], level) {
                    m_acc[f][*l as usize].0 += post * n;
                    m_acc[f][*l as usize].1 += (1.0 - post) * n;
                }
            }
        }
        let new_lambda = (matches / total).clamp(1e-9, 1.0 - 1e-9);
        let mut delta: f64 = (new_lambda - lambda).abs();
        lambda = new_lambda;
        for f in 0..FIELDS {
            expected_matches[f] = m_acc[f].iter().map(|a| a.0).sum();
            if !active[f] || only_lambda {
                continue;
            }
            let (sm, su): (f64, f64) = m_acc[f]
                .iter()
                .fold((0.0, 0.0), |acc, a| (acc.0 + a.0, acc.1 + a.1));
            if sm <= 0.0 {
                continue;
            }
            let mut next = params[f].clone();
            for (k, l) in next.iter_mut().enumerate() {
                l.0 = m_acc[f][k].0 / sm;
                if !fix_u && su > 0.0 {
                    l.1 = m_acc[f][k].1 / su;
                }
            }
            floor_and_normalise(&mut next, |l| &mut l.0);
            if !fix_u {
                floor_and_normalise(&mut next, |l| &mut l.1);
            }
            for (a, b) in next.iter().zip(&params[f]) {
                delta = delta.max((a.0 - b.0).abs()).max((a.1 - b.1).abs());
            }
            params[f] = next;
        }
        if delta < opts.tolerance {
            converged = true;
            break;
        }
    }
    EmFit {
        params,
        lambda,
        iterations,
        converged,
        expected_matches,
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws `n` comparison patterns of a known mixture over the first three fields.
    fn mixture(n: usize, lambda: f64, truth: &Params, seed: u64) -> Vec<(Pattern, u64)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut counts: HashMap<Pattern, u64> = HashMap::new();
        let draw = |rng: &mut ChaCha8Rng, probs: Vec<f64>| -> u8 {
            let x: f64 = rng.gen();
            let mut acc = 0.0;
            for (k, p) in probs.iter().enumerate() {
                acc += p;
                if x < acc {
                    return k as u8;
                }
            }
            (probs.len() - 1) as u8
        };
        for _ in 0..n {
            let is_match = rng.gen::<f64>() < lambda;
            let mut p: Pattern = [None; FIELDS];
            for f in 0..3 {
                let probs = truth[f]
                    .iter()
                    .map(|(m, u)| if is_match { *m } else { *u })
                    .collect();
                // One field in ten missing.
                if rng.gen::<f64>() < 0.9 {
                    p[f] = Some(draw(&mut rng, probs));
                }
            }
            *counts.entry(p).or_default() += 1;
        }
        sorted_patterns(counts)
    }

    fn truth() -> Params {
        let mut t: Params = COMPARISONS.map(|c| vec![(0.0, 0.0); c.levels.len()]);
        // first_name: 7 levels; last_name: 6; birth_date: 5.
        t[0] = vec![
            (0.70, 0.01),
            (0.10, 0.01),
            (0.05, 0.01),
            (0.05, 0.02),
            (0.04, 0.05),
            (0.03, 0.10),
            (0.03, 0.80),
        ];
        t[1] = vec![
            (0.80, 0.02),
            (0.05, 0.01),
            (0.06, 0.02),
            (0.03, 0.05),
            (0.03, 0.10),
            (0.03, 0.80),
        ];
        t[2] = vec![
            (0.85, 0.05),
            (0.03, 0.01),
            (0.02, 0.02),
            (0.05, 0.02),
            (0.05, 0.90),
        ];
        t
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // fields 0 to 2 of several parallel tables
    fn em_recovers_a_known_mixture() {
        let truth = truth();
        let patterns = mixture(200_000, 0.3, &truth, 7);
        // Start from flat u and the default m: nothing of the truth.
        let mut start: Params =
            COMPARISONS.map(|c| vec![(0.0, 1.0 / c.levels.len() as f64); c.levels.len()]);
        start = initial_params(&start);
        for f in 0..3 {
            start[f].last_mut().unwrap().1 += 0.5;
            floor_and_normalise(&mut start[f], |l| &mut l.1);
        }
        let active = [true, true, true, false, false, false, false];
        let fit = em_with(
            &patterns,
            &start,
            0.5,
            &active,
            false,
            false,
            &TrainOptions::default(),
        );
        assert!(fit.converged, "{} iterations", fit.iterations);
        assert!((fit.lambda - 0.3).abs() < 0.01, "λ {}", fit.lambda);
        for f in 0..3 {
            for (k, ((m, u), (tm, tu))) in fit.params[f].iter().zip(&truth[f]).enumerate() {
                assert!((m - tm).abs() < 0.02, "field {f} level {k}: m {m} vs {tm}");
                assert!((u - tu).abs() < 0.02, "field {f} level {k}: u {u} vs {tu}");
            }
        }
        // With u fixed at the truth, m and λ alone come back closer still.
        let mut fixed = start.clone();
        for f in 0..3 {
            for (k, l) in fixed[f].iter_mut().enumerate() {
                l.1 = truth[f][k].1;
            }
        }
        let fit = em(
            &patterns,
            &fixed,
            0.5,
            &active,
            false,
            &TrainOptions::default(),
        );
        assert!((fit.lambda - 0.3).abs() < 0.01, "λ {}", fit.lambda);
        for f in 0..3 {
            for ((m, _), (tm, _)) in fit.params[f].iter().zip(&truth[f]) {
                assert!((m - tm).abs() < 0.015, "field {f}: m {m} vs {tm}");
            }
        }
    }

    fn person(first: &str, last: &str, birth: &str, postal: &str) -> TrainRecord {
        TrainRecord {
            first: Some(first.into()),
            last: Some(last.into()),
            birth: Some(birth.into()),
            street: None,
            postal_code: Some(postal.into()),
            city: Some("paris".into()),
            emails: Vec::new(),
        }
    }

    #[test]
    fn training_is_deterministic_and_fits_agreement_as_evidence() {
        let firsts = [
            "marie", "jean", "sophie", "thomas", "lucas", "emma", "paul", "julie",
        ];
        let lasts = [
            "martin", "bernard", "dubois", "durand", "leroy", "moreau", "simon", "laurent",
            "lefebvre", "michel", "garcia", "david",
        ];
        let mut records = Vec::new();
        for i in 0..400usize {
            let first = firsts[i % firsts.len()];
            let last = lasts[(i * 7 / 3) % lasts.len()];
            let birth = format!(
                "19{:02}-{:02}-{:02}",
                50 + i % 40,
                1 + i % 12,
                1 + (i * 3) % 28
            );
            let postal = format!("750{:02}", 1 + i % 20);
            records.push(person(first, last, &birth, &postal));
            // A second record of one person in two: a typo in one field.
            if i % 2 == 0 {
                let mut r = person(first, last, &birth, &postal);
                match i % 6 {
                    0 => r.last = Some(format!("{last}e")),
                    2 => {
                        r.birth = Some(format!(
                            "19{:02}-{:02}-{:02}",
                            50 + i % 40,
                            1 + (i * 3) % 28,
                            1 + i % 12
                        ))
                    }
                    _ => r.postal_code = Some(format!("750{:02}", 21 + i % 20)),
                }
                records.push(r);
            }
        }
        let opts = TrainOptions {
            random_pairs: 20_000,
            ..TrainOptions::default()
        };
        let a = train(records.clone(), &opts).unwrap();
        let b = train(records, &opts).unwrap();
        assert_eq!(a.model.to_json(), b.model.to_json());
        let m = &a.model;
        for f in [
            Field::FirstName,
            Field::LastName,
            Field::BirthDate,
            Field::PostalCode,
        ] {
            let (m0, u0) = m.params(f, 0);
            assert!(m0 > 0.4 && m0 > 3.0 * u0, "{f:?}: m {m0} u {u0}");
        }
        assert!(a.runs.iter().all(|r| r.iterations >= 1));
    }

    #[test]
    fn too_few_records_is_an_error() {
        assert!(matches!(
            train(vec![TrainRecord::default()], &TrainOptions::default()),
            Err(TrainError::TooFewRecords(0))
        ));
    }
}
