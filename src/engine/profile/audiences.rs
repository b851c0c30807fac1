//! Audiences and computed traits defined in the configuration (`[engine.audiences]`,
//! `[engine.traits]`, in the expression language of [`crate::engine::audience`]), kept
//! per customer and re-evaluated whenever the customer settles: after an event, a merge
//! or a split, and when one of its timers fires.
//!
//! What a customer keeps (`p/au/<customer>`, only when something is configured):
//! the audiences it is in, the traits' last values, and the windowed aggregates that
//! the definitions read, per source profile (so that a split takes its events along and
//! a merge adds them up), each as at most [`STEPS`] + 1 buckets of 1/[`STEPS`] of its
//! window. An event counts from its event time; it leaves the window between `window`
//! and `window + window / STEPS` after it (the bucket it falls in leaves whole). An
//! event older than its window when it arrives counts nothing. Memory per customer is
//! bounded: source profiles × aggregates × ([`STEPS`] + 1) buckets.
//!
//! Evaluation reads the golden record (traits first, then audiences, which may read
//! `traits.<name>`), the windows, and the channels allowed now. A membership that
//! changes is an `audiences.changes` record: `entered` or `exited`, with its cause
//! (`event`: an event, request or identity change of the customer; `time`: a window
//! moved or a day passed; `merge`: the customer was merged into another, which exits
//! all its audiences; `erasure`, `retention`; `definition`: the audience is no longer
//! configured). Membership moves with time even when nothing happens: a customer has a
//! timer at the first instant time alone can change one of its memberships, a bucket
//! leaving its window or the days of a `days_since` turning, in the direction the
//! audience can go ([`Compiled::moves`] says which way each definition moves with each
//! aggregate and with the days; see [`Definitions::next_day`]). A leaving that cannot
//! move any audience is not timed: the next settling forgets its bucket.
//! An audience added later counts only the events seen since.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::engine::audience::{
    compile_condition, compile_value, Aggregate, AggregateKey, AllowedChannel, CompileError,
    Compiled, Context, EventFields, Leaf, Moves, Value,
};
use crate::engine::config::EngineConfig;
use crate::engine::geography;
use crate::engine::profile::event::ProfileEvent;
use crate::engine::profile::journeys::{self, Journey, JourneyCustomer, JourneyState};
use crate::engine::profile::records::amount;
use crate::engine::reference::{self, Product, StoreInfo};
use crate::model::output::{to_json, OutputRecord, Time, Topic, DAY_MS};
use crate::model::{Channel, Purpose};

/// Buckets per window.
pub const STEPS: i64 = 32;

/// Definitions written as `(name, source)` pairs, as the configuration holds them.
pub fn named(definitions: &[(&str, &str)]) -> BTreeMap<String, String> {
    definitions
        .iter()
        .map(|(name, source)| (name.to_string(), source.to_string()))
        .collect()
}

/// A definition that does not compile: which one, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("engine.{section}.{name}: {error}")]
pub struct DefinitionError {
    /// `audiences`, `traits` or `journeys`.
    pub section: &'static str,
    pub name: String,
    pub error: CompileError,
}

/// One windowed aggregate kept per source profile.
#[derive(Debug, Clone)]
struct Window {
    aggregate: Aggregate,
    /// The aggregate's key as the store keeps it: the 64-bit XXH3 of its canonical text,
    /// the same across restarts and configurations.
    id: u64,
    step_ms: i64,
    /// How each audience (by index) moves as the aggregate grows: those it can move.
    moves: Vec<(usize, Moves)>,
}

/// The compiled audiences and traits of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    audiences: Vec<(String, Compiled)>,
    traits: Vec<(String, Compiled)>,
    journeys: Vec<Journey>,
    /// Every aggregate any definition reads, once, by key.
    windows: Vec<Window>,
    /// The paths some definition calls `days_since` on, each once.
    days_since: Vec<Vec<String>>,
    /// How each audience (by index) moves as the days of `days_since` go by: those it
    /// can move.
    days_moves: Vec<(usize, Moves)>,
    /// By index of the audiences: whether probing one at a later day evaluates the
    /// traits again (it reads traits, and some trait moves with the days).
    probe_traits: Vec<bool>,
    /// The golden record's fields the definitions read (by first name).
    record_fields: Vec<String>,
    /// Whether some filter reads a product's or a store's reference data.
    reads_products: bool,
    reads_stores: bool,
}

