//! Journeys defined in the configuration (`[engine.journeys.<name>]`): after an event,
//! wait; if the event that would end the wait does not come, publish a trigger on
//! `triggers.<name>`.
//!
//! ```toml
//! [engine.journeys.browse_no_cart]       # product viewed 3 times in 24 h, no cart
//! entry = "product_view"
//! when = "count(product_view, 24h) >= 3"
//! unless = "cart_add"
//! wait = "24h"
//! cap = "1/7d"
//! quiet_hours = "21-8"
//!
//! [engine.journeys.lapsed_buyer]         # purchase, then no visit for 60 days
//! entry = "purchase"
//! unless = "page_view"
//! wait = "60d"
//! ```
//!
//! The rules, all on event times, so that the same events in any order give the same
//! triggers as long as each arrives before the waits it concerns are decided:
//! - an `entry` event (for which `when` holds once the event is counted, if given) starts
//!   a wait due `wait` after its event time, moved to the end of `quiet_hours` (UTC);
//! - a wait comes to nothing if an `unless` event falls in it (after the entry, up to
//!   the due time included), or a later entry does (before the due time: that entry
//!   starts its own wait);
//! - it is decided at its due time, once the stream's clock is `activation.grace_ms`
//!   past it (as cart timers): the trigger is published unless the customer ordered
//!   within `suppress_after_purchase` before it, the cap (`"N/period"`, triggers per
//!   customer whose due times fall within the period) is reached, or no purpose of
//!   `purposes` has a channel allowed; either way the wait is over. An event that comes
//!   after its wait was decided changes nothing.
//!
//! Per journey and customer, the latest [`KEPT`] waits, entry times and `unless` times
//! are kept (a wait that comes to nothing is forgotten as soon as that is known).
//! `when` reads the customer as the entry event arrives.
//!
//! A journey's state is kept with the customer's audiences (`p/au/`); a merge puts the
//! two customers' waits and times together (a wait of one can come to nothing by an
//! event of the other), a split leaves them with the customer split from; erasure and
//! retention forget them with the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::audience::{
    compile_condition, compile_duration, compile_events, Aggregate, CompileError, Compiled,
    Context, EventFields, EventPattern,
};
use crate::engine::config::{Activation, EngineConfig, JourneyConfig, JourneyPer, CART_JOURNEY};
use crate::engine::profile::audiences::DefinitionError;
use crate::model::output::{to_json, OutputRecord, Time, Topic, DAY_MS};
use crate::model::{Channel, Purpose};

/// Waits, entry times and `unless` times kept per journey and customer: the latest.
pub const KEPT: usize = 16;

/// The most triggers a cap may allow per period.
const MAX_CAP: usize = 1_000;

const HOUR_MS: i64 = 3_600_000;

/// A journey of the configuration, compiled.
#[derive(Debug, Clone)]
pub struct Journey {
    pub name: String,
    topic: Topic,
    entry: EventPattern,
    when: Option<Compiled>,
    unless: Option<EventPattern>,
    wait_ms: i64,
    purposes: Vec<Purpose>,
    /// At most `.0` triggers whose due times fall within `.1` ms.
    cap: Option<(usize, i64)>,
    /// Quiet from hour `.0` (inclusive) to hour `.1` (exclusive), UTC.
    quiet: Option<(i64, i64)>,
    suppress_after_purchase_ms: Option<i64>,
}

