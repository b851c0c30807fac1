//! Engine configuration: identifier types, guardrails, survivorship and lifecycle.
//!
//! Every option has a documented default, so an empty `[engine]` table is a valid
//! configuration. Unknown keys are refused (`deny_unknown_fields`): a typo in a
//! guardrail must not silently fall back to a default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::normalise::Normaliser;
use crate::model::{Channel, Purpose};

/// Errors found by [`EngineConfig::validate`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("identifier type `{name}`: {problem}")]
    IdentifierType { name: String, problem: &'static str },
    #[error("`{field}`: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// An audience or a trait that is badly named or does not compile.
    #[error("{0}")]
    Definition(String),
}

/// The most audiences, the most traits, and the most journeys a configuration may
/// define.
pub const MAX_DEFINITIONS: usize = 200;

/// The triggers of the engine itself: no journey takes their topics.
const BUILT_IN_TRIGGERS: [&str; 2] = ["purchase_completed", "lifecycle_changed"];

/// An audience's or a trait's name: it keys records and golden-record fields.
fn definition_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// How one identifier type is normalised and how far it may be trusted for linking.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdentifierType {
    /// Normaliser applied before any match.
    pub normaliser: Normaliser,
    /// Lower is stronger. The strongest identifier of an event anchors its source profile.
    pub priority: u32,
    /// Distinct values of this type one customer may hold; further values are not linked.
    pub limit: usize,
    /// A customer holds at most one value: a merge that would bring two is refused.
    #[serde(default)]
    pub unique: bool,
    /// Weak types do not link two source profiles whose person data contradict.
    #[serde(default)]
    pub weak: bool,
}

impl IdentifierType {
    fn new(normaliser: Normaliser, priority: u32, limit: usize) -> Self {
        Self {
            normaliser,
            priority,
            limit,
            unique: false,
            weak: false,
        }
    }
    fn unique(mut self) -> Self {
        self.unique = true;
        self.limit = 1;
        self
    }
    fn weak(mut self) -> Self {
        self.weak = true;
        self
    }
}

/// Guardrails against false merges.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Guardrails {
    /// Values never used for linking, compared after normalisation and case-insensitively
    /// on the raw value. Empty and one-character values are always junk.
    pub junk_values: Vec<String>,
    /// A value carried by source profiles of more than this many different people
    /// (names or birth dates disagree) becomes generic and stops linking.
    pub generic_after_people: usize,
    /// Source profiles remembered per identifier value. Beyond, the value is generic.
    pub max_profiles_per_value: usize,
    /// Local parts of e-mail addresses typed when the person has none, at any domain,
    /// compared without punctuation (`pas.de.mail@gmail.com` is `pasdemail`). A local
    /// part equal to the domain's name (`a@a.fr`) is junk too.
    pub junk_email_locals: Vec<String>,
    /// The weight (log2 of a likelihood ratio) of a shared identifier seen with one
    /// person: a link through it is decided by this weight plus what the person data
    /// weigh (a first name or a birth date against can outweigh it).
    pub identifier_weight: f64,
    /// The same for weak types (`phone`, `device_id`, `cookie_id`).
    pub weak_identifier_weight: f64,
    /// Taken off an identifier's weight per further person (names or birth dates
    /// disagree) it has been seen with: a family e-mail or a shop phone weighs less.
    pub spread_penalty: f64,
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            junk_values: [
                "test@test.com",
                "test@example.com",
                "noemail@noemail.com",
                "no@email.com",
                "a@a.com",
                "0000000000",
                "+33000000000",
                "0600000000",
                "0123456789",
                "1234567890",
                "null",
                "nil",
                "n/a",
                "na",
                "none",
                "unknown",
                "undefined",
                "anonymous",
                "test",
                "xxx",
                "-",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            generic_after_people: 5,
            max_profiles_per_value: 64,
            identifier_weight: 10.0,
            weak_identifier_weight: 6.0,
            spread_penalty: 7.0,
            junk_email_locals: [
                "pasdemail",
                "pasdemails",
                "pasdadresse",
                "sansemail",
                "sansmail",
                "noemail",
                "nomail",
                "noreply",
                "none",
                "aucun",
                "aucune",
                "inconnu",
                "unknown",
                "client",
                "clients",
                "magasin",
                "nobody",
                "test",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

/// Bounds on what one input event may carry (larger events are rejected to the
/// dead-letter topic) and on what the store keeps of one customer (beyond, the oldest is
/// forgotten and counted in `unicus_bounds_dropped_total`), so that state and output stay
/// proportional to the input whatever it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_event_bytes: usize,
    /// Every text value and every object key of an event.
    pub max_string_bytes: usize,
    pub max_identifiers: usize,
    pub max_event_id_bytes: usize,
    /// Keys of an event's `attributes` object; more: `too_many_attributes`.
    pub max_attributes: usize,
    /// An attribute key longer: `too_long`.
    pub max_attribute_key_bytes: usize,
    /// An attribute value longer (as text): `too_long`.
    pub max_attribute_value_bytes: usize,
    /// Attribute keys kept per customer: the most recently stated.
    pub max_attributes_per_customer: usize,
    /// Source profiles per customer: a link or merge that would bring more is refused.
    pub max_source_profiles_per_customer: usize,
    /// Person signatures remembered per customer (what guardrails compare).
    pub max_people_per_customer: usize,
    /// Ids of the customers merged into one remembered (the oldest forgotten first).
    pub max_merged_ids: usize,
    /// Entries of a customer's merge and split history (the oldest forgotten first).
    pub max_merge_log: usize,
    /// `identity.changes` conflict records written per event (the others counted).
    pub max_conflicts_per_event: usize,
    /// Purchased items remembered for `recently_purchased` (the oldest forgotten first).
    pub max_recent_purchases: usize,
    /// Touchpoints kept per customer for its timeline (the lookup API's
    /// `/events`, the 360 page, exports): the oldest by event time forgotten first.
    pub max_timeline_events: usize,
    /// Orders and returns remembered for the lifetime value (the oldest forgotten first).
    pub max_orders_kept: usize,
    /// Items kept of one cart snapshot (the first ones).
    pub max_cart_items: usize,
    /// Full days an event's id is remembered after the day it was received (UTC), so
    /// that a redelivered or duplicated event changes nothing; then it is forgotten. Keep it above the input
    /// topics' retention (a consumer group reset re-reads that far). 0: never forgotten.
    pub seen_events_days: u32,
    /// Currencies a customer's order totals are kept in.
    pub max_currencies_per_customer: usize,
    /// Consent decisions about one identifier kept per customer (grants forgotten
    /// before denials, the oldest first).
    pub max_identifier_consents: usize,
    /// The earliest time (RFC 3339) an input may state (`occurred_at`, `requested_at`).
    pub min_event_time: String,
    /// How far (ms) an input's time may lie after its record's reference time: the
    /// earlier of the broker timestamp and the time the caller read the record.
    pub max_future_skew_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_string_bytes: 4096,
            max_identifiers: 64,
            max_event_id_bytes: 128,
            max_attributes: 64,
            max_attribute_key_bytes: 128,
            max_attribute_value_bytes: 256,
            max_attributes_per_customer: 100,
            max_source_profiles_per_customer: 100,
            max_people_per_customer: 16,
            max_merged_ids: 256,
            max_merge_log: 1000,
            max_conflicts_per_event: 16,
            max_recent_purchases: 200,
            max_timeline_events: 50,
            max_orders_kept: 1000,
            max_cart_items: 100,
            seen_events_days: 30,
            max_currencies_per_customer: 8,
            max_identifier_consents: 64,
            min_event_time: "2000-01-01T00:00:00Z".into(),
            max_future_skew_ms: 86_400_000,
        }
    }
}

