//! Resolve's JSON documents as types: the records of `identity.changes` ([`IdentityChange`]),
//! the explanations ([`Explanation`], [`PairExplanation`]) and an export's identity graph.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::engine::resolve::matching::Verdict;
use crate::engine::resolve::model::FieldWeight;
use crate::engine::resolve::{Link, MergeLog};
use crate::model::output::rfc3339;
use crate::model::Field;
use crate::model::Ident;

// serde_json keeps the keys of an object sorted, so the order of the fields of the
// records below does not matter. A key a record does not always carry is an `Option`
// skipped when `None`; an `Option` without that attribute is a key always present,
// `null` when `None`. Times are RFC 3339 text ([`rfc3339`]).

/// Fields compared by fuzzy matching with their similarity: an object
/// `{"first_name": 0.95, …}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldScores(pub Vec<(Field, f64)>);

impl Serialize for FieldScores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (field, similarity) in &self.0 {
            map.serialize_entry(field.as_str(), similarity)?;
        }
        map.end()
    }
}

/// Probabilistic scoring: the weight of every field compared, and their sum with the
/// prior: `{"match_weight": 12.3, "prior": -9.08, "fields": {"first_name": {"level":
/// "exact", "weight": 6.52}, …}}` (log2 of odds; a term-frequency adjustment, when
/// there is one, is part of the weight and also shown as `tf_adjustment`).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub match_weight: f64,
    pub prior: f64,
    pub fields: Vec<FieldWeight>,
}

impl Weights {
    /// The weights of a probabilistic verdict; `None` under rules.
    pub fn of(v: &Verdict) -> Option<Self> {
        let score = v.model.as_deref()?;
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        let fields_sum: f64 = score.fields.iter().map(|f| f.weight).sum();
        Some(Self {
            match_weight: r(score.match_weight),
            prior: r(score.match_weight - fields_sum),
            fields: score
                .fields
                .iter()
                .map(|f| FieldWeight {
                    weight: r(f.weight),
                    tf_adjustment: r(f.tf_adjustment),
                    ..f.clone()
                })
                .collect(),
        })
    }
}

impl Serialize for Weights {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Fields<'a>(&'a [FieldWeight]);
        impl Serialize for Fields<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for f in self.0 {
                    let mut entry = serde_json::Map::new();
                    entry.insert("level".into(), f.level.into());
                    entry.insert("weight".into(), f.weight.into());
                    if f.tf_adjustment != 0.0 {
                        entry.insert("tf_adjustment".into(), f.tf_adjustment.into());
                    }
                    map.serialize_entry(f.field.as_str(), &entry)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("match_weight", &self.match_weight)?;
        map.serialize_entry("prior", &self.prior)?;
        map.serialize_entry("fields", &Fields(&self.fields))?;
        map.end()
    }
}

/// A record of `identity.changes` emitted by resolve, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IdentityChange {
    Conflict(Conflict),
    GenericValue(GenericValue),
    Merge(Merge),
    Suggestion(Suggestion),
}

/// A link a guardrail refused: the event's own unique value disagreeing with its
/// customer, or a candidate customer refused (by shared identifiers or by a match rule).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conflict {
    /// The customer the event was being resolved to, if any yet.
    pub customer_id: Option<String>,
    /// The candidate refused; `null` for the event's own unique value.
    pub other_customer_id: Option<String>,
    /// The guardrail: `unique_identifier`, `never_link`, `weak_identifier_contradiction`,
    /// `identifier_contradiction`, `person_contradiction`, or a bound of the customer's
    /// size: `source_profile_limit`, `identifier_limit`.
    pub rule: &'static str,
    /// `null` only for a fuzzy candidate refused on person data or a split.
    pub identifier_type: Option<String>,
    pub identifiers: Vec<Ident>,
    /// A fuzzy candidate only: the match rule that would have linked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_rule: Option<String>,
    /// A fuzzy candidate only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// A fuzzy candidate only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldScores>,
    /// A fuzzy candidate under probabilistic scoring only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    pub event_id: String,
    pub at: String,
}

/// A value that turned generic: carried by too many people, it stops linking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenericValue {
    pub customer_id: Option<String>,
    pub identifier: Ident,
    /// People seen with it (the threshold plus one).
    pub people: usize,
    pub source_profiles: usize,
    pub event_id: String,
    pub at: String,
}

/// Customers an event linked, merged into the oldest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Merge {
    /// The survivor.
    pub customer_id: String,
    pub merged_ids: Vec<String>,
    /// `deterministic`, or the rule of the first fuzzy link.
    pub rule: Option<String>,
    /// Identifier types shared.
    pub matched_on: Vec<String>,
    /// Identifiers shared.
    pub identifiers: Vec<Ident>,
    /// 1 for shared identifiers, the lowest fuzzy score otherwise.
    pub score: f64,
    /// With fuzzy links only: the fields of the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<FieldScores>,
    /// With fuzzy links only: each of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<FuzzyLink>>,
    pub event_id: String,
    pub at: String,
}