impl Journey {
    /// Compiles a journey; the error names the field, with its line and column.
    pub fn compile(name: &str, config: &JourneyConfig) -> Result<Self, DefinitionError> {
        let at = |field: &str| field_error(name, field);
        for (field, value) in [("entry", &config.entry), ("wait", &config.wait)] {
            if value.trim().is_empty() {
                return Err(at(field)(CompileError {
                    line: 1,
                    column: 1,
                    message: format!("`{field}` is required"),
                }));
            }
        }
        let entry = compile_events(&config.entry).map_err(at("entry"))?;
        let when = config
            .when
            .as_deref()
            .map(compile_condition)
            .transpose()
            .map_err(at("when"))?;
        let unless = config
            .unless
            .as_deref()
            .map(compile_events)
            .transpose()
            .map_err(at("unless"))?;
        let wait_ms = compile_duration(&config.wait).map_err(at("wait"))?;
        let cap = config
            .cap
            .as_deref()
            .map(parse_cap)
            .transpose()
            .map_err(at("cap"))?;
        let Holds {
            purposes,
            quiet,
            suppress_after_purchase_ms,
        } = Holds::compile(name, config, &[Purpose::Marketing])?;
        Ok(Self {
            name: name.to_string(),
            topic: Topic::journey(name),
            entry,
            when,
            unless,
            wait_ms,
            purposes,
            cap,
            quiet,
            suppress_after_purchase_ms,
        })
    }

    /// The windowed aggregates `when` reads.
    pub fn windows(&self) -> &[Aggregate] {
        self.when.as_ref().map_or(&[], Compiled::windows)
    }

    /// The filters of its `entry` and `unless` events.
    pub fn filters(&self) -> impl Iterator<Item = &crate::engine::audience::EventFilter> {
        self.entry
            .filter()
            .into_iter()
            .chain(self.unless.as_ref().and_then(EventPattern::filter))
    }

    /// The condition `when`, if any.
    pub fn condition(&self) -> Option<&Compiled> {
        self.when.as_ref()
    }

    /// `at`, or the end of the quiet hours it falls in.
    fn outside_quiet_hours(&self, at: i64) -> i64 {
        outside_quiet_hours(self.quiet, at)
    }
}

/// What holds a trigger back, common to every journey: the purposes it may be sent
/// for, its quiet hours, a recent purchase.
struct Holds {
    purposes: Vec<Purpose>,
    quiet: Option<(i64, i64)>,
    suppress_after_purchase_ms: Option<i64>,
}

impl Holds {
    /// The holds of journey `name`; `purposes` when it gives none (the cart journey's
    /// from `activation.cart_purposes`, which may be empty as before: no reminder).
    fn compile(
        name: &str,
        config: &JourneyConfig,
        purposes: &[Purpose],
    ) -> Result<Self, DefinitionError> {
        let at = |field: &str| field_error(name, field);
        let quiet = match config.quiet_hours.as_deref() {
            Some(q) => Some(parse_quiet_hours(q).map_err(at("quiet_hours"))?),
            None => None,
        };
        let suppress_after_purchase_ms = match config.suppress_after_purchase.as_deref() {
            Some(d) => Some(compile_duration(d).map_err(at("suppress_after_purchase"))?),
            None => None,
        };
        if config.purposes.as_ref().is_some_and(Vec::is_empty) {
            return Err(at("purposes")(CompileError {
                line: 1,
                column: 1,
                message: "at least one purpose: the trigger is sent for the first one \
                          the customer allows on some channel"
                    .into(),
            }));
        }
        Ok(Self {
            purposes: config.purposes.as_deref().unwrap_or(purposes).to_vec(),
            quiet,
            suppress_after_purchase_ms,
        })
    }
}

/// The error of field `field` of journey `name`.
fn field_error(name: &str, field: &str) -> impl FnOnce(CompileError) -> DefinitionError {
    let name = format!("{name}.{field}");
    move |error: CompileError| DefinitionError {
        section: "journeys",
        name,
        error,
    }
}

/// `at`, or the end of the `quiet` hours (from, to) it falls in.
fn outside_quiet_hours(quiet: Option<(i64, i64)>, at: i64) -> i64 {
    let Some((from, to)) = quiet else {
        return at;
    };
    let day = at.div_euclid(DAY_MS) * DAY_MS;
    let hour = (at - day) / HOUR_MS;
    let quiet = if from < to {
        (from..to).contains(&hour)
    } else {
        hour >= from || hour < to
    };
    if !quiet {
        return at;
    }
    // The end of these quiet hours: today at `to`, or tomorrow if they began today.
    let end = day + to * HOUR_MS;
    if end > at {
        end
    } else {
        end + DAY_MS
    }
}

