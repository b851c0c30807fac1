//! Probabilistic (Fellegi–Sunter) scoring of two source profiles.
//!
//! Each field is compared to a *level* ([`levels`]). A level has two probabilities: `m`,
//! that a true match shows it, and `u`, that two different people do. The pair's
//! *match weight* is `log2(λ / (1 − λ))` (the prior, `λ` the probability that two
//! records drawn at random are one person) plus, for every field present on both sides,
//! `log2(m / u)`; its probability of being a match is `2^w / (1 + 2^w)`. A field either
//! side lacks weighs nothing.
//!
//! **Term frequencies.** An exact agreement on a name, a birth date, a postal code or a
//! town weighs more when the value is rare: its weight becomes `log2(m / tf)` where `tf`
//! is the share of records carrying the value, instead of `log2(m / u)` (`u` of the
//! exact level is the mean of `tf` over the values). The frequencies come from the
//! model file, counted by `unicus train-matching` over the data it fitted on (the most
//! frequent values of each field, bounded; any other value counts as the mean frequency
//! of the values left out). They are not counted in the stream: a count that grows with
//! the stream would make a decision depend on the order events arrive in, and the store
//! would need a table per field; refitting the model on recent data refreshes them.
//!
//! **Model file.** JSON, versioned ([`MODEL_FORMAT`], [`MODEL_VERSION`]); it lists every
//! field and level the code compares, with its `m` and `u`, and is checked on load
//! ([`MatchModel::from_json`]). [`MatchModel::default_model`] is the one shipped, fitted
//! on `unicus generate --labelled` data (`default_model.json`, see `train-matching`).
//!
//! Pure: no store, no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::resolve::levels::{self, Gamma, COMPARISONS, FIELDS};
use crate::engine::resolve::matching::MatchView;
use crate::model::Field;

/// The `format` of a model file.
pub const MODEL_FORMAT: &str = "unicus-match-model";
/// The `version` of a model file this code reads.
pub const MODEL_VERSION: u32 = 1;

/// The smallest probability a level may have in a model file: a level no pair showed
/// in training still has a finite weight.
pub const MIN_PROBABILITY: f64 = 1e-6;

/// The model shipped, fitted on generated data: `unicus train-matching` on
/// `unicus generate --labelled --customers 5000 --events 50000 --seed 42`.
const DEFAULT_MODEL: &str = include_str!("default_model.json");

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("model file: {0}")]
    Invalid(String),
    #[error("cannot read the model file: {0}")]
    Read(std::io::Error),
}

/// One level of a field, as the model file writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelParams {
    pub level: String,
    /// Probability that two records of one person show this level.
    pub m: f64,
    /// Probability that two records of different people show it.
    pub u: f64,
}

/// The levels of one field, as the model file writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldParams {
    pub field: String,
    pub levels: Vec<LevelParams>,
}

/// How often values of a field occur, over the records a model was fitted on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermFrequencies {
    /// Records carrying the field.
    pub records: u64,
    /// Distinct values among them.
    pub distinct: u64,
    /// The most frequent values and their counts (bounded).
    pub counts: BTreeMap<String, u64>,
}

impl TermFrequencies {
    /// Whether the data fitted on never showed `value` (the list holds every value it
    /// did, and not this one).
    pub fn unseen(&self, value: &str) -> bool {
        self.records > 0
            && self.counts.len() as u64 >= self.distinct
            && !self.counts.contains_key(value)
    }

    /// Share of records carrying `value`; a value not listed counts as the mean share of
    /// the values not listed. A value the data fitted on never showed, when the list
    /// holds every value it did, counts as the mean share of a value (one over the
    /// distinct values): nothing says it is rare, and counting it as seen once would make
    /// every name of another population look unique (a model shipped, fitted on other
    /// data, applied to a stream).
    pub fn frequency(&self, value: &str) -> Option<f64> {
        if self.records == 0 {
            return None;
        }
        let n = self.records as f64;
        if let Some(c) = self.counts.get(value) {
            return Some(*c as f64 / n);
        }
        let listed: u64 = self.counts.values().sum();
        let others = self.distinct.saturating_sub(self.counts.len() as u64);
        let left = self.records.saturating_sub(listed);
        if others == 0 || left == 0 {
            return (self.distinct > 0).then(|| 1.0 / self.distinct as f64);
        }
        Some(left as f64 / others as f64 / n)
    }
}

