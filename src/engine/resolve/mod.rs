//! Resolve: the identity graph. Answers "which customer is this event" and emits
//! identity changes.
//!
//! The graph is made of *source profiles* (what one channel knows under its own
//! identifiers; an event attaches to the source profile anchored on its strongest
//! identifier in its channel) and of *customers*, linked sets of source profiles with a
//! persistent id. Two source profiles are linked when they share a normalised identifier,
//! unless a guardrail refuses it:
//!
//! - junk values (a configurable blocklist, empty and one-character values) never link;
//! - a value carried by source profiles of more than K different people (their names or
//!   birth dates disagree) becomes *generic* and stops linking;
//! - unique types (`account_id`, `loyalty_id`): a customer never holds two values, so a
//!   merge that would bring a second one is refused as a conflict;
//! - any other shared value links when its weight (less its *spread*: the further
//!   people it was seen with) plus what the person data weigh under the scoring model
//!   is positive; first names and birth dates both different make a last name and an
//!   address weigh nothing (a household), and so does a weak type (`phone`,
//!   `device_id`, `cookie_id`) for the last name between different first names.
//!
//! When an event links several customers they merge: the oldest customer survives, the
//! others are handed to the profile stage as [`ProfileCommand::Merge`].
//!
//! Store tables (namespace `r/`, declared in [`crate::store::keys`]): `r/sp/<id>` source
//! profiles, `r/ix/<type>\0<value>` who carries a value, `r/sk/<channel>\0<type>\0<value>`
//! source-profile anchors, `r/cu/<customer>` customers, blocks, merge logs, aliases and
//! counters.

pub mod levels;
pub mod matching;
pub mod model;
pub mod records;
pub mod train;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::config::{ContradictionVeto, EngineConfig};
use crate::engine::gdpr;
use crate::engine::handoff::{
    ConsentStatement, EventFacts, ProfileCommand, RequestFacts, RequestKind,
};
use crate::engine::input::touchpoint::Touchpoint;
use crate::engine::normalise::{self, Normaliser};
use crate::engine::Stats;
use crate::model::output::{rfc3339, to_json};
use crate::model::Field;
use crate::model::Ident;
use crate::store::{keys, Cell, Store, StoreError, Table};
use matching::{AddressKey, Decision as MatchDecision, MatchView, Matcher};
use model::{FieldWeight, MatchModel};
use records::{
    Conflict, Explanation, FieldScores, FuzzyComparison, FuzzyLink, GenericValue, IdentityChange,
    IdentityExport, KeptApart, LinkRecord, MatchKeys, Merge, MergeRecord, PairExplanation,
    SourceProfileRecord, Suggestion, Weights,
};

/// Who a source profile says the person is, in match-key form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonSig {
    pub first: Option<String>,
    pub last: Option<String>,
    pub birth: Option<String>,
}

impl PersonSig {
    pub fn from_touchpoint(tp: &Touchpoint) -> Self {
        let Some(p) = &tp.person else {
            return Self::default();
        };
        Self {
            first: p
                .first_name
                .as_deref()
                .and_then(|n| normalise::name_key(n).ok()),
            last: p
                .last_name
                .as_deref()
                .and_then(|n| normalise::name_key(n).ok()),
            birth: p
                .birth_date
                .as_deref()
                .and_then(|d| normalise::birth_date(d).ok()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.last.is_none() && self.birth.is_none()
    }

    /// The person alone, as matching compares it.
    fn view(&self) -> MatchView<'_> {
        MatchView {
            first: self.first.as_deref(),
            last: self.last.as_deref(),
            birth: self.birth.as_deref(),
            address: None,
            emails: &[],
        }
    }

    /// Clearly not the same person: different birth dates or clearly different first
    /// names. What weak identifiers must not link across.
    pub fn contradicts(&self, other: &PersonSig) -> bool {
        if let (Some(a), Some(b)) = (&self.birth, &other.birth) {
            if a != b {
                return true;
            }
        }
        if let (Some(a), Some(b)) = (&self.first, &other.first) {
            if !normalise::first_name_compatible(a, b) {
                return true;
            }
        }
        false
    }

    /// [`PersonSig::contradicts`] short of what one typing error makes, as `veto`
    /// counts: birth dates that are not one typed digit, day and month swapped or a year
    /// apart, and first names that cannot be the same person's. Probabilistic scoring
    /// weighs typos; a household (one address, one last name) stays apart.
    pub fn contradicts_beyond_typos(&self, other: &PersonSig, veto: ContradictionVeto) -> bool {
        let births = match (&self.birth, &other.birth) {
            (Some(a), Some(b)) => levels::birth_date_level(a, b) == "different",
            _ => false,
        };
        let firsts = match (&self.first, &other.first) {
            (Some(a), Some(b)) => !normalise::first_name_compatible(a, b),
            _ => false,
        };
        veto.vetoes(births, firsts)
    }

    /// Clearly somebody else even for a strong identifier (an e-mail, a social handle):
    /// first names that cannot be the same person's, and no equal (or one-typo) birth
    /// date saying otherwise. What a shared family e-mail or a placeholder typed at a
    /// till looks like; a nickname with the same birth date is not this.
    pub fn clearly_other(&self, other: &PersonSig) -> bool {
        let mut against = 0;
        if let (Some(a), Some(b)) = (&self.first, &other.first) {
            if normalise::first_name_compatible(a, b) {
                return false;
            }
            against += 1;
        }
        if let (Some(a), Some(b)) = (&self.birth, &other.birth) {
            if crate::engine::resolve::matching::birth_date_similarity(a, b) > 0.0 {
                return false;
            }
            against += 1;
        }
        // A new last name alone is a marriage as often as another person.
        if let (Some(a), Some(b)) = (&self.last, &other.last) {
            if strsim::jaro_winkler(a, b) < 0.8 {
                against += 1;
            }
        }
        against >= 1 && (self.first.is_some() && other.first.is_some() || against >= 2)
    }

    /// Names or birth dates disagree: counted as different people for generic values.
    pub fn disagrees(&self, other: &PersonSig) -> bool {
        if self.contradicts(other) {
            return true;
        }
        match (&self.last, &other.last) {
            (Some(a), Some(b)) => strsim::jaro_winkler(a, b) < 0.88,
            _ => false,
        }
    }
}

/// How an event was resolved (`resolution.method` on `touchpoints.resolved`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    New,
    Deterministic,
    /// Joined an existing customer on person data alone (a fuzzy match rule).
    Fuzzy,
    /// No usable identifier and no person data: nobody to attach it to.
    Unresolved,
    /// An identifier of an erased customer: dropped so the person does not come back.
    Suppressed,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::New => "new",
            Method::Deterministic => "deterministic",
            Method::Fuzzy => "fuzzy",
            Method::Unresolved => "unresolved",
            Method::Suppressed => "suppressed",
        }
    }
}

/// The answer of resolve for one event.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub customer_id: Option<String>,
    pub method: Method,
    pub matched_on: Vec<String>,
    /// 1.0 for a deterministic resolution, the rule's score for a fuzzy one.
    pub score: Option<f64>,
    /// Records for `identity.changes`, in order.
    pub identity_changes: Vec<Value>,
    pub commands: Vec<ProfileCommand>,
    /// What resolve counted for this event, for the engine to absorb.
    pub counts: Stats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SourceProfile {
    customer: String,
    channel: String,
    /// The identifier whose `r/sk/` anchor points here.
    anchor: Option<Ident>,
    identifiers: Vec<Ident>,
    person: PersonSig,
    person_at: i64,
    /// The latest address stated, in match-key form (fuzzy matching).
    address: AddressKey,
    /// How this source profile came to its customer when it was created.
    joined: Link,
    /// Split decisions: `(token, side)`; two source profiles with one token on
    /// different sides are never linked again (until an explicit merge command).
    apart: Vec<(u64, bool)>,
}

impl SourceProfile {
    fn view(&self) -> MatchView<'_> {
        MatchView {
            first: self.person.first.as_deref(),
            last: self.person.last.as_deref(),
            birth: self.person.birth.as_deref(),
            address: (!self.address.is_empty()).then_some(&self.address),
            emails: &[],
        }
    }

    /// The source profile with its match keys and provenance (exports, explanations).
    fn record(&self, id: u64) -> SourceProfileRecord {
        SourceProfileRecord {
            source_profile: id,
            channel: self.channel.clone(),
            anchor: self.anchor.clone(),
            identifiers: self.identifiers.clone(),
            match_keys: MatchKeys {
                first_name: self.person.first.clone(),
                last_name: self.person.last.clone(),
                birth_date: self.person.birth.clone(),
                street: self.address.street.clone(),
                postal_code: self.address.postal_code.clone(),
                city: self.address.city.clone(),
            },
            joined: LinkRecord::from(&self.joined),
            kept_apart: self
                .apart
                .iter()
                .map(|&(split, side)| KeptApart { split, side })
                .collect(),
            via_merges: None,
        }
    }

    fn emails(&self) -> Vec<String> {
        self.identifiers
            .iter()
            .filter(|i| i.kind == "email")
            .map(|i| i.value.clone())
            .collect()
    }
}

/// Why a source profile or a merged customer belongs to a customer: its provenance,
/// for explanations and exports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// `new` (first of its customer), `identifier` (shared identifiers), `fuzzy` (a match
    /// rule), `split` or `command` (an operator's decision).
    pub method: String,
    pub rule: Option<String>,
    pub score: Option<f64>,
    /// Identifier types shared.
    pub matched_on: Vec<String>,
    /// Fields compared, with their similarity.
    pub fields: Vec<(Field, f64)>,
    /// The source profile it was matched with.
    pub with_source_profile: Option<u64>,
    pub event_id: String,
    pub at: i64,
}

/// One customer merged into another (or split from it), kept on the survivor:
/// `r/mg/<customer>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeLog {
    /// `merge` or `split`.
    pub kind: String,
    /// The customer merged away, or the new customer of a split.
    pub other_id: String,
    /// Source profiles that came in (merge) or went out (split).
    pub source_profiles: Vec<u64>,
    pub link: Link,
    /// Identifiers shared, or the identifier a split moved.
    pub identifiers: Vec<Ident>,
}

/// Adds an entry to a customer's history of at most `max` entries, the oldest going
/// first beyond. Returns how many went.
fn push_log(log: &mut Vec<MergeLog>, entry: MergeLog, max: usize) -> u64 {
    log.push(entry);
    let excess = log.len().saturating_sub(max);
    log.drain(..excess);
    excess as u64
}

/// The source profiles of a customer being split: those that stay, then those that move.
type SplitSides = [Vec<(u64, SourceProfile)>; 2];

/// The profile commands of a merge, and the fuzzy links among the merged (by id).
type MergeOutcome = (Vec<ProfileCommand>, Vec<(String, Link)>);

/// Source profiles sharing a blocking key: `r/bk/<block_id(key)>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Block {
    source_profiles: Vec<u64>,
    /// Shared by more than `matching.max_candidates`: no longer used.
    generic: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ValueEntry {
    source_profiles: Vec<u64>,
    /// Mutually disagreeing people seen with this value (at most K + 1).
    people: Vec<PersonSig>,
    generic: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Customer {
    /// Creation order: the smallest survives a merge.
    seq: u64,
    source_profiles: Vec<u64>,
    /// Sorted, without duplicates.
    identifiers: Vec<Ident>,
    people: Vec<PersonSig>,
    /// Ids of the customers merged into this one (tombstoned again on erasure).
    merged_ids: Vec<String>,
    /// Split tokens of its source profiles (see [`SourceProfile::apart`]).
    apart: Vec<(u64, bool)>,
}

impl Customer {
    /// A customer with nothing yet, created `seq`-th.
    fn new(seq: u64) -> Self {
        Self {
            seq,
            source_profiles: Vec::new(),
            identifiers: Vec::new(),
            people: Vec::new(),
            merged_ids: Vec::new(),
            apart: Vec::new(),
        }
    }

    /// Takes in what a customer merged into this one had: its source profiles,
    /// identifiers, people (up to `max_people`), split tokens and merged ids, and its own
    /// id.
    fn take_in(&mut self, merged_id: &str, merged: Customer, max_people: usize) {
        self.source_profiles.extend(merged.source_profiles);
        merge_sorted(&mut self.identifiers, merged.identifiers);
        for p in merged.people {
            push_person(&mut self.people, p, max_people);
        }
        for t in merged.apart {
            if !self.apart.contains(&t) {
                self.apart.push(t);
            }
        }
        self.merged_ids.push(merged_id.to_string());
        self.merged_ids.extend(merged.merged_ids);
    }

    /// Whether a split decided that these two must stay apart.
    fn kept_apart_from(&self, other: &[(u64, bool)]) -> bool {
        self.apart
            .iter()
            .any(|(t, side)| other.iter().any(|(u, s)| t == u && side != s))
    }
}

/// What the person data of two people weigh for them being one (log2 of the
/// likelihood ratio, without the prior), field by field.
#[derive(Debug, Clone)]
struct PersonWeights {
    total: f64,
    fields: Vec<FieldWeight>,
}

/// A shared identifier's weight and the person data's, for one link through it: it
/// links when their sum is positive.
#[derive(Debug, Clone)]
struct IdentifierEvidence {
    /// The identifier's weight, its spread taken off.
    identifier: f64,
    /// The person data compared (`None`: nothing on one side or the other).
    person: Option<PersonWeights>,
}

impl IdentifierEvidence {
    fn total(&self) -> f64 {
        self.identifier + self.person.as_ref().map_or(0.0, |p| p.total)
    }

    fn links(&self) -> bool {
        self.total() > 0.0
    }

    /// As a refusal records it: the identifier's weight in place of the prior.
    fn weights(&self) -> Weights {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        Weights {
            match_weight: r(self.total()),
            prior: r(self.identifier),
            fields: self
                .person
                .iter()
                .flat_map(|p| &p.fields)
                .map(|f| FieldWeight {
                    weight: r(f.weight),
                    tf_adjustment: r(f.tf_adjustment),
                    ..f.clone()
                })
                .collect(),
        }
    }
}

/// A guardrail's refusal: its rule, the identifier type it names, and the weights
/// when it weighed evidence.
type Refusal = (&'static str, String, Option<IdentifierEvidence>);

/// The shipped model, for the person data of identifier links under rules.
fn shipped_model() -> &'static MatchModel {
    static SHIPPED: std::sync::OnceLock<MatchModel> = std::sync::OnceLock::new();
    SHIPPED.get_or_init(MatchModel::default_model)
}

/// Source profiles by number.
const SOURCE_PROFILES: Table<u64, SourceProfile> = Table::new(keys::resolve::SOURCE_PROFILES);
/// Customers by id.
const CUSTOMERS: Table<String, Customer> = Table::new(keys::resolve::CUSTOMERS);
/// The index of identifier values, by (type, value).
const IDENTIFIER_INDEX: Table<(String, String), ValueEntry> =
    Table::new(keys::resolve::IDENTIFIER_INDEX);
/// Anchors, by (channel, type, value) → the source profile.
const ANCHORS: Table<(String, String, String), u64> = Table::new(keys::resolve::ANCHORS);
/// Blocks of fuzzy matching, by blocking key.
const BLOCKING_KEYS: Table<u64, Block> = Table::new(keys::resolve::BLOCKING_KEYS);

/// Where a blocking key's block is stored: the first eight bytes of its SHA-256. The
/// store then holds no name, birth date or e-mail in its keys, and every key has the
/// same eight bytes (sled splits and copies fewer nodes than with the text: about a
/// third of the stream's writes under probabilistic blocking). Two keys that collide
/// (one chance in 2^64 per pair) only share candidates, which are then scored.
fn block_id(key: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 has 32 bytes"))
}
/// Merge logs, by customer.
const MERGE_LOGS: Table<String, Vec<MergeLog>> = Table::new(keys::resolve::MERGE_LOGS);
/// A merged-away customer id → the customer it was merged into.
const ALIASES: Table<String, String> = Table::new(keys::resolve::ALIASES);
const NEXT_SOURCE_PROFILE: Cell<u64> = Cell::new(keys::resolve::NEXT_SOURCE_PROFILE);
const NEXT_CUSTOMER_SEQ: Cell<u64> = Cell::new(keys::resolve::NEXT_CUSTOMER_SEQ);
const LIVE_CUSTOMERS: Cell<i64> = Cell::new(keys::resolve::LIVE_CUSTOMERS);
const NEXT_SPLIT_TOKEN: Cell<u64> = Cell::new(keys::resolve::NEXT_SPLIT_TOKEN);

/// The key of an identifier in [`IDENTIFIER_INDEX`].
fn value_key(id: &Ident) -> (&str, &str) {
    (&id.kind, &id.value)
}

/// The key of an anchor in [`ANCHORS`].
fn anchor_key<'a>(channel: &'a str, id: &'a Ident) -> (&'a str, &'a str, &'a str) {
    (channel, &id.kind, &id.value)
}

