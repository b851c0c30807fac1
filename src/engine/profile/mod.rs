//! Profile: everything keyed by customer id, and the golden record.
//!
//! A customer's profile keeps the facts of each member source profile apart
//! ([`SourceFacts`]); the golden record is derived from them on every change, so a
//! later split or erasure can recompute it from what remains. Survivorship per field:
//! the value from the channel ranked first in `survivorship.field_priority` wins, then
//! the most recent by event time (so events arriving out of order still give the right
//! "most recent" value), then the greatest event id (a deterministic tie-break).
//!
//! Lifecycle stages and RFM recency use the stage's event-time clock (the latest
//! `occurred_at` seen), never the wall clock: the same input gives the same output.
//!
//! Consent decisions live on the customer ([`Consents`]); each effective change is a
//! `consent.changes` record. The golden record carries the decisions, the channels
//! allowed *and reachable* per purpose, and flags for profiling and personalisation;
//! with `profiling` denied it carries no RFM and no lifecycle stage.
//!
//! Retention needs "who has been inactive since day D" without scanning: two time
//! indexes are kept, keyed by day of last activity. Each record remembers the day it is
//! indexed under, so moving it is one removal and one insertion.
//!
//! Store tables (prefix `p/`): `p/cu/<customer>` profiles, `p/clock`,
//! `p/ls/<day><customer>` customers by last activity, `p/lb/<day><source profile>` →
//! customer, behavioural source profiles by last activity.

pub mod activation;
pub mod consent;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use std::cell::RefCell;

use crate::engine::config::EngineConfig;
use crate::engine::handoff::{FieldData, ProfileCommand, ProfileEvent, RequestFacts, RequestKind};
use crate::engine::profile::activation::{Activity, Timer, TimerKind};
use crate::engine::profile::consent::{Change, ConsentKey, Consents, Decision, REACHABLE_CHANNELS};
use crate::model::output::{rfc3339, OutputRecord, Topic};
use crate::model::Ident;
use crate::model::CONSENT_PURPOSES;
use crate::store::{key, Store, StoreError};

const DAY_MS: i64 = 86_400_000;
const CLOCK: &[u8] = b"p/clock";

/// One stated value of a field, with its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    pub data: FieldData,
    pub channel: String,
    pub at: i64,
    pub event_id: String,
}

/// What one source profile contributed to a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceFacts {
    pub channel: String,
    pub identifiers: Vec<Ident>,
    /// Latest value of each field stated by this source profile.
    pub fields: BTreeMap<String, FieldValue>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub events: u64,
    pub orders: u64,
    pub order_cents: BTreeMap<String, i64>,
    pub last_order_at: Option<i64>,
    pub last_order_id: Option<String>,
    pub returns: u64,
    pub return_cents: BTreeMap<String, i64>,
    /// Day this source profile is indexed under in `p/lb/` (behavioural ones only).
    pub indexed_day: Option<u32>,
    /// The latest consent decision this source profile stated per key: what a split
    /// recomputes each side's consents from.
    pub consents: Vec<(ConsentKey, Decision)>,
}

/// A customer's profile: the facts of its source profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerProfile {
    pub source_profiles: BTreeMap<u64, SourceFacts>,
    pub consents: Consents,
    /// Day this customer is indexed under in `p/ls/`.
    pub indexed_day: Option<u32>,
    /// Carts, recent purchases, order log, published lifecycle stage.
    pub activity: Activity,
    /// The timers this customer has in `p/tm/`, sorted.
    pub timers: Vec<Timer>,
}

impl CustomerProfile {
    /// Latest event time of the customer.
    pub fn last_seen(&self) -> Option<i64> {
        self.source_profiles.values().map(|f| f.last_seen).max()
    }

    /// Event time of the customer's latest order.
    pub fn last_order_at(&self) -> Option<i64> {
        self.source_profiles
            .values()
            .filter_map(|f| f.last_order_at)
            .max()
    }
}

/// What the profile stage did that the engine counts (per call, taken by the engine).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProfileCounts {
    pub carts_fired: u64,
    /// Abandoned carts without any allowed channel: no trigger.
    pub carts_suppressed: u64,
    pub purchases: u64,
    pub lifecycle_changes: u64,
    pub consents_expired: u64,
}

fn profile_key(customer_id: &str) -> Vec<u8> {
    key("p/cu/", &[customer_id])
}

fn day_of(ms: i64) -> u32 {
    (ms.max(0) / DAY_MS).min(i64::from(u32::MAX)) as u32
}

const INACTIVE_INDEX: &[u8] = b"p/ls/";
const TIMERS: &[u8] = b"p/tm/";
/// The `until` of the last timer check: every timer due at or before it has fired.
const TIMERS_DONE: &[u8] = b"p/timers_done";

