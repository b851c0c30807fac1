//! The records the profile stage publishes, typed: the golden record, consent changes,
//! triggers and GDPR receipts with their export, serialised by serde.
//!
//! Object keys come out sorted (a `serde_json::Value` object keeps no insertion order);
//! times are RFC 3339 ([`Time`]), amounts decimal numbers of the currency, counts
//! integers; an unknown fact is `null`, and a key is left out only where the record
//! shape says so ([`Receipt`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::engine::handoff::RequestFacts;
use crate::engine::profile::consent::{Change, ConsentKey, Decision};
use crate::engine::profile::event::FieldData;
use crate::engine::profile::{FieldValue, SourceFacts};
use crate::model::output::{to_json, Time};
use crate::model::{Address, Item};
use crate::model::{Channel, ConsentChannel, Ident, Purpose};

/// An amount in cents, written as a decimal number of the currency (`1999` → `19.99`).
pub fn amount(cents: i64) -> f64 {
    cents as f64 / 100.0
}

/// A person field as stated: a text, or an address object.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum StatedValue<'a> {
    Text(&'a str),
    Address(&'a Address),
}

impl<'a> From<&'a FieldData> for StatedValue<'a> {
    fn from(data: &'a FieldData) -> Self {
        match data {
            FieldData::Text(s) => StatedValue::Text(s),
            FieldData::Address(a) => StatedValue::Address(a),
        }
    }
}

/// A field value with its provenance: the source channel, when and by which event.
#[derive(Debug, Serialize)]
pub struct StatedField<'a> {
    pub value: StatedValue<'a>,
    pub source: &'a str,
    pub at: Time,
    pub event_id: &'a str,
}

/// First and last event and number of events of a customer on one channel.
#[derive(Debug, Serialize)]
pub struct ChannelActivity {
    pub first_seen: Time,
    pub last_seen: Time,
    pub events: u64,
}

/// Orders and returns of a customer, over every currency.
#[derive(Debug, Serialize)]
pub struct OrderSummary<'a> {
    pub count: u64,
    /// Per currency.
    pub totals: BTreeMap<&'a str, f64>,
    pub last_order_at: Option<Time>,
    pub last_order_id: Option<&'a str>,
    pub returns: u64,
    /// Per currency.
    pub returned_totals: BTreeMap<&'a str, f64>,
}

/// Recency, frequency and monetary value (net, base currency).
#[derive(Debug, Serialize)]
pub struct Rfm<'a> {
    /// Days since the last order; `null` without any order.
    pub recency_days: Option<i64>,
    pub frequency: u64,
    pub monetary: f64,
    pub currency: &'a str,
}

/// RFM scores 1–5 and their three-digit form (`"545"`).
#[derive(Debug, Serialize)]
pub struct RfmScores {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    pub score: String,
}

/// Segments of a customer who allows profiling.
#[derive(Debug, Serialize)]
pub struct Segments {
    pub rfm: Option<RfmScores>,
    /// Lifetime value: net purchases (base currency) within the horizon.
    pub clv: f64,
    pub clv_horizon_days: u32,
    pub orders_in_horizon: u64,
    pub vip: bool,
}

/// What a consent decision is about: `identifier` is `null` unless it concerns one
/// identifier only.
#[derive(Debug, Serialize)]
pub struct DecisionKey<'a> {
    pub purpose: Purpose,
    pub channel: ConsentChannel,
    pub identifier: Option<&'a Ident>,
}

/// A consent decision with its provenance.
#[derive(Debug, Serialize)]
pub struct DecisionFacts<'a> {
    pub granted: bool,
    pub at: Time,
    pub source_channel: &'a str,
    pub event_id: &'a str,
    pub expires_at: Option<Time>,
}

/// A consent decision as the golden record shows it.
#[derive(Debug, Serialize)]
pub struct StatedDecision<'a> {
    #[serde(flatten)]
    pub decision: DecisionFacts<'a>,
    /// Not expired as of the record.
    pub in_force: bool,
}

/// A consent decision about one identifier only, in the golden record.
#[derive(Debug, Serialize)]
pub struct IdentifierDecision<'a> {
    #[serde(flatten)]
    pub key: DecisionKey<'a>,
    #[serde(flatten)]
    pub decision: StatedDecision<'a>,
}