/// The resolve stage. Holds configuration only; all state is in the [`Store`].
pub struct Resolver {
    config: EngineConfig,
    priority: HashMap<String, u32>,
    junk_raw: HashSet<String>,
    junk_normalised: HashSet<(String, String)>,
    matcher: Matcher,
}

/// Evidence that an event belongs to an existing customer.
#[derive(Default)]
struct Evidence {
    strong: BTreeSet<String>,
    weak: BTreeSet<String>,
    identifiers: BTreeSet<Ident>,
}

/// One event being resolved: what each step of [`Resolver::resolve`] finds and leaves
/// for the next.
struct Resolving<'e> {
    tp: &'e Touchpoint,
    /// The event time, as identity change records carry it.
    at: String,
    counts: Stats,
    /// Records for `identity.changes`, in order.
    changes: Vec<IdentityChange>,
    commands: Vec<ProfileCommand>,
    /// The event's usable identifiers, strongest first (step 1); those of its unique
    /// values its customer agrees with (step 4). Taken by step 5.
    ids: Vec<Ident>,
    /// The event's strongest identifier: what a new source profile is anchored on.
    strongest: Option<Ident>,
    /// The person the event states, in match-key form (minimised).
    sig: PersonSig,
    /// The address the event states (fuzzy matching and identifier evidence weigh it).
    address: Option<AddressKey>,
    /// The identifier the event's anchor is kept under in its channel, unless the
    /// anchor was refused (step 2).
    anchor_on: Option<Ident>,
    /// The source profile the anchor points to, unless refused (step 2).
    anchor: Option<(u64, SourceProfile)>,
    /// The customers the event joins (steps 3 to 7b), its own first.
    group: Vec<(String, Customer)>,
    /// Values the group holds, of every type (with the event's values of unique types).
    held: BTreeSet<Ident>,
    /// Source profiles of the customers in the group.
    group_source_profiles: usize,
    /// People of the group, and the event's.
    people: Vec<PersonSig>,
    /// Split tokens of the group.
    apart: Vec<(u64, bool)>,
    matched_on: BTreeSet<String>,
    /// Values that may link, with their index entry and whether it changed (step 5).
    entries: Vec<(Ident, ValueEntry, bool)>,
    /// Source profiles read so far.
    sp_cache: HashMap<u64, Arc<SourceProfile>>,
    /// The blocking keys of the event's person data and where their blocks are
    /// (step 7): the blocks its source profile joins are mostly these.
    block_ids: Vec<(String, u64)>,
    /// How each candidate that joined is linked to the event, and by which values.
    links: HashMap<String, (Link, Vec<Ident>)>,
    /// Identifier types and values that linked candidates (step 7).
    link_kinds: BTreeSet<String>,
    linked_by: BTreeSet<Ident>,
    /// Customers in the group after step 7: linked by identifiers.
    deterministic_members: usize,
    /// The event states person data its source profile did not have (step 7b).
    new_person: bool,
    /// Candidates a rule suggests, with the source profile compared (step 7b).
    suggestions: Vec<(String, u64, matching::Verdict)>,
    /// The best fuzzy link's score and the fields it matched on.
    best_fuzzy: Option<(f64, Vec<String>)>,
    /// Probabilistic scoring: the weights of each fuzzy link, by candidate.
    link_weights: HashMap<String, Weights>,
}

impl<'e> Resolving<'e> {
    fn new(
        tp: &'e Touchpoint,
        ids: Vec<Ident>,
        sig: PersonSig,
        address: Option<AddressKey>,
        counts: Stats,
    ) -> Self {
        Self {
            tp,
            at: rfc3339(tp.occurred_at),
            counts,
            changes: Vec::new(),
            commands: Vec::new(),
            strongest: ids.first().cloned(),
            ids,
            sig,
            address,
            anchor_on: None,
            anchor: None,
            group: Vec::new(),
            held: BTreeSet::new(),
            group_source_profiles: 0,
            people: Vec::new(),
            apart: Vec::new(),
            matched_on: BTreeSet::new(),
            entries: Vec::new(),
            sp_cache: HashMap::new(),
            block_ids: Vec::new(),
            links: HashMap::new(),
            link_kinds: BTreeSet::new(),
            linked_by: BTreeSet::new(),
            deterministic_members: 0,
            new_person: false,
            suggestions: Vec::new(),
            best_fuzzy: None,
            link_weights: HashMap::new(),
        }
    }

    /// The answer when there is nobody to resolve the event to.
    fn nobody(mut self, method: Method) -> Resolution {
        self.counts.unresolved = u64::from(method == Method::Unresolved);
        Resolution {
            customer_id: None,
            method,
            matched_on: Vec::new(),
            score: None,
            identity_changes: Vec::new(),
            commands: Vec::new(),
            counts: self.counts,
        }
    }

    /// The customer the event resolves to so far: its own source profile's, else the
    /// first candidate that joined.
    fn group_customer(&self) -> Option<String> {
        self.group.first().map(|(id, _)| id.clone())
    }

    /// A link refused by `rule` (a guardrail), between the group and `other`.
    fn conflict(
        &self,
        other: Option<String>,
        rule: &'static str,
        identifier_type: Option<String>,
        identifiers: Vec<Ident>,
    ) -> Conflict {
        Conflict {
            customer_id: self.group_customer(),
            other_customer_id: other,
            rule,
            identifier_type,
            identifiers,
            match_rule: None,
            score: None,
            fields: None,
            weights: None,
            event_id: self.tp.event_id.clone(),
            at: self.at.clone(),
        }
    }

    /// Counts and records a refused link: a `conflict` record, unless the event has
    /// written `max_records` already (counted).
    fn refused(&mut self, conflict: Conflict, max_records: usize) {
        self.counts.conflicts += 1;
        let written = self
            .changes
            .iter()
            .filter(|c| matches!(c, IdentityChange::Conflict(_)))
            .count();
        if written < max_records {
            self.changes.push(IdentityChange::Conflict(conflict));
        } else {
            self.counts.conflict_records_dropped += 1;
        }
    }

    /// The `merge` record of step 9: by shared identifiers, or, with fuzzy links among
    /// the merged, by the first one's rule at the lowest of their scores.
    fn merge_record(
        &mut self,
        survivor: &str,
        merged_ids: Vec<String>,
        fuzzy_links: &[(String, Link)],
    ) -> Merge {
        let mut record = Merge {
            customer_id: survivor.to_string(),
            merged_ids,
            rule: Some("deterministic".into()),
            matched_on: std::mem::take(&mut self.link_kinds).into_iter().collect(),
            identifiers: std::mem::take(&mut self.linked_by).into_iter().collect(),
            score: 1.0,
            fields: None,
            links: None,
            event_id: self.tp.event_id.clone(),
            at: self.at.clone(),
        };
        if let Some((_, first)) = fuzzy_links.first() {
            record.rule = first.rule.clone();
            record.score = fuzzy_links
                .iter()
                .filter_map(|(_, l)| l.score)
                .fold(1.0, f64::min);
            record.fields = Some(FieldScores(first.fields.clone()));
            record.links = Some(
                fuzzy_links
                    .iter()
                    .map(|(id, l)| FuzzyLink {
                        // The link is the merged customer's, else the survivor's.
                        weights: self
                            .link_weights
                            .get(id)
                            .or_else(|| self.link_weights.get(survivor))
                            .cloned(),
                        ..FuzzyLink::new(id, l)
                    })
                    .collect(),
            );
        }
        record
    }
}

/// The customer an event resolves to (steps 8 to 11).
struct Survivor {
    id: String,
    customer: Customer,
    method: Method,
    /// Its number of source profiles before the event.
    source_profiles_before: usize,
    /// Its record changed and must be written.
    dirty: bool,
}

/// The source profile an event attaches to (step 10).
struct Attachment {
    id: u64,
    profile: SourceProfile,
    /// Found through the event's anchor (else new).
    anchored: bool,
    /// Changed and must be written.
    dirty: bool,
}

impl Resolver {
    pub fn new(config: &EngineConfig) -> Self {
        let junk_raw: HashSet<String> = config
            .guardrails
            .junk_values
            .iter()
            .map(|j| j.trim().to_lowercase())
            .collect();
        let mut junk_normalised = HashSet::new();
        for (kind, t) in &config.identifiers {
            for j in &config.guardrails.junk_values {
                if let Ok(v) = t.normaliser.apply(j, &config.default_region) {
                    junk_normalised.insert((kind.clone(), v));
                }
            }
        }
        Self {
            priority: config
                .identifiers
                .iter()
                .map(|(k, t)| (k.clone(), t.priority))
                .collect(),
            config: config.clone(),
            junk_raw,
            junk_normalised,
            matcher: Matcher::new(&config.matching),
        }
    }

    /// Normalises an identifier as resolve does; `None` if unusable or junk.
    pub fn normalise_identifier(&self, kind: &str, raw: &str) -> Option<Ident> {
        self.normalise_checked(kind, raw).ok()
    }

    fn normalise_checked(&self, kind: &str, raw: &str) -> Result<Ident, Unfit> {
        let t = self.config.identifiers.get(kind).ok_or(Unfit::Unusable)?;
        let trimmed = raw.trim();
        if trimmed.chars().count() <= 1 || self.junk_raw.contains(&trimmed.to_lowercase()) {
            return Err(Unfit::Junk);
        }
        let value = t
            .normaliser
            .apply(raw, &self.config.default_region)
            .map_err(|_| Unfit::Unusable)?;
        let placeholder = match t.normaliser {
            Normaliser::Email => {
                normalise::is_placeholder_email(&value, &self.config.guardrails.junk_email_locals)
            }
            Normaliser::Phone => normalise::is_placeholder_phone(&value),
            _ => false,
        };
        if placeholder
            || value.chars().count() <= 1
            || self
                .junk_normalised
                .contains(&(kind.to_string(), value.clone()))
        {
            return Err(Unfit::Junk);
        }
        Ok(Ident::new(kind, value))
    }

    /// The customer that currently holds a (normalised) identifier, if any.
    pub fn customer_of(&self, store: &Store, id: &Ident) -> Result<Option<String>, StoreError> {
        let Some(entry) = IDENTIFIER_INDEX.get(store, value_key(id))? else {
            return Ok(None);
        };
        for sp in entry.source_profiles {
            if let Some(sp) = SOURCE_PROFILES.get(store, sp)? {
                return Ok(Some(sp.customer));
            }
        }
        Ok(None)
    }

    /// Whether anything at all is in resolve's part of the store, in this layout or an
    /// older one: a store without a format that holds something is of an older format.
    pub fn holds_anything(&self, store: &Store) -> Result<bool, StoreError> {
        keys::resolve::NAMESPACE.holds_anything(store)
    }