/// How a model was fitted (kept in the file, printed by `train-matching`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Training {
    pub source: String,
    /// Distinct records with person data.
    pub records: u64,
    /// Candidate pairs the blocking keys gave (EM).
    pub blocked_pairs: u64,
    /// Random pairs drawn for `u`.
    pub random_pairs: u64,
    pub seed: u64,
    /// EM iterations, per blocking-key family run and for the prior.
    pub em_iterations: BTreeMap<String, u32>,
    pub converged: bool,
}

/// A model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub format: String,
    pub version: u32,
    /// λ: probability that two records drawn at random are one person.
    pub prior: f64,
    pub fields: Vec<FieldParams>,
    /// By field name, for the fields whose `exact` level is adjusted.
    pub term_frequencies: BTreeMap<String, TermFrequencies>,
    pub training: Training,
}

/// The weight one field added to a score.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldWeight {
    pub field: Field,
    pub level: &'static str,
    /// `log2(m / u)`, with the term-frequency adjustment.
    pub weight: f64,
    /// The part of `weight` due to the value's frequency (0 when none).
    pub tf_adjustment: f64,
    /// The value agreed on was never seen in the data the model was fitted on: its
    /// frequency is a guess ([`TermFrequencies::frequency`]).
    pub unseen: bool,
}

/// A pair's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Probability that the two are one person.
    pub probability: f64,
    /// Prior plus field weights (log2 of the odds).
    pub match_weight: f64,
    /// Fields present on both sides, in [`Field::ALL`] order.
    pub fields: Vec<FieldWeight>,
    pub swapped_names: bool,
}

impl Score {
    /// Fields that weighed for the match (positive weight), by name.
    pub fn agreeing_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.weight > 0.0)
            .map(|f| f.field.as_str().to_string())
            .collect()
    }
}

/// A fitted model, ready to score.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchModel {
    prior: f64,
    /// `(m, u)` per field (in [`Field::ALL`] order) and level (in [`COMPARISONS`] order).
    params: [Vec<(f64, f64)>; FIELDS],
    term_frequencies: [Option<TermFrequencies>; FIELDS],
    training: Training,
}

/// `log2(p / (1 − p))`.
pub fn logit2(p: f64) -> f64 {
    (p / (1.0 - p)).log2()
}

/// The probability of a match weight.
pub fn probability(match_weight: f64) -> f64 {
    1.0 / (1.0 + (-match_weight).exp2())
}

impl MatchModel {
    /// A model from its parts; checked as a file would be.
    pub fn new(
        prior: f64,
        params: [Vec<(f64, f64)>; FIELDS],
        term_frequencies: [Option<TermFrequencies>; FIELDS],
        training: Training,
    ) -> Result<Self, ModelError> {
        let model = Self {
            prior,
            params,
            term_frequencies,
            training,
        };
        model.validate()?;
        Ok(model)
    }

    /// The model shipped with unicus.
    pub fn default_model() -> Self {
        Self::from_json(DEFAULT_MODEL).expect("the shipped model file is valid (tested)")
    }

