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
//! Store tables (namespace `p/`, declared in [`crate::store::keys`]): `p/cu/<customer>`
//! profiles, `p/clock`, `p/ls/<day><customer>` customers by last activity,
//! `p/lb/<day><source profile>` → customer, behavioural source profiles by last activity,
//! `p/tm/` timers.

pub mod activation;
pub mod audiences;
pub mod bounds;
pub mod consent;
pub mod enrichment;
pub mod event;
pub mod journeys;
pub mod records;
pub mod timeline;

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::audience::AllowedChannel;
use crate::engine::config::EngineConfig;
use crate::engine::handoff::{
    EventFacts, ProfileCommand, RequestFacts, RequestKind, RetentionRequest,
};
use crate::engine::profile::records::{
    amount, CartAbandoned, ChannelActivity, ConsentChange, DecisionKey, Export, ExportedDecision,
    ExportedSourceProfile, GoldenRecord, IdentifierDecision, LifecycleChanged, OrderSummary,
    PurchaseCompleted, Receipt, Rfm, RfmScores, Segments, StatedDecision, StatedField,
};
use crate::engine::Stats;
use crate::model::output::{day_of, to_json, OutputRecord, Payload, Time, Topic, DAY_MS};
use crate::model::{Channel, ConsentChannel, Ident, Purpose};
use crate::store::{keys, Cell, Store, StoreError, Table};
use activation::{Activity, Timer, TimerKind, Trimmed};
use audiences::{AudienceState, Definitions};
use consent::{forget_statements_beyond, Change, ConsentKey, Consents, Decision};
use enrichment::EnrichmentState;
use event::{FieldData, ProfileEvent};

/// Customer profiles by id.
const PROFILES: Table<String, CustomerProfile> = Table::new(keys::profile::PROFILES);
/// The stage's event-time clock.
const CLOCK: Cell<i64> = Cell::new(keys::profile::CLOCK);
/// Customers by last-seen day: `indexed_day` of their profile.
const INACTIVE_INDEX: Table<(u32, String), ()> = Table::new(keys::profile::INACTIVE_INDEX);
/// Behavioural source profiles by last-seen day → their customer.
const BEHAVIOURAL_INDEX: Table<(u32, u64), String> = Table::new(keys::profile::BEHAVIOURAL_INDEX);
/// Timers by (due, customer, encoded kind): the `timers` of the profiles.
const TIMERS: Table<(i64, String, String), ()> = Table::new(keys::profile::TIMERS);
/// The `until` of the last timer check: every timer due at or before it has fired.
const TIMERS_DONE: Cell<i64> = Cell::new(keys::profile::TIMERS_DONE);
const TIMERS_NEXT: Cell<i64> = Cell::new(keys::profile::TIMERS_NEXT);
/// Audiences, traits and windows by customer ([`audiences`]).
const AUDIENCES: Table<String, AudienceState> = Table::new(keys::profile::AUDIENCES);
/// Enrichment facts by customer ([`enrichment`]).
const ENRICHMENT: Table<String, EnrichmentState> = Table::new(keys::profile::ENRICHMENT);
/// The same table as `AUDIENCES`, as written before journeys were kept in it.
const AUDIENCES_BEFORE_JOURNEYS: Table<String, audiences::AudienceStateBeforeJourneys> =
    Table::new(keys::profile::AUDIENCES);

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

/// What one call of the profile stage gives: its output records, in order, and what it
/// counted, for the engine to absorb.
#[derive(Debug, Default)]
pub struct Profiled {
    pub out: Vec<OutputRecord>,
    pub counts: Stats,
}

/// The timers due after `done` and at or before `until`, per customer in the order
/// first due; unreadable timer keys are removed.
fn due_timers(
    store: &mut Store,
    done: i64,
    until: i64,
) -> Result<Vec<(String, Vec<Timer>)>, StoreError> {
    let start = (done.saturating_add(1), "", "");
    let end = (until.saturating_add(1), "", "");
    let mut by_customer: Vec<(String, Vec<Timer>)> = Vec::new();
    for ((at, customer, kind), ()) in
        TIMERS.range_dropping_unreadable(store, start, end, usize::MAX)?
    {
        match by_customer.iter_mut().find(|(c, _)| *c == customer) {
            Some((_, list)) => list.push((at, kind)),
            None => by_customer.push((customer, vec![(at, kind)])),
        }
    }
    Ok(by_customer)
}

/// Sets a timer due at `due`, and lowers the bound of the next one due to it.
fn set_timer(store: &mut Store, due: i64, customer_id: &str, kind: &str) -> Result<(), StoreError> {
    TIMERS.put(store, (due, customer_id, kind), &())?;
    if TIMERS_NEXT.get(store)?.is_some_and(|next| due < next) {
        TIMERS_NEXT.put(store, &due)?;
    }
    Ok(())
}

/// [`Profiler::source_profile_counts`], `page` profiles at a time.
fn source_profile_counts(store: &Store, page: usize) -> Result<Vec<usize>, StoreError> {
    let mut counts = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let rows = PROFILES.page(store, after.as_deref(), page)?;
        counts.extend(rows.iter().map(|(_, p)| p.source_profiles.len()));
        match rows.last() {
            Some((last, _)) if rows.len() == page => after = Some(last.clone()),
            _ => return Ok(counts),
        }
    }
}

/// Keeps the latest decision per key a source profile stated, and at most
/// `max_identifier_consents` about single identifiers. Returns how many were forgotten.
fn remember_statement(
    list: &mut Vec<(ConsentKey, Decision)>,
    key: &ConsentKey,
    d: &Decision,
    max_identifier_consents: usize,
) -> u64 {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, old)) => {
            if d.supersedes(old) {
                *old = d.clone();
            }
            0
        }
        None => {
            list.push((key.clone(), d.clone()));
            forget_statements_beyond(list, max_identifier_consents)
        }
    }
}

/// Adds what the bounds of the activity forgot to the counters.
fn count_trimmed(counts: &mut Stats, t: Trimmed) {
    counts.carts_dropped += t.carts;
    counts.cart_items_dropped += t.cart_items;
    counts.purchases_dropped += t.purchases;
    counts.orders_dropped += t.orders;
}

/// A `consent.changes` record.
fn consent_change_record(customer_id: &str, change: &Change) -> OutputRecord {
    OutputRecord::json(
        Topic::ConsentChanges,
        customer_id.to_string(),
        to_json(&ConsentChange::new(customer_id, change)),
    )
}

/// What the commands of one [`Profiler::apply`] call have done so far.
#[derive(Default)]
struct Applied {
    out: Vec<OutputRecord>,
    counts: Stats,
    /// Customers whose golden record is published at the end.
    changed: BTreeSet<String>,
    /// The event-time clock, advanced by each event.
    clock: i64,
    /// Profiles an event touched, not yet written back: the golden record is built from
    /// them without decoding them again. Written back before any other command reads
    /// the store ([`Applied::write_back`]) and at the end.
    touched: HashMap<String, CustomerProfile>,
    /// The audience states of the touched customers, the same way (only with audiences
    /// or traits configured).
    touched_audiences: HashMap<String, AudienceState>,
}

impl Applied {
    /// Writes the touched profiles and audience states back to the store.
    fn write_back(&mut self, store: &mut Store) -> Result<(), StoreError> {
        for (customer_id, profile) in self.touched.drain() {
            PROFILES.put(store, &customer_id, &profile)?;
        }
        for (customer_id, state) in self.touched_audiences.drain() {
            AUDIENCES.put(store, &customer_id, &state)?;
        }
        Ok(())
    }
}

/// The consent decisions an event states: remembered on its source profile and applied
/// to the customer (decisions about single identifiers kept within `max`, the forgotten
/// counted in `dropped`). Returns the changes of the customer's state.
fn record_consents(
    profile: &mut CustomerProfile,
    source_profile: u64,
    event: &ProfileEvent,
    max: usize,
    dropped: &mut u64,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for c in &event.consents {
        let key = ConsentKey {
            purpose: c.purpose,
            channel: c.channel,
            identifier: c.identifier.clone(),
        };
        let decision = Decision {
            granted: c.granted,
            at: event.occurred_at,
            source_channel: event.channel.clone(),
            event_id: event.event_id.clone(),
            expires_at: c.expires_at,
        };
        if let Some(facts) = profile.source_profiles.get_mut(&source_profile) {
            *dropped += remember_statement(&mut facts.consents, &key, &decision, max);
        }
        changes.extend(profile.consents.apply(key, decision));
    }
    changes
}