/// Whether an order at `ordered` falls within `within` before `due`.
fn ordered_within(within: Option<i64>, ordered: Option<i64>, due: i64) -> bool {
    match (within, ordered) {
        (Some(within), Some(ordered)) => ordered <= due && due - ordered <= within,
        _ => false,
    }
}

/// The abandoned-cart journey (`[engine.journeys.cart_abandoned]`, shipped by default),
/// compiled: a cart with items and no purchase of them `wait` after its last activity
/// is abandoned; the trigger is due then (at the end of quiet hours, if it falls in
/// them), held back by a recent order or for want of a channel allowed, like any
/// journey's. Its waits are the customer's carts (`engine::profile::activation`).
#[derive(Debug, Clone, PartialEq)]
pub struct CartJourney {
    pub wait_ms: i64,
    pub purposes: Vec<Purpose>,
    quiet: Option<(i64, i64)>,
    suppress_after_purchase_ms: Option<i64>,
}

impl CartJourney {
    /// The cart journey of the configuration: `None` when it is turned off; the
    /// shipped definition when `[engine.journeys]` does not name it (its wait and
    /// purposes then from `activation.cart_abandoned_delay_ms` and `cart_purposes`).
    /// The error names the field.
    pub fn compile(config: &EngineConfig) -> Result<Option<CartJourney>, DefinitionError> {
        let refuse = |name: &str, field: &str, message: &str| {
            field_error(name, field)(CompileError {
                line: 1,
                column: 1,
                message: message.into(),
            })
        };
        let elsewhere = config
            .journeys
            .iter()
            .find(|(n, j)| j.is_cart(n) && *n != CART_JOURNEY);
        if let Some((name, _)) = elsewhere {
            return Err(refuse(
                name,
                "per",
                "`per = \"cart\"` is the abandoned-cart journey, named `cart_abandoned` \
                 (its topic and records are those of the contract)",
            ));
        }
        let shipped = Self::shipped(&config.activation);
        let Some(journey) = config.journeys.get(CART_JOURNEY) else {
            return Ok(Some(shipped));
        };
        let refuse = |field: &str, message: &str| Err(refuse(CART_JOURNEY, field, message));
        let decided = "the cart journey's entries are the events carrying a cart, and a \
                       purchase of the cart or its emptying ends its wait: nothing to set";
        if journey.per == Some(JourneyPer::Customer) {
            return refuse(
                "per",
                "`cart_abandoned` is the abandoned-cart journey: its waits are per cart",
            );
        }
        if !journey.entry.trim().is_empty() {
            return refuse("entry", decided);
        }
        if journey.when.is_some() {
            return refuse("when", decided);
        }
        if journey.unless.is_some() {
            return refuse("unless", decided);
        }
        if journey.cap.is_some() {
            return refuse("cap", "not for carts: a cart fires at most once");
        }
        if !journey.enabled {
            return Ok(None);
        }
        let wait_ms = match journey.wait.trim().is_empty() {
            true => shipped.wait_ms,
            false => compile_duration(&journey.wait).map_err(field_error(CART_JOURNEY, "wait"))?,
        };
        let holds = Holds::compile(CART_JOURNEY, journey, &shipped.purposes)?;
        Ok(Some(CartJourney {
            wait_ms,
            purposes: holds.purposes,
            quiet: holds.quiet,
            suppress_after_purchase_ms: holds.suppress_after_purchase_ms,
        }))
    }

    /// The cart journey as shipped: `activation.cart_abandoned_delay_ms` and
    /// `cart_purposes`, no quiet hours, no hold by a recent order.
    pub fn shipped(activation: &Activation) -> CartJourney {
        CartJourney {
            wait_ms: i64::try_from(activation.cart_abandoned_delay_ms).unwrap_or(i64::MAX),
            purposes: activation.cart_purposes.clone(),
            quiet: None,
            suppress_after_purchase_ms: None,
        }
    }