/// `p/tm/<due, sortable><customer>\0<kind>`.
fn timer_key(due: i64, customer_id: &str, kind: &str) -> Vec<u8> {
    let mut k = TIMERS.to_vec();
    k.extend_from_slice(&((due as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(customer_id.as_bytes());
    k.push(0);
    k.extend_from_slice(kind.as_bytes());
    k
}

fn parse_timer_key(k: &[u8]) -> Option<(i64, String, String)> {
    let rest = k.strip_prefix(TIMERS)?;
    let due = (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64;
    let text = std::str::from_utf8(&rest[8..]).ok()?;
    let (customer, kind) = text.split_once('\0')?;
    Some((due, customer.to_string(), kind.to_string()))
}
const BEHAVIOURAL_INDEX: &[u8] = b"p/lb/";

fn inactive_key(day: u32, customer_id: &str) -> Vec<u8> {
    let mut k = INACTIVE_INDEX.to_vec();
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(customer_id.as_bytes());
    k
}

fn behavioural_key(day: u32, source_profile: u64) -> Vec<u8> {
    let mut k = BEHAVIOURAL_INDEX.to_vec();
    k.extend_from_slice(&day.to_be_bytes());
    k.extend_from_slice(&source_profile.to_be_bytes());
    k
}

/// Keeps the latest decision per key a source profile stated.
fn remember_statement(list: &mut Vec<(ConsentKey, Decision)>, key: &ConsentKey, d: &Decision) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, old)) => {
            if d.supersedes(old) {
                *old = d.clone();
            }
        }
        None => list.push((key.clone(), d.clone())),
    }
}

/// A `consent.changes` record.
fn consent_change_record(customer_id: &str, change: &Change) -> OutputRecord {
    let d = &change.decision;
    OutputRecord::json(
        Topic::ConsentChanges,
        customer_id.to_string(),
        json!({
            "customer_id": customer_id,
            "purpose": change.key.purpose,
            "channel": change.key.channel,
            "identifier": change.key.identifier,
            "granted": d.granted,
            "previous": change.previous,
            "source_channel": d.source_channel,
            "event_id": d.event_id,
            "at": rfc3339(d.at),
            "expires_at": d.expires_at.map(rfc3339),
            "cause": change.cause.as_str(),
        }),
    )
}

/// The profile stage. Holds configuration only; all state is in the [`Store`].
pub struct Profiler {
    config: EngineConfig,
    /// Counters of the last calls, for the engine's statistics (not state).
    counts: RefCell<ProfileCounts>,
}