/// The decisions the source profiles of a customer stated, combined as of `at`, those
/// about single identifiers kept within `max` (the others forgotten: the split that asks
/// reports them as changes to the default).
fn stated_consents(profile: &CustomerProfile, at: i64, max: usize) -> Consents {
    let mut consents = Consents::from_statements(
        profile
            .source_profiles
            .values()
            .flat_map(|f| f.consents.iter()),
        at,
    );
    consents.forget_beyond(max, |_| false, at);
    consents
}

/// Removes a customer's profile, its entries in the time indexes and its timers.
fn forget(store: &mut Store, customer_id: &str, profile: &CustomerProfile) {
    PROFILES.remove(store, customer_id);
    if let Some(day) = profile.indexed_day {
        INACTIVE_INDEX.remove(store, (day, customer_id));
    }
    for (due, kind) in &profile.timers {
        TIMERS.remove(store, (*due, customer_id, kind));
    }
    for (sp, f) in &profile.source_profiles {
        if let Some(day) = f.indexed_day {
            BEHAVIOURAL_INDEX.remove(store, (day, *sp));
        }
    }
}

/// The profile stage. Holds configuration only; all state is in the [`Store`].
pub struct Profiler {
    config: EngineConfig,
    /// The configuration's audiences and traits, compiled.
    definitions: Definitions,
    /// The cart journey, compiled: `None` when it is turned off.
    cart: Option<journeys::CartJourney>,
    /// `[engine.enrichment]`, compiled; `None` when off.
    enrichment: Option<enrichment::Settings>,
    /// Golden records are left to the end of the batch ([`Payload::Deferred`]) while
    /// set: see [`crate::engine::Engine::handle_batched`].
    defer: std::cell::Cell<bool>,
}

impl Profiler {
    pub fn new(config: &EngineConfig) -> Self {
        // The settings were validated, so every definition compiles; a configuration
        // built in code without that check keeps none rather than half of them.
        let definitions = Definitions::compile(config);
        debug_assert!(definitions.is_ok(), "{definitions:?}");
        // Unchecked, the cart journey as shipped rather than none.
        let cart = journeys::CartJourney::compile(config);
        debug_assert!(cart.is_ok(), "{cart:?}");
        Self {
            config: config.clone(),
            definitions: definitions.unwrap_or_default(),
            cart: cart.unwrap_or_else(|_| Some(journeys::CartJourney::shipped(&config.activation))),
            enrichment: enrichment::Settings::of(config),
            defer: std::cell::Cell::new(false),
        }
    }

    /// Leaves golden records to the end of the batch (`true`) or builds them at once.
    pub(crate) fn defer_golden_records(&self, on: bool) {
        self.defer.set(on);
    }

    /// The golden record a [`Payload::Deferred`] stands for: the customer as the store
    /// holds it now, as of `clock`. `None` if it has no profile any more.
    pub(crate) fn deferred_golden_record(
        &self,
        store: &Store,
        customer_id: &str,
        clock: i64,
    ) -> Result<Option<Value>, StoreError> {
        self.load(store, customer_id)?
            .map(|profile| self.golden_record(store, customer_id, &profile, clock))
            .transpose()
    }