impl Definitions {
    /// Compiles the audiences, traits and journeys of a configuration; the first that
    /// does not compile is the error.
    pub fn compile(config: &EngineConfig) -> Result<Self, DefinitionError> {
        let (audiences, traits) = (&config.audiences, &config.traits);
        let compile_all =
            |section: &'static str,
             sources: &BTreeMap<String, String>,
             compile: fn(&str) -> Result<Compiled, CompileError>| {
                sources
                    .iter()
                    .map(|(name, source)| {
                        compile(source).map(|c| (name.clone(), c)).map_err(|error| {
                            DefinitionError {
                                section,
                                name: name.clone(),
                                error,
                            }
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
        let audiences = compile_all("audiences", audiences, compile_condition)?;
        let traits = compile_all("traits", traits, compile_value)?;
        for (name, c) in &traits {
            c.refuse_paths(
                reveals_contact,
                "a trait is published to every consumer of \
                 profiles.merged and shown to lookups without `pii:read`: it cannot read \
                 identifiers or a street address (an audience can)",
            )
            .map_err(|error| DefinitionError {
                section: "traits",
                name: name.clone(),
                error,
            })?;
        }
        // The cart journey is the carts' (`CartJourney`); one turned off is not run.
        let journeys = config
            .journeys
            .iter()
            .filter(|(name, journey)| journey.enabled && !journey.is_cart(name))
            .map(|(name, journey)| Journey::compile(name, journey))
            .collect::<Result<Vec<_>, _>>()?;
        let mut windows: Vec<Window> = Vec::new();
        let all = || {
            audiences
                .iter()
                .chain(&traits)
                .map(|(_, c)| c)
                .chain(journeys.iter().filter_map(Journey::condition))
        };
        for aggregate in all().flat_map(Compiled::windows) {
            if !windows.iter().any(|w| w.aggregate.key() == aggregate.key()) {
                windows.push(Window {
                    aggregate: aggregate.clone(),
                    id: xxhash_rust::xxh3::xxh3_64(aggregate.key().as_str().as_bytes()),
                    step_ms: (aggregate.window_ms() + STEPS - 1) / STEPS,
                    moves: moves_with(&audiences, &traits, Clock::Aggregate(aggregate.key())),
                });
            }
        }
        let mut days_since: Vec<Vec<String>> = Vec::new();
        for path in all().flat_map(Compiled::days_since_paths) {
            if !days_since.contains(&path) {
                days_since.push(path);
            }
        }
        let mut record_fields: Vec<String> = Vec::new();
        for name in all().flat_map(Compiled::record_fields) {
            // `geo.*` is read from the person's address.
            let name = if name == "geo" {
                "person".to_string()
            } else {
                name
            };
            if name != "traits" && !record_fields.contains(&name) {
                record_fields.push(name);
            }
        }
        let mut filter_fields: Vec<String> = Vec::new();
        for filter in windows
            .iter()
            .filter_map(|w| w.aggregate.filter())
            .chain(journeys.iter().flat_map(Journey::filters))
        {
            filter_fields.extend(filter.field_names());
        }
        let reads = |names: &[&str]| filter_fields.iter().any(|f| names.contains(&f.as_str()));
        let (reads_products, reads_stores) = (
            reads(&reference::PRODUCT_FIELDS),
            reads(&reference::STORE_FIELDS),
        );
        let days_moves = moves_with(&audiences, &traits, Clock::Days);
        let traits_move_with_days = traits.iter().any(|(_, c)| !c.days_since_paths().is_empty());
        let probe_traits = audiences
            .iter()
            .map(|(_, c)| traits_move_with_days && c.record_fields().iter().any(|f| f == "traits"))
            .collect();
        Ok(Self {
            audiences,
            traits,
            journeys,
            reads_products,
            reads_stores,
            windows,
            days_since,
            days_moves,
            probe_traits,
            record_fields,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.audiences.is_empty() && self.traits.is_empty() && self.journeys.is_empty()
    }

    /// Whether the definitions read the golden record's `enrichment`.
    pub fn reads_enrichment(&self) -> bool {
        self.record_fields.iter().any(|f| f == "enrichment")
    }

    /// Whether golden records show `audiences` and `traits`: when some are configured.
    pub fn shows_audiences(&self) -> bool {
        !self.audiences.is_empty() || !self.traits.is_empty()
    }

    /// The golden record's fields (first names of paths) the definitions read: what
    /// [`Customer::record`] must hold.
    pub fn record_fields(&self) -> &[String] {
        &self.record_fields
    }

    /// Which reference tables the filters read (`category`, `brand`...; `store_city`...):
    /// the event's product and store need to be looked up only then.
    pub fn reads_reference(&self) -> (bool, bool) {
        (self.reads_products, self.reads_stores)
    }

    /// Adds an event of `source_profile` to the windows it counts in, as of `now`, with
    /// the reference data of its product and store (when [`Definitions::reads_reference`]
    /// asks for them).
    pub fn record(
        &self,
        state: &mut AudienceState,
        source_profile: u64,
        event: &ProfileEvent,
        reference: &EventReference,
        now: i64,
    ) {
        let fields = Fields { event, reference };
        for w in &self.windows {
            let Some(add) = w.aggregate.contribution(&event.kind, &fields) else {
                continue;
            };
            let step = event.occurred_at.div_euclid(w.step_ms);
            if w.leaves_at(step) <= now {
                continue;
            }
            let buckets = state
                .windows
                .entry(source_profile)
                .or_default()
                .entry(w.id)
                .or_default();
            match buckets.binary_search_by_key(&step, |b| b.step) {
                Ok(i) => buckets[i].value += add,
                Err(i) => buckets.insert(i, Bucket { step, value: add }),
            }
            // Only out-of-order events could make more: the oldest go first.
            let excess = buckets.len().saturating_sub(STEPS as usize + 1);
            buckets.drain(..excess);
        }
        journeys::record(
            &self.journeys,
            &mut state.journeys,
            &mut state.entries,
            &event.kind,
            &fields,
            event.occurred_at,
            &event.event_id,
        );
    }

    /// Forgets the buckets out of their windows at `now`, and aggregates no definition
    /// reads any more.
    fn prune(&self, state: &mut AudienceState, now: i64) {
        for by_key in state.windows.values_mut() {
            by_key.retain(|id, buckets| {
                let Some(w) = self.window(*id) else {
                    return false;
                };
                buckets.retain(|b| w.leaves_at(b.step) > now);
                !buckets.is_empty()
            });
        }
        state.windows.retain(|_, by_key| !by_key.is_empty());
    }

    fn window(&self, id: u64) -> Option<&Window> {
        self.windows.iter().find(|w| w.id == id)
    }

    /// When the customer's membership may next change with time alone: the oldest
    /// bucket whose leaving its window can move one of the customer's audiences (in the
    /// direction the audience can go: in for one it is not in, out for one it is in),
    /// `next_day` ([`Definitions::next_day`]), or a journey's wait coming due. After
    /// [`Definitions::prune`] at `now`, always later than `now`.
    fn next_due(&self, state: &AudienceState, next_day: Option<i64>) -> Option<i64> {
        let leaving = state
            .windows
            .values()
            .flat_map(|by_key| by_key.iter())
            .filter_map(|(id, buckets)| {
                let w = self.window(*id)?;
                // The buckets before leave unread: the next settling forgets them.
                let b = buckets
                    .iter()
                    .find(|b| can_move(&state.members, &self.audiences, &w.moves, leaving(b)))?;
                Some(w.leaves_at(b.step))
            })
            .min();
        leaving
            .into_iter()
            .chain(next_day)
            .chain(journeys::next_due(&state.journeys))
            .min()
    }

    /// Evaluates the traits, then the audiences, of a customer whose golden record is
    /// `record` (traits are added to it as `traits`), as of `now`; updates `state` and
    /// gives the membership changes, with `cause`, and when to evaluate again.
    pub fn settle(
        &self,
        customer: Customer<'_>,
        state: &mut AudienceState,
        cause: &'static str,
    ) -> Settled {
        let Customer {
            customer_id,
            record,
            allowed,
            channels,
            last_order_at,
            decided_until,
            now,
        } = customer;
        self.prune(state, now);
        let mut journey_states = std::mem::take(&mut state.journeys);
        let entries = std::mem::take(&mut state.entries);
        let before_traits = Evaluation {
            record: &record,
            traits: None,
            state,
            definitions: self,
            allowed,
            now,
            days_now: now,
        };
        let (traits, traits_value) = self.evaluate_traits(&before_traits);
        let eval = Evaluation {
            traits: Some(&traits_value),
            ..before_traits
        };
        let members: BTreeSet<String> = self
            .audiences
            .iter()
            .filter(|(_, c)| c.eval_condition(&eval))
            .map(|(name, _)| name.clone())
            .collect();
        let next_day = self.next_day(&eval, &members);
        let mut out = Vec::new();
        for name in state.members.difference(&members) {
            let cause = if self.audiences.iter().any(|(n, _)| n == name) {
                cause
            } else {
                "definition"
            };
            out.push(change_record(customer_id, name, "exited", cause, now));
        }
        for name in members.difference(&state.members) {
            out.push(change_record(customer_id, name, "entered", cause, now));
        }
        let journeyed = journeys::settle(
            &self.journeys,
            &mut journey_states,
            entries,
            &eval,
            &JourneyCustomer {
                customer_id,
                channels,
                last_order_at,
            },
            decided_until,
            now,
        );
        state.journeys = journey_states;
        state.members = members;
        state.traits = traits;
        Settled {
            out,
            triggers: journeyed.triggers,
            suppressed: journeyed.suppressed,
            due: self.next_due(state, next_day),
        }
    }

    /// Evaluates the traits (`eval` without them), and gives them with the object the
    /// audiences read them in as `traits.<name>`.
    fn evaluate_traits(
        &self,
        eval: &Evaluation<'_>,
    ) -> (Vec<(String, TraitValue)>, serde_json::Value) {
        let eval = Evaluation {
            traits: None,
            ..*eval
        };
        let traits: Vec<(String, TraitValue)> = self
            .traits
            .iter()
            .map(|(name, c)| (name.clone(), TraitValue::from(c.eval(&eval))))
            .collect();
        let value = serde_json::json!({ "traits": traits_json(&traits) });
        (traits, value)
    }

    /// The first instant at which the days of `days_since` alone can take the customer
    /// (in `members` now) into an audience or out of one, if some definition calls
    /// `days_since` on a time the customer's record has. The days since a time `t` turn
    /// at `t` + a whole number of days: an audience that only grows (or only shrinks)
    /// with them is probed at those instants, everything else as now, the first that
    /// turns it found by bisection, at most [`DAYS_AHEAD`] days ahead (then that instant,
    /// to look again); one that can go either way is looked at from the next one on. The
    /// windows stay as now in the probe: a bucket leaving that could move the audience
    /// has a timer of its own, before which this one is set again.
    fn next_day(&self, eval: &Evaluation<'_>, members: &BTreeSet<String>) -> Option<i64> {
        let mut times: Vec<i64> = Vec::new();
        for path in &self.days_since {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Value::Time(t) = field_of(eval.record, &path) {
                if !times.contains(&t) {
                    times.push(t);
                }
            }
        }
        // The `n`th instant after now at which the days since `t` turn.
        let turn = |t: i64, n: i64| {
            let days = eval.now.saturating_sub(t).div_euclid(DAY_MS);
            t.saturating_add(days.saturating_add(n).saturating_mul(DAY_MS))
        };
        self.days_moves
            .iter()
            .filter_map(|(i, moves)| {
                let (name, audience) = self.audiences.get(*i)?;
                let member = members.contains(name);
                let direction = if member { Moves::DOWN } else { Moves::UP };
                if !moves.can(direction) {
                    return None;
                }
                let first = |t: i64| -> i64 {
                    if *moves == Moves::BOTH {
                        return turn(t, 1);
                    }
                    let again = self.probe_traits.get(*i).copied().unwrap_or(false);
                    let turns = |n: i64| {
                        let probe = Evaluation {
                            days_now: turn(t, n),
                            ..*eval
                        };
                        if !again {
                            return audience.eval_condition(&probe) != member;
                        }
                        let (_, traits) = self.evaluate_traits(&probe);
                        let probe = Evaluation {
                            traits: Some(&traits),
                            ..probe
                        };
                        audience.eval_condition(&probe) != member
                    };
                    if !turns(DAYS_AHEAD) {
                        return turn(t, DAYS_AHEAD);
                    }
                    // Not turned now (0), turned at `high`.
                    let (mut low, mut high) = (0, DAYS_AHEAD);
                    while high - low > 1 {
                        let mid = low + (high - low) / 2;
                        if turns(mid) {
                            high = mid;
                        } else {
                            low = mid;
                        }
                    }
                    turn(t, high)
                };
                times.iter().map(|t| first(*t)).min()
            })
            .min()
    }
}

/// How far ahead, in days, [`Definitions::next_day`] probes.
const DAYS_AHEAD: i64 = 3_660;

/// A quantity that moves with time alone, as the audiences read it.
#[derive(Clone, Copy)]
enum Clock<'a> {
    /// A windowed aggregate: it shrinks as its events leave the window.
    Aggregate(&'a AggregateKey),
    /// The days of every `days_since`: they grow.
    Days,
}

/// How each audience moves as `clock` grows, reading it directly or through the traits
/// (`traits.<name>`): the audiences (by index) it can move. Other fields of the record
/// are taken as still: they change when the customer settles for another reason.
fn moves_with(
    audiences: &[(String, Compiled)],
    traits: &[(String, Compiled)],
    clock: Clock<'_>,
) -> Vec<(usize, Moves)> {
    // A leaf of a trait or an audience: a trait reads no other trait.
    let direct = |leaf: Leaf<'_>| match (leaf, clock) {
        (Leaf::Aggregate(key), Clock::Aggregate(k)) if key == k => Moves::UP,
        (Leaf::DaysSince(_), Clock::Days) => Moves::UP,
        _ => Moves::NONE,
    };
    let trait_moves: Vec<(&str, Moves)> = traits
        .iter()
        .map(|(name, c)| (name.as_str(), c.moves(&direct)))
        .collect();
    let of_trait = |path: &[String]| match path {
        [first, name] if first == "traits" => trait_moves
            .iter()
            .find(|(n, _)| n == name)
            .map_or(Moves::NONE, |(_, m)| *m),
        // The whole `traits` object, or a path below a trait's value.
        [first, ..] if first == "traits" => trait_moves
            .iter()
            .fold(Moves::NONE, |all, (_, m)| all.or(*m))
            .either(),
        _ => Moves::NONE,
    };
    let leaf = |leaf: Leaf<'_>| match leaf {
        Leaf::Field(path) => of_trait(path),
        Leaf::Exists(path) => of_trait(path).either(),
        Leaf::DaysSince(path) => direct(leaf).or(of_trait(path).either()),
        Leaf::Aggregate(_) => direct(leaf),
    };
    audiences
        .iter()
        .enumerate()
        .map(|(i, (_, c))| (i, c.moves(&leaf)))
        .filter(|(_, m)| m.any())
        .collect()
}

/// How an aggregate moves when a bucket leaves its window: down by a count or a
/// positive sum, up by a negative sum, not at all by zero; either for a value too large
/// for the language's numbers to be sure of.
fn leaving(bucket: &Bucket) -> Moves {
    match bucket.value {
        v if !v.is_finite() || v.abs() > crate::engine::audience::MAX_NUMBER => Moves::BOTH,
        v if v > 0.0 => Moves::DOWN,
        v if v < 0.0 => Moves::UP,
        _ => Moves::NONE,
    }
}

/// Whether a quantity moving in `direction` can change the membership of a customer in
/// `members`, given how it moves the audiences (`moves`, by index of `audiences`): into
/// an audience it is not in, or out of one it is in.
fn can_move(
    members: &BTreeSet<String>,
    audiences: &[(String, Compiled)],
    moves: &[(usize, Moves)],
    direction: Moves,
) -> bool {
    moves.iter().any(|(i, m)| {
        let member = audiences
            .get(*i)
            .is_some_and(|(name, _)| members.contains(name));
        match member {
            false => m.can(direction),
            true => m.can(direction.flip()),
        }
    })
}

/// Whether a path of the golden record leads to contact data: identifiers (emails,
/// phones, ids), decisions about one identifier, or the street part of an address.
fn reveals_contact(path: &[String]) -> bool {
    match path.first().map(String::as_str) {
        Some("identifiers" | "consents_by_identifier") => true,
        Some("person") => {
            path.get(1).is_some_and(|f| f == "address")
                && path.get(2).is_none_or(|p| {
                    matches!(p.as_str(), "line1" | "line2" | "postal_code" | "street")
                })
        }
        _ => false,
    }
}

impl Window {
    /// When the bucket of `step` leaves the window.
    fn leaves_at(&self, step: i64) -> i64 {
        step.saturating_add(1)
            .saturating_mul(self.step_ms)
            .saturating_add(self.aggregate.window_ms())
    }
}

/// What [`Definitions::settle`] gives.
#[derive(Debug)]
pub struct Settled {
    /// `audiences.changes` records.
    pub out: Vec<OutputRecord>,
    /// `triggers.<journey>` records.
    pub triggers: Vec<OutputRecord>,
    /// Journey waits come to their due time without a trigger.
    pub suppressed: u64,
    /// When to evaluate again with nothing else happening.
    pub due: Option<i64>,
}

/// A customer as its definitions are evaluated.
pub struct Customer<'a> {
    pub customer_id: &'a str,
    /// The golden record's fields [`Definitions::record_fields`] names (at least),
    /// without `audiences` and `traits`.
    pub record: serde_json::Value,
    /// Whether the customer may be contacted for a purpose on a channel now.
    pub allowed: &'a dyn Fn(Purpose, AllowedChannel) -> bool,
    /// The channels allowed (and reachable) for a purpose now.
    pub channels: &'a dyn Fn(Purpose) -> Vec<Channel>,
    /// When the customer last ordered, if it did (journeys' `suppress_after_purchase`).
    pub last_order_at: Option<i64>,
    /// Journeys' waits due by then are decided: the clock less `activation.grace_ms`.
    pub decided_until: i64,
    pub now: i64,
}

/// The `audiences.changes` records of a customer that is gone (merged away, erased,
/// expired): it exits every audience it was in.
pub fn exit_all(
    customer_id: &str,
    state: &AudienceState,
    cause: &'static str,
    now: i64,
) -> Vec<OutputRecord> {
    state
        .members
        .iter()
        .map(|name| change_record(customer_id, name, "exited", cause, now))
        .collect()
}

/// What a customer keeps for its audiences and traits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudienceState {
    /// The audiences it is in.
    pub members: BTreeSet<String>,
    /// The traits' values when it last settled, in definition order.
    pub traits: Vec<(String, TraitValue)>,
    /// Buckets by source profile, then by aggregate (its key's hash), oldest first.
    pub windows: BTreeMap<u64, BTreeMap<u64, Vec<Bucket>>>,
    /// When its audience timer is due (its key in `p/tm/`), if it has one.
    pub due: Option<i64>,
    /// Its journeys' waits, by journey.
    pub journeys: BTreeMap<String, JourneyState>,
    /// Entry events seen since it last settled (never stored: settling starts their
    /// waits).
    #[serde(skip)]
    pub entries: Vec<journeys::Entry>,
}

/// [`AudienceState`] as stores written before journeys hold it (read, never written).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudienceStateBeforeJourneys {
    pub members: BTreeSet<String>,
    pub traits: Vec<(String, TraitValue)>,
    pub windows: BTreeMap<u64, BTreeMap<u64, Vec<Bucket>>>,
    pub due: Option<i64>,
}

impl From<AudienceStateBeforeJourneys> for AudienceState {
    fn from(old: AudienceStateBeforeJourneys) -> Self {
        AudienceState {
            members: old.members,
            traits: old.traits,
            windows: old.windows,
            due: old.due,
            ..AudienceState::default()
        }
    }
}

impl AudienceState {
    /// Takes the windows of `source_profiles` out (a split).
    pub fn split_off(&mut self, source_profiles: &[u64]) -> AudienceState {
        let windows = source_profiles
            .iter()
            .filter_map(|sp| Some((*sp, self.windows.remove(sp)?)))
            .collect();
        AudienceState {
            windows,
            ..AudienceState::default()
        }
    }

    /// Adds the windows and journey waits of a customer merged into this one.
    pub fn absorb(&mut self, gone: AudienceState) {
        self.windows.extend(gone.windows);
        journeys::absorb(&mut self.journeys, gone.journeys);
        self.entries.extend(gone.entries);
    }

    /// The golden record's `audiences` and `traits`.
    pub fn shown(&self) -> (Vec<&str>, serde_json::Value) {
        (
            self.members.iter().map(String::as_str).collect(),
            traits_json(&self.traits),
        )
    }
}

/// The events of one window of one aggregate: `step` is the event time divided by the
/// window's step; `value` the count, or the sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub step: i64,
    pub value: f64,
}

/// A trait's value as kept: what the language computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TraitValue {
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    Time(i64),
}