    /// What an event says of the person, as matching training reads it (the same match
    /// keys as resolve keeps, within the minimisation allow-lists); `None` without
    /// person data.
    pub fn training_record(&self, tp: &Touchpoint) -> Option<train::TrainRecord> {
        let sig = self.minimised(PersonSig::from_touchpoint(tp));
        if sig.is_empty() {
            return None;
        }
        let address = tp
            .person
            .as_ref()
            .and_then(|p| p.address.as_ref())
            .filter(|_| self.config.gdpr.person_field_allowed("address"))
            .map(AddressKey::from_address)
            .unwrap_or_default();
        let mut emails: Vec<String> = tp
            .identifiers
            .iter()
            .filter(|(kind, _)| kind == "email")
            .filter_map(|(kind, raw)| self.normalise_identifier(kind, raw))
            .map(|id| id.value)
            .collect();
        emails.sort();
        emails.dedup();
        Some(train::TrainRecord {
            first: sig.first,
            last: sig.last,
            birth: sig.birth,
            street: address.street,
            postal_code: address.postal_code,
            city: address.city,
            emails,
        })
    }

    /// The person data of every source profile of a store, for matching training. A
    /// full scan: for `unicus train-matching` on a store no `run` holds, never at run
    /// time.
    pub fn training_records(&self, store: &Store) -> Result<Vec<train::TrainRecord>, StoreError> {
        Ok(SOURCE_PROFILES
            .scan(store)?
            .into_iter()
            .filter(|(_, sp)| !sp.person.is_empty())
            .map(|(_, sp)| {
                let emails = sp.emails();
                train::TrainRecord {
                    first: sp.person.first,
                    last: sp.person.last,
                    birth: sp.person.birth,
                    street: sp.address.street,
                    postal_code: sp.address.postal_code,
                    city: sp.address.city,
                    emails,
                }
            })
            .collect())
    }

    /// Live customers (kept as a counter: counting keys would be a full scan).
    pub fn customer_count(&self, store: &Store) -> Result<i64, StoreError> {
        Ok(LIVE_CUSTOMERS.get(store)?.unwrap_or(0))
    }

    fn is_weak(&self, kind: &str) -> bool {
        self.config.identifiers.get(kind).is_some_and(|t| t.weak)
    }

    fn is_unique(&self, kind: &str) -> bool {
        self.config.identifiers.get(kind).is_some_and(|t| t.unique)
    }

    /// Resolves one validated event, staging the state changes in `store`.
    pub fn resolve(&self, store: &mut Store, tp: &Touchpoint) -> Result<Resolution, StoreError> {
        // 1. Normalise identifiers; strongest first. Nobody to resolve: an identifier of
        // an erased person, or nothing that says who it is.
        let mut r = self.start(tp);
        if let Some(method) = self.nobody_to_resolve(store, &r)? {
            return Ok(r.nobody(method));
        }
        // 2. The source profile this event belongs to, anchored on its strongest id.
        self.find_anchor(store, &mut r)?;
        // 3. The group of customers this event joins starts with its own.
        self.start_group(store, &mut r)?;
        // 4. The event's own unique values must agree with its own customer.
        self.check_own_unique_values(&mut r);
        // 5. Who carries each value; values turning generic stop linking here.
        self.read_value_entries(store, &mut r)?;
        // 6. Candidate customers, with the evidence of each.
        let evidence = self.gather_evidence(store, &mut r)?;
        // 7. Join candidates oldest first, unless a guardrail refuses.
        self.join_candidates(store, &mut r, evidence)?;
        // 7b. Fuzzy candidates, when the event states person data its source profile
        // did not have.
        let verdicts = self.fuzzy_candidates(store, &mut r)?;
        self.join_fuzzy_candidates(store, &mut r, verdicts)?;
        // 8. The survivor: the oldest customer of the group, or a new one.
        let mut survivor = self.survivor(store, &mut r)?;
        // 9. Merge the others into the survivor.
        self.merge_group(store, &mut r, &mut survivor)?;
        // 10. Attach the event to its source profile.
        let (sp_id, attached) = self.attach(store, &mut r, &mut survivor)?;
        // 11. Suggestions for a person to decide, and the profile stage's commands.
        self.suggest(&mut r, &survivor, sp_id);
        Ok(self.finish(r, survivor, sp_id, attached))
    }