    /// Reads and checks a model file.
    pub fn load(path: &std::path::Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(ModelError::Read)?;
        Self::from_json(&text)
    }

    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let file: ModelFile = serde_json::from_str(text)?;
        Self::from_file(file)
    }

    pub fn from_file(file: ModelFile) -> Result<Self, ModelError> {
        let invalid = |s: String| ModelError::Invalid(s);
        if file.format != MODEL_FORMAT {
            return Err(invalid(format!(
                "format is `{}`, not `{MODEL_FORMAT}`",
                file.format
            )));
        }
        if file.version != MODEL_VERSION {
            return Err(invalid(format!(
                "version {} is not supported (this unicus reads version {MODEL_VERSION})",
                file.version
            )));
        }
        if file.fields.len() != FIELDS {
            let names: Vec<&str> = Field::ALL.iter().map(|f| f.as_str()).collect();
            return Err(invalid(format!(
                "it must list the fields {} in this order",
                names.join(", ")
            )));
        }
        let mut params: [Vec<(f64, f64)>; FIELDS] = Default::default();
        for (i, (c, f)) in COMPARISONS.iter().zip(&file.fields).enumerate() {
            if f.field != c.field.as_str() {
                return Err(invalid(format!(
                    "field {} is `{}`, expected `{}`",
                    i + 1,
                    f.field,
                    c.field.as_str()
                )));
            }
            let names: Vec<&str> = f.levels.iter().map(|l| l.level.as_str()).collect();
            if names != c.levels {
                return Err(invalid(format!(
                    "`{}` has levels {names:?}, expected {:?}",
                    f.field, c.levels
                )));
            }
            params[i] = f.levels.iter().map(|l| (l.m, l.u)).collect();
        }
        let mut term_frequencies: [Option<TermFrequencies>; FIELDS] = Default::default();
        for (name, tf) in file.term_frequencies {
            let field = Field::parse(&name)
                .ok_or_else(|| invalid(format!("term frequencies of unknown field `{name}`")))?;
            if !COMPARISONS[field.index()].term_frequency {
                return Err(invalid(format!(
                    "`{name}` has no term-frequency adjustment"
                )));
            }
            term_frequencies[field.index()] = Some(tf);
        }
        Self::new(file.prior, params, term_frequencies, file.training)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let invalid = |s: String| ModelError::Invalid(s);
        if !(self.prior > 0.0 && self.prior < 1.0) {
            return Err(invalid(format!(
                "prior must be between 0 and 1 (exclusive), not {}",
                self.prior
            )));
        }
        for (c, levels) in COMPARISONS.iter().zip(&self.params) {
            if levels.len() != c.levels.len() {
                return Err(invalid(format!(
                    "`{}`: wrong number of levels",
                    c.field.as_str()
                )));
            }
            for (name, (m, u)) in c.levels.iter().zip(levels) {
                for (what, p) in [("m", m), ("u", u)] {
                    if !(*p >= MIN_PROBABILITY && *p <= 1.0) {
                        return Err(invalid(format!(
                            "`{}` level `{name}`: {what} must be between {MIN_PROBABILITY} and 1, not {p}",
                            c.field.as_str()
                        )));
                    }
                }
            }
            for (what, sum) in [
                ("m", levels.iter().map(|l| l.0).sum::<f64>()),
                ("u", levels.iter().map(|l| l.1).sum::<f64>()),
            ] {
                if (sum - 1.0).abs() > 0.01 {
                    return Err(invalid(format!(
                        "`{}`: the {what} of its levels sum to {sum}, not 1",
                        c.field.as_str()
                    )));
                }
            }
        }
        for (c, tf) in COMPARISONS.iter().zip(&self.term_frequencies) {
            if let Some(tf) = tf {
                let listed: u64 = tf.counts.values().sum();
                if listed > tf.records || (tf.counts.len() as u64) > tf.distinct {
                    return Err(invalid(format!(
                        "`{}`: term frequencies count more than their records or values",
                        c.field.as_str()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The model as its file.
    pub fn to_file(&self) -> ModelFile {
        ModelFile {
            format: MODEL_FORMAT.into(),
            version: MODEL_VERSION,
            prior: self.prior,
            fields: COMPARISONS
                .iter()
                .zip(&self.params)
                .map(|(c, levels)| FieldParams {
                    field: c.field.as_str().into(),
                    levels: c
                        .levels
                        .iter()
                        .zip(levels)
                        .map(|(name, (m, u))| LevelParams {
                            level: name.to_string(),
                            m: *m,
                            u: *u,
                        })
                        .collect(),
                })
                .collect(),
            term_frequencies: COMPARISONS
                .iter()
                .zip(&self.term_frequencies)
                .filter_map(|(c, tf)| tf.clone().map(|tf| (c.field.as_str().to_string(), tf)))
                .collect(),
            training: self.training.clone(),
        }
    }

    /// The model file's text (pretty JSON, keys in a fixed order).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.to_file()).expect("a model serialises");
        s.push('\n');
        s
    }

    pub fn prior(&self) -> f64 {
        self.prior
    }

    /// `(m, u)` of a field's level.
    pub fn params(&self, field: Field, level: usize) -> (f64, f64) {
        self.params[field.index()][level]
    }

    pub fn training(&self) -> &Training {
        &self.training
    }

    pub fn term_frequencies(&self, field: Field) -> Option<&TermFrequencies> {
        self.term_frequencies[field.index()].as_ref()
    }

    /// Scores two views.
    pub fn score(&self, a: &MatchView, b: &MatchView) -> Score {
        self.score_gamma(&levels::compare(a, b))
    }

    /// Scores compared levels.
    pub fn score_gamma(&self, g: &Gamma) -> Score {
        let mut match_weight = logit2(self.prior);
        let mut fields = Vec::with_capacity(FIELDS);
        for (i, c) in COMPARISONS.iter().enumerate() {
            let Some(level) = g.levels[i] else {
                continue;
            };
            let (m, u) = self.params[i][level as usize];
            let mut weight = (m / u).log2();
            let mut tf_adjustment = 0.0;
            let mut unseen = false;
            if let (Some(value), Some(tf)) = (g.exact_values[i], &self.term_frequencies[i]) {
                unseen = tf.unseen(value);
                if let Some(f) = tf.frequency(value) {
                    tf_adjustment = (u / f.max(MIN_PROBABILITY)).log2();
                    weight += tf_adjustment;
                }
            }
            match_weight += weight;
            fields.push(FieldWeight {
                field: c.field,
                level: c.levels[level as usize],
                weight,
                tf_adjustment,
                unseen,
            });
        }
        Score {
            probability: probability(match_weight),
            match_weight,
            fields,
            swapped_names: g.swapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_loads_validates_and_round_trips() {
        let m = MatchModel::default_model();
        let again = MatchModel::from_json(&m.to_json()).unwrap();
        assert_eq!(m, again);
        assert_eq!(again.to_json(), m.to_json());
        assert!(m.prior() > 0.0 && m.prior() < 0.01, "{}", m.prior());
        // Agreement is evidence for, disagreement against, on every field the training
        // data compared (towns only ever were along with postal codes: no evidence).
        for c in COMPARISONS.iter().filter(|c| c.field != Field::City) {
            let (m_exact, u_exact) = m.params(c.field, 0);
            let (m_diff, u_diff) = m.params(c.field, c.levels.len() - 1);
            assert!(m_exact > u_exact, "{:?}", c.field);
            assert!(m_diff < u_diff, "{:?}", c.field);
        }
    }

    #[test]
    fn broken_model_files_are_refused_with_the_reason() {
        let good = MatchModel::default_model().to_file();
        let text = |f: &ModelFile| serde_json::to_string(f).unwrap();
        let err = |f: &ModelFile| MatchModel::from_json(&text(f)).unwrap_err().to_string();
        let mut f = good.clone();
        f.version = 2;
        assert!(err(&f).contains("version 2"), "{}", err(&f));
        let mut f = good.clone();
        f.fields[0].levels.remove(1);
        assert!(err(&f).contains("first_name"), "{}", err(&f));
        let mut f = good.clone();
        f.fields[2].levels[0].m = 0.0;
        assert!(err(&f).contains("birth_date"), "{}", err(&f));
        let mut f = good.clone();
        f.fields[3].levels[0].u = 0.9;
        assert!(err(&f).contains("sum"), "{}", err(&f));
        let mut f = good.clone();
        f.prior = 1.0;
        assert!(err(&f).contains("prior"), "{}", err(&f));
        let mut f = good;
        f.fields.swap(0, 1);
        assert!(err(&f).contains("expected `first_name`"), "{}", err(&f));
        assert!(MatchModel::from_json("{").is_err());
    }

    fn view<'a>(first: &'a str, last: &'a str, birth: &'a str) -> MatchView<'a> {
        MatchView {
            first: Some(first),
            last: Some(last),
            birth: Some(birth),
            ..MatchView::default()
        }
    }

    /// A model whose last-name frequencies say `martin` is common and `quesnoy` rare.
    fn model_with_surnames() -> MatchModel {
        let mut f = MatchModel::default_model().to_file();
        let mut counts = BTreeMap::new();
        counts.insert("martin".to_string(), 500);
        counts.insert("quesnoy".to_string(), 1);
        f.term_frequencies.insert(
            "last_name".into(),
            TermFrequencies {
                records: 10_000,
                distinct: 2_000,
                counts,
            },
        );
        MatchModel::from_file(f).unwrap()
    }

    #[test]
    fn a_value_never_seen_counts_as_a_value_of_mean_share_not_as_unique() {
        let complete = TermFrequencies {
            records: 100,
            distinct: 4,
            counts: [("smith", 70), ("jones", 20), ("brown", 5), ("quesnoy", 5)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        assert_eq!(complete.frequency("smith"), Some(0.7));
        assert!(!complete.unseen("smith"));
        assert_eq!(complete.frequency("nguyen"), Some(0.25));
        assert!(complete.unseen("nguyen"));
        // A bounded list: a value not listed is one of those left out.
        let bounded = TermFrequencies {
            records: 120,
            distinct: 10,
            ..complete.clone()
        };
        assert!(!bounded.unseen("nguyen"));
        // 20 records left over 6 values.
        let f = bounded.frequency("nguyen").unwrap();
        assert!((f - 20.0 / 6.0 / 120.0).abs() < 1e-12, "{f}");
    }

    #[test]
    fn a_rare_surname_weighs_more_than_a_common_one() {
        let m = model_with_surnames();
        let weight = |s: &Score| {
            s.fields
                .iter()
                .find(|f| f.field == Field::LastName)
                .unwrap()
                .weight
        };
        let common = m.score(
            &view("paul", "martin", "1970-01-02"),
            &view("paul", "martin", "1970-01-02"),
        );
        let rare = m.score(
            &view("paul", "quesnoy", "1970-01-02"),
            &view("paul", "quesnoy", "1970-01-02"),
        );
        assert!(weight(&rare) > weight(&common) + 5.0, "{rare:?} {common:?}");
        assert!(rare.probability > common.probability);
        // log2(m / tf): 1 in 10 000 against 500 in 10 000.
        let (m_exact, _) = m.params(Field::LastName, 0);
        assert!((weight(&rare) - (m_exact / 1e-4).log2()).abs() < 1e-9);
        assert!((weight(&common) - (m_exact / 0.05).log2()).abs() < 1e-9);
        // A value not listed: the mean share of the others, (10 000 - 501) / 1 998.
        let other = m.score(
            &view("paul", "durand", "1970-01-02"),
            &view("paul", "durand", "1970-01-02"),
        );
        let expected = (m_exact / ((10_000.0 - 501.0) / 1_998.0 / 10_000.0)).log2();
        assert!((weight(&other) - expected).abs() < 1e-9);
    }

    #[test]
    fn weights_sum_to_the_match_weight_and_missing_fields_weigh_nothing() {
        let m = MatchModel::default_model();
        let s = m.score(
            &view("sophie", "dupont", "1985-04-12"),
            &MatchView {
                first: Some("sofie"),
                last: Some("dupond"),
                ..MatchView::default()
            },
        );
        assert_eq!(s.fields.len(), 2);
        let sum: f64 = s.fields.iter().map(|f| f.weight).sum::<f64>() + logit2(m.prior());
        assert!((sum - s.match_weight).abs() < 1e-9);
        assert!((probability(s.match_weight) - s.probability).abs() < 1e-12);
        let same = m.score(
            &view("sophie", "dupont", "1985-04-12"),
            &view("sophie", "dupont", "1985-04-12"),
        );
        let other = m.score(
            &view("sophie", "dupont", "1985-04-12"),
            &view("thomas", "dupont", "1982-02-03"),
        );
        assert!(same.probability > 0.99, "{same:?}");
        assert!(other.probability < 0.01, "{other:?}");
    }
}