impl Limits {
    /// [`Limits::min_event_time`] in ms since the epoch, if it is a valid RFC 3339 time
    /// ([`EngineConfig::validate`] refuses a configuration where it is not).
    pub fn min_event_time_ms(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.min_event_time)
            .ok()
            .map(|t| t.timestamp_millis())
            .filter(|t| crate::model::output::RFC3339_MS.contains(t))
    }
}

/// Which value of a person field wins when source profiles disagree.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Survivorship {
    /// Field name (`first_name`, `last_name`, `birth_date`, `address`, `attributes.<key>`)
    /// to channels in priority order. A value from an earlier channel wins over a more
    /// recent one from a later or unlisted channel. Fields not listed: most recent wins.
    pub field_priority: BTreeMap<String, Vec<String>>,
}

/// Lifecycle stage thresholds, in days since the last order (event time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// Last order at most this many days ago: `active`.
    pub active_days: u32,
    /// Last order at most this many days ago (and more than `active_days`): `inactive`;
    /// beyond: `dormant`. No order at all: `prospect`.
    pub dormant_days: u32,
    /// Currency whose order totals make the RFM monetary value.
    pub base_currency: String,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            active_days: 180,
            dormant_days: 365,
            base_currency: "EUR".into(),
        }
    }
}

/// How consent decisions are read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentConfig {
    /// Purposes allowed until the person denies them (legitimate interest); every other
    /// purpose needs an explicit grant (opt-in).
    pub implied: Vec<Purpose>,
    /// Per channel, what makes a customer reachable on it: identifier types, or
    /// `address` for a postal address. An allowed channel that is not reachable is not
    /// listed in `allowed_channels`.
    pub reachable_by: BTreeMap<Channel, Vec<String>>,
}

impl Default for ConsentConfig {
    fn default() -> Self {
        let reach = |c: Channel, by: &[&str]| (c, by.iter().map(|s| s.to_string()).collect());
        Self {
            implied: vec![
                Purpose::Personalization,
                Purpose::Analytics,
                Purpose::Profiling,
            ],
            reachable_by: [
                reach(Channel::Email, &["email"]),
                reach(Channel::Sms, &["phone"]),
                reach(Channel::Phone, &["phone"]),
                reach(Channel::Push, &["device_id"]),
                reach(Channel::Post, &["address"]),
                reach(Channel::Web, &["account_id", "cookie_id", "device_id"]),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// What happens to events that carry an identifier of an erased customer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErasedIdentifiers {
    /// Dropped and counted: replaying old events does not bring the person back.
    Suppress,
    /// Processed as any event: the person comes back as a new customer.
    Accept,
}

/// Expiry of personal data, in days of inactivity (event time). 0 disables a rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// A customer without any event for this long is erased (receipt kind `retention`).
    pub inactive_customer_days: u32,
    /// A source profile known only by behavioural identifiers (cookies, devices) and
    /// unseen for this long is detached from its customer and forgotten.
    pub behavioural_days: u32,
    /// The identifier types that are behavioural.
    pub behavioural_identifiers: Vec<String>,
    /// Customers or source profiles one sweep handles at most (the stream waits for one
    /// sweep, so keep it small).
    pub sweep_batch: usize,
    /// Milliseconds between two sweeps of the runtime.
    pub sweep_interval_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            inactive_customer_days: 3 * 365,
            behavioural_days: 395,
            behavioural_identifiers: vec!["cookie_id".into(), "device_id".into()],
            sweep_batch: 200,
            sweep_interval_ms: 60_000,
        }
    }
}

/// Rights of the person, retention and minimisation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Gdpr {
    pub erased_identifiers: ErasedIdentifiers,
    /// Secret key of the keyed hashes (suppression list, pseudonymised topics). Empty:
    /// a random key is generated once and kept in the store.
    pub hash_key: String,
    pub retention: Retention,
    /// Person fields that may be stored at all; others are dropped and counted.
    pub person_fields: Vec<String>,
    /// Attribute keys that may be stored at all (`*`: any); others are dropped and counted.
    pub attributes: Vec<String>,
    /// Output topics whose records carry keyed hashes instead of identifier values, and
    /// no person fields (`touchpoints.resolved`, `profiles.merged`, `identity.changes`).
    pub pseudonymised_topics: Vec<String>,
}