    /// Step 1: the event's usable identifiers, strongest first (junk and unusable values
    /// counted), and the person it states.
    fn start<'e>(&self, tp: &'e Touchpoint) -> Resolving<'e> {
        let mut counts = Stats::default();
        let mut ids: Vec<Ident> = Vec::with_capacity(tp.identifiers.len());
        for (kind, raw) in &tp.identifiers {
            match self.normalise_checked(kind, raw) {
                Ok(id) => ids.push(id),
                Err(Unfit::Junk) => counts.junk_values += 1,
                Err(Unfit::Unusable) => counts.unusable_values += 1,
            }
        }
        ids.sort_by(|a, b| {
            (self.priority[&a.kind], &a.kind, &a.value).cmp(&(
                self.priority[&b.kind],
                &b.kind,
                &b.value,
            ))
        });
        ids.dedup();
        let sig = self.minimised(PersonSig::from_touchpoint(tp));
        let address = self.event_address(tp);
        Resolving::new(tp, ids, sig, address, counts)
    }

    /// Step 1, the end: an identifier of an erased customer (suppressed), or no usable
    /// identifier and no person data (unresolved).
    fn nobody_to_resolve(
        &self,
        store: &Store,
        r: &Resolving,
    ) -> Result<Option<Method>, StoreError> {
        if !gdpr::suppressed(store, &self.config, &r.ids)?.is_empty() {
            return Ok(Some(Method::Suppressed));
        }
        Ok((r.ids.is_empty() && r.tp.person.is_none()).then_some(Method::Unresolved))
    }

    /// Step 2: the source profile the event's strongest identifier anchors in its
    /// channel, unless that id no longer says who the person is: a generic value, or (for
    /// a type that is not unique) a source profile of clearly somebody else, like the
    /// shop's own phone typed for every walk-in. Then the event makes a source profile of
    /// its own, and the anchor keeps pointing where it did.
    fn find_anchor(&self, store: &Store, r: &mut Resolving) -> Result<(), StoreError> {
        let Some(strongest) = r.ids.first() else {
            return Ok(());
        };
        let anchor = match ANCHORS.get(store, anchor_key(&r.tp.channel, strongest))? {
            Some(sp_id) => SOURCE_PROFILES.get(store, sp_id)?.map(|sp| (sp_id, sp)),
            None => None,
        };
        if let Some((_, sp)) = &anchor {
            if self.anchor_refused(store, strongest, sp, r)? {
                r.counts.anchors_refused += 1;
                return Ok(());
            }
        }
        r.anchor = anchor;
        r.anchor_on = Some(strongest.clone());
        Ok(())
    }

    /// Step 3: the customer of the event's source profile starts the group, with what
    /// it holds; the person the event states (else its source profile's) joins its people.
    fn start_group(&self, store: &Store, r: &mut Resolving) -> Result<(), StoreError> {
        if let Some((_, sp)) = &r.anchor {
            if let Some(c) = CUSTOMERS.get(store, &sp.customer)? {
                r.matched_on.insert(r.ids[0].kind.clone());
                r.held = c.identifiers.iter().cloned().collect();
                r.group_source_profiles = c.source_profiles.len();
                r.people = c.people.clone();
                r.apart = c.apart.clone();
                r.group.push((sp.customer.clone(), c));
            }
        }
        if !r.sig.is_empty() {
            r.people.push(r.sig.clone());
        } else if let Some((_, sp)) = &r.anchor {
            if !sp.person.is_empty() {
                r.people.push(sp.person.clone());
            }
        }
        Ok(())
    }

    /// Step 4: an event's value of a unique type that its own customer holds another
    /// value of is refused (a conflict); the others are held by the group from now on.
    fn check_own_unique_values(&self, r: &mut Resolving) {
        let ids = std::mem::take(&mut r.ids);
        let mut accepted: Vec<Ident> = Vec::with_capacity(ids.len());
        for id in ids {
            if self.is_unique(&id.kind) {
                let other = r
                    .held
                    .iter()
                    .find(|h| h.kind == id.kind && h.value != id.value)
                    .cloned();
                if let Some(other) = other {
                    let kind = Some(id.kind.clone());
                    let conflict = r.conflict(None, "unique_identifier", kind, vec![id, other]);
                    r.refused(conflict, self.config.limits.max_conflicts_per_event);
                    continue;
                }
                r.held.insert(id.clone());
            }
            accepted.push(id);
        }
        r.ids = accepted;
    }

    /// Step 5: the index entry of each value, with the event's person added to the
    /// people seen with it. A value carried by too many people or source profiles turns
    /// generic (recorded) and stops linking here, like one that already was.
    fn read_value_entries(&self, store: &mut Store, r: &mut Resolving) -> Result<(), StoreError> {
        let sig = people_sig(&r.sig, r.anchor.as_ref().map(|(_, sp)| &sp.person));
        let guardrails = &self.config.guardrails;
        for id in std::mem::take(&mut r.ids) {
            let mut entry = IDENTIFIER_INDEX
                .get(store, value_key(&id))?
                .unwrap_or_default();
            let mut dirty = false;
            if entry.generic {
                r.counts.generic_skipped += 1;
                continue;
            }
            if let Some(s) = sig {
                if !s.is_empty() && entry.people.iter().all(|p| p.disagrees(s)) {
                    entry.people.push(s.clone());
                    dirty = true;
                }
            }
            if entry.people.len() > guardrails.generic_after_people
                || entry.source_profiles.len() >= guardrails.max_profiles_per_value
            {
                entry.generic = true;
                entry.people.clear();
                IDENTIFIER_INDEX.put(store, value_key(&id), &entry)?;
                r.counts.generic_values += 1;
                r.counts.generic_skipped += 1;
                let record = GenericValue {
                    customer_id: r.group_customer(),
                    identifier: id,
                    people: guardrails.generic_after_people + 1,
                    source_profiles: entry.source_profiles.len(),
                    event_id: r.tp.event_id.clone(),
                    at: r.at.clone(),
                };
                r.changes.push(IdentityChange::GenericValue(record));
                continue;
            }
            r.entries.push((id, entry, dirty));
        }
        Ok(())
    }

    /// Step 6: the other customers carrying the event's values, with the evidence of
    /// each (identifier types, strong or weak, and values).
    fn gather_evidence(
        &self,
        store: &Store,
        r: &mut Resolving,
    ) -> Result<BTreeMap<String, Evidence>, StoreError> {
        let mut evidence: BTreeMap<String, Evidence> = BTreeMap::new();
        for (id, entry, _) in &r.entries {
            for sp_id in &entry.source_profiles {
                let Some(sp) = cached_source_profile(store, &mut r.sp_cache, *sp_id)? else {
                    continue;
                };
                let customer = &sp.customer;
                if r.group.iter().any(|(g, _)| g == customer) {
                    r.matched_on.insert(id.kind.clone());
                    continue;
                }
                let e = evidence.entry(customer.clone()).or_default();
                if self.is_weak(&id.kind) {
                    e.weak.insert(id.kind.clone());
                } else {
                    e.strong.insert(id.kind.clone());
                }
                e.identifiers.insert(id.clone());
            }
        }
        Ok(evidence)
    }

    /// Step 7: candidates join the group oldest first, each linked by the identifiers
    /// it shares, unless a guardrail refuses (a conflict).
    fn join_candidates(
        &self,
        store: &Store,
        r: &mut Resolving,
        evidence: BTreeMap<String, Evidence>,
    ) -> Result<(), StoreError> {
        let mut candidates: Vec<(String, Customer, Evidence)> = Vec::with_capacity(evidence.len());
        for (cid, ev) in evidence {
            if let Some(c) = CUSTOMERS.get(store, &cid)? {
                candidates.push((cid, c, ev));
            }
        }
        candidates.sort_by_key(|(_, c, _)| c.seq);
        for (cid, c, ev) in candidates {
            if let Some((rule, kind, weighed)) = self.identifier_refusal(r, &cid, &c, &ev) {
                let identifiers = ev.identifiers.into_iter().collect();
                let mut conflict = r.conflict(Some(cid), rule, Some(kind), identifiers);
                if let Some(e) = weighed {
                    conflict.score = Some(matching::round3(model::probability(e.total())));
                    conflict.weights = Some(e.weights());
                }
                r.refused(conflict, self.config.limits.max_conflicts_per_event);
                continue;
            }
            self.absorb(r, &c);
            r.matched_on.extend(ev.kinds().cloned());
            r.link_kinds.extend(ev.kinds().cloned());
            r.linked_by.extend(ev.identifiers.iter().cloned());
            let link = Link {
                method: "identifier".into(),
                rule: Some("deterministic".into()),
                score: Some(1.0),
                matched_on: ev.kinds().cloned().collect(),
                event_id: r.tp.event_id.clone(),
                at: r.tp.occurred_at,
                ..Link::default()
            };
            r.links
                .insert(cid.clone(), (link, ev.identifiers.into_iter().collect()));
            r.group.push((cid, c));
        }
        r.deterministic_members = r.group.len();
        Ok(())
    }

    /// The guardrail that refuses a candidate found through shared identifiers, the
    /// identifier type it names, and the evidence it weighed. Hard refusals: a unique
    /// type's second value, an operator's split, a bound. Otherwise the shared values'
    /// weight (less their spread) plus what the person data weigh decides, between the
    /// event and the candidate's source profiles carrying the values, and between the
    /// candidate and each customer already in the group (a value of a unique type
    /// shared links whatever the person data).
    fn identifier_refusal(
        &self,
        r: &Resolving,
        cid: &str,
        c: &Customer,
        ev: &Evidence,
    ) -> Option<Refusal> {
        if let Some(clash) = self.unique_clash(c, &r.held) {
            return Some(("unique_identifier", clash, None));
        }
        if c.kept_apart_from(&r.apart) {
            let kind = ev.kinds().next().cloned().unwrap_or_default();
            return Some(("never_link", kind, None));
        }
        if !ev.strong.iter().any(|k| self.is_unique(k)) {
            if let Some(weighed) = self.identifier_evidence_against(r, cid, c, ev) {
                return Some(if ev.strong.is_empty() {
                    let kind = ev.weak.iter().next().cloned().unwrap_or_default();
                    ("weak_identifier_contradiction", kind, Some(weighed))
                } else {
                    let kind = ev.kinds().next().cloned().unwrap_or_default();
                    ("identifier_contradiction", kind, Some(weighed))
                });
            }
        }
        // A bound on source profiles names no type: the evidence's stands for it.
        self.size_refusal(r, c)
            .map(|(rule, kind)| match kind.is_empty() {
                true => (rule, ev.kinds().next().cloned().unwrap_or_default(), None),
                false => (rule, kind, None),
            })
    }

    /// The evidence that does not link a candidate found through shared values, if any:
    /// against the event (its person data, else its source profile's), compared with
    /// the candidate's source profiles that carry the values (else its people), then
    /// against each customer of the group, people with people.
    fn identifier_evidence_against(
        &self,
        r: &Resolving,
        cid: &str,
        c: &Customer,
        ev: &Evidence,
    ) -> Option<IdentifierEvidence> {
        let identifier = r
            .entries
            .iter()
            .filter(|(id, _, _)| ev.identifiers.contains(id))
            .map(|(id, entry, _)| self.identifier_weight(&id.kind, entry.people.len()))
            .fold(f64::NEG_INFINITY, f64::max);
        let identifier = if identifier.is_finite() {
            identifier
        } else {
            0.0
        };
        let anchor_sp = r.anchor.as_ref().map(|(_, sp)| sp);
        let event = event_view(&r.sig, anchor_sp, r.address.as_ref(), &[]);
        let carrying: Vec<&SourceProfile> = r
            .entries
            .iter()
            .filter(|(id, _, _)| ev.identifiers.contains(id))
            .flat_map(|(_, entry, _)| &entry.source_profiles)
            .filter_map(|sp| r.sp_cache.get(sp).map(|sp| &**sp))
            .filter(|sp| sp.customer == cid && !sp.person.is_empty())
            .collect();
        // Its people that no carrying source profile states are compared without an
        // address (customers keep none).
        let theirs = carrying.iter().map(|sp| sp.view()).chain(
            c.people
                .iter()
                .filter(|p| carrying.iter().all(|sp| sp.person != **p))
                .map(PersonSig::view),
        );
        let weak = ev.strong.is_empty();
        let person = self.best_person_weights(std::iter::once(event), theirs, weak);
        let against_event = IdentifierEvidence { identifier, person };
        if !against_event.links() {
            return Some(against_event);
        }
        // The event's own customer counts the event's person among its people.
        let own = r.anchor.as_ref().map(|(_, sp)| sp.customer.as_str());
        r.group.iter().find_map(|(gid, g)| {
            let event_person = (Some(gid.as_str()) == own).then_some(event);
            let person = self.best_person_weights(
                g.people.iter().map(PersonSig::view).chain(event_person),
                c.people.iter().map(PersonSig::view),
                weak,
            )?;
            let e = IdentifierEvidence {
                identifier,
                person: Some(person),
            };
            (!e.links()).then_some(e)
        })
    }

    /// The weight of a shared value of type `kind` seen with `spread` different people.
    fn identifier_weight(&self, kind: &str, spread: usize) -> f64 {
        let g = &self.config.guardrails;
        let base = if self.is_weak(kind) {
            g.weak_identifier_weight
        } else {
            g.identifier_weight
        };
        base - g.spread_penalty * spread.saturating_sub(1) as f64
    }

    /// What the person data of two views weigh (`None` when no field is on both
    /// sides), under the scoring model (the shipped one under rules). First names and
    /// birth dates both different are two people whatever else they share: a last name
    /// and an address are a household's, so they weigh nothing for them then; nor does
    /// the last name for different first names alone when the value shared is `weak`
    /// (a household's phone, its computer's cookie; the address still weighs).
    fn person_weights(&self, a: &MatchView, b: &MatchView, weak: bool) -> Option<PersonWeights> {
        if !a.has_person() || !b.has_person() {
            return None;
        }
        let model = self.matcher.model().unwrap_or_else(|| shipped_model());
        let score = model.score(a, b);
        let level = |f: Field| score.fields.iter().find(|w| w.field == f).map(|w| w.level);
        let other_first = level(Field::FirstName) == Some("different");
        let household = other_first && level(Field::BirthDate) == Some("different");
        let fields: Vec<FieldWeight> = score
            .fields
            .into_iter()
            .filter(|w| w.field != Field::EmailLocal)
            .map(|mut w| {
                let shared_by_households = matches!(
                    w.field,
                    Field::LastName | Field::Street | Field::PostalCode | Field::City
                );
                let surname = weak && other_first && w.field == Field::LastName;
                if (household && shared_by_households || surname) && w.weight > 0.0 {
                    w.weight = 0.0;
                    w.tf_adjustment = 0.0;
                }
                w
            })
            .collect();
        if fields.is_empty() {
            return None;
        }
        Some(PersonWeights {
            total: fields.iter().map(|w| w.weight).sum(),
            fields,
        })
    }

    /// The best-weighing pair of views from `a` and `b`, if any compares.
    fn best_person_weights<'v>(
        &self,
        a: impl Iterator<Item = MatchView<'v>>,
        b: impl Iterator<Item = MatchView<'v>> + Clone,
        weak: bool,
    ) -> Option<PersonWeights> {
        let mut best: Option<PersonWeights> = None;
        for x in a {
            for y in b.clone() {
                if let Some(w) = self.person_weights(&x, &y, weak) {
                    if best.as_ref().is_none_or(|b| w.total > b.total) {
                        best = Some(w);
                    }
                }
            }
        }
        best
    }

    /// The bound a candidate joining the group would break: more source profiles than
    /// `max_source_profiles_per_customer` (counting the one a new source profile of the
    /// event would add), or more values of a type than its limit. A customer never grows
    /// past them, so neither does its golden record.
    fn size_refusal(&self, r: &Resolving, c: &Customer) -> Option<(&'static str, String)> {
        let new_source_profile = usize::from(r.anchor.is_none());
        self.growth_refusal(&r.held, r.group_source_profiles + new_source_profile, c)
    }

    /// What refuses `c` joining a customer that holds `held` and has `source_profiles`:
    /// `source_profile_limit`, or `identifier_limit` and the type (a unique type's clash
    /// is told apart before).
    fn growth_refusal(
        &self,
        held: &BTreeSet<Ident>,
        source_profiles: usize,
        c: &Customer,
    ) -> Option<(&'static str, String)> {
        let max = self.config.limits.max_source_profiles_per_customer;
        if source_profiles + c.source_profiles.len() > max {
            return Some(("source_profile_limit", String::new()));
        }
        let mut kinds: Vec<&str> = c.identifiers.iter().map(|i| i.kind.as_str()).collect();
        kinds.dedup();
        kinds.into_iter().find_map(|kind| {
            let limit = self.config.identifiers.get(kind).map_or(0, |t| t.limit);
            let theirs = c.identifiers.iter().filter(|i| i.kind == kind);
            let new = theirs.filter(|i| !held.contains(*i)).count();
            let mine = held.iter().filter(|i| i.kind == kind).count();
            (new > 0 && mine + new > limit).then(|| ("identifier_limit", kind.to_string()))
        })
    }

    /// Step 7b, the search: when the event states person data its source profile did
    /// not have (most events of known people skip this entirely), the verdict on each
    /// candidate its blocking keys find.
    fn fuzzy_candidates(
        &self,
        store: &Store,
        r: &mut Resolving,
    ) -> Result<Vec<(String, u64, matching::Verdict)>, StoreError> {
        let anchor_sp = r.anchor.as_ref().map(|(_, sp)| sp);
        r.new_person = (!r.sig.is_empty() && anchor_sp.is_none_or(|sp| sp.person != r.sig))
            || r.address
                .as_ref()
                .is_some_and(|a| anchor_sp.is_none_or(|sp| &sp.address != a));
        if !self.matcher.enabled() || !r.new_person {
            return Ok(Vec::new());
        }
        let emails = event_emails(&r.entries, anchor_sp);
        let view = event_view(&r.sig, anchor_sp, r.address.as_ref(), &emails);
        if !view.has_person() {
            return Ok(Vec::new());
        }
        r.counts.fuzzy_searches = 1;
        let own_sp = r.anchor.as_ref().map(|(id, _)| *id);
        let candidates = self.blocked_with(store, &view, own_sp, &mut r.block_ids)?;
        self.fuzzy_verdicts(
            store,
            &view,
            candidates,
            &r.group,
            &mut r.sp_cache,
            &mut r.counts,
        )
    }

    /// Step 7b, the links: a candidate a rule links joins the group unless a guardrail
    /// refuses (a conflict); one it only suggests is kept for step 11.
    fn join_fuzzy_candidates(
        &self,
        store: &Store,
        r: &mut Resolving,
        verdicts: Vec<(String, u64, matching::Verdict)>,
    ) -> Result<(), StoreError> {
        for (cid, cand_sp, verdict) in verdicts {
            if r.group.iter().any(|(g, _)| *g == cid) {
                continue;
            }
            let Some(rule) = self.matcher.rule_name(&verdict) else {
                continue;
            };
            if verdict.decision == MatchDecision::Suggest {
                r.suggestions.push((cid, cand_sp, verdict));
                continue;
            }
            let Some(c) = CUSTOMERS.get(store, &cid)? else {
                continue;
            };
            if let Some((guardrail, kind)) = self.fuzzy_refusal(r, &c) {
                let kind = (!kind.is_empty()).then_some(kind);
                let conflict = Conflict {
                    match_rule: Some(rule),
                    score: Some(verdict.score),
                    fields: Some(FieldScores(verdict.similarities.compared())),
                    weights: Weights::of(&verdict),
                    ..r.conflict(Some(cid), guardrail, kind, Vec::new())
                };
                r.refused(conflict, self.config.limits.max_conflicts_per_event);
                continue;
            }
            self.absorb(r, &c);
            *r.counts.fuzzy_links.entry(rule.clone()).or_default() += 1;
            if r.best_fuzzy
                .as_ref()
                .is_none_or(|(s, _)| verdict.score > *s)
            {
                r.best_fuzzy = Some((verdict.score, self.matcher.matched_fields(&verdict)));
            }
            if let Some(w) = Weights::of(&verdict) {
                r.link_weights.insert(cid.clone(), w);
            }
            let link = Link {
                method: "fuzzy".into(),
                rule: Some(rule),
                score: Some(verdict.score),
                matched_on: Vec::new(),
                fields: verdict.similarities.compared(),
                with_source_profile: Some(cand_sp),
                event_id: r.tp.event_id.clone(),
                at: r.tp.occurred_at,
            };
            r.links.insert(cid.clone(), (link, Vec::new()));
            r.group.push((cid, c));
        }
        if let Some((_, fields)) = &r.best_fuzzy {
            r.matched_on.extend(fields.iter().cloned());
        }
        Ok(())
    }

    /// The guardrail that refuses a candidate a match rule links, and the identifier type
    /// it names (empty when none).
    fn fuzzy_refusal(&self, r: &Resolving, c: &Customer) -> Option<(&'static str, String)> {
        if let Some(clash) = self.unique_clash(c, &r.held) {
            Some(("unique_identifier", clash))
        } else if c.kept_apart_from(&r.apart) {
            Some(("never_link", String::new()))
        } else if c.people.iter().any(|p| {
            r.people.iter().any(|q| {
                if self.matcher.probabilistic() {
                    p.contradicts_beyond_typos(q, self.config.matching.contradiction_veto)
                } else {
                    p.contradicts(q)
                }
            })
        }) {
            Some(("person_contradiction", String::new()))
        } else {
            self.size_refusal(r, c)
        }
    }

    /// Step 8: the oldest customer of the group, taken out of it; a new customer when
    /// the group is empty.
    fn survivor(&self, store: &mut Store, r: &mut Resolving) -> Result<Survivor, StoreError> {
        let (id, customer, method) = if r.group.is_empty() {
            let seq = next_counter(store, &NEXT_CUSTOMER_SEQ)?;
            add_live_customers(store, 1)?;
            r.counts.new_customers = 1;
            let id = new_customer_id(r.tp.occurred_at, &r.tp.event_id);
            (id, Customer::new(seq), Method::New)
        } else {
            let method = if r.deterministic_members > 0 {
                Method::Deterministic
            } else {
                Method::Fuzzy
            };
            r.group.sort_by_key(|(_, c)| c.seq);
            let (id, c) = r.group.remove(0);
            (id, c, method)
        };
        Ok(Survivor {
            source_profiles_before: customer.source_profiles.len(),
            id,
            customer,
            method,
            dirty: false,
        })
    }

    /// Step 9: the rest of the group merges into the survivor (a `merge` record).
    fn merge_group(
        &self,
        store: &mut Store,
        r: &mut Resolving,
        s: &mut Survivor,
    ) -> Result<(), StoreError> {
        if r.group.is_empty() {
            return Ok(());
        }
        let others = std::mem::take(&mut r.group);
        let merged_ids: Vec<String> = others.iter().map(|(id, _)| id.clone()).collect();
        let (merge_commands, fuzzy_links) = self.merge_into(
            store,
            &s.id,
            &mut s.customer,
            others,
            &r.links,
            &mut r.sp_cache,
            r.tp.occurred_at,
            &mut r.counts,
        )?;
        r.counts.merges += merge_commands.len() as u64;
        r.commands.extend(merge_commands);
        let record = r.merge_record(&s.id, merged_ids, &fuzzy_links);
        r.changes.push(IdentityChange::Merge(record));
        Ok(())
    }

    /// Step 10: the event attaches to its source profile (its anchor's, else a new one),
    /// and its identifiers and person data to it and to the survivor. Records are written
    /// only when they change: most events of known customers change nothing here.
    /// Returns the source profile and the identifiers attached.
    fn attach(
        &self,
        store: &mut Store,
        r: &mut Resolving,
        s: &mut Survivor,
    ) -> Result<(u64, Vec<Ident>), StoreError> {
        s.dirty = s.method == Method::New || r.counts.merges > 0;
        let mut sp = self.event_source_profile(store, r, s)?;
        // Blocking keys follow the person data of the source profile.
        let keys_before = self.blocking_keys_to_track(r, &sp);
        let attached = self.attach_identifiers(store, r, s, &mut sp)?;
        restate_person(r, s, &mut sp, self.config.limits.max_people_per_customer);
        if let Some(before) = keys_before {
            let after = source_profile_keys(&self.matcher, &sp.profile);
            self.update_blocks(store, sp.id, (&before, &after), &r.block_ids, &mut r.counts)?;
        }
        if sp.dirty {
            SOURCE_PROFILES.put(store, sp.id, &sp.profile)?;
        }
        if s.dirty {
            CUSTOMERS.put(store, &s.id, &s.customer)?;
        }
        Ok((sp.id, attached))
    }

    /// The event's source profile, moved to the survivor: its anchor's, else a new one
    /// (anchored when the anchor was not refused) that joined the survivor by the link
    /// that brought it into the group.
    fn event_source_profile(
        &self,
        store: &mut Store,
        r: &mut Resolving,
        s: &mut Survivor,
    ) -> Result<Attachment, StoreError> {
        if let Some((id, mut profile)) = r.anchor.take() {
            let moved = profile.customer != s.id;
            if moved {
                profile.customer = s.id.clone();
            }
            return Ok(Attachment {
                id,
                profile,
                anchored: true,
                dirty: moved,
            });
        }
        let id = next_counter(store, &NEXT_SOURCE_PROFILE)?;
        if let Some(on) = r.anchor_on.take() {
            ANCHORS.put(store, anchor_key(&r.tp.channel, &on), &id)?;
        }
        s.customer.source_profiles.push(id);
        s.dirty = true;
        let joined = match r.links.get(&s.id) {
            Some((link, _)) => link.clone(),
            None => Link {
                method: if s.method == Method::New {
                    "new".into()
                } else {
                    "identifier".into()
                },
                event_id: r.tp.event_id.clone(),
                at: r.tp.occurred_at,
                ..Link::default()
            },
        };
        let profile = SourceProfile {
            customer: s.id.clone(),
            channel: r.tp.channel.clone(),
            anchor: r.strongest.clone(),
            identifiers: Vec::new(),
            person: PersonSig::default(),
            person_at: i64::MIN,
            address: AddressKey::default(),
            joined,
            apart: Vec::new(),
        };
        Ok(Attachment {
            id,
            profile,
            anchored: false,
            dirty: true,
        })
    }

    /// The blocking keys the source profile has before the event, when the event may
    /// change them (a new source profile, new person data, a new e-mail address); `None`
    /// when it cannot.
    fn blocking_keys_to_track(&self, r: &Resolving, sp: &Attachment) -> Option<Vec<String>> {
        let track = self.matcher.enabled()
            && (!sp.anchored
                || r.new_person
                || r.entries
                    .iter()
                    .any(|(id, _, _)| id.kind == "email" && !sp.profile.identifiers.contains(id)));
        let anchored = sp.anchored;
        track.then(|| {
            if anchored {
                source_profile_keys(&self.matcher, &sp.profile)
            } else {
                Vec::new()
            }
        })
    }

    /// The event's values join the source profile and the survivor, up to the limit of
    /// values of each type a customer holds (beyond, dropped and counted); index entries
    /// that changed are written. Returns the identifiers attached.
    fn attach_identifiers(
        &self,
        store: &mut Store,
        r: &mut Resolving,
        s: &mut Survivor,
        sp: &mut Attachment,
    ) -> Result<Vec<Ident>, StoreError> {
        let entries = std::mem::take(&mut r.entries);
        let mut attached = Vec::with_capacity(entries.len());
        for (id, mut entry, mut dirty) in entries {
            if s.customer.identifiers.binary_search(&id).is_err() {
                let limit = self.config.identifiers[&id.kind].limit;
                let held_of_kind = s
                    .customer
                    .identifiers
                    .iter()
                    .filter(|h| h.kind == id.kind)
                    .count();
                if held_of_kind >= limit {
                    r.counts.limit_dropped += 1;
                    if dirty {
                        IDENTIFIER_INDEX.put(store, value_key(&id), &entry)?;
                    }
                    continue;
                }
                insert_sorted(&mut s.customer.identifiers, id.clone());
                s.dirty = true;
            }
            if let Err(pos) = sp.profile.identifiers.binary_search(&id) {
                sp.profile.identifiers.insert(pos, id.clone());
                sp.dirty = true;
            }
            if !entry.source_profiles.contains(&sp.id) {
                entry.source_profiles.push(sp.id);
                dirty = true;
            }
            if dirty {
                IDENTIFIER_INDEX.put(store, value_key(&id), &entry)?;
            }
            attached.push(id);
        }
        Ok(attached)
    }

    /// Step 11: a `suggestion` record for each candidate a rule only suggested.
    fn suggest(&self, r: &mut Resolving, s: &Survivor, sp_id: u64) {
        for (other, cand_sp, verdict) in std::mem::take(&mut r.suggestions) {
            let Some(rule) = self.matcher.rule_name(&verdict) else {
                continue;
            };
            *r.counts.suggestions.entry(rule.clone()).or_default() += 1;
            let record = Suggestion {
                customer_id: s.id.clone(),
                other_customer_id: other,
                rule,
                score: verdict.score,
                fields: FieldScores(verdict.similarities.compared()),
                weights: Weights::of(&verdict),
                compared_source_profiles: [sp_id, cand_sp],
                event_id: r.tp.event_id.clone(),
                at: r.at.clone(),
            };
            r.changes.push(IdentityChange::Suggestion(record));
        }
    }

    /// Step 11, the end: the profile stage's view of the event, and the answer.
    fn finish(
        &self,
        mut r: Resolving,
        s: Survivor,
        sp_id: u64,
        attached: Vec<Ident>,
    ) -> Resolution {
        if s.customer.source_profiles.len() != s.source_profiles_before {
            let source_profiles = s.customer.source_profiles.len() as u32;
            *r.counts
                .customer_source_profiles
                .entry(source_profiles)
                .or_default() += 1;
        }
        let event = self.event_facts(r.tp, attached, &mut r.counts);
        r.commands.push(ProfileCommand::Touch {
            customer_id: s.id.clone(),
            source_profile: sp_id,
            event: Box::new(event),
        });
        let score = match s.method {
            Method::Deterministic => Some(1.0),
            Method::Fuzzy => r.best_fuzzy.as_ref().map(|(score, _)| *score),
            _ => None,
        };
        Resolution {
            customer_id: Some(s.id),
            method: s.method,
            matched_on: r.matched_on.into_iter().collect(),
            score,
            identity_changes: r.changes.iter().map(to_json).collect(),
            commands: r.commands,
            counts: r.counts,
        }
    }

    /// Merges `others` into the survivor: their source profiles, identifiers, people and
    /// split tokens move over, each leaves an entry in the survivor's merge log (with the
    /// link that explains it, from `links`: the merged customer's, else the survivor's)
    /// and an alias. Returns the profile commands and the fuzzy links among them; what
    /// the bounds of history and merged ids forgot is added to `counts`.
    #[allow(clippy::too_many_arguments)]
    fn merge_into(
        &self,
        store: &mut Store,
        survivor_id: &str,
        survivor: &mut Customer,
        others: Vec<(String, Customer)>,
        links: &HashMap<String, (Link, Vec<Ident>)>,
        sp_cache: &mut HashMap<u64, Arc<SourceProfile>>,
        at: i64,
        counts: &mut Stats,
    ) -> Result<MergeOutcome, StoreError> {
        let limits = &self.config.limits;
        let mut log: Vec<MergeLog> = MERGE_LOGS.get(store, survivor_id)?.unwrap_or_default();
        let mut commands = Vec::with_capacity(others.len());
        let mut fuzzy_links = Vec::new();
        let count = others.len() as i64;
        for (mid, m) in others {
            move_source_profiles(store, &m.source_profiles, survivor_id, sp_cache)?;
            let (link, identifiers) = links
                .get(&mid)
                .or_else(|| links.get(survivor_id))
                .cloned()
                .unwrap_or_default();
            if link.method == "fuzzy" {
                fuzzy_links.push((mid.clone(), link.clone()));
            }
            counts.merge_log_dropped +=
                take_merge_log(store, &mid, &mut log, limits.max_merge_log)?;
            counts.merge_log_dropped += push_log(
                &mut log,
                MergeLog {
                    kind: "merge".into(),
                    other_id: mid.clone(),
                    source_profiles: m.source_profiles.clone(),
                    link,
                    identifiers,
                },
                limits.max_merge_log,
            );
            ALIASES.put(store, &mid, survivor_id)?;
            // The ids merged into `mid` earlier now name the survivor directly: an alias
            // is always one step, however many merges a person went through.
            for earlier in &m.merged_ids {
                ALIASES.put(store, earlier, survivor_id)?;
            }
            survivor.take_in(&mid, m, limits.max_people_per_customer);
            counts.merged_ids_dropped +=
                forget_oldest_merged_ids(store, survivor, limits.max_merged_ids)?;
            CUSTOMERS.remove(store, &mid);
            commands.push(ProfileCommand::Merge {
                survivor: survivor_id.to_string(),
                merged: mid,
                at,
            });
        }
        MERGE_LOGS.put(store, survivor_id, &log)?;
        add_live_customers(store, -count)?;
        Ok((commands, fuzzy_links))
    }

    /// Whether an event must not attach to the source profile its anchor points to: a
    /// generic value, or (for a type that is not unique) person data that outweigh the
    /// value, as for a link through it (the shop's phone typed for a walk-in).
    fn anchor_refused(
        &self,
        store: &Store,
        id: &Ident,
        sp: &SourceProfile,
        r: &Resolving,
    ) -> Result<bool, StoreError> {
        if self.is_unique(&id.kind) {
            return Ok(false);
        }
        let entry = IDENTIFIER_INDEX
            .get(store, value_key(id))?
            .unwrap_or_default();
        if entry.generic {
            return Ok(true);
        }
        let event = event_view(&r.sig, None, r.address.as_ref(), &[]);
        let Some(person) = self.person_weights(&event, &sp.view(), self.is_weak(&id.kind)) else {
            return Ok(false);
        };
        // The people the value is seen with, the event's included (as step 5 counts).
        let new_person = entry.people.iter().all(|p| p.disagrees(&r.sig));
        let spread = entry.people.len() + usize::from(new_person);
        let e = IdentifierEvidence {
            identifier: self.identifier_weight(&id.kind, spread),
            person: Some(person),
        };
        Ok(!e.links())
    }

    /// The unique identifier type on which a candidate clashes with what the group holds.
    fn unique_clash(&self, c: &Customer, held: &BTreeSet<Ident>) -> Option<String> {
        c.identifiers
            .iter()
            .find(|ci| {
                self.is_unique(&ci.kind)
                    && held
                        .iter()
                        .any(|h| h.kind == ci.kind && h.value != ci.value)
            })
            .map(|ci| ci.kind.clone())
    }

    /// Adds a customer joining the group to what the group holds.
    fn absorb(&self, r: &mut Resolving, c: &Customer) {
        r.held.extend(c.identifiers.iter().cloned());
        r.group_source_profiles += c.source_profiles.len();
        r.people.extend(c.people.iter().cloned());
        r.apart.extend(c.apart.iter().copied());
    }

    /// Person match keys the minimisation allow-lists let the store keep.
    fn minimised(&self, mut sig: PersonSig) -> PersonSig {
        let g = &self.config.gdpr;
        if !g.person_field_allowed("first_name") {
            sig.first = None;
        }
        if !g.person_field_allowed("last_name") {
            sig.last = None;
        }
        if !g.person_field_allowed("birth_date") {
            sig.birth = None;
        }
        sig
    }

    /// The event's address in match-key form, unless minimisation leaves it out.
    fn event_address(&self, tp: &Touchpoint) -> Option<AddressKey> {
        if !self.config.gdpr.person_field_allowed("address") {
            return None;
        }
        let a = tp.person.as_ref()?.address.as_ref()?;
        Some(AddressKey::from_address(a)).filter(|k| !k.is_empty())
    }

    /// The verdict on each candidate customer, given the source profiles found through
    /// the blocking keys of `view` (the best of its source profiles), for linking or
    /// suggesting.
    fn fuzzy_verdicts(
        &self,
        store: &Store,
        view: &MatchView,
        candidates: Vec<u64>,
        group: &[(String, Customer)],
        sp_cache: &mut HashMap<u64, Arc<SourceProfile>>,
        counts: &mut Stats,
    ) -> Result<Vec<(String, u64, matching::Verdict)>, StoreError> {
        let mut best: BTreeMap<String, (u64, matching::Verdict)> = BTreeMap::new();
        for sp_id in candidates {
            let Some(cand) = cached_source_profile(store, sp_cache, sp_id)? else {
                continue;
            };
            if group.iter().any(|(g, _)| *g == cand.customer) {
                continue;
            }
            counts.fuzzy_candidates += 1;
            let emails = cand.emails();
            let cview = MatchView {
                emails: &emails,
                ..cand.view()
            };
            let verdict = self.matcher.judge_in_stream(view, &cview);
            if !matches!(
                verdict.decision,
                MatchDecision::Link | MatchDecision::Suggest
            ) {
                continue;
            }
            let rank = |v: &matching::Verdict| (v.decision == MatchDecision::Link, v.score);
            let better = best
                .get(&cand.customer)
                .is_none_or(|(_, b)| rank(&verdict) > rank(b));
            if better {
                best.insert(cand.customer.clone(), (sp_id, verdict));
            }
        }
        Ok(ranked(best))
    }

    /// Source profiles sharing a blocking key with `view` (other than `own_sp`), in key
    /// order, at most `max_candidates`; generic blocks are not read.
    fn blocked_with(
        &self,
        store: &Store,
        view: &MatchView,
        own_sp: Option<u64>,
        block_ids: &mut Vec<(String, u64)>,
    ) -> Result<Vec<u64>, StoreError> {
        let cap = self.matcher.max_candidates();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut order: Vec<u64> = Vec::new();
        block_ids.clear();
        for k in self.matcher.blocking_keys(view) {
            let id = block_id(&k);
            block_ids.push((k, id));
            let Some(block) = BLOCKING_KEYS.get(store, id)? else {
                continue;
            };
            if block.generic {
                continue;
            }
            for &sp in &block.source_profiles {
                if Some(sp) != own_sp && seen.insert(sp) {
                    order.push(sp);
                    if order.len() >= cap {
                        return Ok(order);
                    }
                }
            }
        }
        Ok(order)
    }

    /// Moves a source profile from the blocks of its old keys to those of its new ones.
    /// A block that would hold more than `max_candidates` turns generic (counted).
    /// `known` are keys whose block ids are already computed.
    fn update_blocks(
        &self,
        store: &mut Store,
        sp_id: u64,
        (before, after): (&[String], &[String]),
        known: &[(String, u64)],
        counts: &mut Stats,
    ) -> Result<(), StoreError> {
        for k in before.iter().filter(|k| !after.contains(k)) {
            remove_from_block(store, k, sp_id)?;
        }
        for k in after.iter().filter(|k| !before.contains(k)) {
            let id = known
                .iter()
                .find(|(known, _)| known == k)
                .map_or_else(|| block_id(k), |(_, id)| *id);
            let mut block = BLOCKING_KEYS.get(store, id)?.unwrap_or_default();
            if block.generic || block.source_profiles.contains(&sp_id) {
                continue;
            }
            if block.source_profiles.len() >= self.matcher.max_candidates() {
                block.generic = true;
                block.source_profiles = Vec::new();
                counts.generic_blocks += 1;
            } else {
                block.source_profiles.push(sp_id);
            }
            BLOCKING_KEYS.put(store, id, &block)?;
        }
        Ok(())
    }
}