impl From<Value> for TraitValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => TraitValue::Null,
            Value::Bool(b) => TraitValue::Bool(b),
            Value::Number(n) => TraitValue::Number(n),
            Value::Text(s) => TraitValue::Text(s),
            Value::Time(t) => TraitValue::Time(t),
        }
    }
}

/// Traits as the golden record shows them: a time as RFC 3339.
fn traits_json(traits: &[(String, TraitValue)]) -> serde_json::Value {
    let fields = traits.iter().map(|(name, v)| {
        let v = match v {
            TraitValue::Null => serde_json::Value::Null,
            TraitValue::Bool(b) => serde_json::Value::Bool(*b),
            TraitValue::Number(n) => serde_json::Number::from_f64(*n)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            TraitValue::Text(s) => serde_json::Value::String(s.clone()),
            TraitValue::Time(t) => to_json(&Time(*t)),
        };
        (name.clone(), v)
    });
    serde_json::Value::Object(fields.collect())
}

/// An `audiences.changes` record.
#[derive(Debug, Serialize)]
struct AudienceChange<'a> {
    change_id: String,
    customer_id: &'a str,
    audience: &'a str,
    change: &'static str,
    cause: &'static str,
    at: Time,
}

fn change_record(
    customer_id: &str,
    audience: &str,
    change: &'static str,
    cause: &'static str,
    now: i64,
) -> OutputRecord {
    let record = AudienceChange {
        change_id: format!("audience:{customer_id}:{audience}:{change}:{now}"),
        customer_id,
        audience,
        change,
        cause,
        at: Time(now),
    };
    OutputRecord::json(
        Topic::AudiencesChanges,
        customer_id.to_string(),
        to_json(&record),
    )
}