    /// Loads a customer's profile.
    pub fn load(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<CustomerProfile>, StoreError> {
        PROFILES.get(store, customer_id)
    }

    /// Every customer's golden record, in customer-id order: a full scan, for tests,
    /// exports and tools, never on the event path.
    pub fn golden_records(&self, store: &Store) -> Result<Vec<Value>, StoreError> {
        let clock = self.clock(store)?;
        PROFILES
            .scan(store)?
            .into_iter()
            .map(|(customer_id, profile)| self.golden_record(store, &customer_id, &profile, clock))
            .collect()
    }

    /// How many source profiles each live customer has, in customer id order, read a
    /// page at a time (not every profile at once).
    pub fn source_profile_counts(&self, store: &Store) -> Result<Vec<usize>, StoreError> {
        source_profile_counts(store, 10_000)
    }

    /// A customer's golden record as of the stage's clock.
    pub fn golden_record_now(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<Value>, StoreError> {
        let Some(profile) = self.load(store, customer_id)? else {
            return Ok(None);
        };
        Ok(Some(self.golden_record(
            store,
            customer_id,
            &profile,
            self.clock(store)?,
        )?))
    }

    /// Channels on which `purpose` is allowed as of the stage's clock and the customer
    /// is reachable.
    pub fn allowed_channels_now(
        &self,
        store: &Store,
        customer_id: &str,
        purpose: Purpose,
    ) -> Result<Vec<Channel>, StoreError> {
        let Some(profile) = self.load(store, customer_id)? else {
            return Ok(Vec::new());
        };
        Ok(self.allowed_channels(&profile, purpose, self.clock(store)?))
    }

    /// The stage's event-time clock.
    fn clock(&self, store: &Store) -> Result<i64, StoreError> {
        Ok(CLOCK.get(store)?.unwrap_or(0))
    }

    /// Applies the commands of one event or request; gives tombstones for
    /// merged-away or erased customers, consent changes, receipts, then the golden
    /// record of every customer that changed, and what it counted.
    pub fn apply(
        &self,
        store: &mut Store,
        commands: &[ProfileCommand],
    ) -> Result<Profiled, StoreError> {
        let clock_before = self.clock(store)?;
        let mut done = Applied {
            clock: clock_before,
            ..Applied::default()
        };
        for cmd in commands {
            if !matches!(cmd, ProfileCommand::Touch { .. }) {
                done.write_back(store)?;
            }
            self.apply_command(store, cmd, &mut done)?;
        }
        let Applied {
            out,
            counts,
            changed,
            clock,
            touched,
            touched_audiences,
        } = done;
        if clock != clock_before {
            CLOCK.put(store, &clock)?;
        }
        let mut profiled = Profiled { out, counts };
        self.publish_changed(
            store,
            changed,
            touched,
            touched_audiences,
            clock,
            &mut profiled,
        )?;
        if clock != clock_before {
            let until = clock.saturating_sub(self.config.activation.grace_ms as i64);
            self.fire_due(store, until, clock, &mut profiled)?;
        }
        Ok(profiled)
    }

    fn apply_command(
        &self,
        store: &mut Store,
        cmd: &ProfileCommand,
        done: &mut Applied,
    ) -> Result<(), StoreError> {
        match cmd {
            ProfileCommand::Merge {
                survivor, merged, ..
            } => self.merge(store, survivor, merged, done),
            ProfileCommand::Touch {
                customer_id,
                source_profile,
                event,
            } => self.touch(store, customer_id, *source_profile, event, done),
            ProfileCommand::Split {
                customer_id,
                new_customer_id,
                source_profiles,
                at,
            } => self.split(
                store,
                customer_id,
                new_customer_id,
                source_profiles,
                *at,
                done,
            ),
            ProfileCommand::Detach {
                customer_id,
                source_profiles,
                ..
            } => self.detach(store, customer_id, source_profiles, done),
            ProfileCommand::Request { customer_id, facts } => {
                self.request(store, customer_id, facts, done)
            }
        }
    }

    /// `merged` folds into `survivor`: its source profiles, activity and consents
    /// (restrictively); `merged` is tombstoned.
    fn merge(
        &self,
        store: &mut Store,
        survivor: &str,
        merged: &str,
        done: &mut Applied,
    ) -> Result<(), StoreError> {
        let gone = self.load(store, merged)?.unwrap_or_default();
        let mut kept = self.load(store, survivor)?.unwrap_or_default();
        if let Some(day) = gone.indexed_day {
            INACTIVE_INDEX.remove(store, (day, merged));
        }
        for (due, kind) in &gone.timers {
            TIMERS.remove(store, (*due, merged, kind));
        }
        let trimmed = kept.activity.merge(gone.activity, &self.config);
        count_trimmed(&mut done.counts, trimmed);
        for (sp, facts) in &gone.source_profiles {
            if let Some(day) = facts.indexed_day {
                BEHAVIOURAL_INDEX.put(store, (day, *sp), survivor)?;
            }
        }
        kept.source_profiles.extend(gone.source_profiles);
        let limits = &self.config.limits;
        timeline::move_moments(
            store,
            merged,
            survivor,
            |_| true,
            limits.max_timeline_events,
        )?;
        done.counts.attributes_dropped +=
            bounds::keep_latest_attributes(&mut kept, limits.max_attributes_per_customer);
        let mut changes = kept.consents.merge(gone.consents);
        changes.extend(self.bound_consents(&mut kept, done));
        for change in changes {
            done.out.push(consent_change_record(survivor, &change));
        }
        PROFILES.remove(store, merged);
        PROFILES.put(store, survivor, &kept)?;
        if let Some(gone) = self.audience_state(store, merged)? {
            done.out
                .extend(audiences::exit_all(merged, &gone, "merge", done.clock));
            self.forget_audiences(store, merged, &gone);
            let mut state = AUDIENCES.get(store, survivor)?.unwrap_or_default();
            state.absorb(gone);
            AUDIENCES.put(store, survivor, &state)?;
        }
        // Kept or forgotten whatever the configuration says now.
        if let Some(gone) = ENRICHMENT.get(store, merged)? {
            ENRICHMENT.remove(store, merged);
            let mut state = ENRICHMENT.get(store, survivor)?.unwrap_or_default();
            state.absorb(gone);
            ENRICHMENT.put(store, survivor, &state)?;
        }
        done.changed.remove(merged);
        done.changed.insert(survivor.to_string());
        done.out.push(OutputRecord::tombstone(
            Topic::ProfilesMerged,
            merged.to_string(),
        ));
        Ok(())
    }

    /// An event of `source_profile`: its facts, the consents it states, its cart and
    /// order activity, and the purchase trigger.
    fn touch(
        &self,
        store: &mut Store,
        customer_id: &str,
        source_profile: u64,
        facts: &EventFacts,
        done: &mut Applied,
    ) -> Result<(), StoreError> {
        let event = &ProfileEvent::from_facts(facts, &self.config.gdpr, &mut done.counts.minimised);
        let mut profile = match done.touched.remove(customer_id) {
            Some(profile) => profile,
            None => self.load(store, customer_id)?.unwrap_or_default(),
        };
        let limits = &self.config.limits;
        timeline::record(
            store,
            customer_id,
            source_profile,
            facts,
            limits.max_timeline_events,
        )?;
        let amounts_fit = event.order().is_none_or(|o| {
            bounds::currency_fits(&profile, &o.currency, limits.max_currencies_per_customer)
        });
        done.counts.currencies_dropped += u64::from(!amounts_fit);
        let facts = profile
            .source_profiles
            .entry(source_profile)
            .or_insert_with(|| SourceFacts {
                channel: event.channel.clone(),
                first_seen: event.occurred_at,
                last_seen: event.occurred_at,
                ..SourceFacts::default()
            });
        record_event(facts, event, amounts_fit);
        done.counts.attributes_dropped +=
            bounds::keep_latest_attributes(&mut profile, limits.max_attributes_per_customer);
        let max = limits.max_identifier_consents;
        let dropped = &mut done.counts.identifier_consents_dropped;
        let mut changes = record_consents(&mut profile, source_profile, event, max, dropped);
        changes.extend(self.bound_consents(&mut profile, done));
        for change in changes {
            done.out.push(consent_change_record(customer_id, &change));
        }
        let fx = profile
            .activity
            .on_event(event, source_profile, &self.config);
        count_trimmed(&mut done.counts, fx.trimmed);
        if event.kind == "purchase" {
            done.out
                .push(self.purchase_record(customer_id, &profile, event, fx));
            done.counts.purchases += 1;
        }
        done.touched.insert(customer_id.to_string(), profile);
        done.clock = done.clock.max(event.occurred_at);
        let state = match done.touched_audiences.remove(customer_id) {
            Some(state) => Some(state),
            None => self.audience_state(store, customer_id)?,
        };
        if let Some(mut state) = state {
            let reference = self.event_reference(store, event, &mut done.counts)?;
            self.definitions
                .record(&mut state, source_profile, event, &reference, done.clock);
            done.touched_audiences
                .insert(customer_id.to_string(), state);
        }
        if let Some(profile) = done.touched.get(customer_id) {
            let profiling = self.profiling_allowed(profile, done.clock);
            self.enrich(
                store,
                customer_id,
                source_profile,
                event,
                profiling,
                &mut done.counts,
            )?;
        }
        done.changed.insert(customer_id.to_string());
        Ok(())
    }

    /// Records an event in the customer's enrichment facts (enrichment on only), with
    /// the catalogue's products of its SKUs and the store of its source. With
    /// `profiling` denied nothing is inferred: the facts kept so far are forgotten.
    fn enrich(
        &self,
        store: &mut Store,
        customer_id: &str,
        source_profile: u64,
        event: &ProfileEvent,
        profiling: bool,
        counts: &mut Stats,
    ) -> Result<(), StoreError> {
        let Some(settings) = &self.enrichment else {
            return Ok(());
        };
        if !profiling {
            ENRICHMENT.remove(store, customer_id);
            return Ok(());
        }
        let mut state = ENRICHMENT.get(store, customer_id)?.unwrap_or_default();
        let info = match &event.source {
            Some(source) => crate::engine::reference::store_info(store, source)?,
            None => None,
        };
        let lookup = |sku: &str| {
            let found = crate::engine::reference::product(store, sku)?;
            counts.product_misses += u64::from(found.is_none());
            Ok::<_, StoreError>(found)
        };
        state.record(settings, source_profile, event, lookup, info)?;
        ENRICHMENT.put(store, customer_id, &state)
    }

    /// The customer's enrichment facts, when enrichment is on.
    fn enrichment_state(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<EnrichmentState>, StoreError> {
        match self.enrichment {
            Some(_) => Ok(Some(
                ENRICHMENT.get(store, customer_id)?.unwrap_or_default(),
            )),
            None => Ok(None),
        }
    }

    /// The reference data of an event that the definitions read: the catalogue's product
    /// of its SKU, the store of its source; a key the reference data does not know is
    /// counted and reads as absent.
    fn event_reference(
        &self,
        store: &Store,
        event: &ProfileEvent,
        counts: &mut Stats,
    ) -> Result<audiences::EventReference, StoreError> {
        let (products, stores) = self.definitions.reads_reference();
        let mut found = audiences::EventReference::default();
        if let Some(sku) = audiences::event_sku(event).filter(|_| products) {
            found.product = crate::engine::reference::product(store, sku)?;
            counts.product_misses += u64::from(found.product.is_none());
        }
        if let Some(source) = event.source.as_deref().filter(|_| stores) {
            found.store = crate::engine::reference::store_info(store, source)?;
            counts.store_misses += u64::from(found.store.is_none());
        }
        Ok(found)
    }

    /// `source_profiles` move from `customer_id` to the new `new_customer_id`, with
    /// their facts, activity and the consents they stated.
    fn split(
        &self,
        store: &mut Store,
        customer_id: &str,
        new_customer_id: &str,
        source_profiles: &[u64],
        at: i64,
        done: &mut Applied,
    ) -> Result<(), StoreError> {
        let mut kept = self.load(store, customer_id)?.unwrap_or_default();
        let mut split = CustomerProfile::default();
        for sp in source_profiles {
            if let Some(facts) = kept.source_profiles.remove(sp) {
                if let Some(day) = facts.indexed_day {
                    BEHAVIOURAL_INDEX.put(store, (day, *sp), new_customer_id)?;
                }
                split.source_profiles.insert(*sp, facts);
            }
        }
        split.activity = kept.activity.split_off(source_profiles);
        timeline::move_moments(
            store,
            customer_id,
            new_customer_id,
            |m| source_profiles.contains(&m.source_profile),
            self.config.limits.max_timeline_events,
        )?;
        let before = std::mem::take(&mut kept.consents);
        let max = self.config.limits.max_identifier_consents;
        kept.consents = stated_consents(&kept, at, max);
        split.consents = stated_consents(&split, at, max);
        let implied = |p: Purpose| self.implied(p);
        for change in kept.consents.changes_since(&before, implied, at) {
            done.out.push(consent_change_record(customer_id, &change));
        }
        for change in split
            .consents
            .changes_since(&Consents::default(), implied, at)
        {
            done.out
                .push(consent_change_record(new_customer_id, &change));
        }
        PROFILES.put(store, customer_id, &kept)?;
        PROFILES.put(store, new_customer_id, &split)?;
        if let Some(mut state) = self.audience_state(store, customer_id)? {
            let moved = state.split_off(source_profiles);
            AUDIENCES.put(store, customer_id, &state)?;
            AUDIENCES.put(store, new_customer_id, &moved)?;
        }
        if let Some(mut state) = ENRICHMENT.get(store, customer_id)? {
            let moved = state.split_off(source_profiles);
            ENRICHMENT.put(store, customer_id, &state)?;
            ENRICHMENT.put(store, new_customer_id, &moved)?;
        }
        done.changed.insert(customer_id.to_string());
        done.changed.insert(new_customer_id.to_string());
        Ok(())
    }

    /// Forgets the facts of `source_profiles` (behavioural data expired).
    fn detach(
        &self,
        store: &mut Store,
        customer_id: &str,
        source_profiles: &[u64],
        done: &mut Applied,
    ) -> Result<(), StoreError> {
        let Some(mut profile) = self.load(store, customer_id)? else {
            return Ok(());
        };
        for sp in source_profiles {
            if let Some(facts) = profile.source_profiles.remove(sp) {
                if let Some(day) = facts.indexed_day {
                    BEHAVIOURAL_INDEX.remove(store, (day, *sp));
                }
            }
        }
        timeline::forget_source_profiles(store, customer_id, source_profiles)?;
        PROFILES.put(store, customer_id, &profile)?;
        if let Some(mut state) = self.audience_state(store, customer_id)? {
            state.split_off(source_profiles);
            AUDIENCES.put(store, customer_id, &state)?;
        }
        if let Some(mut state) = ENRICHMENT.get(store, customer_id)? {
            state.split_off(source_profiles);
            ENRICHMENT.put(store, customer_id, &state)?;
        }
        done.changed.insert(customer_id.to_string());
        Ok(())
    }

    /// A rights request or a retention expiry: the export, or the erasure.
    fn request(
        &self,
        store: &mut Store,
        customer_id: &str,
        facts: &RequestFacts,
        done: &mut Applied,
    ) -> Result<(), StoreError> {
        let profile = self.load(store, customer_id)?.unwrap_or_default();
        match facts.kind {
            RequestKind::Export => {
                let moments = timeline::of(store, customer_id)?;
                let audiences = self.audience_state(store, customer_id)?;
                let enrichment = self.enrichment_state(store, customer_id)?;
                done.out.push(self.export(
                    customer_id,
                    &profile,
                    &moments,
                    done.clock,
                    facts,
                    audiences.as_ref(),
                    enrichment.as_ref(),
                ));
            }
            RequestKind::Erase | RequestKind::Retention => {
                if let Some(state) = self.audience_state(store, customer_id)? {
                    let cause = match facts.kind {
                        RequestKind::Retention => "retention",
                        _ => "erasure",
                    };
                    done.out
                        .extend(audiences::exit_all(customer_id, &state, cause, done.clock));
                    self.forget_audiences(store, customer_id, &state);
                }
                ENRICHMENT.remove(store, customer_id);
                let moments = timeline::forget(store, customer_id)?;
                done.out
                    .extend(self.erase(store, customer_id, &profile, moments, facts));
                done.changed.remove(customer_id);
            }
        }
        Ok(())
    }

    /// Settles every changed customer still there and publishes its golden record;
    /// writes back the `touched` profiles (changed customers all).
    fn publish_changed(
        &self,
        store: &mut Store,
        changed: BTreeSet<String>,
        mut touched: HashMap<String, CustomerProfile>,
        mut touched_audiences: HashMap<String, AudienceState>,
        clock: i64,
        done: &mut Profiled,
    ) -> Result<(), StoreError> {
        for customer_id in changed {
            let (mut profile, unwritten) = match touched.remove(&customer_id) {
                Some(profile) => (profile, true),
                None => match self.load(store, &customer_id)? {
                    Some(profile) => (profile, false),
                    None => continue,
                },
            };
            let dirty = unwritten
                | self.settle(
                    store,
                    &customer_id,
                    &mut profile,
                    clock,
                    "event",
                    None,
                    touched_audiences.remove(&customer_id),
                    done,
                )?;
            if dirty {
                PROFILES.put(store, &customer_id, &profile)?;
            }
            done.out
                .push(self.profile_record(store, customer_id, &profile, clock)?);
        }
        // Every touched customer changed: nothing is left, but nothing may be lost.
        for (customer_id, profile) in touched {
            PROFILES.put(store, &customer_id, &profile)?;
        }
        for (customer_id, state) in touched_audiences {
            AUDIENCES.put(store, &customer_id, &state)?;
        }
        Ok(())
    }

    /// The `profiles.merged` record of a customer.
    fn profile_record(
        &self,
        store: &Store,
        customer_id: String,
        profile: &CustomerProfile,
        clock: i64,
    ) -> Result<OutputRecord, StoreError> {
        if self.defer.get() {
            return Ok(OutputRecord {
                topic: Topic::ProfilesMerged,
                key: Some(customer_id),
                payload: Payload::Deferred(clock),
                headers: Vec::new(),
            });
        }
        let record = self.golden_record(store, &customer_id, profile, clock)?;
        Ok(OutputRecord::json(
            Topic::ProfilesMerged,
            customer_id,
            record,
        ))
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
        cause: &'static str,
        fired_until: Option<i64>,
        audiences: Option<AudienceState>,
        done: &mut Profiled,
    ) -> Result<bool, StoreError> {
        let mut dirty = self.settle_stage(customer_id, profile, now, cause, done);
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
        self.settle_audiences(store, customer_id, profile, now, cause, audiences, done)?;
        dirty |= self.settle_timers(store, customer_id, profile, now, fired_until)?;
        Ok(dirty)
    }

    /// Evaluates the customer's traits and audiences at `now`, publishes the membership
    /// changes, and sets the customer's audience timer (kept with its audiences, not in
    /// the profile: a timer that only moves a window leaves the profile unwritten).
    /// `pending` is its state when not written back yet.
    #[allow(clippy::too_many_arguments)]
    fn settle_audiences(
        &self,
        store: &mut Store,
        customer_id: &str,
        profile: &CustomerProfile,
        now: i64,
        cause: &'static str,
        pending: Option<AudienceState>,
        done: &mut Profiled,
    ) -> Result<(), StoreError> {
        let state = match pending {
            Some(state) => Some(state),
            None => self.audience_state(store, customer_id)?,
        };
        let Some(mut state) = state else {
            return Ok(());
        };
        let enrichment = match self.definitions.reads_enrichment() {
            true => self.enrichment_state(store, customer_id)?,
            false => None,
        };
        // Only the fields the definitions read: the others are not worked out.
        let fields = self.definitions.record_fields();
        let golden = self.golden(
            customer_id,
            profile,
            now,
            None,
            enrichment.as_ref(),
            Some(fields),
        );
        let record = fields
            .iter()
            .filter_map(|name| Some((name.clone(), golden.field_json(name)?)))
            .collect();
        // The channels allowed (and reachable) per purpose, worked out for the purposes
        // asked about only, as the golden record's `allowed_channels` has them.
        let by_purpose: [OnceCell<Vec<Channel>>; Purpose::ALL.len()] =
            std::array::from_fn(|_| OnceCell::new());
        let channels_of = |purpose: Purpose| {
            let i = Purpose::ALL.iter().position(|p| *p == purpose).unwrap_or(0);
            by_purpose[i].get_or_init(|| self.allowed_channels(profile, purpose, now))
        };
        let allowed = |purpose: Purpose, channel: AllowedChannel| match channel {
            AllowedChannel::One(c) => self.channel_allowed(profile, purpose, c, now),
            AllowedChannel::Any => !channels_of(purpose).is_empty(),
        };
        let channels = |purpose: Purpose| channels_of(purpose).clone();
        let customer = audiences::Customer {
            customer_id,
            record: Value::Object(record),
            allowed: &allowed,
            channels: &channels,
            last_order_at: profile.last_order_at(),
            decided_until: now.saturating_sub(self.config.activation.grace_ms as i64),
            now,
        };
        let settled = self.definitions.settle(customer, &mut state, cause);
        done.counts.audience_changes += settled.out.len() as u64;
        done.counts.journey_triggers += settled.triggers.len() as u64;
        done.counts.journey_suppressed += settled.suppressed;
        done.out.extend(settled.out);
        done.out.extend(settled.triggers);
        // A timer due before the window already read fires at the next check.
        let checked = TIMERS_DONE.get(store)?.unwrap_or(i64::MIN);
        let due = settled.due.map(|due| due.max(checked.saturating_add(1)));
        if due != state.due {
            let kind = TimerKind::Audiences.encode();
            if let Some(old) = state.due {
                TIMERS.remove(store, (old, customer_id, &kind));
            }
            if let Some(new) = due {
                set_timer(store, new, customer_id, &kind)?;
            }
            state.due = due;
        }
        AUDIENCES.put(store, customer_id, &state)?;
        Ok(())
    }

    /// Forgets a customer's audiences, traits, windows and audience timer.
    fn forget_audiences(&self, store: &mut Store, customer_id: &str, state: &AudienceState) {
        if let Some(due) = state.due {
            TIMERS.remove(store, (due, customer_id, &TimerKind::Audiences.encode()));
        }
        AUDIENCES.remove(store, customer_id);
    }

    /// Publishes the customer's lifecycle stage if it changed (profiling allowed only).
    /// True if the profile changed.
    fn settle_stage(
        &self,
        customer_id: &str,
        profile: &mut CustomerProfile,
        now: i64,
        cause: &'static str,
        done: &mut Profiled,
    ) -> bool {
        if !self.profiling_allowed(profile, now) {
            return false;
        }
        let stage = activation::stage(profile.last_order_at(), now, &self.config.lifecycle);
        let from = profile.activity.stage.as_deref();
        if from == Some(stage) {
            return false;
        }
        let from_stage = from.unwrap_or("prospect");
        if from_stage != stage {
            let record = LifecycleChanged {
                trigger_id: format!("lifecycle_changed:{customer_id}:{stage}:{now}"),
                customer_id,
                from: from_stage,
                to: stage,
                cause,
                at: Time(now),
            };
            done.out.push(OutputRecord::json(
                Topic::LifecycleChanged,
                customer_id.to_string(),
                to_json(&record),
            ));
            done.counts.lifecycle_changes += 1;
        }
        profile.activity.stage = Some(stage.to_string());
        true
    }

    /// Sets the customer's timers in `p/tm/` (dropping any due at or before
    /// `fired_until`). True if the profile changed.
    fn settle_timers(
        &self,
        store: &mut Store,
        customer_id: &str,
        profile: &mut CustomerProfile,
        now: i64,
        fired_until: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut want = self.timers_of(profile, now);
        if let Some(until) = fired_until {
            want.retain(|(due, _)| *due > until);
        }
        // A timer due before the window already read fires at the next check.
        let done = TIMERS_DONE.get(store)?.unwrap_or(i64::MIN);
        for (due, _) in want.iter_mut() {
            *due = (*due).max(done.saturating_add(1));
        }
        want.sort();
        if want == profile.timers {
            return Ok(false);
        }
        for (due, kind) in &profile.timers {
            TIMERS.remove(store, (*due, customer_id, kind));
        }
        for (due, kind) in &want {
            set_timer(store, *due, customer_id, kind)?;
        }
        profile.timers = want;
        Ok(true)
    }

    fn profiling_allowed(&self, profile: &CustomerProfile, now: i64) -> bool {
        self.allows(profile, Purpose::Profiling, now)
    }

    /// The timers a customer should have: cart abandonment, the next lifecycle change
    /// by time, consent expiries.
    fn timers_of(&self, profile: &CustomerProfile, now: i64) -> Vec<Timer> {
        let mut timers: Vec<Timer> = Vec::new();
        for (id, cart) in &profile.activity.carts {
            if let Some(due) = Activity::cart_due(cart, self.cart.as_ref()) {
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
                timers.push((exp, TimerKind::ConsentExpiry(key.clone()).encode()));
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
    ) -> Result<Profiled, StoreError> {
        let mut profiled = Profiled::default();
        self.fire_due(store, until, now, &mut profiled)?;
        Ok(profiled)
    }

    /// [`Profiler::fire_timers`], adding to `done`.
    fn fire_due(
        &self,
        store: &mut Store,
        until: i64,
        now: i64,
        done: &mut Profiled,
    ) -> Result<(), StoreError> {
        // Every timer due at or before `fired` has fired: only the window since is read.
        let fired = TIMERS_DONE.get(store)?.unwrap_or(i64::MIN);
        if until <= fired {
            return Ok(());
        }
        TIMERS_DONE.put(store, &until)?;
        // Most events move the clock by less than the time to the next timer: the
        // timers are read only when one can be due.
        if TIMERS_NEXT.get(store)?.is_some_and(|next| next > until) {
            return Ok(());
        }
        for (customer_id, timers) in due_timers(store, fired, until)? {
            self.fire_customer_timers(store, customer_id, &timers, until, now, done)?;
        }
        // The first one left (or one removed before it), among them those that firing
        // set; a key that cannot be read is read (and dropped) at the next event.
        let start = until.saturating_add(1);
        let next = match TIMERS.first_key_at_least(store, (start, "", ""), (i64::MAX, "", ""))? {
            None => i64::MAX,
            Some(Some((due, _, _))) => due,
            Some(None) => start,
        };
        TIMERS_NEXT.put(store, &next)?;
        Ok(())
    }

    /// Fires the due timers of one customer, settles it and republishes its golden
    /// record if a timer changed it.
    fn fire_customer_timers(
        &self,
        store: &mut Store,
        customer_id: String,
        timers: &[Timer],
        until: i64,
        now: i64,
        done: &mut Profiled,
    ) -> Result<(), StoreError> {
        let Some(mut profile) = self.load(store, &customer_id)? else {
            for (at, kind) in timers {
                TIMERS.remove(store, (*at, &customer_id, kind));
            }
            return Ok(());
        };
        let mut republish = false;
        for (at, kind) in timers {
            republish |= self.fire_timer(&customer_id, &mut profile, kind, *at, now, done);
        }
        // Audience timers are not the profile's: fired alone, they change it only if
        // settling does.
        let only_audiences = timers
            .iter()
            .all(|(_, kind)| TimerKind::decode(kind) == Some(TimerKind::Audiences));
        // Settling sets the next one (none if the configuration has no audiences now).
        for (at, kind) in timers {
            if TimerKind::decode(kind) == Some(TimerKind::Audiences) {
                TIMERS.remove(store, (*at, &customer_id, kind));
            }
        }
        let before = done.out.len();
        let dirty = self.settle(
            store,
            &customer_id,
            &mut profile,
            now,
            "time",
            Some(until),
            None,
            done,
        )?;
        republish |= done.out.len() != before;
        if dirty || !only_audiences {
            PROFILES.put(store, &customer_id, &profile)?;
        }
        if republish {
            done.out
                .push(self.profile_record(store, customer_id, &profile, now)?);
        }
        Ok(())
    }

    /// Fires one timer due at `at`. True if the golden record is to be republished.
    fn fire_timer(
        &self,
        customer_id: &str,
        profile: &mut CustomerProfile,
        kind: &str,
        at: i64,
        now: i64,
        done: &mut Profiled,
    ) -> bool {
        match TimerKind::decode(kind) {
            Some(TimerKind::Cart(cart_id)) => {
                // A cart that fires is no longer open: the golden record's `open_carts`
                // changes with it.
                let open = open_carts(profile);
                let record =
                    self.fire_cart(customer_id, profile, &cart_id, at, now, &mut done.counts);
                done.out.extend(record);
                open_carts(profile) != open
            }
            Some(TimerKind::Lifecycle) => true,
            // Settling the customer evaluates its audiences again.
            Some(TimerKind::Audiences) => false,
            Some(TimerKind::ConsentExpiry(key)) => {
                let implied = self.implied(key.purpose);
                let Some(change) = profile.consents.expire(&key, now, implied) else {
                    return false;
                };
                done.out.push(consent_change_record(customer_id, &change));
                done.counts.consents_expired += 1;
                true
            }
            None => false,
        }
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
        counts: &mut Stats,
    ) -> Option<OutputRecord> {
        let cart = profile.activity.carts.get(cart_id)?;
        // The key's due may be later than the cart's (see `settle`), never earlier.
        let journey = self.cart.as_ref()?;
        let due = Activity::cart_due(cart, Some(journey)).filter(|d| *d <= due)?;
        // Held back, like any journey's trigger, by a recent order or for want of a
        // channel allowed.
        let chosen = match journey.held_by_order(profile.last_order_at(), due) {
            true => None,
            false => journey.purposes.iter().find_map(|&p| {
                let channels = self.allowed_channels(profile, p, now);
                (!channels.is_empty()).then_some((p, channels))
            }),
        };
        let record = chosen.map(|(purpose, channels)| {
            let trigger = CartAbandoned {
                trigger_id: format!(
                    "cart_abandoned:{customer_id}:{cart_id}:{}",
                    cart.last_activity
                ),
                customer_id,
                cart_id,
                items: &cart.items,
                value: cart.value(),
                currency: &self.config.lifecycle.base_currency,
                last_activity_at: Time(cart.last_activity),
                last_activity_channel: &cart.channel,
                due_at: Time(due),
                preferred_channels: preferred_channels(profile),
                channels_allowed: channels,
                purpose,
                recently_purchased: profile
                    .activity
                    .recently_purchased(now, self.config.activation.recent_purchase_days),
                at: Time(now),
            };
            OutputRecord::json(
                Topic::CartAbandoned,
                customer_id.to_string(),
                to_json(&trigger),
            )
        });
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
                p.order_id.as_deref(),
                p.items.as_slice(),
                p.total_cents,
                p.currency.as_str(),
            ),
            None => (
                None,
                &[][..],
                0,
                self.config.lifecycle.base_currency.as_str(),
            ),
        };
        let trigger = PurchaseCompleted {
            trigger_id: format!("purchase_completed:{}", event.event_id),
            customer_id,
            order_id,
            channel: &event.channel,
            items,
            value: amount(cents),
            currency,
            recently_purchased: profile.activity.recently_purchased(
                event.occurred_at,
                self.config.activation.recent_purchase_days,
            ),
            cancelled_carts: fx.cancelled_carts,
            event_id: &event.event_id,
            at: Time(event.occurred_at),
        };
        OutputRecord::json(
            Topic::PurchaseCompleted,
            customer_id.to_string(),
            to_json(&trigger),
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
                INACTIVE_INDEX.remove(store, (day, customer_id));
            }
            if let Some(day) = want {
                INACTIVE_INDEX.put(store, (day, customer_id), &())?;
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
                    BEHAVIOURAL_INDEX.remove(store, (day, *sp));
                }
                if let Some(day) = want {
                    BEHAVIOURAL_INDEX.put(store, (day, *sp), customer_id)?;
                }
                facts.indexed_day = want;
                dirty = true;
            }
        }
        Ok(dirty)
    }

    /// Retention requests for the customers inactive beyond
    /// `gdpr.retention.inactive_customer_days` as of `now` (ms), oldest first, at most
    /// `sweep_batch`. Reads only the index range before the cutoff, and takes the
    /// entries it returns out of the index (the erasure also removes them).
    pub fn inactive_expired(
        &self,
        store: &mut Store,
        now: i64,
    ) -> Result<Vec<RetentionRequest>, StoreError> {
        let r = &self.config.gdpr.retention;
        if r.inactive_customer_days == 0 {
            return Ok(Vec::new());
        }
        let cutoff = now - i64::from(r.inactive_customer_days) * DAY_MS;
        let mut requests = Vec::new();
        for ((day, customer_id), ()) in
            INACTIVE_INDEX.below(store, (day_of(cutoff), ""), r.sweep_batch)?
        {
            INACTIVE_INDEX.remove(store, (day, &customer_id));
            requests.push(RetentionRequest::Customer {
                customer_id,
                at: now,
            });
        }
        Ok(requests)
    }

    /// Retention requests for the behavioural source profiles unseen beyond
    /// `gdpr.retention.behavioural_days` as of `now` (ms): one per customer, in
    /// customer-id order, from at most `sweep_batch` index entries (oldest first),
    /// which it takes out of the index.
    pub fn behavioural_expired(
        &self,
        store: &mut Store,
        now: i64,
    ) -> Result<Vec<RetentionRequest>, StoreError> {
        let r = &self.config.gdpr.retention;
        if r.behavioural_days == 0 {
            return Ok(Vec::new());
        }
        let cutoff = now - i64::from(r.behavioural_days) * DAY_MS;
        let mut by_customer: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for ((day, source_profile), customer_id) in
            BEHAVIOURAL_INDEX.below(store, (day_of(cutoff), 0), r.sweep_batch)?
        {
            BEHAVIOURAL_INDEX.remove(store, (day, source_profile));
            by_customer
                .entry(customer_id)
                .or_default()
                .push(source_profile);
        }
        Ok(by_customer
            .into_iter()
            .map(
                |(customer_id, source_profiles)| RetentionRequest::SourceProfiles {
                    customer_id,
                    source_profiles,
                    at: now,
                },
            )
            .collect())
    }

    /// Forgets a customer's profile: tombstones for every id it had, then the receipt.
    fn erase(
        &self,
        store: &mut Store,
        customer_id: &str,
        profile: &CustomerProfile,
        touchpoints: u64,
        facts: &RequestFacts,
    ) -> Vec<OutputRecord> {
        forget(store, customer_id, profile);
        let mut erased: BTreeMap<&str, u64> =
            facts.erased.iter().map(|(k, n)| (k.as_str(), *n)).collect();
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
        erased.insert("profiles", 1);
        erased.insert("fields", fields as u64);
        erased.insert("orders", orders);
        erased.insert("consents", profile.consents.decisions.len() as u64);
        erased.insert("touchpoints", touchpoints);
        let mut out: Vec<OutputRecord> = std::iter::once(customer_id)
            .chain(facts.merged_ids.iter().map(String::as_str))
            .map(|id| OutputRecord::tombstone(Topic::ProfilesMerged, id.to_string()))
            .collect();
        out.push(OutputRecord::json(
            Topic::GdprReceipts,
            customer_id.to_string(),
            to_json(&Receipt::erased(customer_id, facts, erased)),
        ));
        out
    }

    /// The receipt of an export: everything kept about the customer.
    #[allow(clippy::too_many_arguments)]
    fn export(
        &self,
        customer_id: &str,
        profile: &CustomerProfile,
        moments: &[timeline::Moment],
        clock: i64,
        facts: &RequestFacts,
        audiences: Option<&AudienceState>,
        enrichment: Option<&EnrichmentState>,
    ) -> OutputRecord {
        let identity_graph = facts
            .identity
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        let export = Export {
            golden_record: self.golden(customer_id, profile, clock, audiences, enrichment, None),
            identity_graph,
            source_profiles: profile
                .source_profiles
                .iter()
                .map(|(sp, f)| ExportedSourceProfile::new(*sp, f))
                .collect(),
            consents: profile
                .consents
                .decisions
                .iter()
                .map(|(k, d)| ExportedDecision::new(k, d))
                .collect(),
            touchpoints: moments.iter().map(timeline::Touchpoint::from).collect(),
        };
        OutputRecord::json(
            Topic::GdprReceipts,
            customer_id.to_string(),
            to_json(&Receipt::export(customer_id, facts, export)),
        )
    }

    fn implied(&self, purpose: Purpose) -> bool {
        self.config.consent.implied.contains(&purpose)
    }

    /// Keeps a customer's decisions about single identifiers within
    /// `max_identifier_consents` as of the stage's clock; the changes back to the
    /// defaults (cause `limit`), the forgotten counted.
    fn bound_consents(&self, profile: &mut CustomerProfile, done: &mut Applied) -> Vec<Change> {
        let max = self.config.limits.max_identifier_consents;
        let implied = |p: Purpose| self.implied(p);
        let (changes, forgotten) = profile.consents.forget_beyond(max, implied, done.clock);
        done.counts.identifier_consents_dropped += forgotten;
        changes
    }

    /// Channels on which `purpose` is allowed now *and* the customer can be reached:
    /// what any activation may use.
    pub fn allowed_channels(
        &self,
        profile: &CustomerProfile,
        purpose: Purpose,
        now: i64,
    ) -> Vec<Channel> {
        Channel::ALL
            .into_iter()
            .filter(|&channel| self.channel_allowed(profile, purpose, channel, now))
            .collect()
    }

    /// Whether `channel` is allowed and reachable for `purpose` at `now`: one of the
    /// identifier types (or the address) that reach it, with consent for it.
    pub fn channel_allowed(
        &self,
        profile: &CustomerProfile,
        purpose: Purpose,
        channel: Channel,
        now: i64,
    ) -> bool {
        let Some(by) = self.config.consent.reachable_by.get(&channel) else {
            return false;
        };
        let implied = self.implied(purpose);
        let consents = &profile.consents;
        let channel = ConsentChannel::One(channel);
        let facts = || profile.source_profiles.values();
        by.iter().any(|t| {
            if t == "address" {
                facts().any(|f| f.fields.contains_key("address"))
                    && consents.allowed(purpose, channel, None, implied, now)
            } else {
                facts()
                    .flat_map(|f| f.identifiers.iter())
                    .filter(|id| &id.kind == t)
                    .any(|id| consents.allowed(purpose, channel, Some(id), implied, now))
            }
        })
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
    pub fn golden_record(
        &self,
        store: &Store,
        customer_id: &str,
        profile: &CustomerProfile,
        clock: i64,
    ) -> Result<Value, StoreError> {
        let audiences = self.audience_state(store, customer_id)?;
        let enrichment = self.enrichment_state(store, customer_id)?;
        Ok(to_json(&self.golden(
            customer_id,
            profile,
            clock,
            audiences.as_ref(),
            enrichment.as_ref(),
            None,
        )))
    }

    /// The customer's audiences, traits and windows: `None` when the configuration
    /// defines none, a default when it has none yet.
    fn audience_state(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<AudienceState>, StoreError> {
        if self.definitions.is_empty() {
            return Ok(None);
        }
        let state = match AUDIENCES.get(store, customer_id) {
            // Written before journeys were kept with the audiences.
            Err(StoreError::Decode { .. }) => AUDIENCES_BEFORE_JOURNEYS
                .get(store, customer_id)?
                .map(AudienceState::from),
            read => read?,
        };
        Ok(Some(state.unwrap_or_default()))
    }

    /// The golden record of a customer as of `clock`. With `profiling` denied it has no
    /// RFM, lifecycle stage or segments. When `only` names fields, only those fields (and
    /// what they are made of) are worked out and the others left empty, for a reader of
    /// those fields alone ([`GoldenRecord::field_json`]).
    fn golden<'a>(
        &'a self,
        customer_id: &'a str,
        profile: &'a CustomerProfile,
        clock: i64,
        audiences: Option<&'a AudienceState>,
        enrichment: Option<&EnrichmentState>,
        only: Option<&[String]>,
    ) -> GoldenRecord<'a> {
        let needs = |name: &str| only.is_none_or(|fields| fields.iter().any(|f| f == name));
        let (audiences, traits) = audiences
            .filter(|_| self.definitions.shows_audiences())
            .map(AudienceState::shown)
            .unzip();
        let totals = Totals::of(profile);
        let enriched = self.enrichment.is_some() && needs("enrichment");
        let survivors = match needs("person") || needs("attributes") || enriched {
            true => self.survivors(profile),
            false => BTreeMap::new(),
        };
        let address = survivors.get("address").and_then(|v| match &v.data {
            FieldData::Address(a) => Some((a, v.at)),
            FieldData::Text(_) => None,
        });
        let (consents, consents_by_identifier) =
            match needs("consents") || needs("consents_by_identifier") {
                true => consent_view(&profile.consents, clock),
                false => Default::default(),
            };
        let profiling = self.profiling_allowed(profile, clock);
        let allowed_channels = match needs("allowed_channels") || enriched {
            true => self.allowed_channels_by_purpose(profile, clock),
            false => BTreeMap::new(),
        };
        let enrichment = self
            .enrichment
            .as_ref()
            .filter(|_| enriched)
            .map(|settings| {
                profiling.then(|| {
                    enrichment.unwrap_or(&EnrichmentState::default()).view(
                        settings,
                        clock,
                        address,
                        &allowed_channels,
                    )
                })
            });
        let (person, attributes) = person_and_attributes(survivors);
        let last_order_at = totals.last_order.map(|(at, _)| at);
        GoldenRecord {
            customer_id,
            identifiers: match needs("identifiers") {
                true => identifiers_by_type(profile),
                false => BTreeMap::new(),
            },
            person,
            attributes,
            channels: totals.channels(),
            first_seen: Time(totals.first_seen),
            last_seen: Time(totals.last_seen),
            orders: totals.order_summary(),
            rfm: (profiling && needs("rfm")).then(|| self.rfm(&totals, clock)),
            lifecycle_stage: profiling
                .then(|| activation::stage(last_order_at, clock, &self.config.lifecycle)),
            segments: (profiling && needs("segments"))
                .then(|| self.segments(profile, &totals, clock)),
            recently_purchased: match needs("recently_purchased") {
                true => profile
                    .activity
                    .recently_purchased(clock, self.config.activation.recent_purchase_days),
                false => Vec::new(),
            },
            open_carts: open_carts(profile),
            consents,
            consents_by_identifier,
            allowed_channels,
            do_not_profile: !profiling,
            do_not_personalize: needs("do_not_personalize")
                && !self.allows(profile, Purpose::Personalization, clock),
            source_profiles: profile.source_profiles.len(),
            audiences,
            traits,
            enrichment,
            as_of: Time(clock),
        }
    }

    /// Whether `purpose` is allowed on every channel at `now`.
    fn allows(&self, profile: &CustomerProfile, purpose: Purpose, now: i64) -> bool {
        profile.consents.allowed(
            purpose,
            ConsentChannel::All,
            None,
            self.implied(purpose),
            now,
        )
    }

    /// The surviving value of each field: from the channel ranked first for it, then
    /// the most recent, then the greatest event id.
    fn survivors<'a>(&self, profile: &'a CustomerProfile) -> BTreeMap<&'a str, &'a FieldValue> {
        let mut winners: BTreeMap<&str, &FieldValue> = BTreeMap::new();
        for facts in profile.source_profiles.values() {
            for (name, v) in &facts.fields {
                let better = winners
                    .get(name.as_str())
                    .is_none_or(|w| self.outranks(name, v, w));
                if better {
                    winners.insert(name, v);
                }
            }
        }
        winners
    }