/// The blocking keys of a source profile as stored under `matcher`'s scoring.
fn source_profile_keys(matcher: &Matcher, sp: &SourceProfile) -> Vec<String> {
    let emails = sp.emails();
    matcher.blocking_keys(&MatchView {
        emails: &emails,
        ..sp.view()
    })
}

/// The latest statement of the person wins (event time): the event's person data
/// replace its source profile's, and the survivor learns the person.
fn restate_person(r: &mut Resolving, s: &mut Survivor, sp: &mut Attachment, max_people: usize) {
    let newer = r.tp.occurred_at >= sp.profile.person_at;
    let mut person_changed = false;
    let sig = std::mem::take(&mut r.sig);
    if !sig.is_empty() {
        if newer && sp.profile.person != sig {
            sp.profile.person = sig.clone();
            person_changed = true;
        }
        s.dirty |= push_person(&mut s.customer.people, sig, max_people);
    }
    if let Some(a) = r.address.take() {
        if newer && sp.profile.address != a {
            sp.profile.address = a;
            person_changed = true;
        }
    }
    if person_changed {
        sp.profile.person_at = r.tp.occurred_at;
        sp.dirty = true;
    }
}

/// The e-mail addresses of an event's values and of its source profile.
fn event_emails(
    entries: &[(Ident, ValueEntry, bool)],
    anchor: Option<&SourceProfile>,
) -> Vec<String> {
    let mut emails: Vec<String> = entries
        .iter()
        .filter(|(id, _, _)| id.kind == "email")
        .map(|(id, _, _)| id.value.clone())
        .collect();
    if let Some(sp) = anchor {
        for e in sp.emails() {
            if !emails.contains(&e) {
                emails.push(e);
            }
        }
    }
    emails
}