/// The [`Context`] of one customer's evaluation.
struct Evaluation<'a> {
    record: &'a serde_json::Value,
    /// `{"traits": {...}}` once the traits are evaluated (audiences read them).
    traits: Option<&'a serde_json::Value>,
    state: &'a AudienceState,
    definitions: &'a Definitions,
    allowed: &'a dyn Fn(Purpose, AllowedChannel) -> bool,
    now: i64,
    /// What `days_since` counts to: `now`, or an instant to come when probing.
    days_now: i64,
}

impl Context for Evaluation<'_> {
    fn field(&self, path: &[&str]) -> Value {
        match (path.first(), &self.traits) {
            (Some(&"traits"), Some(traits)) => field_of(traits, path),
            (Some(&"traits"), None) => Value::Null,
            (Some(&"geo"), _) => geo_field(self.record, &path[1..]),
            _ => field_of(self.record, path),
        }
    }

    fn aggregate(&self, aggregate: &Aggregate, now_ms: i64) -> f64 {
        let Some(w) = self
            .definitions
            .windows
            .iter()
            .find(|w| w.aggregate.key() == aggregate.key())
        else {
            return 0.0;
        };
        self.state
            .windows
            .values()
            .filter_map(|by_key| by_key.get(&w.id))
            .flatten()
            .filter(|b| w.leaves_at(b.step) > now_ms && b.step.saturating_mul(w.step_ms) <= now_ms)
            .map(|b| b.value)
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }

    fn allowed(&self, purpose: Purpose, channel: AllowedChannel) -> bool {
        (self.allowed)(purpose, channel)
    }

    fn now_ms(&self) -> i64 {
        self.now
    }

    fn days_now_ms(&self) -> Option<i64> {
        Some(self.days_now)
    }
}

