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
//! - weak types (`phone`, `device_id`, `cookie_id`) do not link people whose person data
//!   contradict (different birth dates, clearly different first names).
//!
//! When an event links several customers they merge: the oldest customer survives, the
//! others are handed to the profile stage as [`ProfileCommand::Merge`].
//!
//! Store tables (prefix `r/`): `r/sp/<id>` source profiles, `r/ix/<type>\0<value>` who
//! carries a value, `r/sk/<channel>\0<type>\0<value>` source-profile anchors,
//! `r/cu/<customer>` customers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::EngineConfig;
use crate::event::{EventType, Touchpoint};
use crate::gdpr;
use crate::handoff::{
    CartFacts, ConsentStatement, FieldData, Ident, OrderFacts, ProfileCommand, ProfileEvent,
    RequestFacts, RequestKind,
};
use crate::normalise;
use crate::output::rfc3339;
use crate::store::{key, Store, StoreError};

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
            Method::Unresolved => "unresolved",
            Method::Suppressed => "suppressed",
        }
    }
}

/// Counters of what resolve saw for one event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveCounts {
    pub junk: u32,
    pub unusable: u32,
    pub generic_skipped: u32,
    pub generic_new: u32,
    pub limit_dropped: u32,
    pub conflicts: u32,
    pub merges: u32,
    pub new_customer: bool,
    /// Person fields or attributes dropped by the minimisation allow-lists.
    pub minimised: u32,
    /// Consent entries naming an identifier that cannot be normalised (dropped).
    pub consent_dropped: u32,
    /// The customer's number of source profiles when the event added to them
    /// (creation, merge, new source profile); 0 when it did not.
    pub customer_source_profiles: u32,
}

/// The answer of resolve for one event.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub customer_id: Option<String>,
    pub method: Method,
    pub matched_on: Vec<String>,
    /// Records for `identity.changes`, in order.
    pub identity_changes: Vec<Value>,
    pub commands: Vec<ProfileCommand>,
    pub counts: ResolveCounts,
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
}

const MAX_PEOPLE_PER_CUSTOMER: usize = 16;
const NEXT_SOURCE_PROFILE: &[u8] = b"m/next_source_profile";
const NEXT_CUSTOMER_SEQ: &[u8] = b"m/next_customer_seq";
const LIVE_CUSTOMERS: &[u8] = b"m/customers";

fn sp_key(id: u64) -> Vec<u8> {
    let mut k = b"r/sp/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn customer_key(id: &str) -> Vec<u8> {
    key("r/cu/", &[id])
}

fn value_key(id: &Ident) -> Vec<u8> {
    key("r/ix/", &[&id.kind, &id.value])
}

fn anchor_key(channel: &str, id: &Ident) -> Vec<u8> {
    key("r/sk/", &[channel, &id.kind, &id.value])
}

/// The resolve stage. Holds configuration only; all state is in the [`Store`].
pub struct Resolver {
    config: EngineConfig,
    priority: HashMap<String, u32>,
    junk_raw: HashSet<String>,
    junk_normalised: HashSet<(String, String)>,
}

