//! The narrow interface between the two stages of the engine.
//!
//! *Resolve* owns the identity graph and decides which customer an event belongs to;
//! *profile* owns everything keyed by customer id. Resolve hands profile a list of
//! [`ProfileCommand`]s per event and nothing else, so that the two can later run as
//! separate consumer groups with these commands on an internal topic keyed by customer
//! id. Every type here is plain data with serde derives.

use serde::{Deserialize, Serialize};

use crate::model::output::DAY_MS;
use crate::model::{Cart, ConsentChannel, Ident, Order, Person, Purpose};

/// One accepted event as resolve hands it on: what it states, as parsed, with the
/// identifiers resolve attached to the customer and its consent statements' identifiers
/// normalised. Profile derives display forms, order totals and carts from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFacts {
    pub event_id: String,
    pub channel: String,
    pub kind: String,
    /// Milliseconds since the epoch (event time).
    pub occurred_at: i64,
    /// Identifiers that resolve attached to the customer with this event.
    pub identifiers: Vec<Ident>,
    pub person: Option<Person>,
    /// Attributes as stated (`key`, text).
    pub attributes: Vec<(String, String)>,
    pub order: Option<Order>,
    pub cart: Option<Cart>,
    /// The product a page shows (`page.product_sku`).
    pub product_sku: Option<String>,
    /// The event's `source` (a store's id for a shop's events).
    pub source: Option<String>,
    /// Consent decisions the event states.
    pub consents: Vec<ConsentStatement>,
}

/// A consent decision stated by an event, its identifier normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentStatement {
    pub purpose: Purpose,
    pub channel: ConsentChannel,
    pub granted: bool,
    pub identifier: Option<Ident>,
    pub expires_at: Option<i64>,
}

/// What a rights request or a retention rule asks of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestKind {
    /// The person asked for a copy of everything kept about them.
    Export,
    /// The person asked to be forgotten.
    Erase,
    /// The customer was inactive beyond the retention period.
    Retention,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Export => "export",
            RequestKind::Erase => "erase",
            RequestKind::Retention => "retention",
        }
    }
}

/// Who a request is about and what resolve already did for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFacts {
    pub request_id: String,
    pub kind: RequestKind,
    /// When the request is done (ms since the epoch).
    pub at: i64,
    /// Ids this customer had before merges (tombstoned again on erasure).
    pub merged_ids: Vec<String>,
    /// What resolve erased, by kind of record.
    pub erased: Vec<(String, u64)>,
    /// Resolve's part of an export: the identity graph of the customer (JSON text).
    pub identity: Option<String>,
}

/// What profile asks of resolve, the one request that flows back: a retention expiry
/// found in profile's time indexes. It travels as a request (an internal topic once the
/// stages run apart), never as a call; resolve does its part, then hands profile the
/// usual [`ProfileCommand`]s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RetentionRequest {
    /// The customer has had no event for `inactive_customer_days`: erase it.
    Customer { customer_id: String, at: i64 },
    /// These behavioural source profiles of the customer have had no event for
    /// `behavioural_days`: detach them, or erase the customer when they are all it has.
    SourceProfiles {
        customer_id: String,
        source_profiles: Vec<u64>,
        at: i64,
    },
}

impl RetentionRequest {
    pub fn customer_id(&self) -> &str {
        match self {
            RetentionRequest::Customer { customer_id, .. }
            | RetentionRequest::SourceProfiles { customer_id, .. } => customer_id,
        }
    }

    pub fn at(&self) -> i64 {
        match self {
            RetentionRequest::Customer { at, .. } | RetentionRequest::SourceProfiles { at, .. } => {
                *at
            }
        }
    }

    /// The request's id: one per customer and day, so that a sweep repeated within a day
    /// names the same request.
    pub fn request_id(&self) -> String {
        format!("retention-{}-{}", self.customer_id(), self.at() / DAY_MS)
    }
}

/// What resolve asks of profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProfileCommand {
    /// `merged` no longer exists: its source profiles now belong to `survivor`.
    Merge {
        survivor: String,
        merged: String,
        at: i64,
    },
    /// An event attached to `source_profile` of `customer_id`.
    Touch {
        customer_id: String,
        source_profile: u64,
        event: Box<EventFacts>,
    },
    /// A rights request (export, erasure) or a retention expiry for `customer_id`;
    /// resolve has done its part (for an erasure: the identity graph is gone).
    Request {
        customer_id: String,
        facts: Box<RequestFacts>,
    },
    /// An operator split `source_profiles` off `customer_id` into `new_customer_id`:
    /// the profile moves their facts and recomputes both sides.
    Split {
        customer_id: String,
        new_customer_id: String,
        source_profiles: Vec<u64>,
        at: i64,
    },
    /// Source profiles detached from `customer_id` (behavioural data expired): the
    /// profile forgets their facts.
    Detach {
        customer_id: String,
        source_profiles: Vec<u64>,
        at: i64,
    },
}

impl ProfileCommand {
    /// The customer the command is keyed by (the partitioning key once scaled out).
    pub fn customer_id(&self) -> &str {
        match self {
            ProfileCommand::Merge { survivor, .. } => survivor,
            ProfileCommand::Touch { customer_id, .. }
            | ProfileCommand::Request { customer_id, .. }
            | ProfileCommand::Split { customer_id, .. }
            | ProfileCommand::Detach { customer_id, .. } => customer_id,
        }
    }
}
