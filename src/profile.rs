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
//! Store tables (prefix `p/`): `p/cu/<customer>` profiles, `p/clock`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::EngineConfig;
use crate::handoff::{FieldData, Ident, ProfileCommand, ProfileEvent};
use crate::output::{rfc3339, OutputRecord, Topic};
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
}

/// A customer's profile: the facts of its source profiles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerProfile {
    pub source_profiles: BTreeMap<u64, SourceFacts>,
}

fn profile_key(customer_id: &str) -> Vec<u8> {
    key("p/cu/", &[customer_id])
}

/// The profile stage. Holds configuration only; all state is in the [`Store`].
pub struct Profiler {
    config: EngineConfig,
}

impl Profiler {
    pub fn new(config: &EngineConfig) -> Self {
        Self {
            config: config.clone(),
        }
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

    /// Applies the commands of one event; returns tombstones for merged-away customers,
    /// then the golden record of every customer that changed.
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
                    kept.source_profiles.extend(gone.source_profiles);
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
                    store.put(profile_key(customer_id), &profile)?;
                    clock = clock.max(event.occurred_at);
                    changed.insert(customer_id.clone());
                }
            }
        }
        if clock != clock_before {
            store.put(CLOCK.to_vec(), &clock)?;
        }
        for customer_id in changed {
            if let Some(profile) = self.load(store, &customer_id)? {
                let record = self.golden_record(&customer_id, &profile, clock);
                out.push(OutputRecord::json(
                    Topic::ProfilesMerged,
                    customer_id,
                    record,
                ));
            }
        }
        Ok(out)
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
            let value = match &v.data {
                FieldData::Text(s) => Value::String(s.clone()),
                FieldData::Address(a) => serde_json::to_value(a).unwrap_or(Value::Null),
            };
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
        let stage = match recency_days {
            None => "prospect",
            Some(d) if d <= i64::from(self.config.lifecycle.active_days) => "active",
            Some(d) if d <= i64::from(self.config.lifecycle.dormant_days) => "inactive",
            Some(_) => "dormant",
        };
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
            "rfm": {
                "recency_days": recency_days,
                "frequency": orders,
                "monetary": monetary_cents as f64 / 100.0,
                "currency": base,
            },
            "lifecycle_stage": stage,
            "source_profiles": profile.source_profiles.len(),
            "as_of": rfc3339(clock),
        })
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