/// `geo.commune`, `geo.departement`, `geo.departement_code`, `geo.region`: where the
/// postal code of the person's address is, for an address in France (its country `FR`
/// or not stated); `null` otherwise.
fn geo_field(record: &serde_json::Value, path: &[&str]) -> Value {
    let country = field_of(record, &["person", "address", "country"]);
    if !matches!(&country, Value::Null) && country != Value::Text("FR".into()) {
        return Value::Null;
    }
    let Value::Text(code) = field_of(record, &["person", "address", "postal_code"]) else {
        return Value::Null;
    };
    let Some(place) = geography::place(&code) else {
        return Value::Null;
    };
    let text = |s: &str| Value::Text(s.to_string());
    match path {
        ["commune"] => place.commune.map_or(Value::Null, text),
        ["departement"] => text(place.departement),
        ["departement_code"] => text(place.departement_code),
        ["region"] => text(place.region),
        _ => Value::Null,
    }
}

/// The value at `path` in a golden record: a stated field (`{value, source, at}`) reads
/// as its value, and a path goes on into it (`person.address.city`); a string that is an
/// RFC 3339 time is a time; arrays and objects are `null`.
fn field_of(record: &serde_json::Value, path: &[&str]) -> Value {
    let mut node = record;
    for name in path {
        node = match node.get(name) {
            Some(next) => next,
            None => match node.get("value").and_then(|v| v.get(name)) {
                Some(next) => next,
                None => return Value::Null,
            },
        };
    }
    if let (Some(value), Some(_)) = (node.get("value"), node.get("source")) {
        node = value;
    }
    match node {
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_f64().map_or(Value::Null, Value::Number),
        serde_json::Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) if s.len() >= 20 => Value::Time(t.timestamp_millis()),
            _ => Value::Text(s.clone()),
        },
        _ => Value::Null,
    }
}