impl Default for Gdpr {
    fn default() -> Self {
        Self {
            erased_identifiers: ErasedIdentifiers::Suppress,
            hash_key: String::new(),
            retention: Retention::default(),
            person_fields: ["first_name", "last_name", "birth_date", "address"]
                .into_iter()
                .map(String::from)
                .collect(),
            attributes: vec!["*".into()],
            pseudonymised_topics: Vec::new(),
        }
    }
}

impl Gdpr {
    pub fn person_field_allowed(&self, name: &str) -> bool {
        self.person_fields.iter().any(|f| f == name)
    }

    pub fn attribute_allowed(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a == "*" || a == name)
    }
}

/// Score bands of the RFM segment: each score is 1 plus the number of bands reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RfmBands {
    /// Days since the last order, ascending: at most the first → 5, … beyond the last → 1.
    pub recency_days: Vec<u32>,
    /// Orders, ascending: at least the last → 5, … below the first → 1.
    pub frequency: Vec<u32>,
    /// Net purchases in the base currency, ascending: at least the last → 5.
    pub monetary: Vec<f64>,
}

impl Default for RfmBands {
    fn default() -> Self {
        Self {
            recency_days: vec![30, 90, 180, 365],
            frequency: vec![2, 3, 5, 10],
            monetary: vec![100.0, 300.0, 800.0, 2000.0],
        }
    }
}

/// The VIP flag: every threshold set (non-zero) must be reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VipRule {
    /// Customer lifetime value (net purchases within `clv_horizon_days`) at least this.
    pub min_clv: f64,
    /// Orders within `clv_horizon_days` at least this.
    pub min_orders: u32,
}

impl Default for VipRule {
    fn default() -> Self {
        Self {
            min_clv: 1000.0,
            min_orders: 3,
        }
    }
}

/// Triggers and segments for activation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Activation {
    /// Deprecated: the cart journey's `wait` when `[engine.journeys.cart_abandoned]`
    /// gives none (a cart with items and no purchase of them for this long after its
    /// last activity is abandoned).
    pub cart_abandoned_delay_ms: u64,
    /// Timers fire this long after their due time, so that late events still count.
    pub grace_ms: u64,
    /// Deprecated: the cart journey's `purposes` when `[engine.journeys.cart_abandoned]`
    /// gives none (a reminder is for the first of them with a channel allowed).
    pub cart_purposes: Vec<Purpose>,
    /// Products bought within this many days are listed as `recently_purchased`.
    pub recent_purchase_days: u32,
    /// Carts remembered per customer (the oldest are forgotten).
    pub max_carts: usize,
    pub rfm: RfmBands,
    /// Customer lifetime value is the net purchases of this many days.
    pub clv_horizon_days: u32,
    pub vip: VipRule,
    /// Milliseconds between two wall-clock ticks of the runtime on an idle stream.
    pub tick_interval_ms: u64,
}

impl Default for Activation {
    fn default() -> Self {
        Self {
            cart_abandoned_delay_ms: 3_600_000,
            grace_ms: 300_000,
            cart_purposes: vec![Purpose::Marketing, Purpose::Remarketing],
            recent_purchase_days: 30,
            max_carts: 20,
            rfm: RfmBands::default(),
            clv_horizon_days: 365,
            vip: VipRule::default(),
            tick_interval_ms: 1_000,
        }
    }
}

/// One fuzzy match rule: the minimum similarity (0 to 1) required on each of its fields.
/// A candidate satisfying it scores the mean similarity of those fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    /// Named in `identity.changes` records and explanations.
    pub name: String,
    /// `false`: the rule only ever makes suggestions, never a link.
    #[serde(default = "yes")]
    pub link: bool,
    /// Field (`first_name`, `last_name`, `birth_date`, `street`, `postal_code`, `city`,
    /// `email_local`) to minimum similarity.
    pub require: BTreeMap<String, f64>,
}

fn yes() -> bool {
    true
}

impl MatchRule {
    fn new(name: &str, link: bool, require: &[(&str, f64)]) -> Self {
        Self {
            name: name.into(),
            link,
            require: require.iter().map(|(f, m)| (f.to_string(), *m)).collect(),
        }
    }
}

/// Fuzzy identity resolution on person data (see [`crate::engine::resolve::matching`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Matching {
    /// Off: only shared identifiers link.
    pub enabled: bool,
    /// Source profiles compared at most per event; a blocking key shared by more is
    /// generic and stops being used (counted).
    pub max_candidates: usize,
    /// A candidate scoring at least this under a linking rule is linked.
    pub link_threshold: f64,
    /// At least this (and below the link threshold, or under a rule that does not
    /// link): an `identity.changes` record of type `suggestion`, no merge.
    pub suggest_threshold: f64,
    /// Evaluated all; the best score wins, ties to the rule listed first.
    pub rules: Vec<MatchRule>,
    /// `probabilistic` (the default: a Fellegi–Sunter model, per-field weights summed
    /// into a match probability, more blocking keys; see
    /// [`crate::engine::resolve::model`]) or `rules` (the rules above and their
    /// thresholds).
    pub scoring: Scoring,
    /// Probabilistic scoring: the model file `unicus train-matching` wrote; the model
    /// shipped with unicus without it.
    pub model: Option<std::path::PathBuf>,
    /// Probabilistic scoring: a candidate at least this likely to be the same person is
    /// linked.
    pub link_probability: f64,
    /// Probabilistic scoring: at least this likely (and below `link_probability`): a
    /// `suggestion` record, no merge.
    pub suggest_probability: f64,
    /// Probabilistic scoring: when person data that contradicts beyond a typo (birth
    /// dates more than one typo apart: one digit, day and month swapped, a year;
    /// first names that cannot be the same person's) refuses a candidate whatever the
    /// weights. See [`ContradictionVeto`].
    pub contradiction_veto: ContradictionVeto,
}