    /// When the cart last active at `last_activity` is due.
    pub fn due(&self, last_activity: i64) -> i64 {
        outside_quiet_hours(self.quiet, last_activity.saturating_add(self.wait_ms))
    }

    /// Whether an order at `last_order_at` holds back a trigger due at `due`.
    pub fn held_by_order(&self, last_order_at: Option<i64>, due: i64) -> bool {
        ordered_within(self.suppress_after_purchase_ms, last_order_at, due)
    }
}

/// `"N/period"`: at most N triggers in the period.
fn parse_cap(source: &str) -> Result<(usize, i64), CompileError> {
    let usage = "a cap is a count and a period, as in `1/7d`";
    let error = |column: usize, message: String| CompileError {
        line: 1,
        column: column as u32 + 1,
        message,
    };
    let Some((count, period)) = source.split_once('/') else {
        return Err(error(0, format!("expected `/`: {usage}")));
    };
    let trimmed = count.trim();
    let n: usize = trimmed
        .parse()
        .ok()
        .filter(|n| (1..=MAX_CAP).contains(n))
        .ok_or_else(|| {
            error(
                count.len() - count.trim_start().len(),
                format!("expected a count from 1 to {MAX_CAP}: {usage}"),
            )
        })?;
    let offset = count.chars().count() + 1;
    let period_ms = compile_duration(period).map_err(|mut e| {
        if e.line == 1 {
            e.column += offset as u32;
        }
        e
    })?;
    Ok((n, period_ms))
}

/// `"21-8"`: from 21:00 to 08:00 (UTC).
fn parse_quiet_hours(source: &str) -> Result<(i64, i64), CompileError> {
    let usage = "quiet hours are two hours of the day (UTC), as in `21-8` for 21:00 to 08:00";
    let error = |message: String| CompileError {
        line: 1,
        column: 1,
        message,
    };
    let (from, to) = source
        .split_once('-')
        .ok_or_else(|| error(format!("expected `-`: {usage}")))?;
    let hour = |s: &str| {
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|h| (0..24).contains(h))
            .ok_or_else(|| {
                error(format!(
                    "`{}` is not an hour from 0 to 23: {usage}",
                    s.trim()
                ))
            })
    };
    let (from, to) = (hour(from)?, hour(to)?);
    if from == to {
        return Err(error(format!("the two hours are the same: {usage}")));
    }
    Ok((from, to))
}

/// What a customer keeps for one journey.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JourneyState {
    /// The waits under way, by entry time, at most [`KEPT`].
    pub runs: Vec<Run>,
    /// Event times of the latest entries, oldest first, at most [`KEPT`].
    pub entries_seen: Vec<i64>,
    /// Event times of the latest `unless` events, oldest first, at most [`KEPT`].
    pub unless_seen: Vec<i64>,
    /// Due times of the triggers published within the cap's period (with a cap only),
    /// oldest first.
    pub fired: Vec<i64>,
}

/// Notes `at` in a sorted list of at most [`KEPT`] times; false if it was there.
fn note(times: &mut Vec<i64>, at: i64) -> bool {
    match times.binary_search(&at) {
        Ok(_) => false,
        Err(i) => {
            times.insert(i, at);
            let excess = times.len().saturating_sub(KEPT);
            times.drain(..excess);
            true
        }
    }
}