impl Profiler {
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            config: config.clone(),
            counts: RefCell::default(),
        }
    }

    /// The counters since the last call.
    pub fn take_counts(&self) -> ProfileCounts {
        std::mem::take(&mut *self.counts.borrow_mut())
    }

    /// Loads a customer's profile.
    pub fn load(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<CustomerProfile>, StoreError> {
        store.get(&profile_key(customer_id))
    }

    /// The stage's event-time clock.
    pub fn clock(&self, store: &Store) -> Result<i64, StoreError> {
        Ok(store.get::<i64>(CLOCK)?.unwrap_or(0))
    }

    /// Applies the commands of one event or request; returns tombstones for
    /// merged-away or erased customers, consent changes, receipts, then the golden
    /// record of every customer that changed.
    pub fn apply(
        &self,
        store: &mut Store,
        commands: &[ProfileCommand],
    ) -> Result<Vec<OutputRecord>, StoreError> {
        let mut out = Vec::new();
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let clock_before = self.clock(store)?;
        let mut clock = clock_before;
        for cmd in commands {
            match cmd {
                ProfileCommand::Merge {
                    survivor, merged, ..
                } => {
                    let gone = self.load(store, merged)?.unwrap_or_default();
                    let mut kept = self.load(store, survivor)?.unwrap_or_default();
                    if let Some(day) = gone.indexed_day {
                        store.remove(inactive_key(day, merged));
                    }
                    for (due, kind) in &gone.timers {
                        store.remove(timer_key(*due, merged, kind));
                    }
                    kept.activity.merge(gone.activity);
                    for (sp, facts) in &gone.source_profiles {
                        if let Some(day) = facts.indexed_day {
                            store.put(behavioural_key(day, *sp), survivor)?;
                        }
                    }
                    kept.source_profiles.extend(gone.source_profiles);
                    for change in kept.consents.merge(gone.consents) {
                        out.push(consent_change_record(survivor, &change));
                    }
                    store.remove(profile_key(merged));
                    store.put(profile_key(survivor), &kept)?;
                    changed.remove(merged);
                    changed.insert(survivor.clone());
                    out.push(OutputRecord::tombstone(
                        Topic::ProfilesMerged,
                        merged.clone(),
                    ));
                }
                ProfileCommand::Touch {
                    customer_id,
                    source_profile,
                    event,
                } => {
                    let mut profile = self.load(store, customer_id)?.unwrap_or_default();
                    let facts = profile
                        .source_profiles
                        .entry(*source_profile)
                        .or_insert_with(|| SourceFacts {
                            channel: event.channel.clone(),
                            first_seen: event.occurred_at,
                            last_seen: event.occurred_at,
                            ..SourceFacts::default()
                        });
                    record_event(facts, event);
                    for c in &event.consents {
                        let key = ConsentKey {
                            purpose: c.purpose.clone(),
                            channel: c.channel.clone(),
                            identifier: c.identifier.clone(),
                        };
                        let decision = Decision {
                            granted: c.granted,
                            at: event.occurred_at,
                            source_channel: event.channel.clone(),
                            event_id: event.event_id.clone(),
                            expires_at: c.expires_at,
                        };
                        if let Some(facts) = profile.source_profiles.get_mut(source_profile) {
                            remember_statement(&mut facts.consents, &key, &decision);
                        }
                        if let Some(change) = profile.consents.apply(key, decision) {
                            out.push(consent_change_record(customer_id, &change));
                        }
                    }
                    let fx = profile
                        .activity
                        .on_event(event, *source_profile, &self.config);
                    if event.kind == "purchase" {
                        out.push(self.purchase_record(customer_id, &profile, event, fx));
                        self.counts.borrow_mut().purchases += 1;
                    }
                    store.put(profile_key(customer_id), &profile)?;
                    clock = clock.max(event.occurred_at);
                    changed.insert(customer_id.clone());
                }
                ProfileCommand::Split {
                    customer_id,
                    new_customer_id,
                    source_profiles,
                    at,
                } => {
                    let mut kept = self.load(store, customer_id)?.unwrap_or_default();
                    let mut split = CustomerProfile::default();
                    for sp in source_profiles {
                        if let Some(facts) = kept.source_profiles.remove(sp) {
                            if let Some(day) = facts.indexed_day {
                                store.put(behavioural_key(day, *sp), new_customer_id)?;
                            }
                            split.source_profiles.insert(*sp, facts);
                        }
                    }
                    split.activity = kept.activity.split_off(source_profiles);
                    let implied = |p: &str| self.implied(p);
                    let before = std::mem::take(&mut kept.consents);
                    kept.consents = Consents::from_statements(
                        kept.source_profiles
                            .values()
                            .flat_map(|f| f.consents.iter()),
                        *at,
                    );
                    split.consents = Consents::from_statements(
                        split
                            .source_profiles
                            .values()
                            .flat_map(|f| f.consents.iter()),
                        *at,
                    );
                    for change in kept.consents.changes_since(&before, implied, *at) {
                        out.push(consent_change_record(customer_id, &change));
                    }
                    for change in split
                        .consents
                        .changes_since(&Consents::default(), implied, *at)
                    {
                        out.push(consent_change_record(new_customer_id, &change));
                    }
                    store.put(profile_key(customer_id), &kept)?;
                    store.put(profile_key(new_customer_id), &split)?;
                    changed.insert(customer_id.clone());
                    changed.insert(new_customer_id.clone());
                }
                ProfileCommand::Detach {
                    customer_id,
                    source_profiles,
                    ..
                } => {
                    let Some(mut profile) = self.load(store, customer_id)? else {
                        continue;
                    };
                    for sp in source_profiles {
                        if let Some(facts) = profile.source_profiles.remove(sp) {
                            if let Some(day) = facts.indexed_day {
                                store.remove(behavioural_key(day, *sp));
                            }
                        }
                    }
                    store.put(profile_key(customer_id), &profile)?;
                    changed.insert(customer_id.clone());
                }
                ProfileCommand::Request { customer_id, facts } => {
                    let profile = self.load(store, customer_id)?;
                    match facts.kind {
                        RequestKind::Export => {
                            let profile = profile.unwrap_or_default();
                            out.push(self.export(customer_id, &profile, clock, facts));
                        }
                        RequestKind::Erase | RequestKind::Retention => {
                            let profile = profile.unwrap_or_default();
                            out.extend(self.erase(store, customer_id, &profile, facts));
                            changed.remove(customer_id);
                        }
                    }
                }
            }
        }
        if clock != clock_before {
            store.put(CLOCK.to_vec(), &clock)?;
        }
        for customer_id in changed {
            if let Some(mut profile) = self.load(store, &customer_id)? {
                let dirty = self.settle(
                    store,
                    &customer_id,
                    &mut profile,
                    clock,
                    "event",
                    None,
                    &mut out,
                )?;
                if dirty {
                    store.put(profile_key(&customer_id), &profile)?;
                }
                let record = self.golden_record(&customer_id, &profile, clock);
                out.push(OutputRecord::json(
                    Topic::ProfilesMerged,
                    customer_id,
                    record,
                ));
            }
        }
        if clock != clock_before {
            let until = clock.saturating_sub(self.config.activation.grace_ms as i64);
            out.extend(self.fire_timers(store, until, clock)?);
        }
        Ok(out)
    }

    /// After a change at `now`: publishes a lifecycle stage change, forgets what is out
    /// of its windows, moves the customer in the time indexes and sets its timers
    /// (dropping any due at or before `fired_until`). True if the profile changed.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        store: &mut Store,
        customer_id: &str,
        profile: &mut CustomerProfile,
        now: i64,
        cause: &str,
        fired_until: Option<i64>,
        out: &mut Vec<OutputRecord>,
    ) -> Result<bool, StoreError> {
        let mut dirty = false;
        if self.profiling_allowed(profile, now) {
            let stage = activation::stage(profile.last_order_at(), now, &self.config.lifecycle);
            let from = profile.activity.stage.clone();
            if from.as_deref() != Some(stage) {
                let from_stage = from.as_deref().unwrap_or("prospect");
                if from_stage != stage {
                    out.push(OutputRecord::json(
                        Topic::LifecycleChanged,
                        customer_id.to_string(),
                        json!({
                            "trigger_id": format!("lifecycle_changed:{customer_id}:{stage}:{now}"),
                            "customer_id": customer_id,
                            "from": from_stage,
                            "to": stage,
                            "cause": cause,
                            "at": rfc3339(now),
                        }),
                    ));
                    self.counts.borrow_mut().lifecycle_changes += 1;
                }
                profile.activity.stage = Some(stage.to_string());
                dirty = true;
            }
        }
        let before = (
            profile.activity.purchased.len(),
            profile.activity.order_log.len(),
        );
        profile.activity.prune(now, &self.config);
        dirty |= before
            != (
                profile.activity.purchased.len(),
                profile.activity.order_log.len(),
            );
        dirty |= self.reindex(store, customer_id, profile)?;
        let mut want = self.timers_of(profile, now);
        if let Some(until) = fired_until {
            want.retain(|(due, _)| *due > until);
        }
        // A timer due before the window already read fires at the next check.
        let done = store.get::<i64>(TIMERS_DONE)?.unwrap_or(i64::MIN);
        for (due, _) in want.iter_mut() {
            *due = (*due).max(done.saturating_add(1));
        }
        want.sort();
        if want != profile.timers {
            for (due, kind) in &profile.timers {
                store.remove(timer_key(*due, customer_id, kind));
            }
            for (due, kind) in &want {
                store.put_raw(timer_key(*due, customer_id, kind), Vec::new());
            }
            profile.timers = want;
            dirty = true;
        }
        Ok(dirty)
    }

    fn profiling_allowed(&self, profile: &CustomerProfile, now: i64) -> bool {
        profile
            .consents
            .allowed("profiling", "all", None, self.implied("profiling"), now)
    }

    /// The timers a customer should have: cart abandonment, the next lifecycle change
    /// by time, consent expiries.
    fn timers_of(&self, profile: &CustomerProfile, now: i64) -> Vec<Timer> {
        let mut timers: Vec<Timer> = Vec::new();
        for (id, cart) in &profile.activity.carts {
            if let Some(due) = Activity::cart_due(cart, &self.config) {
                timers.push((due, TimerKind::Cart(id.clone()).encode()));
            }
        }
        if self.profiling_allowed(profile, now) {
            if let Some(stage) = &profile.activity.stage {
                if let Some(due) = activation::next_stage_change(
                    profile.last_order_at(),
                    stage,
                    &self.config.lifecycle,
                ) {
                    timers.push((due, TimerKind::Lifecycle.encode()));
                }
            }
        }
        for (key, d) in &profile.consents.decisions {
            if let Some(exp) = d.expires_at {
                timers.push((exp, TimerKind::ConsentExpiry(key.encode()).encode()));
            }
        }
        timers.sort();
        timers.dedup();
        timers
    }

    /// Fires every timer due at or before `until`: abandoned carts, lifecycle changes
    /// by time, consent expiries. `now` is the time the records are stamped with.
    pub fn fire_timers(
        &self,
        store: &mut Store,
        until: i64,
        now: i64,
    ) -> Result<Vec<OutputRecord>, StoreError> {
        // Every timer due at or before `done` has fired: only the window since is read.
        let done = store.get::<i64>(TIMERS_DONE)?.unwrap_or(i64::MIN);
        if until <= done {
            return Ok(Vec::new());
        }
        store.put(TIMERS_DONE.to_vec(), &until)?;
        let start = timer_key(done.saturating_add(1), "", "");
        let end = timer_key(until.saturating_add(1), "", "");
        let due = store.scan_range(&start, &end, usize::MAX)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_customer: Vec<(String, Vec<(i64, String)>)> = Vec::new();
        for (k, _) in due {
            let Some((at, customer, kind)) = parse_timer_key(&k) else {
                store.remove(k);
                continue;
            };
            match by_customer.iter_mut().find(|(c, _)| *c == customer) {
                Some((_, list)) => list.push((at, kind)),
                None => by_customer.push((customer, vec![(at, kind)])),
            }
        }
        let mut out = Vec::new();
        for (customer_id, timers) in by_customer {
            let Some(mut profile) = self.load(store, &customer_id)? else {
                for (at, kind) in &timers {
                    store.remove(timer_key(*at, &customer_id, kind));
                }
                continue;
            };
            let mut republish = false;
            for (at, kind) in &timers {
                match TimerKind::decode(kind) {
                    Some(TimerKind::Cart(cart_id)) => {
                        out.extend(self.fire_cart(&customer_id, &mut profile, &cart_id, *at, now));
                    }
                    Some(TimerKind::Lifecycle) => republish = true,
                    Some(TimerKind::ConsentExpiry(k)) => {
                        let Some(key) = crate::engine::profile::consent::ConsentKey::decode(&k)
                        else {
                            continue;
                        };
                        let implied = self.implied(&key.purpose);
                        if let Some(change) = profile.consents.expire(&key, now, implied) {
                            out.push(consent_change_record(&customer_id, &change));
                            self.counts.borrow_mut().consents_expired += 1;
                            republish = true;
                        }
                    }
                    None => {}
                }
            }
            let before = out.len();
            self.settle(
                store,
                &customer_id,
                &mut profile,
                now,
                "time",
                Some(until),
                &mut out,
            )?;
            republish |= out.len() != before;
            store.put(profile_key(&customer_id), &profile)?;
            if republish {
                let record = self.golden_record(&customer_id, &profile, now);
                out.push(OutputRecord::json(
                    Topic::ProfilesMerged,
                    customer_id,
                    record,
                ));
            }
        }
        Ok(out)
    }

    /// The abandonment trigger of a cart due at `due`, if it still stands and some
    /// channel is allowed; the cart never fires again either way.
    fn fire_cart(
        &self,
        customer_id: &str,
        profile: &mut CustomerProfile,
        cart_id: &str,
        due: i64,
        now: i64,
    ) -> Option<OutputRecord> {
        let cart = profile.activity.carts.get(cart_id)?;
        // The key's due may be later than the cart's (see `settle`), never earlier.
        let due = Activity::cart_due(cart, &self.config).filter(|d| *d <= due)?;
        let chosen = self.config.activation.cart_purposes.iter().find_map(|p| {
            let channels = self.allowed_channels(profile, p, now);
            (!channels.is_empty()).then_some((p.clone(), channels))
        });
        let record = chosen.map(|(purpose, channels)| {
            OutputRecord::json(
                Topic::CartAbandoned,
                customer_id.to_string(),
                json!({
                    "trigger_id": format!("cart_abandoned:{customer_id}:{cart_id}:{}", cart.last_activity),
                    "customer_id": customer_id,
                    "cart_id": cart_id,
                    "items": cart.items,
                    "value": cart.value(),
                    "currency": self.config.lifecycle.base_currency,
                    "last_activity_at": rfc3339(cart.last_activity),
                    "last_activity_channel": cart.channel,
                    "due_at": rfc3339(due),
                    "preferred_channels": preferred_channels(profile),
                    "channels_allowed": channels,
                    "purpose": purpose,
                    "recently_purchased": profile.activity.recently_purchased(now, self.config.activation.recent_purchase_days),
                    "at": rfc3339(now),
                }),
            )
        });
        let mut counts = self.counts.borrow_mut();
        match record {
            Some(_) => counts.carts_fired += 1,
            None => counts.carts_suppressed += 1,
        }
        if let Some(c) = profile.activity.carts.get_mut(cart_id) {
            c.fired = true;
        }
        record
    }

    /// `triggers.purchase_completed`: lets a campaign stop at once.
    fn purchase_record(
        &self,
        customer_id: &str,
        profile: &CustomerProfile,
        event: &ProfileEvent,
        fx: activation::EventEffects,
    ) -> OutputRecord {
        let (order_id, items, cents, currency) = match &event.purchase {
            Some(p) => (
                p.order_id.clone(),
                p.items.clone(),
                p.total_cents,
                p.currency.clone(),
            ),
            None => (
                None,
                Vec::new(),
                0,
                self.config.lifecycle.base_currency.clone(),
            ),
        };
        OutputRecord::json(
            Topic::PurchaseCompleted,
            customer_id.to_string(),
            json!({
                "trigger_id": format!("purchase_completed:{}", event.event_id),
                "customer_id": customer_id,
                "order_id": order_id,
                "channel": event.channel,
                "items": items,
                "value": cents as f64 / 100.0,
                "currency": currency,
                "recently_purchased": profile.activity.recently_purchased(event.occurred_at, self.config.activation.recent_purchase_days),
                "cancelled_carts": fx.cancelled_carts,
                "event_id": event.event_id,
                "at": rfc3339(event.occurred_at),
            }),
        )
    }

    /// Moves a customer (and its behavioural source profiles) to the day of its last
    /// activity in the time indexes. True if the profile changed.
    fn reindex(
        &self,
        store: &mut Store,
        customer_id: &str,
        profile: &mut CustomerProfile,
    ) -> Result<bool, StoreError> {
        let retention = &self.config.gdpr.retention;
        let mut dirty = false;
        let want = (retention.inactive_customer_days > 0)
            .then(|| profile.last_seen().map(day_of))
            .flatten();
        if want != profile.indexed_day {
            if let Some(day) = profile.indexed_day {
                store.remove(inactive_key(day, customer_id));
            }
            if let Some(day) = want {
                store.put_raw(inactive_key(day, customer_id), Vec::new());
            }
            profile.indexed_day = want;
            dirty = true;
        }
        for (sp, facts) in profile.source_profiles.iter_mut() {
            let behavioural = retention.behavioural_days > 0
                && !facts.identifiers.is_empty()
                && facts
                    .identifiers
                    .iter()
                    .all(|id| retention.behavioural_identifiers.contains(&id.kind));
            let want = behavioural.then(|| day_of(facts.last_seen));
            if want != facts.indexed_day {
                if let Some(day) = facts.indexed_day {
                    store.remove(behavioural_key(day, *sp));
                }
                if let Some(day) = want {
                    store.put(behavioural_key(day, *sp), &customer_id)?;
                }
                facts.indexed_day = want;
                dirty = true;
            }
        }
        Ok(dirty)
    }

    /// Customers whose last activity is before `cutoff` (ms), oldest first, at most
    /// `limit`. Reads only the index range before the cutoff.
    pub fn inactive_before(
        &self,
        store: &Store,
        cutoff: i64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String)>, StoreError> {
        let end = inactive_key(day_of(cutoff), "");
        Ok(store
            .scan_range(INACTIVE_INDEX, &end, limit)?
            .into_iter()
            .map(|(k, _)| {
                let customer = String::from_utf8_lossy(&k[INACTIVE_INDEX.len() + 4..]).into_owned();
                (k, customer)
            })
            .collect())
    }

    /// Behavioural source profiles unseen since before `cutoff` (ms), with their
    /// customer, oldest first, at most `limit`.
    pub fn behavioural_before(
        &self,
        store: &Store,
        cutoff: i64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String, u64)>, StoreError> {
        let end = behavioural_key(day_of(cutoff), 0);
        let mut out = Vec::new();
        for (k, v) in store.scan_range(BEHAVIOURAL_INDEX, &end, limit)? {
            let sp_bytes: [u8; 8] = k[BEHAVIOURAL_INDEX.len() + 4..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("p/lb key".into()))?;
            let customer: String =
                postcard::from_bytes(&v).map_err(|source| StoreError::Decode {
                    key: "p/lb".into(),
                    source,
                })?;
            out.push((k, customer, u64::from_be_bytes(sp_bytes)));
        }
        Ok(out)
    }

    /// Forgets a customer's profile: tombstones for every id it had, then the receipt.
    fn erase(
        &self,
        store: &mut Store,
        customer_id: &str,
        profile: &CustomerProfile,
        facts: &RequestFacts,
    ) -> Vec<OutputRecord> {
        store.remove(profile_key(customer_id));
        if let Some(day) = profile.indexed_day {
            store.remove(inactive_key(day, customer_id));
        }
        for (due, kind) in &profile.timers {
            store.remove(timer_key(*due, customer_id, kind));
        }
        for (sp, f) in &profile.source_profiles {
            if let Some(day) = f.indexed_day {
                store.remove(behavioural_key(day, *sp));
            }
        }
        let mut erased: Map<String, Value> = facts
            .erased
            .iter()
            .map(|(k, n)| (k.clone(), json!(n)))
            .collect();
        let fields: usize = profile
            .source_profiles
            .values()
            .map(|f| f.fields.len())
            .sum();
        let orders: u64 = profile
            .source_profiles
            .values()
            .map(|f| f.orders + f.returns)
            .sum();
        erased.insert("profiles".into(), json!(1));
        erased.insert("fields".into(), json!(fields));
        erased.insert("orders".into(), json!(orders));
        erased.insert("consents".into(), json!(profile.consents.decisions.len()));
        let mut out: Vec<OutputRecord> = std::iter::once(customer_id)
            .chain(facts.merged_ids.iter().map(String::as_str))
            .map(|id| OutputRecord::tombstone(Topic::ProfilesMerged, id.to_string()))
            .collect();
        out.push(OutputRecord::json(
            Topic::GdprReceipts,
            customer_id.to_string(),
            json!({
                "request_id": facts.request_id,
                "customer_id": customer_id,
                "kind": facts.kind.as_str(),
                "status": "done",
                "done_at": rfc3339(facts.at),
                "erased": erased,
            }),
        ));
        out
    }

    /// The receipt of an export: everything kept about the customer.
    fn export(
        &self,
        customer_id: &str,
        profile: &CustomerProfile,
        clock: i64,
        facts: &RequestFacts,
    ) -> OutputRecord {
        let identity: Value = facts
            .identity
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let source_profiles: Vec<Value> = profile
            .source_profiles
            .iter()
            .map(|(sp, f)| {
                json!({
                    "source_profile": sp,
                    "channel": f.channel,
                    "identifiers": f.identifiers,
                    "fields": f.fields.iter().map(|(name, v)| (name.clone(), json!({
                        "value": field_json(&v.data), "source": v.channel,
                        "at": rfc3339(v.at), "event_id": v.event_id,
                    }))).collect::<Map<String, Value>>(),
                    "first_seen": rfc3339(f.first_seen),
                    "last_seen": rfc3339(f.last_seen),
                    "events": f.events,
                    "orders": f.orders,
                    "last_order_id": f.last_order_id,
                    "returns": f.returns,
                })
            })
            .collect();
        let consents: Vec<Value> = profile
            .consents
            .decisions
            .iter()
            .map(|(k, d)| {
                json!({
                    "purpose": k.purpose, "channel": k.channel, "identifier": k.identifier,
                    "granted": d.granted, "at": rfc3339(d.at), "source_channel": d.source_channel,
                    "event_id": d.event_id, "expires_at": d.expires_at.map(rfc3339),
                })
            })
            .collect();
        OutputRecord::json(
            Topic::GdprReceipts,
            customer_id.to_string(),
            json!({
                "request_id": facts.request_id,
                "customer_id": customer_id,
                "kind": "export",
                "status": "done",
                "done_at": rfc3339(facts.at),
                "export": {
                    "golden_record": self.golden_record(customer_id, profile, clock),
                    "identity_graph": identity,
                    "source_profiles": source_profiles,
                    "consents": consents,
                },
            }),
        )
    }

    fn implied(&self, purpose: &str) -> bool {
        self.config.consent.implied.iter().any(|p| p == purpose)
    }

    /// Channels on which `purpose` is allowed now *and* the customer can be reached:
    /// what any activation may use.
    pub fn allowed_channels(
        &self,
        profile: &CustomerProfile,
        purpose: &str,
        now: i64,
    ) -> Vec<&'static str> {
        let mut ids: BTreeSet<&Ident> = BTreeSet::new();
        let mut has_address = false;
        for f in profile.source_profiles.values() {
            ids.extend(f.identifiers.iter());
            has_address |= f.fields.contains_key("address");
        }
        let implied = self.implied(purpose);
        let consents = &profile.consents;
        REACHABLE_CHANNELS
            .into_iter()
            .filter(|channel| {
                let Some(by) = self.config.consent.reachable_by.get(*channel) else {
                    return false;
                };
                by.iter().any(|t| {
                    if t == "address" {
                        has_address && consents.allowed(purpose, channel, None, implied, now)
                    } else {
                        ids.iter()
                            .filter(|id| &id.kind == t)
                            .any(|id| consents.allowed(purpose, channel, Some(id), implied, now))
                    }
                })
            })
            .collect()
    }

    fn rank(&self, field: &str, channel: &str) -> usize {
        match self.config.survivorship.field_priority.get(field) {
            Some(order) => order
                .iter()
                .position(|c| c == channel)
                .unwrap_or(order.len()),
            None => 0,
        }
    }

    /// The golden record: the value of `profiles.merged`.
    pub fn golden_record(&self, customer_id: &str, profile: &CustomerProfile, clock: i64) -> Value {
        let mut identifiers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut winners: BTreeMap<&str, &FieldValue> = BTreeMap::new();
        let mut channels: BTreeMap<&str, (i64, i64, u64)> = BTreeMap::new();
        let (mut first_seen, mut last_seen) = (i64::MAX, i64::MIN);
        let (mut orders, mut returns) = (0u64, 0u64);
        let mut order_cents: BTreeMap<&str, i64> = BTreeMap::new();
        let mut return_cents: BTreeMap<&str, i64> = BTreeMap::new();
        let mut last_order: Option<(i64, Option<&str>)> = None;
        for facts in profile.source_profiles.values() {
            for id in &facts.identifiers {
                identifiers.entry(&id.kind).or_default().insert(&id.value);
            }
            for (name, v) in &facts.fields {
                let better = match winners.get(name.as_str()) {
                    None => true,
                    Some(w) => {
                        let mine = (
                            std::cmp::Reverse(self.rank(name, &v.channel)),
                            v.at,
                            &v.event_id,
                        );
                        let theirs = (
                            std::cmp::Reverse(self.rank(name, &w.channel)),
                            w.at,
                            &w.event_id,
                        );
                        mine > theirs
                    }
                };
                if better {
                    winners.insert(name, v);
                }
            }
            let c = channels
                .entry(&facts.channel)
                .or_insert((i64::MAX, i64::MIN, 0));
            c.0 = c.0.min(facts.first_seen);
            c.1 = c.1.max(facts.last_seen);
            c.2 += facts.events;
            first_seen = first_seen.min(facts.first_seen);
            last_seen = last_seen.max(facts.last_seen);
            orders += facts.orders;
            returns += facts.returns;
            for (cur, cents) in &facts.order_cents {
                *order_cents.entry(cur).or_default() += cents;
            }
            for (cur, cents) in &facts.return_cents {
                *return_cents.entry(cur).or_default() += cents;
            }
            if let Some(at) = facts.last_order_at {
                let candidate = (at, facts.last_order_id.as_deref());
                if last_order.is_none_or(|l| candidate > l) {
                    last_order = Some(candidate);
                }
            }
        }

        let mut person = Map::new();
        let mut attributes = Map::new();
        for (name, v) in winners {
            let value = field_json(&v.data);
            let stated = json!({"value": value, "source": v.channel, "at": rfc3339(v.at), "event_id": v.event_id});
            match name.strip_prefix("attributes.") {
                Some(attr) => attributes.insert(attr.to_string(), stated),
                None => person.insert(name.to_string(), stated),
            };
        }
        let money = |m: &BTreeMap<&str, i64>| -> Value {
            Value::Object(
                m.iter()
                    .map(|(c, v)| (c.to_string(), json!(*v as f64 / 100.0)))
                    .collect(),
            )
        };
        let base = self.config.lifecycle.base_currency.as_str();
        let monetary_cents = order_cents.get(base).copied().unwrap_or(0)
            - return_cents.get(base).copied().unwrap_or(0);
        let recency_days = last_order.map(|(at, _)| (clock - at).max(0) / DAY_MS);
        let stage = activation::stage(last_order.map(|(at, _)| at), clock, &self.config.lifecycle);
        let consents = &profile.consents;
        let allows =
            |purpose: &str| consents.allowed(purpose, "all", None, self.implied(purpose), clock);
        let profiling = allows("profiling");
        let mut decisions: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
        let mut by_identifier = Vec::new();
        for (k, d) in &consents.decisions {
            let stated = json!({
                "granted": d.granted, "at": rfc3339(d.at), "source_channel": d.source_channel,
                "event_id": d.event_id, "expires_at": d.expires_at.map(rfc3339),
                "in_force": d.expires_at.is_none_or(|e| e > clock),
            });
            match &k.identifier {
                None => {
                    decisions
                        .entry(&k.purpose)
                        .or_default()
                        .insert(k.channel.clone(), stated);
                }
                Some(id) => {
                    let mut v = stated;
                    v["purpose"] = json!(k.purpose);
                    v["channel"] = json!(k.channel);
                    v["identifier"] = json!(id);
                    by_identifier.push(v);
                }
            }
        }
        let act = &self.config.activation;
        let segments = profiling.then(|| {
            let (clv_cents, recent_orders) = profile.activity.lifetime_value(clock, act.clv_horizon_days);
            let clv = clv_cents as f64 / 100.0;
            let vip = (act.vip.min_clv <= 0.0 || clv >= act.vip.min_clv)
                && (act.vip.min_orders == 0 || recent_orders >= u64::from(act.vip.min_orders))
                && (act.vip.min_clv > 0.0 || act.vip.min_orders > 0);
            let rfm = activation::rfm_scores(recency_days, orders, monetary_cents as f64 / 100.0, &act.rfm)
                .map(|(r, f, m)| json!({"recency": r, "frequency": f, "monetary": m, "score": format!("{r}{f}{m}")}));
            json!({
                "rfm": rfm,
                "clv": clv,
                "clv_horizon_days": act.clv_horizon_days,
                "orders_in_horizon": recent_orders,
                "vip": vip,
            })
        });
        let open_carts = profile
            .activity
            .carts
            .values()
            .filter(|c| !c.fired && !c.items.is_empty())
            .count();
        let allowed_channels: Map<String, Value> = CONSENT_PURPOSES
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    json!(self.allowed_channels(profile, p, clock)),
                )
            })
            .collect();
        json!({
            "customer_id": customer_id,
            "identifiers": identifiers,
            "person": person,
            "attributes": attributes,
            "channels": channels.iter().map(|(ch, (f, l, n))| {
                (ch.to_string(), json!({"first_seen": rfc3339(*f), "last_seen": rfc3339(*l), "events": n}))
            }).collect::<Map<String, Value>>(),
            "first_seen": rfc3339(first_seen),
            "last_seen": rfc3339(last_seen),
            "orders": {
                "count": orders,
                "totals": money(&order_cents),
                "last_order_at": last_order.map(|(at, _)| rfc3339(at)),
                "last_order_id": last_order.and_then(|(_, id)| id),
                "returns": returns,
                "returned_totals": money(&return_cents),
            },
            "rfm": profiling.then(|| json!({
                "recency_days": recency_days,
                "frequency": orders,
                "monetary": monetary_cents as f64 / 100.0,
                "currency": base,
            })),
            "lifecycle_stage": profiling.then_some(stage),
            "segments": segments,
            "recently_purchased": profile.activity.recently_purchased(clock, act.recent_purchase_days),
            "open_carts": open_carts,
            "consents": decisions,
            "consents_by_identifier": by_identifier,
            "allowed_channels": allowed_channels,
            "do_not_profile": !profiling,
            "do_not_personalize": !allows("personalization"),
            "source_profiles": profile.source_profiles.len(),
            "as_of": rfc3339(clock),
        })
    }
}