    /// Whether `v` survives over `w`, two values of `field`.
    fn outranks(&self, field: &str, v: &FieldValue, w: &FieldValue) -> bool {
        let mine = (Reverse(self.rank(field, &v.channel)), v.at, &v.event_id);
        let theirs = (Reverse(self.rank(field, &w.channel)), w.at, &w.event_id);
        mine > theirs
    }

    /// Recency, frequency and net purchases in the base currency.
    fn rfm(&self, totals: &Totals, clock: i64) -> Rfm<'_> {
        let base = self.config.lifecycle.base_currency.as_str();
        Rfm {
            recency_days: totals.recency_days(clock),
            frequency: totals.orders,
            monetary: amount(totals.net_cents(base)),
            currency: base,
        }
    }

    /// RFM scores, lifetime value and VIP status.
    fn segments(&self, profile: &CustomerProfile, totals: &Totals, clock: i64) -> Segments {
        let act = &self.config.activation;
        let (clv_cents, recent_orders) =
            profile.activity.lifetime_value(clock, act.clv_horizon_days);
        let clv = amount(clv_cents);
        let vip = (act.vip.min_clv <= 0.0 || clv >= act.vip.min_clv)
            && (act.vip.min_orders == 0 || recent_orders >= u64::from(act.vip.min_orders))
            && (act.vip.min_clv > 0.0 || act.vip.min_orders > 0);
        let monetary = amount(totals.net_cents(&self.config.lifecycle.base_currency));
        let rfm = activation::rfm_scores(
            totals.recency_days(clock),
            totals.orders,
            monetary,
            &act.rfm,
        )
        .map(|(r, f, m)| RfmScores {
            recency: r,
            frequency: f,
            monetary: m,
            score: format!("{r}{f}{m}"),
        });
        Segments {
            rfm,
            clv,
            clv_horizon_days: act.clv_horizon_days,
            orders_in_horizon: recent_orders,
            vip,
        }
    }

    /// The channels allowed and reachable, for every purpose of the contract.
    fn allowed_channels_by_purpose(
        &self,
        profile: &CustomerProfile,
        now: i64,
    ) -> BTreeMap<Purpose, Vec<Channel>> {
        Purpose::ALL
            .into_iter()
            .map(|p| (p, self.allowed_channels(profile, p, now)))
            .collect()
    }
}