/// What fuzzy matching compares of an event: the person it states (else its source
/// profile's), its address (else its source profile's), and `emails`.
fn event_view<'a>(
    sig: &'a PersonSig,
    anchor: Option<&'a SourceProfile>,
    address: Option<&'a AddressKey>,
    emails: &'a [String],
) -> MatchView<'a> {
    let person = if sig.is_empty() {
        anchor.map_or(sig, |sp| &sp.person)
    } else {
        sig
    };
    MatchView {
        first: person.first.as_deref(),
        last: person.last.as_deref(),
        birth: person.birth.as_deref(),
        address: address.or(anchor.map(|sp| &sp.address).filter(|a| !a.is_empty())),
        emails,
    }
}

/// A source profile, read from `cache` or else from the store (and kept in `cache`).
fn cached_source_profile<'c>(
    store: &Store,
    cache: &'c mut HashMap<u64, Arc<SourceProfile>>,
    id: u64,
) -> Result<Option<&'c SourceProfile>, StoreError> {
    Ok(match cache.entry(id) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => match SOURCE_PROFILES.get_shared(store, id)? {
            Some(sp) => Some(e.insert(sp)),
            None => None,
        },
    })
}

/// Source profiles move to customer `to` (taken from `cache` when there).
fn move_source_profiles(
    store: &mut Store,
    source_profiles: &[u64],
    to: &str,
    cache: &mut HashMap<u64, Arc<SourceProfile>>,
) -> Result<(), StoreError> {
    for sp_id in source_profiles {
        let mut sp = match cache.remove(sp_id) {
            Some(sp) => Arc::unwrap_or_clone(sp),
            None => match SOURCE_PROFILES.get(store, *sp_id)? {
                Some(sp) => sp,
                None => continue,
            },
        };
        sp.customer = to.to_string();
        SOURCE_PROFILES.put(store, *sp_id, &sp)?;
    }
    Ok(())
}

/// The merge log of a customer merged away moves to the end of `log`, kept to `max`
/// entries. Returns how many were forgotten.
fn take_merge_log(
    store: &mut Store,
    merged: &str,
    log: &mut Vec<MergeLog>,
    max: usize,
) -> Result<u64, StoreError> {
    let mut forgotten = 0;
    if let Some(mut theirs) = MERGE_LOGS.get(store, merged)? {
        MERGE_LOGS.remove(store, merged);
        for entry in theirs.drain(..) {
            forgotten += push_log(log, entry, max);
        }
    }
    Ok(forgotten)
}

/// Keeps the last `max` ids merged into a customer; those merged first are forgotten,
/// with their aliases (an erasure could no longer find them to remove). Returns how many.
fn forget_oldest_merged_ids(
    store: &mut Store,
    c: &mut Customer,
    max: usize,
) -> Result<u64, StoreError> {
    let excess = c.merged_ids.len().saturating_sub(max);
    for id in c.merged_ids.drain(..excess) {
        ALIASES.remove(store, &id);
    }
    Ok(excess as u64)
}

/// The best verdict of each customer: links first, best score first; the customer id
/// breaks ties (deterministic).
fn ranked(
    best: BTreeMap<String, (u64, matching::Verdict)>,
) -> Vec<(String, u64, matching::Verdict)> {
    let mut out: Vec<(String, u64, matching::Verdict)> =
        best.into_iter().map(|(c, (sp, v))| (c, sp, v)).collect();
    out.sort_by(|a, b| {
        let ka = (a.2.decision != MatchDecision::Link, -a.2.score);
        let kb = (b.2.decision != MatchDecision::Link, -b.2.score);
        ka.partial_cmp(&kb)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    out
}

fn remove_from_block(store: &mut Store, k: &str, sp_id: u64) -> Result<(), StoreError> {
    let Some(mut block) = BLOCKING_KEYS.get(store, block_id(k))? else {
        return Ok(());
    };
    if block.generic {
        return Ok(());
    }
    block.source_profiles.retain(|s| *s != sp_id);
    if block.source_profiles.is_empty() {
        BLOCKING_KEYS.remove(store, block_id(k));
    } else {
        BLOCKING_KEYS.put(store, block_id(k), &block)?;
    }
    Ok(())
}

impl Evidence {
    fn kinds(&self) -> impl Iterator<Item = &String> {
        self.strong.iter().chain(self.weak.iter())
    }
}

/// What resolve removed of a customer's identity graph.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// Values only this customer carried: what an erasure puts on the suppression list.
    pub exclusive_identifiers: Vec<Ident>,
    pub source_profiles: u64,
    pub index_entries_removed: u64,
    pub index_entries_updated: u64,
    pub anchors: u64,
    /// Blocking-key entries of fuzzy matching the source profiles were taken out of.
    pub blocking_keys: u64,
    /// Provenance records (merge log, aliases of merged ids).
    pub provenance: u64,
    pub merged_ids: Vec<String>,
}

impl Forgotten {
    /// Counts for a receipt.
    pub fn counts(&self) -> Vec<(String, u64)> {
        vec![
            ("source_profiles".into(), self.source_profiles),
            (
                "identifiers".into(),
                self.exclusive_identifiers.len() as u64,
            ),
            ("index_entries_removed".into(), self.index_entries_removed),
            ("index_entries_updated".into(), self.index_entries_updated),
            ("anchors".into(), self.anchors),
            ("blocking_keys".into(), self.blocking_keys),
            ("provenance".into(), self.provenance),
            ("customer_ids".into(), 1 + self.merged_ids.len() as u64),
        ]
    }
}

impl Resolver {
    /// A customer's source profiles, if it exists.
    pub fn source_profiles_of(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        Ok(CUSTOMERS
            .get(store, customer_id)?
            .map(|c| c.source_profiles))
    }

    /// The customer a source profile belongs to.
    pub fn customer_of_source_profile(
        &self,
        store: &Store,
        sp: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(SOURCE_PROFILES.get(store, sp)?.map(|sp| sp.customer))
    }

    /// Removes a customer's whole identity graph: its record, source profiles, anchors,
    /// and its place in every value index entry (an entry only it carried goes). `None`
    /// if the customer does not exist.
    pub fn forget(
        &self,
        store: &mut Store,
        customer_id: &str,
    ) -> Result<Option<Forgotten>, StoreError> {
        let Some(c) = CUSTOMERS.get(store, customer_id)? else {
            return Ok(None);
        };
        let mut f = Forgotten::default();
        self.forget_source_profiles(store, &c.source_profiles, &c.people, &mut f)?;
        CUSTOMERS.remove(store, customer_id);
        add_live_customers(store, -1)?;
        if MERGE_LOGS.contains(store, customer_id)? {
            MERGE_LOGS.remove(store, customer_id);
            f.provenance += 1;
        }
        for id in &c.merged_ids {
            if ALIASES.contains(store, id)? {
                ALIASES.remove(store, id);
                f.provenance += 1;
            }
        }
        f.merged_ids = c.merged_ids;
        Ok(Some(f))
    }

    /// Detaches source profiles from a customer and forgets them (behavioural data
    /// expired); the customer keeps the rest. `None` if none of them belongs to it.
    pub fn detach(
        &self,
        store: &mut Store,
        customer_id: &str,
        source_profiles: &[u64],
    ) -> Result<Option<Forgotten>, StoreError> {
        let Some(mut c) = CUSTOMERS.get(store, customer_id)? else {
            return Ok(None);
        };
        let gone: Vec<u64> = c
            .source_profiles
            .iter()
            .copied()
            .filter(|sp| source_profiles.contains(sp))
            .collect();
        if gone.is_empty() {
            return Ok(None);
        }
        let mut gone_people = Vec::new();
        for sp_id in &gone {
            if let Some(sp) = SOURCE_PROFILES.get(store, *sp_id)? {
                if !sp.person.is_empty() {
                    gone_people.push(sp.person);
                }
            }
        }
        let mut f = Forgotten::default();
        self.forget_source_profiles(store, &gone, &gone_people, &mut f)?;
        c.source_profiles.retain(|sp| !gone.contains(sp));
        let mut kept_ids = BTreeSet::new();
        let mut people = Vec::new();
        for sp_id in &c.source_profiles {
            if let Some(sp) = SOURCE_PROFILES.get(store, *sp_id)? {
                kept_ids.extend(sp.identifiers);
                push_person(
                    &mut people,
                    sp.person,
                    self.config.limits.max_people_per_customer,
                );
            }
        }
        c.identifiers.retain(|id| kept_ids.contains(id));
        c.people = people;
        CUSTOMERS.put(store, customer_id, &c)?;
        Ok(Some(f))
    }

    fn forget_source_profiles(
        &self,
        store: &mut Store,
        source_profiles: &[u64],
        people: &[PersonSig],
        f: &mut Forgotten,
    ) -> Result<(), StoreError> {
        let mut exclusive = BTreeSet::new();
        for sp_id in source_profiles {
            let Some(sp) = SOURCE_PROFILES.get(store, *sp_id)? else {
                continue;
            };
            if let Some(a) = &sp.anchor {
                let k = anchor_key(&sp.channel, a);
                if ANCHORS.get(store, k)? == Some(*sp_id) {
                    ANCHORS.remove(store, k);
                    f.anchors += 1;
                }
            }
            for id in &sp.identifiers {
                let vk = value_key(id);
                let Some(mut entry) = IDENTIFIER_INDEX.get(store, vk)? else {
                    continue;
                };
                entry.source_profiles.retain(|x| x != sp_id);
                entry.people.retain(|p| !people.contains(p));
                if entry.source_profiles.is_empty() && !entry.generic {
                    IDENTIFIER_INDEX.remove(store, vk);
                    f.index_entries_removed += 1;
                    exclusive.insert(id.clone());
                } else {
                    IDENTIFIER_INDEX.put(store, vk, &entry)?;
                    f.index_entries_updated += 1;
                }
            }
            // Every key either scoring gives, and earlier versions gave: a store may
            // have been run under both.
            let emails = sp.emails();
            let all_keys = matching::every_blocking_key(&MatchView {
                emails: &emails,
                ..sp.view()
            });
            for k in all_keys {
                if BLOCKING_KEYS.contains(store, block_id(&k))? {
                    remove_from_block(store, &k, *sp_id)?;
                    f.blocking_keys += 1;
                }
            }
            SOURCE_PROFILES.remove(store, *sp_id);
            f.source_profiles += 1;
        }
        f.exclusive_identifiers.extend(exclusive);
        Ok(())
    }

    /// Resolve's part of an export: the customer's identity graph.
    pub fn export_identity(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let Some(c) = CUSTOMERS.get(store, customer_id)? else {
            return Ok(None);
        };
        let source_profiles = self
            .source_profiles(store, &c)?
            .iter()
            .map(|(id, sp)| sp.record(*id))
            .collect();
        let log: Vec<MergeLog> = MERGE_LOGS.get(store, customer_id)?.unwrap_or_default();
        Ok(Some(to_json(&IdentityExport {
            customer_id: customer_id.to_string(),
            identifiers: c.identifiers,
            merged_ids: c.merged_ids,
            source_profiles,
            merges: log.iter().map(MergeRecord::from).collect(),
        })))
    }

    /// Facts of a request for the profile stage, from what resolve did.
    pub fn request_facts(
        request_id: &str,
        kind: RequestKind,
        at: i64,
        forgotten: Option<&Forgotten>,
        identity: Option<&Value>,
    ) -> RequestFacts {
        RequestFacts {
            request_id: request_id.to_string(),
            kind,
            at,
            merged_ids: forgotten.map(|f| f.merged_ids.clone()).unwrap_or_default(),
            erased: forgotten.map(Forgotten::counts).unwrap_or_default(),
            identity: identity.map(Value::to_string),
        }
    }
}

/// What a split did.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitDone {
    pub new_customer_id: String,
    /// Source profiles moved to the new customer.
    pub moved: Vec<u64>,
    /// What the split counted (history forgotten at its bound).
    pub counts: Stats,
}