impl JourneyState {
    fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.entries_seen.is_empty()
            && self.unless_seen.is_empty()
            && self.fired.is_empty()
    }

    /// Whether a wait has come to nothing: an `unless` event in it, or a later entry
    /// within it (which starts its own).
    fn ended(&self, run: &Run) -> bool {
        let within = |t: &i64, inclusive: bool| {
            run.entered_at < *t && (*t < run.due || (inclusive && *t == run.due))
        };
        self.unless_seen.iter().any(|u| within(u, true))
            || self.entries_seen.iter().any(|e| within(e, false))
    }

    /// Forgets the waits that came to nothing, as soon as that is known.
    fn prune(&mut self) {
        let runs = std::mem::take(&mut self.runs);
        self.runs = runs.into_iter().filter(|r| !self.ended(r)).collect();
    }

    /// Adds the state of a customer merged into this one.
    fn absorb(&mut self, gone: JourneyState) {
        for e in gone.entries_seen {
            note(&mut self.entries_seen, e);
        }
        for u in gone.unless_seen {
            note(&mut self.unless_seen, u);
        }
        for run in gone.runs {
            if !self.runs.iter().any(|r| r.entered_at == run.entered_at) {
                self.runs.push(run);
            }
        }
        self.runs.sort_by_key(|r| r.entered_at);
        let excess = self.runs.len().saturating_sub(KEPT);
        self.runs.drain(..excess);
        self.prune();
        self.fired.extend(gone.fired);
        self.fired.sort_unstable();
        self.fired.dedup();
    }
}

/// A wait under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Event time of the entry event.
    pub entered_at: i64,
    pub event_id: String,
    /// When the trigger is due (quiet hours applied).
    pub due: i64,
}

/// An entry event seen, whose wait starts when its customer settles (`when` is read
/// then, with the event counted).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    journey: usize,
    at: i64,
    event_id: String,
}

/// An event of a customer: an `unless` event ends the waits it falls in; an entry is
/// noted, its wait started when the customer settles.
#[allow(clippy::too_many_arguments)]
pub fn record(
    journeys: &[Journey],
    states: &mut BTreeMap<String, JourneyState>,
    entries: &mut Vec<Entry>,
    kind: &str,
    fields: &dyn EventFields,
    at: i64,
    event_id: &str,
) {
    for (i, journey) in journeys.iter().enumerate() {
        if journey
            .unless
            .as_ref()
            .is_some_and(|u| u.matches(kind, fields))
        {
            let state = states.entry(journey.name.clone()).or_default();
            note(&mut state.unless_seen, at);
            state.prune();
        }
        if journey.entry.matches(kind, fields) {
            entries.push(Entry {
                journey: i,
                at,
                event_id: event_id.to_string(),
            });
        }
    }
}

/// A customer as its journeys are settled.
pub struct JourneyCustomer<'a> {
    pub customer_id: &'a str,
    /// The channels allowed (and reachable) for a purpose now.
    pub channels: &'a dyn Fn(Purpose) -> Vec<Channel>,
    /// When the customer last ordered, if it did.
    pub last_order_at: Option<i64>,
}

/// What settling journeys gave.
#[derive(Debug, Default)]
pub struct JourneyOutcome {
    /// `triggers.<journey>` records.
    pub triggers: Vec<OutputRecord>,
    /// Waits that came to their due time without a trigger (capped, a recent purchase,
    /// no channel allowed).
    pub suppressed: u64,
}