/// Evidence that an event belongs to an existing customer.
#[derive(Default)]
struct Evidence {
    strong: BTreeSet<String>,
    weak: BTreeSet<String>,
    identifiers: BTreeSet<Ident>,
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
        if value.chars().count() <= 1
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
        let Some(entry) = store.get::<ValueEntry>(&value_key(id))? else {
            return Ok(None);
        };
        for sp in entry.source_profiles {
            if let Some(sp) = store.get::<SourceProfile>(&sp_key(sp))? {
                return Ok(Some(sp.customer));
            }
        }
        Ok(None)
    }

    /// Live customers (kept as a counter: counting keys would be a full scan).
    pub fn customer_count(&self, store: &Store) -> Result<i64, StoreError> {
        Ok(store.get::<i64>(LIVE_CUSTOMERS)?.unwrap_or(0))
    }

    fn is_weak(&self, kind: &str) -> bool {
        self.config.identifiers.get(kind).is_some_and(|t| t.weak)
    }

    fn is_unique(&self, kind: &str) -> bool {
        self.config.identifiers.get(kind).is_some_and(|t| t.unique)
    }

    /// Resolves one validated event, staging the state changes in `store`.
    pub fn resolve(&self, store: &mut Store, tp: &Touchpoint) -> Result<Resolution, StoreError> {
        let mut counts = ResolveCounts::default();
        let mut changes = Vec::new();
        let at = rfc3339(tp.occurred_at);

        // 1. Normalise identifiers; strongest first.
        let mut ids: Vec<Ident> = Vec::with_capacity(tp.identifiers.len());
        for (kind, raw) in &tp.identifiers {
            match self.normalise_checked(kind, raw) {
                Ok(id) => ids.push(id),
                Err(Unfit::Junk) => counts.junk += 1,
                Err(Unfit::Unusable) => counts.unusable += 1,
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
        if !gdpr::suppressed(store, &self.config, &ids)?.is_empty() {
            return Ok(Resolution {
                customer_id: None,
                method: Method::Suppressed,
                matched_on: Vec::new(),
                identity_changes: Vec::new(),
                commands: Vec::new(),
                counts,
            });
        }
        let sig = PersonSig::from_touchpoint(tp);
        let has_person = tp.person.is_some();
        if ids.is_empty() && !has_person {
            return Ok(Resolution {
                customer_id: None,
                method: Method::Unresolved,
                matched_on: Vec::new(),
                identity_changes: changes,
                commands: Vec::new(),
                counts,
            });
        }

        // 2. The source profile this event belongs to, anchored on its strongest id.
        let ids_anchor = ids.first().cloned();
        let anchor_key = ids_anchor.as_ref().map(|id| anchor_key(&tp.channel, id));
        let anchor: Option<(u64, SourceProfile)> = match &anchor_key {
            Some(k) => match store.get::<u64>(k)? {
                Some(sp_id) => store
                    .get::<SourceProfile>(&sp_key(sp_id))?
                    .map(|sp| (sp_id, sp)),
                None => None,
            },
            None => None,
        };

        // 3. The group of customers this event joins starts with its own.
        let mut group: Vec<(String, Customer)> = Vec::new();
        let mut matched_on: BTreeSet<String> = BTreeSet::new();
        if let Some((_, sp)) = &anchor {
            if let Some(c) = store.get::<Customer>(&customer_key(&sp.customer))? {
                group.push((sp.customer.clone(), c));
                matched_on.insert(ids[0].kind.clone());
            }
        }
        let mut held: BTreeSet<Ident> = group
            .iter()
            .flat_map(|(_, c)| c.identifiers.iter().cloned())
            .collect();
        let mut people: Vec<PersonSig> = group
            .iter()
            .flat_map(|(_, c)| c.people.iter().cloned())
            .collect();
        if !sig.is_empty() {
            people.push(sig.clone());
        } else if let Some((_, sp)) = &anchor {
            if !sp.person.is_empty() {
                people.push(sp.person.clone());
            }
        }

        // 4. The event's own unique values must agree with its own customer.
        let own = group.first().map(|(id, _)| id.clone());
        let mut accepted: Vec<Ident> = Vec::with_capacity(ids.len());
        for id in ids {
            if self.is_unique(&id.kind) {
                if let Some(other) = held
                    .iter()
                    .find(|h| h.kind == id.kind && h.value != id.value)
                {
                    counts.conflicts += 1;
                    changes.push(json!({
                        "type": "conflict", "customer_id": own, "other_customer_id": Value::Null,
                        "rule": "unique_identifier", "identifier_type": id.kind,
                        "identifiers": [id, other], "event_id": tp.event_id, "at": at,
                    }));
                    continue;
                }
                held.insert(id.clone());
            }
            accepted.push(id);
        }

        // 5. Who carries each value; values turning generic stop linking here.
        let sig_for_values = people_sig(&sig, anchor.as_ref().map(|(_, sp)| &sp.person));
        let mut entries: Vec<(Ident, ValueEntry, bool)> = Vec::with_capacity(accepted.len());
        for id in accepted {
            let mut entry = store
                .get::<ValueEntry>(&value_key(&id))?
                .unwrap_or_default();
            let mut dirty = false;
            if entry.generic {
                counts.generic_skipped += 1;
                continue;
            }
            if let Some(s) = sig_for_values {
                if !s.is_empty() && entry.people.iter().all(|p| p.disagrees(s)) {
                    entry.people.push(s.clone());
                    dirty = true;
                }
            }
            if entry.people.len() > self.config.guardrails.generic_after_people
                || entry.source_profiles.len() >= self.config.guardrails.max_profiles_per_value
            {
                entry.generic = true;
                entry.people.clear();
                store.put(value_key(&id), &entry)?;
                counts.generic_new += 1;
                counts.generic_skipped += 1;
                changes.push(json!({
                    "type": "generic_value", "customer_id": own, "identifier": id,
                    "people": self.config.guardrails.generic_after_people + 1,
                    "source_profiles": entry.source_profiles.len(),
                    "event_id": tp.event_id, "at": at,
                }));
                continue;
            }
            entries.push((id, entry, dirty));
        }

        // 6. Candidate customers, with the evidence of each.
        let mut sp_cache: HashMap<u64, SourceProfile> = HashMap::new();
        let mut evidence: BTreeMap<String, Evidence> = BTreeMap::new();
        for (id, entry, _) in &entries {
            for sp_id in &entry.source_profiles {
                if !sp_cache.contains_key(sp_id) {
                    match store.get::<SourceProfile>(&sp_key(*sp_id))? {
                        Some(sp) => sp_cache.insert(*sp_id, sp),
                        None => continue,
                    };
                }
                let customer = &sp_cache[sp_id].customer;
                if group.iter().any(|(g, _)| g == customer) {
                    matched_on.insert(id.kind.clone());
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

        // 7. Join candidates oldest first, unless a guardrail refuses.
        let mut candidates: Vec<(String, Customer, Evidence)> = Vec::with_capacity(evidence.len());
        for (cid, ev) in evidence {
            if let Some(c) = store.get::<Customer>(&customer_key(&cid))? {
                candidates.push((cid, c, ev));
            }
        }
        candidates.sort_by_key(|(_, c, _)| c.seq);
        let mut linked_by: BTreeSet<Ident> = BTreeSet::new();
        let mut link_kinds: BTreeSet<String> = BTreeSet::new();
        for (cid, c, ev) in candidates {
            let unique_clash = c.identifiers.iter().find(|ci| {
                self.is_unique(&ci.kind)
                    && held
                        .iter()
                        .any(|h| h.kind == ci.kind && h.value != ci.value)
            });
            let refusal = if let Some(clash) = unique_clash {
                Some(("unique_identifier", clash.kind.clone()))
            } else if ev.strong.is_empty()
                && c.people
                    .iter()
                    .any(|p| people.iter().any(|q| p.contradicts(q)))
            {
                Some((
                    "weak_identifier_contradiction",
                    ev.weak.iter().next().cloned().unwrap_or_default(),
                ))
            } else {
                None
            };
            if let Some((rule, kind)) = refusal {
                counts.conflicts += 1;
                changes.push(json!({
                    "type": "conflict", "customer_id": own.clone().or_else(|| group.first().map(|g| g.0.clone())),
                    "other_customer_id": cid, "rule": rule, "identifier_type": kind,
                    "identifiers": ev.identifiers, "event_id": tp.event_id, "at": at,
                }));
                continue;
            }
            for ci in &c.identifiers {
                if self.is_unique(&ci.kind) {
                    held.insert(ci.clone());
                }
            }
            people.extend(c.people.iter().cloned());
            matched_on.extend(ev.strong.iter().cloned());
            matched_on.extend(ev.weak.iter().cloned());
            link_kinds.extend(ev.strong.iter().cloned());
            link_kinds.extend(ev.weak.iter().cloned());
            linked_by.extend(ev.identifiers.iter().cloned());
            group.push((cid, c));
        }

        // 8. The survivor: the oldest customer of the group, or a new one.
        let mut commands = Vec::new();
        let (survivor_id, mut survivor, method) = if group.is_empty() {
            let seq = next_counter(store, NEXT_CUSTOMER_SEQ)?;
            add_live_customers(store, 1)?;
            counts.new_customer = true;
            let id = new_customer_id(tp.occurred_at, &tp.event_id);
            let c = Customer {
                seq,
                source_profiles: Vec::new(),
                identifiers: Vec::new(),
                people: Vec::new(),
                merged_ids: Vec::new(),
            };
            (id, c, Method::New)
        } else {
            group.sort_by_key(|(_, c)| c.seq);
            let (id, c) = group.remove(0);
            (id, c, Method::Deterministic)
        };

        // 9. Merge the others into the survivor.
        let source_profiles_before = survivor.source_profiles.len();
        if !group.is_empty() {
            let merged_ids: Vec<String> = group.iter().map(|(id, _)| id.clone()).collect();
            for (mid, m) in group {
                for sp_id in &m.source_profiles {
                    let mut sp = match sp_cache.remove(sp_id) {
                        Some(sp) => sp,
                        None => match store.get::<SourceProfile>(&sp_key(*sp_id))? {
                            Some(sp) => sp,
                            None => continue,
                        },
                    };
                    sp.customer = survivor_id.clone();
                    store.put(sp_key(*sp_id), &sp)?;
                }
                survivor.source_profiles.extend(m.source_profiles);
                merge_sorted(&mut survivor.identifiers, m.identifiers);
                for p in m.people {
                    push_person(&mut survivor.people, p);
                }
                survivor.merged_ids.push(mid.clone());
                survivor.merged_ids.extend(m.merged_ids);
                store.remove(customer_key(&mid));
                commands.push(ProfileCommand::Merge {
                    survivor: survivor_id.clone(),
                    merged: mid,
                    at: tp.occurred_at,
                });
                counts.merges += 1;
            }
            add_live_customers(store, -(merged_ids.len() as i64))?;
            changes.push(json!({
                "type": "merge", "customer_id": survivor_id, "merged_ids": merged_ids,
                "rule": "deterministic", "matched_on": link_kinds, "identifiers": linked_by,
                "event_id": tp.event_id, "score": 1.0, "at": at,
            }));
        }

        // 10. Attach the event to its source profile. Records are written only when
        // they change: most events of known customers change nothing here.
        let mut customer_dirty = method == Method::New || counts.merges > 0;
        let (sp_id, mut sp, mut sp_dirty) = match anchor {
            Some((id, mut sp)) => {
                let moved = sp.customer != survivor_id;
                if moved {
                    sp.customer = survivor_id.clone();
                }
                (id, sp, moved)
            }
            None => {
                let id = next_counter(store, NEXT_SOURCE_PROFILE)?;
                if let Some(k) = anchor_key {
                    store.put(k, &id)?;
                }
                survivor.source_profiles.push(id);
                customer_dirty = true;
                let sp = SourceProfile {
                    customer: survivor_id.clone(),
                    channel: tp.channel.clone(),
                    anchor: ids_anchor.clone(),
                    identifiers: Vec::new(),
                    person: PersonSig::default(),
                    person_at: i64::MIN,
                };
                (id, sp, true)
            }
        };
        let mut attached = Vec::with_capacity(entries.len());
        for (id, mut entry, mut dirty) in entries {
            if survivor.identifiers.binary_search(&id).is_err() {
                let limit = self.config.identifiers[&id.kind].limit;
                let held_of_kind = survivor
                    .identifiers
                    .iter()
                    .filter(|h| h.kind == id.kind)
                    .count();
                if held_of_kind >= limit {
                    counts.limit_dropped += 1;
                    if dirty {
                        store.put(value_key(&id), &entry)?;
                    }
                    continue;
                }
                insert_sorted(&mut survivor.identifiers, id.clone());
                customer_dirty = true;
            }
            if let Err(pos) = sp.identifiers.binary_search(&id) {
                sp.identifiers.insert(pos, id.clone());
                sp_dirty = true;
            }
            if !entry.source_profiles.contains(&sp_id) {
                entry.source_profiles.push(sp_id);
                dirty = true;
            }
            if dirty {
                store.put(value_key(&id), &entry)?;
            }
            attached.push(id);
        }
        if !sig.is_empty() {
            if tp.occurred_at >= sp.person_at && sp.person != sig {
                sp.person = sig.clone();
                sp.person_at = tp.occurred_at;
                sp_dirty = true;
            }
            customer_dirty |= push_person(&mut survivor.people, sig);
        }
        if sp_dirty {
            store.put(sp_key(sp_id), &sp)?;
        }
        if customer_dirty {
            store.put(customer_key(&survivor_id), &survivor)?;
        }
        if survivor.source_profiles.len() != source_profiles_before {
            counts.customer_source_profiles = survivor.source_profiles.len() as u32;
        }

        let event = self.profile_event(tp, attached, &mut counts);
        commands.push(ProfileCommand::Touch {
            customer_id: survivor_id.clone(),
            source_profile: sp_id,
            event: Box::new(event),
        });
        Ok(Resolution {
            customer_id: Some(survivor_id),
            method,
            matched_on: matched_on.into_iter().collect(),
            identity_changes: changes,
            commands,
            counts,
        })
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
            ("customer_ids".into(), 1 + self.merged_ids.len() as u64),
        ]
    }
}

impl Resolver {
    /// Whether a customer id is live.
    pub fn customer_exists(&self, store: &Store, customer_id: &str) -> Result<bool, StoreError> {
        store.contains(&customer_key(customer_id))
    }

    /// A customer's source profiles, if it exists.
    pub fn source_profiles_of(
        &self,
        store: &Store,
        customer_id: &str,
    ) -> Result<Option<Vec<u64>>, StoreError> {
        Ok(store
            .get::<Customer>(&customer_key(customer_id))?
            .map(|c| c.source_profiles))
    }

    /// The customer a source profile belongs to.
    pub fn customer_of_source_profile(
        &self,
        store: &Store,
        sp: u64,
    ) -> Result<Option<String>, StoreError> {
        Ok(store
            .get::<SourceProfile>(&sp_key(sp))?
            .map(|sp| sp.customer))
    }

    /// Removes a customer's whole identity graph: its record, source profiles, anchors,
    /// and its place in every value index entry (an entry only it carried goes). `None`
    /// if the customer does not exist.
    pub fn forget(
        &self,
        store: &mut Store,
        customer_id: &str,
    ) -> Result<Option<Forgotten>, StoreError> {
        let Some(c) = store.get::<Customer>(&customer_key(customer_id))? else {
            return Ok(None);
        };
        let mut f = Forgotten::default();
        self.forget_source_profiles(store, &c.source_profiles, &c.people, &mut f)?;
        store.remove(customer_key(customer_id));
        add_live_customers(store, -1)?;
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
        let Some(mut c) = store.get::<Customer>(&customer_key(customer_id))? else {
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
            if let Some(sp) = store.get::<SourceProfile>(&sp_key(*sp_id))? {
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
            if let Some(sp) = store.get::<SourceProfile>(&sp_key(*sp_id))? {
                kept_ids.extend(sp.identifiers);
                push_person(&mut people, sp.person);
            }
        }
        c.identifiers.retain(|id| kept_ids.contains(id));
        c.people = people;
        store.put(customer_key(customer_id), &c)?;
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
            let Some(sp) = store.get::<SourceProfile>(&sp_key(*sp_id))? else {
                continue;
            };
            if let Some(a) = &sp.anchor {
                let k = anchor_key(&sp.channel, a);
                if store.get::<u64>(&k)? == Some(*sp_id) {
                    store.remove(k);
                    f.anchors += 1;
                }
            }
            for id in &sp.identifiers {
                let vk = value_key(id);
                let Some(mut entry) = store.get::<ValueEntry>(&vk)? else {
                    continue;
                };
                entry.source_profiles.retain(|x| x != sp_id);
                entry.people.retain(|p| !people.contains(p));
                if entry.source_profiles.is_empty() && !entry.generic {
                    store.remove(vk);
                    f.index_entries_removed += 1;
                    exclusive.insert(id.clone());
                } else {
                    store.put(vk, &entry)?;
                    f.index_entries_updated += 1;
                }
            }
            store.remove(sp_key(*sp_id));
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
        let Some(c) = store.get::<Customer>(&customer_key(customer_id))? else {
            return Ok(None);
        };
        let mut sps = Vec::with_capacity(c.source_profiles.len());
        for sp_id in &c.source_profiles {
            if let Some(sp) = store.get::<SourceProfile>(&sp_key(*sp_id))? {
                sps.push(json!({
                    "source_profile": sp_id, "channel": sp.channel, "anchor": sp.anchor,
                    "identifiers": sp.identifiers,
                    "match_keys": {"first_name": sp.person.first, "last_name": sp.person.last, "birth_date": sp.person.birth},
                }));
            }
        }
        Ok(Some(json!({
            "customer_id": customer_id,
            "identifiers": c.identifiers,
            "merged_ids": c.merged_ids,
            "source_profiles": sps,
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

/// Adds a person to a customer's list; true if it was new.
fn push_person(people: &mut Vec<PersonSig>, p: PersonSig) -> bool {
    let new = !p.is_empty() && !people.contains(&p) && people.len() < MAX_PEOPLE_PER_CUSTOMER;
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

fn next_counter(store: &mut Store, key: &[u8]) -> Result<u64, StoreError> {
    let next = store.get::<u64>(key)?.unwrap_or(0) + 1;
    store.put(key.to_vec(), &next)?;
    Ok(next)
}

fn add_live_customers(store: &mut Store, delta: i64) -> Result<(), StoreError> {
    let n = store.get::<i64>(LIVE_CUSTOMERS)?.unwrap_or(0) + delta;
    store.put(LIVE_CUSTOMERS.to_vec(), &n)
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
    /// The profile stage's view of an event: person fields and attributes the minimisation
    /// allow-lists keep, and consent statements with their identifier normalised.
    fn profile_event(
        &self,
        tp: &Touchpoint,
        identifiers: Vec<Ident>,
        counts: &mut ResolveCounts,
    ) -> ProfileEvent {
        let mut fields = Vec::new();
        if let Some(p) = &tp.person {
            let text = [
                (
                    "first_name",
                    &p.first_name,
                    normalise::name_display as fn(&str) -> _,
                ),
                ("last_name", &p.last_name, normalise::name_display),
                ("birth_date", &p.birth_date, normalise::birth_date),
            ];
            for (name, raw, f) in text {
                if let Some(v) = raw.as_deref().and_then(|r| f(r).ok()) {
                    fields.push((name.to_string(), FieldData::Text(v)));
                }
            }
            if let Some(a) = &p.address {
                let mut a = a.clone();
                let country = a
                    .country
                    .as_deref()
                    .and_then(|c| normalise::country(c).ok());
                if let Some(pc) = a.postal_code.as_deref() {
                    if let Ok(n) = normalise::postal_code(pc, country.as_deref()) {
                        a.postal_code = Some(n);
                    }
                }
                if country.is_some() {
                    a.country = country;
                }
                for part in [&mut a.line1, &mut a.line2, &mut a.city, &mut a.state] {
                    if let Some(s) = part {
                        *part = normalise::name_display(s).ok();
                    }
                }
                if !a.is_empty() {
                    fields.push(("address".to_string(), FieldData::Address(a)));
                }
            }
        }
        for (k, v) in &tp.attributes {
            if !v.trim().is_empty() {
                fields.push((format!("attributes.{k}"), FieldData::Text(v.clone())));
            }
        }
        let gdpr = &self.config.gdpr;
        let before = fields.len();
        fields.retain(|(name, _)| match name.strip_prefix("attributes.") {
            Some(attr) => gdpr.attribute_allowed(attr),
            None => gdpr.person_field_allowed(name),
        });
        counts.minimised += (before - fields.len()) as u32;
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
                purpose: c.purpose.clone(),
                channel: c.channel.clone(),
                granted: c.granted,
                identifier,
                expires_at: c.expires_at,
            });
        }
        let order_facts = |tp: &Touchpoint| {
            tp.order.as_ref().map(|o| OrderFacts {
                order_id: o.order_id.clone(),
                total_cents: o.total_cents.unwrap_or_else(|| {
                    o.items
                        .iter()
                        .map(|i| (i.quantity * i.unit_price.unwrap_or(0.0) * 100.0).round() as i64)
                        .sum()
                }),
                currency: o.currency.clone().unwrap_or_else(|| "EUR".into()),
                items: o.items.clone(),
            })
        };
        let (purchase, refund) = match tp.kind {
            EventType::Purchase => (order_facts(tp), None),
            EventType::Return => (None, order_facts(tp)),
            _ => (None, None),
        };
        ProfileEvent {
            event_id: tp.event_id.clone(),
            channel: tp.channel.clone(),
            kind: tp.kind.as_str().to_string(),
            occurred_at: tp.occurred_at,
            identifiers,
            fields,
            purchase,
            refund,
            consents,
            cart: tp.cart.as_ref().map(|c| CartFacts {
                cart_id: c.cart_id.clone().unwrap_or_else(|| "cart".into()),
                items: c.items.clone(),
            }),
        }
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
    fn customer_ids_are_deterministic_and_time_ordered() {
        let a = new_customer_id(1_700_000_000_000, "e1");
        assert_eq!(a, new_customer_id(1_700_000_000_000, "e1"));
        assert_ne!(a, new_customer_id(1_700_000_000_000, "e2"));
        assert!(a < new_customer_id(1_800_000_000_000, "e1"));
        assert!(a.starts_with("cus_") && a.len() == 30);
    }
}