/// What the source profiles of a customer add up to.
struct Totals<'a> {
    /// `(first seen, last seen, events)` per channel.
    channels: BTreeMap<&'a str, (i64, i64, u64)>,
    first_seen: i64,
    last_seen: i64,
    orders: u64,
    returns: u64,
    order_cents: BTreeMap<&'a str, i64>,
    return_cents: BTreeMap<&'a str, i64>,
    /// Time and id of the latest order.
    last_order: Option<(i64, Option<&'a str>)>,
}

impl<'a> Totals<'a> {
    fn of(profile: &'a CustomerProfile) -> Self {
        let mut totals = Totals {
            channels: BTreeMap::new(),
            first_seen: i64::MAX,
            last_seen: i64::MIN,
            orders: 0,
            returns: 0,
            order_cents: BTreeMap::new(),
            return_cents: BTreeMap::new(),
            last_order: None,
        };
        for facts in profile.source_profiles.values() {
            totals.add(facts);
        }
        totals
    }

    fn add(&mut self, facts: &'a SourceFacts) {
        let c = self
            .channels
            .entry(&facts.channel)
            .or_insert((i64::MAX, i64::MIN, 0));
        c.0 = c.0.min(facts.first_seen);
        c.1 = c.1.max(facts.last_seen);
        c.2 += facts.events;
        self.first_seen = self.first_seen.min(facts.first_seen);
        self.last_seen = self.last_seen.max(facts.last_seen);
        self.orders += facts.orders;
        self.returns += facts.returns;
        for (cur, cents) in &facts.order_cents {
            *self.order_cents.entry(cur).or_default() += cents;
        }
        for (cur, cents) in &facts.return_cents {
            *self.return_cents.entry(cur).or_default() += cents;
        }
        if let Some(at) = facts.last_order_at {
            let candidate = (at, facts.last_order_id.as_deref());
            if self.last_order.is_none_or(|l| candidate > l) {
                self.last_order = Some(candidate);
            }
        }
    }