/// One customer of a merge linked by a match rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FuzzyLink {
    pub customer_id: String,
    pub rule: Option<String>,
    pub score: Option<f64>,
    pub fields: FieldScores,
    /// Probabilistic scoring only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    /// Its source profile the event was matched with.
    pub source_profile: Option<u64>,
}

impl FuzzyLink {
    pub fn new(customer_id: &str, link: &Link) -> Self {
        Self {
            customer_id: customer_id.to_string(),
            rule: link.rule.clone(),
            score: link.score,
            fields: FieldScores(link.fields.clone()),
            weights: None,
            source_profile: link.with_source_profile,
        }
    }
}

/// A match below the link threshold (or under a rule that does not link): for a person
/// to decide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    pub customer_id: String,
    pub other_customer_id: String,
    pub rule: String,
    pub score: f64,
    pub fields: FieldScores,
    /// Probabilistic scoring only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    /// The event's source profile, and the other customer's it was compared with.
    pub compared_source_profiles: [u64; 2],
    pub event_id: String,
    pub at: String,
}

/// Why a source profile or a merged customer belongs to its customer ([`Link`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkRecord {
    pub method: String,
    pub rule: Option<String>,
    pub score: Option<f64>,
    pub matched_on: Vec<String>,
    pub fields: FieldScores,
    pub with_source_profile: Option<u64>,
    pub event_id: String,
    pub at: String,
}

impl From<&Link> for LinkRecord {
    fn from(link: &Link) -> Self {
        Self {
            method: link.method.clone(),
            rule: link.rule.clone(),
            score: link.score,
            matched_on: link.matched_on.clone(),
            fields: FieldScores(link.fields.clone()),
            with_source_profile: link.with_source_profile,
            event_id: link.event_id.clone(),
            at: rfc3339(link.at),
        }
    }
}

/// An entry of a customer's merge history ([`MergeLog`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeRecord {
    /// `merge` or `split`.
    pub kind: String,
    pub other_customer_id: String,
    pub source_profiles: Vec<u64>,
    pub identifiers: Vec<Ident>,
    pub link: LinkRecord,
}

impl From<&MergeLog> for MergeRecord {
    fn from(log: &MergeLog) -> Self {
        Self {
            kind: log.kind.clone(),
            other_customer_id: log.other_id.clone(),
            source_profiles: log.source_profiles.clone(),
            identifiers: log.identifiers.clone(),
            link: LinkRecord::from(&log.link),
        }
    }
}

/// A source profile with its match keys and provenance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceProfileRecord {
    pub source_profile: u64,
    pub channel: String,
    /// The identifier its anchor is on.
    pub anchor: Option<Ident>,
    pub identifiers: Vec<Ident>,
    pub match_keys: MatchKeys,
    /// How it came to its customer.
    pub joined: LinkRecord,
    /// The split decisions it is part of.
    pub kept_apart: Vec<KeptApart>,
    /// Explanations only: the merges that brought it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_merges: Option<Vec<MergeRecord>>,
}

/// What fuzzy matching compares of a source profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchKeys {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub birth_date: Option<String>,
    pub street: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
}

/// A split decision a source profile is part of: the split's token and its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeptApart {
    pub split: u64,
    pub side: bool,
}

/// Resolve's part of an export: the customer's identity graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityExport {
    pub customer_id: String,
    pub identifiers: Vec<Ident>,
    pub merged_ids: Vec<String>,
    pub source_profiles: Vec<SourceProfileRecord>,
    pub merges: Vec<MergeRecord>,
}

/// Why each source profile belongs to a customer (`unicus explain`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub customer_id: String,
    /// The id asked about: the customer's, or one merged into it.
    pub asked_for: String,
    pub identifiers: Vec<Ident>,
    pub merged_ids: Vec<String>,
    /// Each with the merges that brought it in.
    pub source_profiles: Vec<SourceProfileRecord>,
    pub history: Vec<MergeRecord>,
}

/// Why two customers are one, or are not (`unicus explain A B`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PairExplanation {
    /// One of the ids names no customer.
    Unknown {
        a: String,
        b: String,
        same_customer: bool,
        reasons: Vec<String>,
    },
    /// One customer: the merges between them.
    Same {
        a: String,
        b: String,
        same_customer: bool,
        customer_id: String,
        merges: Vec<MergeRecord>,
    },
    /// Two customers: what keeps them apart.
    Apart {
        a: String,
        b: String,
        same_customer: bool,
        customers: [String; 2],
        shared_identifiers: Vec<Ident>,
        best_fuzzy_match: Option<FuzzyComparison>,
        reasons: Vec<String>,
    },
}

/// The best-scoring pair of source profiles of two customers, as the matcher judges it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FuzzyComparison {
    pub source_profiles: [u64; 2],
    pub rule: Option<String>,
    pub score: f64,
    /// `link`, `suggest`, `none` or `vetoed`.
    pub decision: &'static str,
    pub fields: FieldScores,
    /// Probabilistic scoring only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    pub swapped_names: bool,
    pub share_a_blocking_key: bool,
}