/// The golden record: the value of `profiles.merged`.
#[derive(Debug, Serialize)]
pub struct GoldenRecord<'a> {
    pub customer_id: &'a str,
    /// Values per identifier type.
    pub identifiers: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// The surviving value of each person field.
    pub person: BTreeMap<&'a str, StatedField<'a>>,
    /// The surviving value of each attribute (`attributes.<name>` fields).
    pub attributes: BTreeMap<&'a str, StatedField<'a>>,
    pub channels: BTreeMap<&'a str, ChannelActivity>,
    pub first_seen: Time,
    pub last_seen: Time,
    pub orders: OrderSummary<'a>,
    /// `null` when profiling is denied.
    pub rfm: Option<Rfm<'a>>,
    /// `null` when profiling is denied.
    pub lifecycle_stage: Option<&'static str>,
    /// `null` when profiling is denied.
    pub segments: Option<Segments>,
    pub recently_purchased: Vec<String>,
    pub open_carts: usize,
    /// Decisions about no identifier in particular, per purpose and channel.
    pub consents: BTreeMap<Purpose, BTreeMap<ConsentChannel, StatedDecision<'a>>>,
    pub consents_by_identifier: Vec<IdentifierDecision<'a>>,
    /// Channels allowed and reachable, per purpose.
    pub allowed_channels: BTreeMap<Purpose, Vec<Channel>>,
    pub do_not_profile: bool,
    pub do_not_personalize: bool,
    /// Number of source profiles.
    pub source_profiles: usize,
    /// The audiences the customer is in, by name; absent when none are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<&'a str>>,
    /// The computed traits by name; absent when none are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traits: Option<Value>,
    /// What [`super::enrichment`] infers: absent when it is off, `null` when profiling
    /// is denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrichment: Option<Option<super::enrichment::Enriched>>,
    pub as_of: Time,
}

impl GoldenRecord<'_> {
    /// The record's field `name` as it is in the whole record, `None` for a name the
    /// record has not: for what needs a few fields, without writing out all of them.
    pub fn field_json(&self, name: &str) -> Option<Value> {
        Some(match name {
            "customer_id" => to_json(&self.customer_id),
            "identifiers" => to_json(&self.identifiers),
            "person" => to_json(&self.person),
            "attributes" => to_json(&self.attributes),
            "channels" => to_json(&self.channels),
            "first_seen" => to_json(&self.first_seen),
            "last_seen" => to_json(&self.last_seen),
            "orders" => to_json(&self.orders),
            "rfm" => to_json(&self.rfm),
            "lifecycle_stage" => to_json(&self.lifecycle_stage),
            "segments" => to_json(&self.segments),
            "recently_purchased" => to_json(&self.recently_purchased),
            "open_carts" => to_json(&self.open_carts),
            "consents" => to_json(&self.consents),
            "consents_by_identifier" => to_json(&self.consents_by_identifier),
            "allowed_channels" => to_json(&self.allowed_channels),
            "do_not_profile" => to_json(&self.do_not_profile),
            "do_not_personalize" => to_json(&self.do_not_personalize),
            "source_profiles" => to_json(&self.source_profiles),
            "audiences" => to_json(self.audiences.as_ref()?),
            "traits" => self.traits.clone()?,
            "enrichment" => to_json(self.enrichment.as_ref()?),
            "as_of" => to_json(&self.as_of),
            _ => return None,
        })
    }
}

/// A `consent.changes` record: the state of a decision changed.
#[derive(Debug, Serialize)]
pub struct ConsentChange<'a> {
    pub customer_id: &'a str,
    #[serde(flatten)]
    pub key: DecisionKey<'a>,
    /// The decision now in force.
    #[serde(flatten)]
    pub decision: DecisionFacts<'a>,
    /// `null`: there was no decision for this key.
    pub previous: Option<bool>,
    pub cause: &'static str,
}

/// `triggers.lifecycle_changed`.
#[derive(Debug, Serialize)]
pub struct LifecycleChanged<'a> {
    pub trigger_id: String,
    pub customer_id: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// `event` or `time`.
    pub cause: &'a str,
    pub at: Time,
}

/// `triggers.cart_abandoned`.
#[derive(Debug, Serialize)]
pub struct CartAbandoned<'a> {
    pub trigger_id: String,
    pub customer_id: &'a str,
    pub cart_id: &'a str,
    pub items: &'a [Item],
    pub value: f64,
    pub currency: &'a str,
    pub last_activity_at: Time,
    pub last_activity_channel: &'a str,
    pub due_at: Time,
    pub preferred_channels: Vec<String>,
    pub channels_allowed: Vec<Channel>,
    pub purpose: Purpose,
    pub recently_purchased: Vec<String>,
    pub at: Time,
}

/// `triggers.purchase_completed`.
#[derive(Debug, Serialize)]
pub struct PurchaseCompleted<'a> {
    pub trigger_id: String,
    pub customer_id: &'a str,
    pub order_id: Option<&'a str>,
    pub channel: &'a str,
    pub items: &'a [Item],
    pub value: f64,
    pub currency: &'a str,
    pub recently_purchased: Vec<String>,
    pub cancelled_carts: Vec<String>,
    pub event_id: &'a str,
    pub at: Time,
}