    fn channels(&self) -> BTreeMap<&'a str, ChannelActivity> {
        self.channels
            .iter()
            .map(|(ch, (first, last, events))| {
                let activity = ChannelActivity {
                    first_seen: Time(*first),
                    last_seen: Time(*last),
                    events: *events,
                };
                (*ch, activity)
            })
            .collect()
    }

    fn order_summary(&self) -> OrderSummary<'a> {
        OrderSummary {
            count: self.orders,
            totals: amounts(&self.order_cents),
            last_order_at: self.last_order.map(|(at, _)| Time(at)),
            last_order_id: self.last_order.and_then(|(_, id)| id),
            returns: self.returns,
            returned_totals: amounts(&self.return_cents),
        }
    }

    /// Days since the last order, as of `clock`.
    fn recency_days(&self, clock: i64) -> Option<i64> {
        self.last_order.map(|(at, _)| (clock - at).max(0) / DAY_MS)
    }

    /// Net purchases in `currency`, in cents.
    fn net_cents(&self, currency: &str) -> i64 {
        self.order_cents.get(currency).copied().unwrap_or(0)
            - self.return_cents.get(currency).copied().unwrap_or(0)
    }
}

/// The values of a customer's identifiers, per type.
fn identifiers_by_type(profile: &CustomerProfile) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut by_type: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for facts in profile.source_profiles.values() {
        for id in &facts.identifiers {
            by_type.entry(&id.kind).or_default().insert(&id.value);
        }
    }
    by_type
}