/// Which contradictions refuse a probabilistic candidate outright (never linked nor
/// suggested, and a link refused as `person_contradiction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContradictionVeto {
    /// Either one: the birth dates or the first names (as under the rules). Safest on
    /// households, loses the records where one of them was typed badly wrong.
    Either,
    /// Both at once: another first name and another birth date are another person
    /// (one household's members); one of them alone is left to the weights.
    #[default]
    Both,
    /// Never: the weights alone decide.
    Off,
}

impl ContradictionVeto {
    /// Whether contradicting birth dates and first names (each beyond a typo) veto.
    pub fn vetoes(self, birth_dates_contradict: bool, first_names_contradict: bool) -> bool {
        match self {
            ContradictionVeto::Either => birth_dates_contradict || first_names_contradict,
            ContradictionVeto::Both => birth_dates_contradict && first_names_contradict,
            ContradictionVeto::Off => false,
        }
    }
}

/// How fuzzy matching scores a candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    Rules,
    #[default]
    Probabilistic,
}

impl Default for Matching {
    fn default() -> Self {
        Self {
            enabled: true,
            max_candidates: 50,
            link_threshold: 0.92,
            suggest_threshold: 0.80,
            rules: vec![
                MatchRule::new(
                    "name_birth_date_postal_code",
                    true,
                    &[
                        ("first_name", 0.85),
                        ("last_name", 0.9),
                        ("birth_date", 1.0),
                        ("postal_code", 1.0),
                    ],
                ),
                MatchRule::new(
                    "name_birth_date",
                    true,
                    &[
                        ("first_name", 0.9),
                        ("last_name", 0.92),
                        ("birth_date", 1.0),
                    ],
                ),
                MatchRule::new(
                    "name_address",
                    true,
                    &[
                        ("first_name", 0.93),
                        ("last_name", 0.92),
                        ("street", 0.9),
                        ("postal_code", 1.0),
                    ],
                ),
                MatchRule::new(
                    "name_email_local",
                    true,
                    &[
                        ("first_name", 0.9),
                        ("last_name", 0.92),
                        ("email_local", 0.92),
                    ],
                ),
                MatchRule::new(
                    "name_postal_code",
                    false,
                    &[
                        ("first_name", 0.9),
                        ("last_name", 0.92),
                        ("postal_code", 1.0),
                    ],
                ),
                MatchRule::new(
                    "name_birth_date_typo",
                    false,
                    &[
                        ("first_name", 0.9),
                        ("last_name", 0.92),
                        ("birth_date", 0.75),
                        ("postal_code", 1.0),
                    ],
                ),
            ],
            scoring: Scoring::Probabilistic,
            model: None,
            link_probability: 0.99,
            suggest_probability: 0.9,
            contradiction_veto: ContradictionVeto::Both,
        }
    }
}