/// A `gdpr.receipts` record: a rights request done. An erasure carries `erased`, an
/// export `export`; neither key is present on the other kind.
#[derive(Debug, Serialize)]
pub struct Receipt<'a> {
    pub request_id: &'a str,
    pub customer_id: &'a str,
    pub kind: &'a str,
    pub status: &'static str,
    pub done_at: Time,
    /// What was erased, by kind of record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased: Option<BTreeMap<&'a str, u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Export<'a>>,
}

/// Everything kept about a customer.
#[derive(Debug, Serialize)]
pub struct Export<'a> {
    pub golden_record: GoldenRecord<'a>,
    /// Resolve's part, as it wrote it (`null` if it had nothing).
    pub identity_graph: Value,
    pub source_profiles: Vec<ExportedSourceProfile<'a>>,
    pub consents: Vec<ExportedDecision<'a>>,
    /// The recent touchpoints kept for the timeline, oldest first.
    pub touchpoints: Vec<super::timeline::Touchpoint<'a>>,
}

/// What one source profile contributed, in an export.
#[derive(Debug, Serialize)]
pub struct ExportedSourceProfile<'a> {
    pub source_profile: u64,
    pub channel: &'a str,
    pub identifiers: &'a [Ident],
    pub fields: BTreeMap<&'a str, StatedField<'a>>,
    pub first_seen: Time,
    pub last_seen: Time,
    pub events: u64,
    pub orders: u64,
    pub last_order_id: Option<&'a str>,
    pub returns: u64,
}

/// A consent decision with its key and provenance, in an export.
#[derive(Debug, Serialize)]
pub struct ExportedDecision<'a> {
    #[serde(flatten)]
    pub key: DecisionKey<'a>,
    #[serde(flatten)]
    pub decision: DecisionFacts<'a>,
}

impl<'a> From<&'a FieldValue> for StatedField<'a> {
    fn from(v: &'a FieldValue) -> Self {
        StatedField {
            value: StatedValue::from(&v.data),
            source: &v.channel,
            at: Time(v.at),
            event_id: &v.event_id,
        }
    }
}

impl<'a> From<&'a ConsentKey> for DecisionKey<'a> {
    fn from(k: &'a ConsentKey) -> Self {
        DecisionKey {
            purpose: k.purpose,
            channel: k.channel,
            identifier: k.identifier.as_ref(),
        }
    }
}

impl<'a> From<&'a Decision> for DecisionFacts<'a> {
    fn from(d: &'a Decision) -> Self {
        DecisionFacts {
            granted: d.granted,
            at: Time(d.at),
            source_channel: &d.source_channel,
            event_id: &d.event_id,
            expires_at: d.expires_at.map(Time),
        }
    }
}

impl<'a> StatedDecision<'a> {
    /// `d` as of `now`.
    pub fn new(d: &'a Decision, now: i64) -> Self {
        StatedDecision {
            decision: DecisionFacts::from(d),
            in_force: d.expires_at.is_none_or(|e| e > now),
        }
    }
}

impl<'a> ConsentChange<'a> {
    pub fn new(customer_id: &'a str, change: &'a Change) -> Self {
        ConsentChange {
            customer_id,
            key: DecisionKey::from(&change.key),
            decision: DecisionFacts::from(&change.decision),
            previous: change.previous,
            cause: change.cause.as_str(),
        }
    }
}

impl<'a> ExportedSourceProfile<'a> {
    pub fn new(source_profile: u64, f: &'a SourceFacts) -> Self {
        ExportedSourceProfile {
            source_profile,
            channel: &f.channel,
            identifiers: &f.identifiers,
            fields: f
                .fields
                .iter()
                .map(|(name, v)| (name.as_str(), StatedField::from(v)))
                .collect(),
            first_seen: Time(f.first_seen),
            last_seen: Time(f.last_seen),
            events: f.events,
            orders: f.orders,
            last_order_id: f.last_order_id.as_deref(),
            returns: f.returns,
        }
    }
}

impl<'a> ExportedDecision<'a> {
    pub fn new(k: &'a ConsentKey, d: &'a Decision) -> Self {
        ExportedDecision {
            key: DecisionKey::from(k),
            decision: DecisionFacts::from(d),
        }
    }
}

impl<'a> Receipt<'a> {
    /// The receipt of an erasure (or a retention expiry).
    pub fn erased(
        customer_id: &'a str,
        facts: &'a RequestFacts,
        erased: BTreeMap<&'a str, u64>,
    ) -> Self {
        Receipt {
            request_id: &facts.request_id,
            customer_id,
            kind: facts.kind.as_str(),
            status: "done",
            done_at: Time(facts.at),
            erased: Some(erased),
            export: None,
        }
    }

    /// The receipt of an export.
    pub fn export(customer_id: &'a str, facts: &'a RequestFacts, export: Export<'a>) -> Self {
        Receipt {
            request_id: &facts.request_id,
            customer_id,
            kind: "export",
            status: "done",
            done_at: Time(facts.at),
            erased: None,
            export: Some(export),
        }
    }
}