/// Amounts per currency, from cents.
fn amounts<'a>(cents: &BTreeMap<&'a str, i64>) -> BTreeMap<&'a str, f64> {
    cents.iter().map(|(c, v)| (*c, amount(*v))).collect()
}

/// The surviving fields, split into person fields and attributes
/// (`attributes.<name>`).
fn person_and_attributes<'a>(
    winners: BTreeMap<&'a str, &'a FieldValue>,
) -> (StatedFields<'a>, StatedFields<'a>) {
    let (mut person, mut attributes) = (BTreeMap::new(), BTreeMap::new());
    for (name, v) in winners {
        match name.strip_prefix("attributes.") {
            Some(attr) => attributes.insert(attr, StatedField::from(v)),
            None => person.insert(name, StatedField::from(v)),
        };
    }
    (person, attributes)
}

type StatedFields<'a> = BTreeMap<&'a str, StatedField<'a>>;
type DecisionsByPurpose<'a> = BTreeMap<Purpose, BTreeMap<ConsentChannel, StatedDecision<'a>>>;

/// The consent decisions as of `now`: per purpose and channel, and those about one
/// identifier only.
fn consent_view(
    consents: &Consents,
    now: i64,
) -> (DecisionsByPurpose<'_>, Vec<IdentifierDecision<'_>>) {
    let mut decisions: DecisionsByPurpose = BTreeMap::new();
    let mut by_identifier = Vec::new();
    for (k, d) in &consents.decisions {
        let decision = StatedDecision::new(d, now);
        match &k.identifier {
            None => {
                decisions
                    .entry(k.purpose)
                    .or_default()
                    .insert(k.channel, decision);
            }
            Some(_) => by_identifier.push(IdentifierDecision {
                key: DecisionKey::from(k),
                decision,
            }),
        }
    }
    (decisions, by_identifier)
}