/// The reference data of an event: the catalogue's product of its SKU, the store of its
/// source (each `None` when not asked for or not known).
#[derive(Debug, Default)]
pub struct EventReference {
    pub product: Option<Product>,
    pub store: Option<StoreInfo>,
}

/// The SKU an event is about: the product its page shows, else the first item of its
/// order, else of its cart.
pub fn event_sku(e: &ProfileEvent) -> Option<&str> {
    let items = e
        .order()
        .map(|o| &o.items)
        .or(e.cart.as_ref().map(|c| &c.items));
    e.product_sku.as_deref().or_else(|| {
        items
            .and_then(|items| items.first())
            .map(|i| i.sku.as_str())
    })
}

/// The fields of an event as a filter reads them: `channel`, `type`, `amount` and
/// `currency` (of a purchase or a return), `sku` ([`event_sku`]), `items` (the quantity of
/// its order or cart); from the catalogue's product of that SKU, `category` (its
/// narrowest), `category_path` (levels joined by ` > `), `brand` and `price`; from the
/// store of its `source`, `store_city`, `store_region`, `store_format` and `store_name`;
/// any other name is the event's attribute of that name, among those minimisation keeps.
struct Fields<'a> {
    event: &'a ProfileEvent,
    reference: &'a EventReference,
}