/// The customer's channels, most active first: where a reminder is most likely seen.
fn preferred_channels(profile: &CustomerProfile) -> Vec<String> {
    let mut events: BTreeMap<&str, u64> = BTreeMap::new();
    for f in profile.source_profiles.values() {
        *events.entry(&f.channel).or_default() += f.events;
    }
    let mut ranked: Vec<(&str, u64)> = events.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.into_iter().map(|(c, _)| c.to_string()).collect()
}

fn field_json(data: &FieldData) -> Value {
    match data {
        FieldData::Text(s) => Value::String(s.clone()),
        FieldData::Address(a) => serde_json::to_value(a).unwrap_or(Value::Null),
    }
}

fn record_event(facts: &mut SourceFacts, event: &ProfileEvent) {
    facts.events += 1;
    facts.first_seen = facts.first_seen.min(event.occurred_at);
    facts.last_seen = facts.last_seen.max(event.occurred_at);
    for id in &event.identifiers {
        if let Err(pos) = facts.identifiers.binary_search(id) {
            facts.identifiers.insert(pos, id.clone());
        }
    }
    for (name, data) in &event.fields {
        let newer = facts
            .fields
            .get(name)
            .is_none_or(|old| (event.occurred_at, &event.event_id) > (old.at, &old.event_id));
        if newer {
            facts.fields.insert(
                name.clone(),
                FieldValue {
                    data: data.clone(),
                    channel: event.channel.clone(),
                    at: event.occurred_at,
                    event_id: event.event_id.clone(),
                },
            );
        }
    }
    if let Some(p) = &event.purchase {
        facts.orders += 1;
        *facts.order_cents.entry(p.currency.clone()).or_default() += p.total_cents;
        let candidate = (event.occurred_at, p.order_id.clone());
        if facts
            .last_order_at
            .is_none_or(|at| (at, facts.last_order_id.clone()) < candidate)
        {
            facts.last_order_at = Some(event.occurred_at);
            facts.last_order_id = p.order_id.clone();
        }
    }
    if let Some(r) = &event.refund {
        facts.returns += 1;
        *facts.return_cents.entry(r.currency.clone()).or_default() += r.total_cents;
    }
}