impl Matching {
    /// Rules and thresholds, checked at start with a message naming the culprit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            field: "matching",
            problem,
        };
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !unit(self.link_threshold) || !unit(self.suggest_threshold) {
            return Err(invalid(
                "link_threshold and suggest_threshold must be between 0 and 1".into(),
            ));
        }
        if self.suggest_threshold > self.link_threshold {
            return Err(invalid(format!(
                "suggest_threshold ({}) must not be above link_threshold ({})",
                self.suggest_threshold, self.link_threshold
            )));
        }
        let open_unit = |x: f64| x > 0.0 && x < 1.0;
        if !open_unit(self.link_probability) || !open_unit(self.suggest_probability) {
            return Err(invalid(
                "link_probability and suggest_probability must be between 0 and 1 (exclusive)"
                    .into(),
            ));
        }
        if self.suggest_probability > self.link_probability {
            return Err(invalid(format!(
                "suggest_probability ({}) must not be above link_probability ({})",
                self.suggest_probability, self.link_probability
            )));
        }
        if self.scoring == Scoring::Probabilistic {
            if let Some(path) = &self.model {
                crate::engine::resolve::model::MatchModel::load(path)
                    .map_err(|e| invalid(format!("model {}: {e}", path.display())))?;
            }
        }
        if self.max_candidates == 0 || self.max_candidates > 1000 {
            return Err(invalid("max_candidates must be between 1 and 1000".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.rules {
            let rule = |problem: String| invalid(format!("rule `{}`: {problem}", r.name));
            if r.name.is_empty()
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(rule("a name is lower-case ascii, digits or `_`".into()));
            }
            if !names.insert(r.name.as_str()) {
                return Err(rule("two rules have this name".into()));
            }
            if r.require.len() < 2 {
                return Err(rule("a rule requires at least two fields".into()));
            }
            for (field, min) in &r.require {
                if crate::model::Field::parse(field).is_none() {
                    let known: Vec<&str> = crate::model::Field::ALL
                        .iter()
                        .map(|f| f.as_str())
                        .collect();
                    return Err(rule(format!(
                        "unknown field `{field}` (known: {})",
                        known.join(", ")
                    )));
                }
                if !(*min > 0.0 && *min <= 1.0) {
                    return Err(rule(format!(
                        "`{field}` needs a minimum similarity above 0 and at most 1, not {min}"
                    )));
                }
            }
            if !["first_name", "last_name", "email_local"]
                .iter()
                .any(|f| r.require.contains_key(*f))
            {
                return Err(rule(
                    "a rule must compare a name (first_name, last_name or email_local)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Everything the engine needs. Same config + same input = same output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Region used to read phone numbers written without a country code.
    pub default_region: String,
    /// Identifier types by name; the eight of the contract are built in.
    pub identifiers: BTreeMap<String, IdentifierType>,
    pub guardrails: Guardrails,
    pub limits: Limits,
    pub survivorship: Survivorship,
    pub lifecycle: Lifecycle,
    pub consent: ConsentConfig,
    pub gdpr: Gdpr,
    pub activation: Activation,
    pub matching: Matching,
    /// Keys naming special-category data (GDPR art. 9), in English and French by
    /// default. An event with a key containing one of these, at any depth, is rejected.
    /// Keys and terms are compared in a normal form (NFKC, accents and case folded,
    /// invisible characters dropped, look-alike letters mapped to one skeleton: see
    /// `engine::input::special`) and as whole words: `health_condition` and `ｈｅａｌｔｈ`
    /// match `health`, `healthy_snacks` and `trace_id` match neither `health` nor `race`.
    pub special_categories: Vec<String>,
    /// `profiles.merged` gets the latest golden record of each customer a batch changed,
    /// as a KTable's record cache does (see `engine::coalesce`); off, one per change.
    pub coalesce_profiles: bool,
    /// Audiences by name: conditions in the expression language of
    /// [`crate::engine::audience`], compiled at start (see `engine::profile::audiences`).
    /// Membership changes go to `audiences.changes`; the golden record lists the
    /// audiences its customer is in.
    pub audiences: BTreeMap<String, String>,
    /// Computed traits by name: expressions of any type, shown in the golden record
    /// under `traits` (and readable by audiences as `traits.<name>`).
    pub traits: BTreeMap<String, String>,
    /// Journeys by name: wait after an event for another that does not come, then
    /// publish a trigger on `triggers.<name>` (see `engine::profile::journeys`).
    pub journeys: BTreeMap<String, JourneyConfig>,
    /// What the golden record infers beyond what events state: affinities, home store
    /// and region, price band, contact channel and hour, next purchase (see
    /// `engine::profile::enrichment`). Off by default.
    pub enrichment: Enrichment,
    /// The channels an event may name in `channel`: those of `kafka.channels` (one list
    /// for the topics consumed and the channels accepted), copied there when the
    /// settings are read; not a key of `[engine]`. Another channel is `unknown_channel`.
    #[serde(skip)]
    pub channels: Vec<String>,
}

/// A journey of `[engine.journeys.<name>]`: after an `entry` event (for which `when`
/// holds, if given), wait `wait`; if no `unless` event came meanwhile, publish a trigger
/// on `triggers.<name>`, within the cap, outside quiet hours, unless the customer
/// purchased lately or may not be contacted for any of `purposes`. The event patterns,
/// condition and durations are in the language of `engine::audience`.
///
/// `[engine.journeys.cart_abandoned]` is the abandoned-cart journey, shipped by default
/// ([`CART_JOURNEY`]): one wait per cart (`per = "cart"`), started again by every event
/// that carries the cart and ended by its purchase or emptying; its `wait`, `purposes`,
/// `quiet_hours` and `suppress_after_purchase` may be set, `enabled = false` turns it
/// off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JourneyConfig {
    /// The events that start the wait (a later one starts it again):
    /// `product_view`, `purchase where amount > 100`, `*`. Required but for the cart
    /// journey, whose entries are the events carrying its cart.
    #[serde(default)]
    pub entry: String,
    /// A condition on the customer once the entry event is counted:
    /// `count(product_view, 24h) >= 3`. None: every entry event starts the wait.
    #[serde(default)]
    pub when: Option<String>,
    /// The events that end the wait without a trigger: `cart`. None: only time.
    #[serde(default)]
    pub unless: Option<String>,
    /// How long after the entry event the trigger is due: `24h`, `60d`. Required but
    /// for the cart journey (`activation.cart_abandoned_delay_ms` when not given).
    #[serde(default)]
    pub wait: String,
    /// Purposes in order of preference: the trigger names the first for which the
    /// customer has a channel allowed; with none, no trigger. Not given: marketing
    /// (`activation.cart_purposes` for the cart journey).
    #[serde(default)]
    pub purposes: Option<Vec<Purpose>>,
    /// At most this many triggers per customer in a period: `"1/7d"`. None: no cap.
    #[serde(default)]
    pub cap: Option<String>,
    /// Hours of the day (UTC) in which no trigger is sent, `"21-8"` (21:00 to 08:00):
    /// one due then waits for the end of them. None: any hour.
    #[serde(default)]
    pub quiet_hours: Option<String>,
    /// No trigger if the customer ordered within this long before it is due: `7d`.
    #[serde(default)]
    pub suppress_after_purchase: Option<String>,
    /// What a wait is kept for: `customer` (the default), or `cart`, which only the
    /// cart journey is.
    #[serde(default)]
    pub per: Option<JourneyPer>,
    /// `false`: the journey is not run (to turn off the shipped cart journey).
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// The name of the abandoned-cart journey: its topic, `triggers.cart_abandoned`, and
/// its records are those of the contract.
pub const CART_JOURNEY: &str = "cart_abandoned";

/// What a journey's waits are kept for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JourneyPer {
    /// One set of waits per customer.
    Customer,
    /// One wait per cart of the customer (the cart journey).
    Cart,
}

impl JourneyConfig {
    /// Whether this is the cart journey: named [`CART_JOURNEY`], or saying `per = "cart"`
    /// (refused under another name).
    pub fn is_cart(&self, name: &str) -> bool {
        name == CART_JOURNEY || self.per == Some(JourneyPer::Cart)
    }

    /// A journey of `entry` events, due `wait` after them, with no other key given.
    pub fn new(entry: &str, wait: &str) -> Self {
        Self {
            entry: entry.into(),
            when: None,
            unless: None,
            wait: wait.into(),
            purposes: None,
            cap: None,
            quiet_hours: None,
            suppress_after_purchase: None,
            per: None,
            enabled: true,
        }
    }
}

/// `[engine.enrichment]`: the golden record's `enrichment`, inferred from the events
/// and the reference data, gated by the `profiling` consent like RFM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Enrichment {
    /// Off: no `enrichment` in the golden record and nothing kept for it.
    pub enabled: bool,
    /// Affinities and contact hours weigh an event half as much after this many days.
    pub half_life_days: u32,
    /// Upper bounds (in `lifecycle.base_currency`) of the price bands but the last,
    /// increasing: the mean item price falls in the first band whose bound it is below.
    pub price_band_limits: Vec<f64>,
    /// The bands' names, one more than the limits.
    pub price_band_names: Vec<String>,
    /// Categories and brands shown, the strongest first.
    pub top: usize,
}

impl Default for Enrichment {
    fn default() -> Self {
        Self {
            enabled: false,
            half_life_days: 30,
            price_band_limits: vec![30.0, 100.0],
            price_band_names: vec!["low".into(), "mid".into(), "high".into()],
            top: 5,
        }
    }
}

/// The default special-category terms: GDPR art. 9 in English, then in French. Words
/// used for other things too are left out (`diagnostic`: a device's; `handicap`: golf's;
/// `politique` alone: a pricing policy), their unambiguous phrases kept.
const DEFAULT_SPECIAL_CATEGORIES: [&str; 55] = [
    "health",
    "medical",
    "diagnosis",
    "disability",
    "religion",
    "religious",
    "religious belief",
    "philosophical belief",
    "sexual orientation",
    "sex life",
    "sexuality",
    "union membership",
    "trade union",
    "ethnic",
    "ethnicity",
    "ethnic origin",
    "racial",
    "race",
    "political",
    "political opinion",
    "political opinions",
    "biometric",
    "biometrics",
    "genetic",
    "genetic data",
    "santé",
    "médical",
    "médicale",
    "médicaux",
    "maladie",
    "situation de handicap",
    "religieux",
    "religieuse",
    "conviction religieuse",
    "convictions religieuses",
    "orientation sexuelle",
    "vie sexuelle",
    "sexualité",
    "syndicat",
    "syndical",
    "syndicale",
    "appartenance syndicale",
    "ethnique",
    "ethnie",
    "origine ethnique",
    "origine raciale",
    "raciale",
    "opinion politique",
    "opinions politiques",
    "génétique",
    "génétiques",
    "données génétiques",
    "biométrique",
    "biométriques",
    "données biométriques",
];

impl Default for EngineConfig {
    fn default() -> Self {
        use Normaliser::*;
        let identifiers = [
            ("account_id", IdentifierType::new(Id, 10, 1).unique()),
            ("loyalty_id", IdentifierType::new(Id, 20, 1).unique()),
            ("marketplace_buyer_id", IdentifierType::new(Id, 30, 3)),
            ("email", IdentifierType::new(Email, 40, 5)),
            ("social_handle", IdentifierType::new(SocialHandle, 50, 5)),
            ("phone", IdentifierType::new(Phone, 60, 5).weak()),
            (
                "device_id",
                IdentifierType::new(IdCaseInsensitive, 70, 20).weak(),
            ),
            (
                "cookie_id",
                IdentifierType::new(IdCaseInsensitive, 80, 50).weak(),
            ),
        ]
        .into_iter()
        .map(|(name, t)| (name.to_string(), t))
        .collect();
        Self {
            default_region: "FR".into(),
            identifiers,
            guardrails: Guardrails::default(),
            limits: Limits::default(),
            survivorship: Survivorship::default(),
            lifecycle: Lifecycle::default(),
            consent: ConsentConfig::default(),
            gdpr: Gdpr::default(),
            activation: Activation::default(),
            matching: Matching::default(),
            coalesce_profiles: true,
            audiences: BTreeMap::new(),
            traits: BTreeMap::new(),
            journeys: BTreeMap::new(),
            enrichment: Enrichment::default(),
            special_categories: DEFAULT_SPECIAL_CATEGORIES
                .into_iter()
                .map(String::from)
                .collect(),
            channels: crate::model::SOURCE_CHANNELS
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }
}

impl EngineConfig {
    /// Checks rules that span fields; the first broken one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_identifiers()?;
        self.validate_guardrails_and_limits()?;
        self.validate_consent()?;
        self.validate_gdpr()?;
        self.validate_activation()?;
        self.validate_definitions()?;
        self.validate_enrichment()?;
        self.matching.validate()?;
        if self
            .default_region
            .parse::<phonenumber::country::Id>()
            .is_err()
        {
            return Err(ConfigError::Invalid {
                field: "default_region",
                problem: format!("`{}` is not an ISO 3166 region", self.default_region),
            });
        }
        Ok(())
    }

    /// At least one identifier type, each well named and with a sound limit.
    fn validate_identifiers(&self) -> Result<(), ConfigError> {
        if self.identifiers.is_empty() {
            return Err(ConfigError::Invalid {
                field: "identifiers",
                problem: "at least one identifier type is needed".into(),
            });
        }
        for (name, t) in &self.identifiers {
            let problem = if name.is_empty() || name.len() > 64 {
                Some("name must be 1 to 64 bytes")
            } else if !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                Some("name must be lower-case ascii, digits or `_`")
            } else if t.limit == 0 {
                Some("limit must be at least 1")
            } else if t.unique && t.limit != 1 {
                Some("a unique type has limit 1")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ConfigError::IdentifierType {
                    name: name.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// Guardrails, lifecycle stages and input limits.
    fn validate_guardrails_and_limits(&self) -> Result<(), ConfigError> {
        let g = &self.guardrails;
        for (field, w) in [
            ("guardrails.identifier_weight", g.identifier_weight),
            (
                "guardrails.weak_identifier_weight",
                g.weak_identifier_weight,
            ),
            ("guardrails.spread_penalty", g.spread_penalty),
        ] {
            if !w.is_finite() || w < 0.0 {
                return Err(ConfigError::Invalid {
                    field,
                    problem: "must be a finite number, at least 0".into(),
                });
            }
        }
        if self.guardrails.generic_after_people == 0 {
            return Err(ConfigError::Invalid {
                field: "guardrails.generic_after_people",
                problem: "must be at least 1".into(),
            });
        }
        if self.guardrails.max_profiles_per_value <= self.guardrails.generic_after_people {
            return Err(ConfigError::Invalid {
                field: "guardrails.max_profiles_per_value",
                problem: "must be larger than generic_after_people".into(),
            });
        }
        if self.lifecycle.active_days >= self.lifecycle.dormant_days {
            return Err(ConfigError::Invalid {
                field: "lifecycle.active_days",
                problem: "must be smaller than lifecycle.dormant_days".into(),
            });
        }
        self.validate_limits()
    }

    /// Every limit at least 1; the attribute bounds within the general ones.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let all = [
            ("max_event_bytes", l.max_event_bytes),
            ("max_string_bytes", l.max_string_bytes),
            ("max_identifiers", l.max_identifiers),
            ("max_event_id_bytes", l.max_event_id_bytes),
            ("max_attributes", l.max_attributes),
            ("max_attribute_key_bytes", l.max_attribute_key_bytes),
            ("max_attribute_value_bytes", l.max_attribute_value_bytes),
            ("max_attributes_per_customer", l.max_attributes_per_customer),
            (
                "max_source_profiles_per_customer",
                l.max_source_profiles_per_customer,
            ),
            ("max_people_per_customer", l.max_people_per_customer),
            ("max_merged_ids", l.max_merged_ids),
            ("max_merge_log", l.max_merge_log),
            ("max_conflicts_per_event", l.max_conflicts_per_event),
            ("max_recent_purchases", l.max_recent_purchases),
            ("max_timeline_events", l.max_timeline_events),
            ("max_orders_kept", l.max_orders_kept),
            ("max_cart_items", l.max_cart_items),
            ("max_currencies_per_customer", l.max_currencies_per_customer),
            ("max_identifier_consents", l.max_identifier_consents),
        ];
        if let Some((name, _)) = all.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid {
                field: "limits",
                problem: format!("`{name}` must be at least 1"),
            });
        }
        if l.max_attribute_key_bytes > l.max_string_bytes
            || l.max_attribute_value_bytes > l.max_string_bytes
        {
            return Err(ConfigError::Invalid {
                field: "limits",
                problem: "max_attribute_key_bytes and max_attribute_value_bytes must not be above max_string_bytes".into(),
            });
        }
        if self.limits.min_event_time_ms().is_none() {
            return Err(ConfigError::Invalid {
                field: "limits.min_event_time",
                problem: format!(
                    "`{}` is not an RFC 3339 time in years 0000 to 9999",
                    self.limits.min_event_time
                ),
            });
        }
        Ok(())
    }

    /// The identifiers that make a channel reachable. (Purposes and channels are words
    /// of the vocabulary: reading the configuration refuses any other.)
    fn validate_consent(&self) -> Result<(), ConfigError> {
        for by in self.consent.reachable_by.values() {
            if let Some(t) = by
                .iter()
                .find(|t| *t != "address" && !self.identifiers.contains_key(*t))
            {
                return Err(ConfigError::Invalid {
                    field: "consent.reachable_by",
                    problem: format!("`{t}` is neither an identifier type nor `address`"),
                });
            }
        }
        Ok(())
    }

    /// Retention, minimisation allow-lists and pseudonymised topics.
    fn validate_gdpr(&self) -> Result<(), ConfigError> {
        let r = &self.gdpr.retention;
        if let Some(t) = r
            .behavioural_identifiers
            .iter()
            .find(|t| !self.identifiers.contains_key(*t))
        {
            return Err(ConfigError::Invalid {
                field: "gdpr.retention.behavioural_identifiers",
                problem: format!("`{t}` is not an identifier type"),
            });
        }
        if r.sweep_batch == 0 || r.sweep_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "gdpr.retention",
                problem: "sweep_batch and sweep_interval_ms must be positive".into(),
            });
        }
        if r.inactive_customer_days != 0 && r.inactive_customer_days < r.behavioural_days {
            return Err(ConfigError::Invalid {
                field: "gdpr.retention.inactive_customer_days",
                problem: "must not be shorter than behavioural_days".into(),
            });
        }
        const PERSON_FIELDS: [&str; 4] = ["first_name", "last_name", "birth_date", "address"];
        if let Some(f) = self
            .gdpr
            .person_fields
            .iter()
            .find(|f| !PERSON_FIELDS.contains(&f.as_str()))
        {
            return Err(ConfigError::Invalid {
                field: "gdpr.person_fields",
                problem: format!("`{f}` is not one of {}", PERSON_FIELDS.join(", ")),
            });
        }
        const PSEUDONYMISABLE: [&str; 3] = [
            "touchpoints.resolved",
            "profiles.merged",
            "identity.changes",
        ];
        if let Some(t) = self
            .gdpr
            .pseudonymised_topics
            .iter()
            .find(|t| !PSEUDONYMISABLE.contains(&t.as_str()))
        {
            return Err(ConfigError::Invalid {
                field: "gdpr.pseudonymised_topics",
                problem: format!("`{t}` is not one of {}", PSEUDONYMISABLE.join(", ")),
            });
        }
        Ok(())
    }

    /// Cart triggers and RFM bands.
    /// Audiences and traits: well named, not too many, and each compiles (the error gives
    /// its name, line and column).
    fn validate_definitions(&self) -> Result<(), ConfigError> {
        for (section, defs) in [("audiences", &self.audiences), ("traits", &self.traits)] {
            if defs.len() > MAX_DEFINITIONS {
                return Err(ConfigError::Invalid {
                    field: if section == "audiences" {
                        "audiences"
                    } else {
                        "traits"
                    },
                    problem: format!("at most {MAX_DEFINITIONS}, not {}", defs.len()),
                });
            }
            if let Some(name) = defs.keys().find(|n| !definition_name_ok(n)) {
                return Err(ConfigError::Definition(format!(
                    "engine.{section}.{name}: a name is 1 to 64 lower-case ASCII letters, digits \
                     and `_`, starting with a letter"
                )));
            }
        }
        if self.journeys.len() > MAX_DEFINITIONS {
            return Err(ConfigError::Invalid {
                field: "journeys",
                problem: format!("at most {MAX_DEFINITIONS}, not {}", self.journeys.len()),
            });
        }
        if let Some(name) = self.journeys.keys().find(|n| !definition_name_ok(n)) {
            return Err(ConfigError::Definition(format!(
                "engine.journeys.{name}: a name is 1 to 64 lower-case ASCII letters, digits \
                 and `_`, starting with a letter"
            )));
        }
        if let Some(name) = self
            .journeys
            .keys()
            .find(|n| BUILT_IN_TRIGGERS.contains(&n.as_str()))
        {
            return Err(ConfigError::Definition(format!(
                "engine.journeys.{name}: `triggers.{name}` is a built-in trigger; choose \
                 another name"
            )));
        }
        crate::engine::profile::audiences::Definitions::compile(self)
            .map_err(|e| ConfigError::Definition(e.to_string()))?;
        crate::engine::profile::journeys::CartJourney::compile(self)
            .map_err(|e| ConfigError::Definition(e.to_string()))?;
        Ok(())
    }

    fn validate_enrichment(&self) -> Result<(), ConfigError> {
        let e = &self.enrichment;
        let invalid = |field, problem: String| Err(ConfigError::Invalid { field, problem });
        if !(1..=3650).contains(&e.half_life_days) {
            return invalid(
                "enrichment.half_life_days",
                format!("1 to 3650 days, not {}", e.half_life_days),
            );
        }
        if !(1..=16).contains(&e.top) {
            return invalid("enrichment.top", format!("1 to 16, not {}", e.top));
        }
        let limits = &e.price_band_limits;
        if limits.len() > 8
            || limits.iter().any(|l| !(l.is_finite() && *l > 0.0))
            || limits.windows(2).any(|w| w[0] >= w[1])
        {
            return invalid(
                "enrichment.price_band_limits",
                format!("at most 8 positive amounts, increasing, not {limits:?}"),
            );
        }
        let names = &e.price_band_names;
        if names.len() != limits.len() + 1 || names.iter().any(|n| n.is_empty() || n.len() > 64) {
            return invalid(
                "enrichment.price_band_names",
                format!(
                    "one name (1 to 64 bytes) more than the {} limits, not {names:?}",
                    limits.len()
                ),
            );
        }
        Ok(())
    }

    fn validate_activation(&self) -> Result<(), ConfigError> {
        let a = &self.activation;
        if a.cart_abandoned_delay_ms == 0 || a.max_carts == 0 || a.tick_interval_ms == 0 {
            return Err(ConfigError::Invalid {
                field: "activation",
                problem: "cart_abandoned_delay_ms, max_carts and tick_interval_ms must be positive"
                    .into(),
            });
        }
        let ascending_u = |v: &[u32]| v.windows(2).all(|w| w[0] < w[1]);
        if !ascending_u(&a.rfm.recency_days)
            || !ascending_u(&a.rfm.frequency)
            || !a.rfm.monetary.windows(2).all(|w| w[0] < w[1])
        {
            return Err(ConfigError::Invalid {
                field: "activation.rfm",
                problem: "bands must be strictly ascending".into(),
            });
        }
        Ok(())
    }

    /// Identifier types ordered by priority (strongest first), then name.
    pub fn identifier_order(&self) -> Vec<&str> {
        let mut names: Vec<(&str, u32)> = self
            .identifiers
            .iter()
            .map(|(n, t)| (n.as_str(), t.priority))
            .collect();
        names.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(b.0)));
        names.into_iter().map(|(n, _)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_has_the_eight_contract_types() {
        let c = EngineConfig::default();
        c.validate().unwrap();
        assert_eq!(c.identifiers.len(), 8);
        assert_eq!(c.identifier_order()[0], "account_id");
        assert!(c.identifiers["phone"].weak);
        assert!(c.identifiers["loyalty_id"].unique);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<EngineConfig>("default_regoin = \"FR\"").unwrap_err();
        assert!(err.to_string().contains("default_regoin"), "{err}");
    }

    #[test]
    fn consent_words_are_checked_when_read() {
        let read = |text: &str| toml::from_str::<EngineConfig>(text).map_err(|e| e.to_string());
        let err = read("[consent]\nimplied = [\"spam\"]").unwrap_err();
        assert!(err.contains("`spam` is not a consent purpose"), "{err}");
        let err = read("[activation]\ncart_purposes = [\"marketing\", \"Email\"]").unwrap_err();
        assert!(err.contains("`Email` is not a consent purpose"), "{err}");
        let err = read("[consent.reachable_by]\nall = [\"email\"]").unwrap_err();
        assert!(err.contains("`all` is not a consent channel"), "{err}");
        let c = read(
            "[consent]\nimplied = [\"ab_testing\"]\n[consent.reachable_by]\nsms = [\"phone\"]",
        )
        .unwrap();
        assert_eq!(c.consent.implied, [Purpose::AbTesting]);
        assert_eq!(
            c.consent.reachable_by.keys().collect::<Vec<_>>(),
            [&Channel::Sms]
        );
        c.validate().unwrap();
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let mut c = EngineConfig::default();
        c.lifecycle.active_days = 400;
        assert!(c.validate().is_err());
        let c = EngineConfig {
            default_region: "XX".into(),
            ..EngineConfig::default()
        };
        assert!(c.validate().is_err());
        let mut c = EngineConfig::default();
        c.identifiers.get_mut("email").unwrap().limit = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::IdentifierType { .. })
        ));
    }
}