/// Carts with items that have not fired.
fn open_carts(profile: &CustomerProfile) -> usize {
    profile
        .activity
        .carts
        .values()
        .filter(|c| !c.fired && !c.items.is_empty())
        .count()
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

/// Adds an event to what its source profile stated; the amounts of its order or return
/// are totalled only if `amounts_fit` (its currency is within the customer's bound).
fn record_event(facts: &mut SourceFacts, event: &ProfileEvent, amounts_fit: bool) {
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
        if amounts_fit {
            *facts.order_cents.entry(p.currency.clone()).or_default() += p.total_cents;
        }
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
        if amounts_fit {
            *facts.return_cents.entry(r.currency.clone()).or_default() += r.total_cents;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_profile_counts_are_read_page_by_page_in_customer_order() {
        let mut store = Store::temporary().unwrap();
        let sizes = [3usize, 1, 4, 1, 5, 9, 2];
        for (n, size) in sizes.iter().enumerate() {
            let profile = CustomerProfile {
                source_profiles: (0..*size as u64)
                    .map(|sp| (sp, SourceFacts::default()))
                    .collect(),
                ..CustomerProfile::default()
            };
            PROFILES
                .put(&mut store, &format!("cus_{n}"), &profile)
                .unwrap();
        }
        store.commit().unwrap();
        for page in [1, 2, 3, 7, 100] {
            assert_eq!(
                source_profile_counts(&store, page).unwrap(),
                sizes,
                "pages of {page}"
            );
        }
    }
}