/// What a merge command did.
#[derive(Debug, Clone)]
pub struct MergeDone {
    pub survivor: String,
    pub merged: String,
    /// Split decisions between the two that the merge lifted.
    pub lifted: usize,
    pub commands: Vec<ProfileCommand>,
    /// What the merge counted (history and merged ids forgotten at their bounds).
    pub counts: Stats,
}

impl Resolver {
    /// The live customer an id names now: itself, or the customer it was merged into.
    pub fn current_id(&self, store: &Store, id: &str) -> Result<Option<String>, StoreError> {
        let mut id = id.to_string();
        // Aliases form chains (a merged into b, later b into c); they never loop.
        for _ in 0..64 {
            if CUSTOMERS.contains(store, &id)? {
                return Ok(Some(id));
            }
            match ALIASES.get(store, &id)? {
                Some(next) => id = next,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    fn source_profiles(
        &self,
        store: &Store,
        c: &Customer,
    ) -> Result<Vec<(u64, SourceProfile)>, StoreError> {
        let mut out = Vec::with_capacity(c.source_profiles.len());
        for id in &c.source_profiles {
            if let Some(sp) = SOURCE_PROFILES.get(store, *id)? {
                out.push((*id, sp));
            }
        }
        Ok(out)
    }

    /// A customer rebuilt from its source profiles (identifiers, people, split tokens).
    fn rebuild(&self, c: &mut Customer, sps: &[(u64, SourceProfile)]) {
        c.source_profiles = sps.iter().map(|(id, _)| *id).collect();
        c.identifiers = Vec::new();
        c.people = Vec::new();
        c.apart = Vec::new();
        for (_, sp) in sps {
            merge_sorted(&mut c.identifiers, sp.identifiers.clone());
            push_person(
                &mut c.people,
                sp.person.clone(),
                self.config.limits.max_people_per_customer,
            );
            for t in &sp.apart {
                if !c.apart.contains(t) {
                    c.apart.push(*t);
                }
            }
        }
    }

    /// Moves the source profiles of `customer_id` that carry `identifier` to a new
    /// customer, and keeps the two sides apart from then on: the same evidence will not
    /// link them again (until a merge command). `Ok(Err(reason))` when it cannot be done.
    pub fn split(
        &self,
        store: &mut Store,
        customer_id: &str,
        identifier: &Ident,
        command_id: &str,
        at: i64,
    ) -> Result<Result<SplitDone, String>, StoreError> {
        let Some(mut kept) = CUSTOMERS.get(store, customer_id)? else {
            return Ok(Err(format!("no live customer `{customer_id}`")));
        };
        let mut sides = match self.split_sides(store, &kept, customer_id, identifier)? {
            Ok(sides) => sides,
            Err(reason) => return Ok(Err(reason)),
        };
        let token = next_counter(store, &NEXT_SPLIT_TOKEN)?;
        let new_id = new_customer_id(at, &format!("split:{command_id}"));
        let moved = mark_split(store, &mut sides, token, &new_id)?;
        self.rebuild(&mut kept, &sides[0]);
        let mut split = Customer::new(next_counter(store, &NEXT_CUSTOMER_SEQ)?);
        self.rebuild(&mut split, &sides[1]);
        CUSTOMERS.put(store, customer_id, &kept)?;
        CUSTOMERS.put(store, &new_id, &split)?;
        add_live_customers(store, 1)?;
        let link = Link {
            method: "command".into(),
            rule: Some("split".into()),
            matched_on: vec![identifier.kind.clone()],
            event_id: command_id.to_string(),
            at,
            ..Link::default()
        };
        let max_log = self.config.limits.max_merge_log;
        let forgotten = log_split(
            store,
            customer_id,
            &new_id,
            identifier,
            &moved,
            link,
            max_log,
        )?;
        Ok(Ok(SplitDone {
            new_customer_id: new_id,
            moved,
            counts: Stats {
                merge_log_dropped: forgotten,
                ..Stats::default()
            },
        }))
    }

    /// A customer's source profiles that stay and those that carry `identifier`;
    /// `Ok(Err(reason))` when either side would be empty.
    fn split_sides(
        &self,
        store: &Store,
        c: &Customer,
        customer_id: &str,
        identifier: &Ident,
    ) -> Result<Result<SplitSides, String>, StoreError> {
        let (moving, staying): (Vec<_>, Vec<_>) = self
            .source_profiles(store, c)?
            .into_iter()
            .partition(|(_, sp)| sp.identifiers.contains(identifier));
        if moving.is_empty() {
            return Ok(Err(format!(
                "no source profile of `{customer_id}` carries {}:{}",
                identifier.kind, identifier.value
            )));
        }
        if staying.is_empty() {
            return Ok(Err(format!(
                "every source profile of `{customer_id}` carries {}:{}: nothing would stay",
                identifier.kind, identifier.value
            )));
        }
        Ok(Ok([staying, moving]))
    }

    /// Merges two customers on an operator's word (the older survives), lifting any
    /// split decision between them. Refused when they hold different values of a unique
    /// identifier type.
    pub fn merge_command(
        &self,
        store: &mut Store,
        ids: &[String; 2],
        command_id: &str,
        at: i64,
    ) -> Result<Result<MergeDone, String>, StoreError> {
        let mut pair = match self.command_pair(store, ids)? {
            Ok(pair) => pair,
            Err(reason) => return Ok(Err(reason)),
        };
        let held: BTreeSet<Ident> = pair[0].1.identifiers.iter().cloned().collect();
        if let Some(kind) = self.unique_clash(&pair[1].1, &held) {
            return Ok(Err(format!(
                "`{}` and `{}` hold different values of the unique type `{kind}`",
                pair[0].0, pair[1].0
            )));
        }
        let source_profiles = pair[0].1.source_profiles.len();
        if let Some((bound, kind)) = self.growth_refusal(&held, source_profiles, &pair[1].1) {
            let what = match bound {
                "identifier_limit" => format!("more `{kind}` values than its limit"),
                _ => "more source profiles than `max_source_profiles_per_customer`".into(),
            };
            return Ok(Err(format!(
                "`{}` and `{}` together would hold {what}",
                pair[0].0, pair[1].0
            )));
        }
        let lifted = lift_splits(store, &mut pair)?;
        let [(survivor_id, mut survivor), (merged_id, merged)] = pair;
        let link = Link {
            method: "command".into(),
            rule: Some("command".into()),
            event_id: command_id.to_string(),
            at,
            ..Link::default()
        };
        let links = HashMap::from([(merged_id.clone(), (link, Vec::new()))]);
        let mut counts = Stats::default();
        let (commands, _) = self.merge_into(
            store,
            &survivor_id,
            &mut survivor,
            vec![(merged_id.clone(), merged)],
            &links,
            &mut HashMap::new(),
            at,
            &mut counts,
        )?;
        CUSTOMERS.put(store, &survivor_id, &survivor)?;
        Ok(Ok(MergeDone {
            survivor: survivor_id,
            merged: merged_id,
            lifted,
            commands,
            counts,
        }))
    }

    /// The live customers two ids name, oldest first; `Ok(Err(reason))` when either
    /// names none, or both the same.
    fn command_pair(
        &self,
        store: &Store,
        ids: &[String; 2],
    ) -> Result<Result<[(String, Customer); 2], String>, StoreError> {
        let mut found = Vec::with_capacity(2);
        for id in ids {
            let Some(current) = self.current_id(store, id)? else {
                return Ok(Err(format!("no live customer `{id}`")));
            };
            found.push(current);
        }
        if found[0] == found[1] {
            return Ok(Err(format!(
                "`{}` and `{}` are already one customer: `{}`",
                ids[0], ids[1], found[0]
            )));
        }
        let mut pair = Vec::with_capacity(2);
        for id in found {
            let c = live_customer(store, &id)?;
            pair.push((id, c));
        }
        pair.sort_by_key(|(_, c)| c.seq);
        let [older, newer]: [(String, Customer); 2] =
            pair.try_into().expect("two customers were found");
        Ok(Ok([older, newer]))
    }

    /// Why each source profile belongs to the customer: its own link, and the merges
    /// that brought it in. `None` if the id names no customer (now or merged away).
    pub fn explain(&self, store: &Store, id: &str) -> Result<Option<Value>, StoreError> {
        let Some(customer_id) = self.current_id(store, id)? else {
            return Ok(None);
        };
        let Some(c) = CUSTOMERS.get(store, &customer_id)? else {
            return Ok(None);
        };
        let log: Vec<MergeLog> = MERGE_LOGS.get(store, &customer_id)?.unwrap_or_default();
        let mut source_profiles = Vec::new();
        for (sp_id, sp) in self.source_profiles(store, &c)? {
            let via = log
                .iter()
                .filter(|m| m.kind == "merge" && m.source_profiles.contains(&sp_id))
                .map(MergeRecord::from)
                .collect();
            source_profiles.push(SourceProfileRecord {
                via_merges: Some(via),
                ..sp.record(sp_id)
            });
        }
        Ok(Some(to_json(&Explanation {
            customer_id,
            asked_for: id.to_string(),
            identifiers: c.identifiers,
            merged_ids: c.merged_ids,
            source_profiles,
            history: log.iter().map(MergeRecord::from).collect(),
        })))
    }

    /// Why two customers are one, or are not: the merges between them, or what kept
    /// them apart (no shared evidence, a guardrail, a split decision, a score below the
    /// thresholds).
    pub fn explain_pair(&self, store: &Store, a: &str, b: &str) -> Result<Value, StoreError> {
        let (ca, cb) = match (self.current_id(store, a)?, self.current_id(store, b)?) {
            (Some(ca), Some(cb)) => (ca, cb),
            (ca, _) => {
                let unknown = if ca.is_none() { a } else { b };
                return Ok(to_json(&PairExplanation::Unknown {
                    a: a.to_string(),
                    b: b.to_string(),
                    same_customer: false,
                    reasons: vec![format!("no customer is known as `{unknown}`")],
                }));
            }
        };
        if ca == cb {
            let log: Vec<MergeLog> = MERGE_LOGS.get(store, &ca)?.unwrap_or_default();
            let merges = log
                .iter()
                .filter(|m| m.kind == "merge" && (m.other_id == a || m.other_id == b))
                .map(MergeRecord::from)
                .collect();
            return Ok(to_json(&PairExplanation::Same {
                a: a.to_string(),
                b: b.to_string(),
                same_customer: true,
                customer_id: ca,
                merges,
            }));
        }
        Ok(to_json(&self.explain_apart(store, a, b, [ca, cb])?))
    }

    /// Why two live customers are not one: the identifiers they share, the guardrails
    /// between them, and how their best pair of source profiles scores.
    fn explain_apart(
        &self,
        store: &Store,
        a: &str,
        b: &str,
        customers: [String; 2],
    ) -> Result<PairExplanation, StoreError> {
        let x = live_customer(store, &customers[0])?;
        let y = live_customer(store, &customers[1])?;
        let shared: Vec<Ident> = x
            .identifiers
            .iter()
            .filter(|i| y.identifiers.binary_search(i).is_ok())
            .cloned()
            .collect();
        let kept_apart = x.kept_apart_from(&y.apart);
        let mut reasons = self.guardrail_reasons(store, &x, &y, &shared, kept_apart)?;
        let best_fuzzy_match = match self.best_fuzzy_pair(store, &x, &y)? {
            None => {
                reasons.push("no person data on both sides to compare".into());
                None
            }
            Some(pair) => {
                reasons.push(self.fuzzy_reason(&pair, kept_apart));
                Some(self.fuzzy_comparison(pair))
            }
        };
        if shared.is_empty() {
            reasons.insert(0, "no identifier in common".into());
        }
        Ok(PairExplanation::Apart {
            a: a.to_string(),
            b: b.to_string(),
            same_customer: false,
            customers,
            shared_identifiers: shared,
            best_fuzzy_match,
            reasons,
        })
    }

    /// The guardrails that keep two customers apart, in words.
    fn guardrail_reasons(
        &self,
        store: &Store,
        x: &Customer,
        y: &Customer,
        shared: &[Ident],
        kept_apart: bool,
    ) -> Result<Vec<String>, StoreError> {
        let mut reasons: Vec<String> = Vec::new();
        let held: BTreeSet<Ident> = x.identifiers.iter().cloned().collect();
        if let Some(kind) = self.unique_clash(y, &held) {
            reasons.push(format!(
                "they hold different values of the unique type `{kind}`"
            ));
        }
        if kept_apart {
            reasons.push("a split keeps them apart (until a merge command)".into());
        }
        if x.people
            .iter()
            .any(|p| y.people.iter().any(|q| p.contradicts(q)))
        {
            reasons.push("their person data contradict (birth date or first name)".into());
        }
        for id in shared {
            if let Some(entry) = IDENTIFIER_INDEX.get(store, value_key(id))? {
                if entry.generic {
                    reasons.push(format!(
                        "{}:{} is a generic value (too many people) and does not link",
                        id.kind, id.value
                    ));
                }
            }
        }
        Ok(reasons)
    }

    /// The best-scoring pair of source profiles with person data of two customers (the
    /// first 200 of each), and whether they share a blocking key.
    fn best_fuzzy_pair(
        &self,
        store: &Store,
        x: &Customer,
        y: &Customer,
    ) -> Result<Option<FuzzyPair>, StoreError> {
        let (xs, ys) = (
            self.source_profiles(store, x)?,
            self.source_profiles(store, y)?,
        );
        let mut best: Option<FuzzyPair> = None;
        for (xi, xsp) in xs.iter().take(200) {
            let xe = xsp.emails();
            let xv = MatchView {
                emails: &xe,
                ..xsp.view()
            };
            if !xv.has_person() {
                continue;
            }
            let xk = self.matcher.blocking_keys(&xv);
            for (yi, ysp) in ys.iter().take(200) {
                let ye = ysp.emails();
                let yv = MatchView {
                    emails: &ye,
                    ..ysp.view()
                };
                if !yv.has_person() {
                    continue;
                }
                let verdict = self.matcher.judge(&xv, &yv);
                let blocked = self
                    .matcher
                    .blocking_keys(&yv)
                    .iter()
                    .any(|k| xk.contains(k));
                if best
                    .as_ref()
                    .is_none_or(|b| verdict.score > b.verdict.score)
                {
                    best = Some(FuzzyPair {
                        source_profiles: [*xi, *yi],
                        verdict,
                        blocked,
                    });
                }
            }
        }
        Ok(best)
    }

    /// What the best pair of source profiles of two customers says, in words.
    fn fuzzy_reason(&self, pair: &FuzzyPair, kept_apart: bool) -> String {
        let v = &pair.verdict;
        let m = &self.config.matching;
        if v.model.is_some() {
            match v.decision {
                MatchDecision::None => {
                    return format!(
                        "match probability {} is below suggest_probability {}",
                        v.score, m.suggest_probability
                    )
                }
                MatchDecision::Suggest => {
                    return format!(
                        "match probability {} is a suggestion only (link_probability {})",
                        v.score, m.link_probability
                    )
                }
                _ => {}
            }
        }
        match v.decision {
            MatchDecision::Vetoed => {
                "a veto: different birth dates or clearly different first names".into()
            }
            MatchDecision::None if v.rule.is_none() => {
                "no match rule is satisfied by their person data".into()
            }
            MatchDecision::None => format!(
                "best score {} is below the suggestion threshold {}",
                v.score, m.suggest_threshold
            ),
            MatchDecision::Suggest => format!(
                "best score {} under `{}` is a suggestion only (link threshold {})",
                v.score,
                self.rule_name(v).unwrap_or_default(),
                m.link_threshold
            ),
            MatchDecision::Link if kept_apart => {
                "their person data match, but the split refuses the link".into()
            }
            MatchDecision::Link if !pair.blocked => {
                "their person data would link, but they share no blocking key: never compared".into()
            }
            MatchDecision::Link => {
                "their person data would link now: they were compared before the evidence arrived on both sides".into()
            }
        }
    }

    /// The best pair of source profiles of two customers, as explanations show it.
    fn fuzzy_comparison(&self, pair: FuzzyPair) -> FuzzyComparison {
        let v = &pair.verdict;
        FuzzyComparison {
            source_profiles: pair.source_profiles,
            rule: self.rule_name(v),
            score: v.score,
            decision: v.decision.as_str(),
            fields: FieldScores(v.similarities.compared()),
            weights: Weights::of(v),
            swapped_names: v.similarities.swapped,
            share_a_blocking_key: pair.blocked,
        }
    }

    /// The name of the best rule a verdict satisfies (or `probabilistic`), if any.
    fn rule_name(&self, v: &matching::Verdict) -> Option<String> {
        self.matcher.rule_name(v)
    }
}

/// The best-scoring pair of source profiles of two customers (explanations).
struct FuzzyPair {
    source_profiles: [u64; 2],
    verdict: matching::Verdict,
    /// They share a blocking key: fuzzy matching compares them.
    blocked: bool,
}

/// A customer an id names as live; its record missing is a corrupt store.
fn live_customer(store: &Store, id: &str) -> Result<Customer, StoreError> {
    CUSTOMERS
        .get(store, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("customer `{id}` is live but has no record")))
}

/// The sides of a split: each source profile takes the split's token on its side, and
/// those of the moving side (the second) go to the new customer. Returns those.
fn mark_split(
    store: &mut Store,
    sides: &mut SplitSides,
    token: u64,
    new_id: &str,
) -> Result<Vec<u64>, StoreError> {
    let mut moved = Vec::with_capacity(sides[1].len());
    for (side, list) in sides.iter_mut().enumerate() {
        for (id, sp) in list.iter_mut() {
            sp.apart.push((token, side == 1));
            if side == 1 {
                sp.customer = new_id.to_string();
                moved.push(*id);
            }
            SOURCE_PROFILES.put(store, *id, &*sp)?;
        }
    }
    Ok(moved)
}

/// The split in both customers' histories. The identifier moved is the new customer's:
/// only its history holds the value (the kept side names the type), so erasing it leaves
/// none behind.
fn log_split(
    store: &mut Store,
    kept_id: &str,
    new_id: &str,
    identifier: &Ident,
    moved: &[u64],
    link: Link,
    max_log: usize,
) -> Result<u64, StoreError> {
    let entry = |other: &str, identifiers: Vec<Ident>| MergeLog {
        kind: "split".into(),
        other_id: other.to_string(),
        source_profiles: moved.to_vec(),
        link: link.clone(),
        identifiers,
    };
    let mut log: Vec<MergeLog> = MERGE_LOGS.get(store, kept_id)?.unwrap_or_default();
    let forgotten = push_log(&mut log, entry(new_id, Vec::new()), max_log);
    MERGE_LOGS.put(store, kept_id, &log)?;
    MERGE_LOGS.put(
        store,
        new_id,
        &vec![entry(kept_id, vec![identifier.clone()])],
    )?;
    Ok(forgotten)
}

/// Lifts the split decisions between two customers (tokens on which they are on
/// different sides) from every source profile of both; returns how many.
fn lift_splits(store: &mut Store, pair: &mut [(String, Customer); 2]) -> Result<usize, StoreError> {
    let lifted: Vec<u64> = pair[0]
        .1
        .apart
        .iter()
        .filter(|(t, s)| pair[1].1.apart.iter().any(|(u, v)| t == u && s != v))
        .map(|(t, _)| *t)
        .collect();
    if lifted.is_empty() {
        return Ok(0);
    }
    for (_, c) in pair.iter_mut() {
        for sp_id in &c.source_profiles {
            if let Some(mut sp) = SOURCE_PROFILES.get(store, *sp_id)? {
                let before = sp.apart.len();
                sp.apart.retain(|(t, _)| !lifted.contains(t));
                if sp.apart.len() != before {
                    SOURCE_PROFILES.put(store, *sp_id, &sp)?;
                }
            }
        }
        c.apart.retain(|(t, _)| !lifted.contains(t));
    }
    Ok(lifted.len())
}

enum Unfit {
    Junk,
    Unusable,
}

/// The person a value is seen with: the event's, else what its source profile knew.
fn people_sig<'a>(sig: &'a PersonSig, anchor: Option<&'a PersonSig>) -> Option<&'a PersonSig> {
    if !sig.is_empty() {
        Some(sig)
    } else {
        anchor.filter(|p| !p.is_empty())
    }
}

/// Adds a person to a customer's list of at most `max`; true if it was new and kept.
fn push_person(people: &mut Vec<PersonSig>, p: PersonSig, max: usize) -> bool {
    let new = !p.is_empty() && !people.contains(&p) && people.len() < max;
    if new {
        people.push(p);
    }
    new
}

fn insert_sorted(v: &mut Vec<Ident>, id: Ident) {
    if let Err(pos) = v.binary_search(&id) {
        v.insert(pos, id);
    }
}

fn merge_sorted(into: &mut Vec<Ident>, from: Vec<Ident>) {
    for id in from {
        insert_sorted(into, id);
    }
}

fn next_counter(store: &mut Store, counter: &Cell<u64>) -> Result<u64, StoreError> {
    let next = counter.get(store)?.unwrap_or(0) + 1;
    counter.put(store, &next)?;
    Ok(next)
}

fn add_live_customers(store: &mut Store, delta: i64) -> Result<(), StoreError> {
    let n = LIVE_CUSTOMERS.get(store)?.unwrap_or(0) + delta;
    LIVE_CUSTOMERS.put(store, &n)
}

/// A persistent, sortable, deterministic customer id: a ULID whose time is the event time
/// of the customer's first event and whose random part is a hash of that event's id, so
/// that a replay of the same input gives the same ids.
fn new_customer_id(occurred_at: i64, event_id: &str) -> String {
    let ms = occurred_at.clamp(0, (1i64 << 48) - 1) as u64;
    let random = xxhash_rust::xxh3::xxh3_128(event_id.as_bytes());
    format!("cus_{}", ulid::Ulid::from_parts(ms, random))
}

impl Resolver {
    /// The event as profile is handed it: what it states, with the identifiers attached
    /// and its consent statements' identifiers normalised (resolve's normalisation).
    fn event_facts(
        &self,
        tp: &Touchpoint,
        identifiers: Vec<Ident>,
        counts: &mut Stats,
    ) -> EventFacts {
        EventFacts {
            event_id: tp.event_id.clone(),
            channel: tp.channel.clone(),
            kind: tp.kind.as_str().to_string(),
            occurred_at: tp.occurred_at,
            identifiers,
            person: tp.person.clone(),
            attributes: tp.attributes.clone(),
            order: tp.order.clone(),
            cart: tp.cart.clone(),
            product_sku: tp.product_sku.clone(),
            source: tp.source.clone(),
            consents: self.consent_statements(tp, counts),
        }
    }

    /// The event's consent statements, their identifier normalised; a statement whose
    /// identifier cannot be is dropped (counted).
    fn consent_statements(&self, tp: &Touchpoint, counts: &mut Stats) -> Vec<ConsentStatement> {
        let mut consents = Vec::with_capacity(tp.consent.len());
        for c in &tp.consent {
            let identifier = match &c.identifier {
                None => None,
                Some((kind, raw)) => match self.normalise_identifier(kind, raw) {
                    Some(id) => Some(id),
                    None => {
                        counts.consent_dropped += 1;
                        continue;
                    }
                },
            };
            consents.push(ConsentStatement {
                purpose: c.purpose,
                channel: c.channel,
                granted: c.granted,
                identifier,
                expires_at: c.expires_at,
            });
        }
        consents
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(first: &str, birth: Option<&str>) -> PersonSig {
        PersonSig {
            first: Some(first.into()),
            last: Some("dupont".into()),
            birth: birth.map(String::from),
        }
    }

    #[test]
    fn person_contradiction_needs_clear_differences() {
        assert!(!sig("sophie", None).contradicts(&sig("sofie", None)));
        assert!(sig("marie", None).contradicts(&sig("lea", None)));
        assert!(sig("sophie", Some("1985-04-12")).contradicts(&sig("sophie", Some("1990-01-01"))));
        assert!(!sig("sophie", Some("1985-04-12")).contradicts(&PersonSig::default()));
    }

    #[test]
    fn a_strong_identifier_refuses_only_clearly_another_person() {
        let p = |first: Option<&str>, last: &str, birth: Option<&str>| PersonSig {
            first: first.map(String::from),
            last: Some(last.into()),
            birth: birth.map(String::from),
        };
        let sophie = p(Some("sophie"), "dupont", Some("1985-04-12"));
        // A family e-mail: another first name, another birth date.
        assert!(sophie.clearly_other(&p(Some("jean"), "dupont", Some("1980-01-01"))));
        assert!(sophie.clearly_other(&p(Some("jean"), "dupont", None)));
        // A nickname with the same birth date, a married name, a typo: the same person.
        assert!(!sophie.clearly_other(&p(Some("fifi"), "dupont", Some("1985-04-12"))));
        assert!(!sophie.clearly_other(&p(Some("sophie"), "martin", None)));
        assert!(!sophie.clearly_other(&p(Some("sophie"), "dupont", Some("1985-04-13"))));
        // Without first names: another birth date and another last name.
        assert!(p(None, "dupont", Some("1985-04-12")).clearly_other(&p(
            None,
            "bernard",
            Some("1970-02-02")
        )));
        assert!(!p(None, "dupont", None).clearly_other(&p(None, "bernard", None)));
    }

    #[test]
    fn customer_ids_are_deterministic_and_time_ordered() {
        let a = new_customer_id(1_700_000_000_000, "e1");
        assert_eq!(a, new_customer_id(1_700_000_000_000, "e1"));
        assert_ne!(a, new_customer_id(1_700_000_000_000, "e2"));
        assert!(a < new_customer_id(1_800_000_000_000, "e1"));
        assert!(a.starts_with("cus_") && a.len() == 30);
    }
}