/// Starts the waits of `entries` (where `when` holds in `ctx`), then decides those due
/// by `decided_until` (the clock less the grace), stamping triggers with `now`, and
/// forgets the journeys no longer configured.
pub fn settle(
    journeys: &[Journey],
    states: &mut BTreeMap<String, JourneyState>,
    entries: Vec<Entry>,
    ctx: &dyn Context,
    customer: &JourneyCustomer<'_>,
    decided_until: i64,
    now: i64,
) -> JourneyOutcome {
    for entry in entries {
        let Some(journey) = journeys.get(entry.journey) else {
            continue;
        };
        if journey
            .when
            .as_ref()
            .is_some_and(|w| !w.eval_condition(ctx))
        {
            continue;
        }
        let state = states.entry(journey.name.clone()).or_default();
        if !note(&mut state.entries_seen, entry.at) {
            continue; // an entry at that time waits already
        }
        let due = journey.outside_quiet_hours(entry.at.saturating_add(journey.wait_ms));
        let i = state.runs.partition_point(|r| r.entered_at < entry.at);
        state.runs.insert(
            i,
            Run {
                entered_at: entry.at,
                event_id: entry.event_id,
                due,
            },
        );
        let excess = state.runs.len().saturating_sub(KEPT);
        state.runs.drain(..excess);
        state.prune();
    }
    let mut outcome = JourneyOutcome::default();
    for journey in journeys {
        let Some(state) = states.get_mut(&journey.name) else {
            continue;
        };
        let (due, waiting): (Vec<Run>, Vec<Run>) = std::mem::take(&mut state.runs)
            .into_iter()
            .partition(|r| r.due <= decided_until);
        state.runs = waiting;
        for run in due {
            outcome.fire(journey, state, &run, customer, now);
        }
    }
    states.retain(|name, state| !state.is_empty() && journeys.iter().any(|j| j.name == *name));
    outcome
}

impl JourneyOutcome {
    /// Publishes the trigger of a wait come to its due time, or counts it held back.
    fn fire(
        &mut self,
        journey: &Journey,
        state: &mut JourneyState,
        run: &Run,
        customer: &JourneyCustomer<'_>,
        now: i64,
    ) {
        match fire(journey, state, run, customer, now) {
            Some(record) => self.triggers.push(record),
            None => self.suppressed += 1,
        }
    }
}

/// The trigger of a wait come to its due time, if nothing suppresses it.
fn fire(
    journey: &Journey,
    state: &mut JourneyState,
    run: &Run,
    customer: &JourneyCustomer<'_>,
    now: i64,
) -> Option<OutputRecord> {
    if ordered_within(
        journey.suppress_after_purchase_ms,
        customer.last_order_at,
        run.due,
    ) {
        return None;
    }
    if let Some((count, period)) = journey.cap {
        state.fired.retain(|t| *t > run.due - period);
        if state.fired.len() >= count {
            return None;
        }
    }
    let (purpose, channels) = journey.purposes.iter().find_map(|&p| {
        let channels = (customer.channels)(p);
        (!channels.is_empty()).then_some((p, channels))
    })?;
    if journey.cap.is_some() {
        state.fired.push(run.due);
    }
    let trigger = JourneyTrigger {
        trigger_id: format!(
            "{}:{}:{}",
            journey.name, customer.customer_id, run.entered_at
        ),
        customer_id: customer.customer_id,
        journey: &journey.name,
        entered_at: Time(run.entered_at),
        entry_event_id: &run.event_id,
        due_at: Time(run.due),
        purpose,
        channels_allowed: channels,
        at: Time(now),
    };
    Some(OutputRecord::json(
        journey.topic,
        customer.customer_id.to_string(),
        to_json(&trigger),
    ))
}

/// When the next wait of these states is due.
pub fn next_due(states: &BTreeMap<String, JourneyState>) -> Option<i64> {
    states
        .values()
        .flat_map(|s| s.runs.iter().map(|r| r.due))
        .min()
}

/// Adds the journey states of a customer merged into this one.
pub fn absorb(states: &mut BTreeMap<String, JourneyState>, gone: BTreeMap<String, JourneyState>) {
    for (name, state) in gone {
        states.entry(name).or_default().absorb(state);
    }
}

/// A `triggers.<journey>` record.
#[derive(Serialize)]
struct JourneyTrigger<'a> {
    /// `<journey>:<customer_id>:<entry event time in ms>`: the same wait gives the same id.
    trigger_id: String,
    customer_id: &'a str,
    journey: &'a str,
    /// Event time of the entry event that started the wait.
    entered_at: Time,
    entry_event_id: &'a str,
    due_at: Time,
    /// The first of the journey's purposes with a channel allowed.
    purpose: Purpose,
    channels_allowed: Vec<Channel>,
    at: Time,
}