impl EventFields for Fields<'_> {
    fn event_field(&self, name: &str) -> Value {
        let e = self.event;
        let text = |s: Option<&String>| s.map_or(Value::Null, |s| Value::Text(s.clone()));
        let product = self.reference.product.as_ref();
        let store = self.reference.store.as_ref();
        let items = e
            .order()
            .map(|o| &o.items)
            .or(e.cart.as_ref().map(|c| &c.items));
        match name {
            "category" => text(product.and_then(|p| p.category_path.last())),
            "category_path" => product
                .filter(|p| !p.category_path.is_empty())
                .map_or(Value::Null, |p| Value::Text(p.category_path.join(" > "))),
            "brand" => text(product.and_then(|p| p.brand.as_ref())),
            "price" => product
                .and_then(|p| p.price)
                .map_or(Value::Null, Value::Number),
            "store_city" => text(store.and_then(|s| s.city.as_ref())),
            // A store's région, or the one of its postal code.
            "store_region" => match store.and_then(|s| s.region.as_ref()) {
                Some(region) => Value::Text(region.clone()),
                None => store
                    .and_then(|s| s.postal_code.as_deref())
                    .and_then(geography::place)
                    .map_or(Value::Null, |p| Value::Text(p.region.to_string())),
            },
            "store_format" => text(store.and_then(|s| s.format.as_ref())),
            "store_name" => text(store.and_then(|s| s.name.as_ref())),
            "channel" => Value::Text(e.channel.clone()),
            "type" => Value::Text(e.kind.clone()),
            "amount" => e
                .order()
                .map_or(Value::Null, |o| Value::Number(amount(o.total_cents))),
            "currency" => e
                .order()
                .map_or(Value::Null, |o| Value::Text(o.currency.clone())),
            "sku" => event_sku(e).map_or(Value::Null, |sku| Value::Text(sku.to_string())),
            "items" => items.map_or(Value::Null, |items| {
                Value::Number(items.iter().map(|i| i.quantity).sum())
            }),
            attribute => e
                .fields
                .iter()
                .find(|(n, _)| n.strip_prefix("attributes.") == Some(attribute))
                .map_or(Value::Null, |(_, data)| match data {
                    crate::engine::profile::event::FieldData::Text(s) => Value::Text(s.clone()),
                    crate::engine::profile::event::FieldData::Address(_) => Value::Null,
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions(audiences: &[(&str, &str)]) -> Definitions {
        Definitions::compile(&EngineConfig {
            audiences: named(audiences),
            ..EngineConfig::default()
        })
        .unwrap()
    }

    fn view(at: i64) -> ProfileEvent {
        ProfileEvent {
            event_id: format!("v-{at}"),
            channel: "web".into(),
            kind: "product_view".into(),
            occurred_at: at,
            identifiers: Vec::new(),
            fields: Vec::new(),
            purchase: None,
            refund: None,
            consents: Vec::new(),
            cart: None,
            product_sku: None,
            source: None,
        }
    }

    /// An event of `kind` at time 0, with an order of `cents` if any.
    fn event(kind: &str, cents: Option<i64>) -> ProfileEvent {
        ProfileEvent {
            kind: kind.into(),
            purchase: cents.map(|total_cents| crate::engine::profile::event::OrderFacts {
                order_id: None,
                total_cents,
                currency: "EUR".into(),
                items: Vec::new(),
            }),
            ..view(0)
        }
    }

    /// Settles `state` by `d` for a customer whose record is `record`, allowed every
    /// purpose on every channel, at `now`.
    fn settle_at(
        d: &Definitions,
        state: &mut AudienceState,
        record: serde_json::Value,
        now: i64,
        cause: &'static str,
    ) -> Settled {
        let allowed = |_: Purpose, _: AllowedChannel| true;
        let customer = Customer {
            customer_id: "cus_1",
            record,
            allowed: &allowed,
            channels: &|_| Vec::new(),
            last_order_at: None,
            decided_until: i64::MIN,
            now,
        };
        d.settle(customer, state, cause)
    }

    const HOUR: i64 = 3_600_000;

    #[test]
    fn buckets_stay_bounded_whatever_the_events() {
        let d = definitions(&[("a", "count(product_view, 32h) >= 1")]);
        let mut state = AudienceState::default();
        let now = 1_000 * HOUR;
        // Ten thousand events spread over the window, in a scrambled order.
        for i in 0..10_000i64 {
            let at = now - (i * 7_919 % 10_000) * (32 * HOUR / 10_000);
            d.record(&mut state, 1, &view(at), &EventReference::default(), now);
        }
        let id = xxhash_rust::xxh3::xxh3_64(b"count(product_view, 32h)");
        let buckets = &state.windows[&1][&id];
        assert!(buckets.len() <= STEPS as usize + 1, "{}", buckets.len());
        assert!(buckets.windows(2).all(|w| w[0].step < w[1].step));
        // Events older than the window count nothing and keep nothing.
        let mut old = AudienceState::default();
        d.record(
            &mut old,
            1,
            &view(now - 40 * HOUR),
            &EventReference::default(),
            now,
        );
        assert_eq!(old, AudienceState::default());
    }

    #[test]
    fn an_event_leaves_its_window_at_most_a_step_late_and_the_timer_says_when() {
        let d = definitions(&[("a", "count(product_view, 32h) >= 1")]);
        let mut state = AudienceState::default();
        let at = 100 * HOUR + 1_000;
        d.record(&mut state, 1, &view(at), &EventReference::default(), at);
        let settle = |state: &mut AudienceState, now: i64| {
            settle_at(&d, state, serde_json::json!({}), now, "time")
        };
        let s = settle(&mut state, at);
        assert_eq!(s.out.len(), 1, "entered");
        // The step is an hour: the view's bucket [100 h, 101 h) leaves at 133 h.
        assert_eq!(s.due, Some(133 * HOUR));
        assert!(settle(&mut state, 133 * HOUR - 1).out.is_empty());
        assert_eq!(state.members.len(), 1);
        let s = settle(&mut state, 133 * HOUR);
        assert_eq!(s.out.len(), 1, "exited");
        assert!(state.members.is_empty() && state.windows.is_empty());
        assert_eq!(s.due, None);
    }

    #[test]
    fn days_since_asks_for_an_evaluation_at_the_first_instant_that_can_turn_an_audience() {
        let due = |source: &str, record: serde_json::Value| {
            let d = definitions(&[("a", source)]);
            settle_at(
                &d,
                &mut AudienceState::default(),
                record,
                10 * DAY_MS + 5,
                "event",
            )
            .due
        };
        // Ordered on day 0: ten days since now, more than 60 from day 61 on.
        let ordered = || serde_json::json!({"orders": {"last_order_at": "1970-01-01T00:00:00Z"}});
        let lapsed = "days_since(orders.last_order_at) > 60";
        assert_eq!(due(lapsed, ordered()), Some(61 * DAY_MS));
        // The days since a time of day turn at that time of day.
        let morning = serde_json::json!({"orders": {"last_order_at": "1970-01-01T06:00:00Z"}});
        assert_eq!(due(lapsed, morning), Some(61 * DAY_MS + 6 * 3_600_000));
        // With a part that does not move with time.
        assert_eq!(
            due(
                &format!("{lapsed} and orders.last_order_at = orders.last_order_at"),
                ordered()
            ),
            Some(61 * DAY_MS)
        );
        // In it and only ever more so: the days cannot take it out.
        assert_eq!(due("days_since(orders.last_order_at) > 5", ordered()), None);
        // Out of it for good as the days go by.
        assert_eq!(due("days_since(orders.last_order_at) < 5", ordered()), None);
        // In it until day 30.
        assert_eq!(
            due("days_since(orders.last_order_at) < 30", ordered()),
            Some(30 * DAY_MS)
        );
        // Either way: every midnight.
        assert_eq!(
            due("days_since(orders.last_order_at) = 12", ordered()),
            Some(11 * DAY_MS)
        );
        // Not within the probe's reach: looked at again then.
        assert_eq!(
            due("days_since(orders.last_order_at) > 5000", ordered()),
            Some((10 + DAYS_AHEAD) * DAY_MS)
        );
        // Without an order, days_since is null whatever the day: no timer.
        assert_eq!(
            due(lapsed, serde_json::json!({"orders": {"count": 0}})),
            None
        );
        // Through a trait: the probe evaluates the trait at the midnight it looks at.
        let d = Definitions::compile(&EngineConfig {
            audiences: named(&[("a", "traits.since > 60")]),
            traits: named(&[("since", "days_since(orders.last_order_at)")]),
            ..EngineConfig::default()
        })
        .unwrap();
        let mut state = AudienceState::default();
        let settled = settle_at(&d, &mut state, ordered(), 10 * DAY_MS + 5, "event");
        assert_eq!(settled.due, Some(61 * DAY_MS));
        assert_eq!(
            state.traits,
            vec![("since".to_string(), TraitValue::Number(10.0))]
        );
    }

    #[test]
    fn audiences_move_with_an_aggregate_through_the_traits_they_read() {
        let d = Definitions::compile(&EngineConfig {
            audiences: named(&[
                ("big", "traits.spent > 100"),
                ("fields", "orders.count >= 1"),
                ("known", "exists(traits.avg)"),
            ]),
            traits: named(&[
                ("spent", "sum(purchase, amount, 7d)"),
                ("avg", "orders.total / count(purchase, 7d)"),
            ]),
            ..EngineConfig::default()
        })
        .unwrap();
        let moves_of = |key: &str| {
            let w = d.windows.iter().find(|w| w.aggregate.key().as_str() == key);
            w.unwrap().moves.clone()
        };
        // By index of the audiences, in name order.
        assert_eq!(moves_of("sum(purchase, amount, 7d)"), vec![(0, Moves::UP)]);
        assert_eq!(moves_of("count(purchase, 7d)"), vec![(2, Moves::BOTH)]);
        assert!(d.days_moves.is_empty() && !d.probe_traits.contains(&true));
    }

    #[test]
    fn a_bucket_leaving_sets_a_timer_only_where_it_can_move_an_audience() {
        let sp = 1;
        let (view, buy) = (event("product_view", None), event("purchase", Some(500)));
        let refund = event("purchase", Some(-20_000));
        let due = |source: &str, events: &[(&ProfileEvent, i64)]| {
            let d = definitions(&[("a", source)]);
            let mut state = AudienceState::default();
            for (e, at) in events {
                let mut e = (*e).clone();
                e.occurred_at = *at;
                d.record(&mut state, sp, &e, &EventReference::default(), *at);
            }
            let s = settle_at(&d, &mut state, serde_json::json!({}), 101 * HOUR, "event");
            (s.due, state.members.len())
        };
        // A step of 7d / 32 = 5.25 h: a bucket [0, 5.25 h) leaves at 7 d + 5.25 h.
        let leaves = |step: i64| (step + 1) * (7 * 24 * HOUR / 32) + 7 * 24 * HOUR;
        let two_views = [(&view, 0), (&view, 100 * HOUR)];
        // In: the first view leaving can take it out.
        assert_eq!(
            due("count(product_view, 7d) >= 2", &two_views),
            (Some(leaves(0)), 1)
        );
        // Out, and fewer views cannot take it in: no timer.
        assert_eq!(due("count(product_view, 7d) >= 3", &two_views), (None, 0));
        // Out, and fewer views can: the first leaving.
        assert_eq!(
            due("count(product_view, 7d) < 2", &two_views),
            (Some(leaves(0)), 0)
        );
        // Either way.
        assert_eq!(
            due("count(product_view, 7d) = 1", &two_views),
            (Some(leaves(0)), 0)
        );
        // Through a negation and an arithmetic.
        assert_eq!(
            due("not (count(product_view, 7d) - 1 < 1)", &two_views),
            (Some(leaves(0)), 1)
        );
        // A sum grows when a negative bucket leaves: the refund, not the purchase before.
        let bought = [(&buy, 0), (&refund, 50 * HOUR)];
        assert_eq!(
            due("sum(purchase, amount, 7d) > 0", &bought),
            (Some(leaves(50 * HOUR / (7 * 24 * HOUR / 32))), 0)
        );
    }

    /// `field_json` gives each field as the whole record has it, and as a record made for
    /// that field alone has it, so evaluations read the same record as `profiles.merged`
    /// shows.
    #[test]
    fn a_field_alone_is_the_field_of_the_whole_record() {
        use crate::engine::config::EngineConfig;
        use crate::engine::profile::{CustomerProfile, FieldValue, Profiler, SourceFacts};
        let profiler = Profiler::new(&EngineConfig::default());
        let mut profile = CustomerProfile::default();
        let mut facts = SourceFacts {
            channel: "web".into(),
            identifiers: vec![crate::model::Ident::new("email", "lea@example.org")],
            first_seen: 1_000,
            last_seen: 2_000,
            events: 3,
            orders: 1,
            last_order_at: Some(2_000),
            ..SourceFacts::default()
        };
        facts.order_cents.insert("EUR".into(), 12_990);
        facts.fields.insert(
            "first_name".into(),
            FieldValue {
                data: crate::engine::profile::event::FieldData::Text("Léa".into()),
                channel: "web".into(),
                at: 1_000,
                event_id: "e-1".into(),
            },
        );
        profile.source_profiles.insert(1, facts);
        // A decision for all the email address's channels, and one for the address only.
        for identifier in [
            None,
            Some(crate::model::Ident::new("email", "lea@example.org")),
        ] {
            let key = crate::engine::profile::consent::ConsentKey {
                purpose: crate::model::Purpose::Marketing,
                channel: crate::model::ConsentChannel::All,
                identifier,
            };
            let decision = crate::engine::profile::consent::Decision {
                granted: true,
                at: 1_500,
                source_channel: "web".into(),
                event_id: "e-2".into(),
                expires_at: None,
            };
            profile.consents.apply(key, decision);
        }
        let state = AudienceState {
            members: ["a".to_string()].into(),
            traits: vec![("t".into(), TraitValue::Number(2.5))],
            ..AudienceState::default()
        };
        for audiences in [None, Some(&state)] {
            let golden = profiler.golden("cus_1", &profile, 3_000, audiences, None, None);
            let whole = to_json(&golden);
            let fields = whole.as_object().unwrap();
            assert!(fields.len() >= 20, "{whole}");
            for (name, value) in fields {
                assert_eq!(golden.field_json(name).as_ref(), Some(value), "{name}");
                // Worked out alone, as settling reads it.
                let only = [name.clone()];
                let alone = profiler.golden("cus_1", &profile, 3_000, audiences, None, Some(&only));
                assert_eq!(alone.field_json(name).as_ref(), Some(value), "{name} alone");
            }
            for name in ["audiences", "traits", "nope"] {
                if !fields.contains_key(name) {
                    assert_eq!(golden.field_json(name), None, "{name}");
                }
            }
        }
    }

    #[test]
    fn fields_read_stated_values_and_times() {
        let record = serde_json::json!({
            "person": {"address": {"value": {"city": "Lyon"}, "source": "web", "at": "2026-01-01T00:00:00Z"},
                       "first_name": {"value": "Léa", "source": "web", "at": "2026-01-01T00:00:00Z"}},
            "orders": {"count": 2, "last_order_at": "2026-01-01T00:00:00Z"},
            "recently_purchased": ["A"],
        });
        assert_eq!(
            field_of(&record, &["person", "address", "city"]),
            Value::Text("Lyon".into())
        );
        assert_eq!(
            field_of(&record, &["person", "first_name"]),
            Value::Text("Léa".into())
        );
        assert_eq!(field_of(&record, &["orders", "count"]), Value::Number(2.0));
        assert_eq!(
            field_of(&record, &["orders", "last_order_at"]),
            Value::Time(1_767_225_600_000)
        );
        assert_eq!(field_of(&record, &["recently_purchased"]), Value::Null);
        assert_eq!(field_of(&record, &["person", "nope"]), Value::Null);
    }
}
